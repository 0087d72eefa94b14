"""Sandbox configuration: one dataclass, every field settable by a HERMETIC_* variable."""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from sandbox.errors import UserError
from sandbox.trace.levels import TraceLevel
from sandbox.trace.limits import DEFAULT_TRACE_LIMITS, TraceLimits
from sandbox.units import parse_duration, parse_size

_TRUE = {"1", "true", "yes", "on"}
# Debian's libfaketime, in this machine's multiarch directory
_MULTIARCH = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
_FAKETIME = f"/usr/lib/{_MULTIARCH}/faketime/libfaketime.so.1"


def _cache_home() -> Path:
    """This user's cache directory for hermetic (``$XDG_CACHE_HOME/hermetic``)."""
    return platformdirs.user_cache_path("hermetic")


def _trace_level(value: str | None) -> TraceLevel:
    if not value:
        return TraceLevel.STANDARD
    try:
        return TraceLevel(value.lower())
    except ValueError:
        raise UserError(
            f"HERMETIC_TRACE={value!r}: expected one of {', '.join(t.value for t in TraceLevel)}"
        ) from None


def _seconds(env: Mapping[str, str], name: str, default: int) -> int:
    """Seconds from 1 to 86400: a number, or a duration such as ``10m``."""
    value = env.get(name)
    if not value:
        return default
    try:
        return parse_duration(int(value) if value.isdigit() else value, maximum=86400)
    except ValueError:
        raise UserError(
            f"{name}={value!r}: expected a number of seconds from 1 to 86400 (or a duration "
            "such as 10m)"
        ) from None


_TRACE_LIMIT_KEYS: dict[str, tuple[str, Callable[[str], int]]] = {
    "max_events": ("HERMETIC_TRACE_MAX_EVENTS", int),
    "max_event_bytes": ("HERMETIC_TRACE_MAX_BYTES", parse_size),
    "max_file_bytes": ("HERMETIC_TRACE_MAX_FILE", parse_size),
}


def _trace_limits(env: Mapping[str, str]) -> TraceLimits:
    values: dict[str, int] = {}
    for name, (key, parse) in _TRACE_LIMIT_KEYS.items():
        text = env.get(key)
        if not text:
            values[name] = getattr(DEFAULT_TRACE_LIMITS, name)
            continue
        try:
            values[name] = parse(text)
        except ValueError as e:
            raise UserError(f"{key}={text!r}: {e}") from None
    try:
        return TraceLimits(**values)
    except ValueError as e:
        key = next(k for n, (k, _) in _TRACE_LIMIT_KEYS.items() if n in str(e))
        raise UserError(f"{key}={env.get(key)!r}: {e}") from None


def default_images_dir() -> Path:
    """``images/`` beside the packages in a checkout, or the copy inside an installed wheel."""
    here = Path(__file__).resolve().parent
    checkout = here.parent / "images"
    return checkout if checkout.is_dir() else here / "_images"


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """Where hermetic keeps things and how it reaches podman.

    Attributes:
        store_dir: content-addressed store of fetched inputs (HERMETIC_STORE).
        work_dir: parent of per-build scratch directories (HERMETIC_WORK_DIR).
        images_dir: image definitions (HERMETIC_IMAGES_DIR).
        podman_url: API socket URL; None finds or starts one (HERMETIC_PODMAN_URL).
        podman_bin: the podman program (HERMETIC_PODMAN).
        busybox: a statically linked busybox mounted read-only as the runner's
            toolbox (HERMETIC_BUSYBOX).
        allow_root: run even when started as root (HERMETIC_ALLOW_ROOT).
        backend: sandbox backend, "podman" or the test-only "fake" (HERMETIC_BACKEND).
        seccomp_base: podman's default seccomp profile, which traced builds extend
            (HERMETIC_SECCOMP_BASE).
        trace: how builds are traced unless told otherwise (HERMETIC_TRACE).
        faketime: libfaketime, which ``hermetic check`` mounts to shift a build's clock
            (HERMETIC_FAKETIME).
        insecure_registries: host[:port] of loopback registries pulled from without TLS
            (HERMETIC_INSECURE_REGISTRIES, comma-separated).
        podman_idle_s: seconds the shared podman service hermetic starts stays up with
            nothing to do (HERMETIC_PODMAN_IDLE; podman's ``--time``).
        podman_timeout_s: seconds an API request may take; waiting for a build is not
            bounded by it, only by the build's own timeout (HERMETIC_PODMAN_TIMEOUT).
        trace_limits: caps on what a traced build can make the tracer hold
            (HERMETIC_TRACE_MAX_EVENTS, HERMETIC_TRACE_MAX_BYTES, HERMETIC_TRACE_MAX_FILE).
    """

    store_dir: Path
    work_dir: Path
    images_dir: Path
    podman_url: str | None = None
    podman_bin: str = "podman"
    busybox: Path = Path("/bin/busybox")
    allow_root: bool = False
    backend: str = "podman"
    seccomp_base: Path = Path("/usr/share/containers/seccomp.json")
    trace: TraceLevel = TraceLevel.STANDARD
    faketime: Path = Path(_FAKETIME)
    insecure_registries: tuple[str, ...] = ()
    podman_idle_s: int = 300
    podman_timeout_s: float = 600.0
    trace_limits: TraceLimits = DEFAULT_TRACE_LIMITS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SandboxConfig:
        """Build the configuration from HERMETIC_* variables and their defaults."""
        env = os.environ if env is None else env
        cache = _cache_home()
        return cls(
            store_dir=Path(env.get("HERMETIC_STORE") or cache / "store"),
            work_dir=Path(env.get("HERMETIC_WORK_DIR") or cache / "work"),
            images_dir=Path(env.get("HERMETIC_IMAGES_DIR") or default_images_dir()),
            podman_url=env.get("HERMETIC_PODMAN_URL") or None,
            podman_bin=env.get("HERMETIC_PODMAN") or "podman",
            busybox=Path(env.get("HERMETIC_BUSYBOX") or "/bin/busybox"),
            allow_root=env.get("HERMETIC_ALLOW_ROOT", "").lower() in _TRUE,
            backend=env.get("HERMETIC_BACKEND") or "podman",
            trace=_trace_level(env.get("HERMETIC_TRACE")),
            faketime=Path(env.get("HERMETIC_FAKETIME") or _FAKETIME),
            seccomp_base=Path(
                env.get("HERMETIC_SECCOMP_BASE") or "/usr/share/containers/seccomp.json"
            ),
            insecure_registries=tuple(
                item.strip()
                for item in env.get("HERMETIC_INSECURE_REGISTRIES", "").split(",")
                if item.strip()
            ),
            podman_idle_s=_seconds(env, "HERMETIC_PODMAN_IDLE", 300),
            podman_timeout_s=_seconds(env, "HERMETIC_PODMAN_TIMEOUT", 600),
            trace_limits=_trace_limits(env),
        )

"""One hermetic build, end to end: resolve, fetch, stage, plan, run, hash, publish."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox.backend import Cancel, RunOutcome, RunStatus, SandboxBackend
from sandbox.config import SandboxConfig
from sandbox.digests import prefixed, sha256_bytes
from sandbox.environment import NORMALIZED, BuildEnvironment
from sandbox.errors import Error, OutputError, RootRefused, SandboxError
from sandbox.fetch import fetch_input
from sandbox.git_checkout import repository_top, run_git
from sandbox.image_build import prepare_image
from sandbox.images import ImageCatalog, ResolvedImage
from sandbox.input_policy import InputPolicy
from sandbox.observer import BuildObserver, NullObserver
from sandbox.outputs import OutputManifest, collect_outputs, copy_outputs
from sandbox.plan import TraceSetup, plan_build
from sandbox.result import BuildResult, BuildStatus, InputRecord
from sandbox.source_tree import OUT_MARKER, place_file, set_mtimes, stage_source, write_archive
from sandbox.spec import Spec
from sandbox.store import ContentStore
from sandbox.trace.levels import TraceLevel
from sandbox.trace.model import BuildTrace
from sandbox.trace.session import new_token
from sandbox.version import __version__
from sandbox.workspace import build_workspace, publishing

log = logging.getLogger(__name__)

DEFAULT_SOURCE_DATE_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest time zip can store
RESULT_FILE = "result.json"
TRACE_FILE = "trace.json"
LOG_FILE = "build.log"
ARTIFACTS_DIR = "artifacts"
# Written by the runner beside its status when the build's own files made the copy of
# the build directory fail (see runner.sh): a build failure, never hermetic's.
HANDBACK_FAILED = "handback-failed"
_HANDBACK_REASON_BYTES = 2000


@dataclass(frozen=True, kw_only=True)
class BuildRequest:
    """What to build and where the results go."""

    spec: Spec
    out_dir: Path
    trace: TraceLevel = TraceLevel.STANDARD
    environment: BuildEnvironment = NORMALIZED
    # Adds files about the result (the provenance) before the results are published.
    attest: Callable[[BuildResult, Path], None] | None = None
    # Build a recipe's image or pull a registry image when it is not loaded (the CLI
    # does; a node, which builds for others, uses only the images it holds).
    prepare_image: bool = False
    update_lock: bool = False  # write a missing or stale image lock (with prepare_image)
    # Set by the caller to stop the build in flight (run_build then raises BuildCancelled).
    cancel: Cancel | None = None
    # A node's rules for fetching a client's inputs; None: the local user's own inputs.
    input_policy: InputPolicy | None = None
    # A node's cap on the outputs together (None: the spec's disk limit alone).
    max_output_bytes: int | None = None


def refuse_root(config: SandboxConfig, *, euid: int) -> None:
    """Raise unless hermetic runs unprivileged (``euid``, the caller's effective user id)
    or root was explicitly allowed.

    Raises:
        RootRefused: started as root without ``allow_root``.
    """
    if euid == 0 and not config.allow_root:
        raise RootRefused


def default_out_dir(cwd: Path, build_id: str) -> Path:
    """A fresh directory under ``cwd/hermetic-out/``, marked so later builds skip it."""
    parent = cwd / "hermetic-out"
    parent.mkdir(exist_ok=True)
    (parent / OUT_MARKER).touch()
    stamp = datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    return parent / f"{stamp}-{build_id[:8]}"


def new_build_id() -> str:
    return uuid.uuid4().hex


def resolve_source_date_epoch(spec: Spec, *, euid: int | None = None) -> tuple[int, str]:
    """SOURCE_DATE_EPOCH and where it came from: the spec, git (a checkout the user
    ``euid`` owns; default: this process's), or the fixed default."""
    if spec.source_date_epoch is not None:
        return spec.source_date_epoch, "spec"
    top = repository_top(spec.source_dir, euid=euid)
    if top is None:
        return DEFAULT_SOURCE_DATE_EPOCH, "default"
    try:  # the checkout is untrusted: git runs as sandbox.git_checkout says
        output = run_git(top, "log", "-1", "--no-show-signature", "--format=%ct", timeout=30)
    except Error as e:  # no git is as good as no repository here
        log.debug("no git commit time: %s", e)
        return DEFAULT_SOURCE_DATE_EPOCH, "default"
    text = output.decode().strip() if output is not None else ""
    if text.isdigit():
        return int(text), "git"
    return DEFAULT_SOURCE_DATE_EPOCH, "default"


def _publish_trace(
    trace: BuildTrace | None, level: TraceLevel, publish: Path, max_bytes: int
) -> dict[str, Any]:
    """Write trace.json (cut to ``max_bytes``); the summary (with the file's digest)."""
    if trace is None:
        return {"level": level.value if level is TraceLevel.OFF else "unavailable"}
    trace, data = trace.fitted(max_bytes)
    (publish / TRACE_FILE).write_bytes(data)
    return {"file": TRACE_FILE, "sha256": prefixed(sha256_bytes(data)), **trace.summary()}


def _now() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NEARLY_FULL = 4 * 1024**2


@contextmanager
def _storage(places: dict[str, tuple[Path, str]]) -> Iterator[None]:
    """A full disk (or quota) where hermetic writes is the host's problem, said plainly.

    Args:
        places: what each place is called -> (its path, the setting that moves it).
    """
    try:
        yield
    except OSError as e:
        if e.errno not in _FULL:
            raise
        full = [
            f"{name} {path} ({free} bytes free; {setting} moves it)"
            for name, (path, setting) in places.items()
            if (free := _free_bytes(path)) is not None and free < _NEARLY_FULL
        ]
        where = "; ".join(full) or f"{e.filename or 'a file hermetic writes'}"
        raise SandboxError(
            f"out of disk space ({e.strerror}): {where}. Nothing was published and no "
            "partial result was kept; free some space and build again."
        ) from e


def _free_bytes(path: Path) -> int | None:
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def _verdict(outcome: RunOutcome, spec: Spec) -> tuple[BuildStatus, str]:
    if outcome.status is RunStatus.TIMEOUT:
        return (
            BuildStatus.TIMEOUT,
            f"timed out after {spec.limits.timeout_s}s; the container was killed",
        )
    if outcome.status is RunStatus.LIMIT_EXCEEDED:
        return (
            BuildStatus.LIMIT_EXCEEDED,
            f"{outcome.exceeded} limit exceeded; the container was killed",
        )
    if outcome.exit_code != 0:
        return BuildStatus.FAILED, f"the build command exited with status {outcome.exit_code}"
    return BuildStatus.BUILT, "built"


def _handback_failure(out: Path) -> str | None:
    """Why the runner could not copy the build directory back, if it could not."""
    try:
        fd = os.open(out / HANDBACK_FAILED, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:  # a link or worse where the runner writes: not a hand-back
        return f"unreadable ({e.strerror})"
    with os.fdopen(fd, "rb") as stream:
        text = stream.read(_HANDBACK_REASON_BYTES).decode("utf-8", "replace").strip()
    return " ".join(text.split()) or "the copy failed"


def _check_output_size(manifest: OutputManifest, spec: Spec, cap: int | None) -> None:
    """Outputs are copied out at their full size: a sparse file a build made for nothing
    (``truncate -s 5G``) must not become gigabytes on the host. Together they may be no
    larger than the build's disk limit (and a node's cap).

    Raises:
        OutputError: they are larger.
    """
    most = spec.limits.disk_bytes if cap is None else min(cap, spec.limits.disk_bytes)
    total = sum(item.size for item in manifest.files)
    if total > most:
        raise OutputError(
            f"the outputs are {total} bytes together, more than the {most} bytes allowed "
            "(the disk limit, or the node's --max-output); sparse files count in full"
        )


def with_image_env(spec: Spec, image: ResolvedImage, environment: BuildEnvironment) -> Spec:
    """The spec as it builds in ``image``: the image's toolchain settings first, so that
    the spec's build.env wins (a node computes a worker's environment the same way)."""
    if image.definition is None or not image.definition.recipe.env:
        return spec
    image_env = image.definition.recipe.build_env(environment.build_dir)
    return replace(spec, env=tuple(sorted({**dict(image_env), **dict(spec.env)}.items())))


def run_build(
    request: BuildRequest,
    *,
    config: SandboxConfig,
    backend: SandboxBackend,
    observer: BuildObserver | None = None,
    build_id: str | None = None,
    euid: int | None = None,
) -> BuildResult:
    """Run one hermetic build and publish its results into ``request.out_dir``.

    Args:
        request: the spec and the output directory.
        config: store, work and image locations.
        backend: the sandbox to run in.
        observer: receives progress.
        build_id: a caller-chosen id (default: random).
        euid: the effective user id the build runs as (default: this process's).

    Returns:
        The result; a failed, timed-out or limited build is a result, not an error.

    Raises:
        Error: anything that prevented the build from running (bad image, input
            digest mismatch, sandbox failure, unusable output directory).
    """
    observer = observer or NullObserver()
    build_id = build_id or new_build_id()
    spec = request.spec
    refuse_root(config, euid=os.geteuid() if euid is None else euid)
    started_at = _now()
    image_store = backend.image_store() if request.prepare_image else None
    if image_store is not None:
        image = prepare_image(
            spec,
            config=config,
            store=image_store,
            update_lock=request.update_lock,
            announce=lambda what: observer.stage("image", what),
        )
    else:
        image = ImageCatalog(config.images_dir).resolve(
            spec.image, spec_dir=spec.path.resolve().parent
        )
    spec = with_image_env(spec, image, request.environment)
    epoch, epoch_from = resolve_source_date_epoch(spec, euid=euid)
    host = backend.host_capabilities(image.reference)

    places = {
        "the input store": (config.store_dir, "HERMETIC_STORE"),
        "the scratch space": (config.work_dir, "HERMETIC_WORK_DIR"),
        "the output directory": (request.out_dir.parent, "--out"),
    }
    store = ContentStore(config.store_dir)
    observer.stage("fetch", f"{len(spec.inputs)} input(s)")
    with _storage(places):
        fetched = [
            fetch_input(item, store, observer.fetch_progress, policy=request.input_policy)
            for item in spec.inputs
        ]

    with (
        _storage(places),
        build_workspace(config.work_dir, config.busybox, config.faketime) as workspace,
        publishing(request.out_dir) as publish,
    ):
        observer.stage("stage", str(spec.source_dir))
        snapshot = stage_source(spec.source_dir, workspace.source)
        for item, (stored, _) in zip(spec.inputs, fetched, strict=True):
            place_file(stored, workspace.source, Path(item.dest))
        set_mtimes(workspace.source, epoch)
        environment = request.environment
        write_archive(workspace.source, workspace.source_archive, order=environment.source_order)
        trace = None
        if request.trace is not TraceLevel.OFF:
            trace = TraceSetup(level=request.trace, token=new_token(), limits=config.trace_limits)
        plan = plan_build(
            spec=spec,
            image=image,
            source_date_epoch=epoch,
            workspace=workspace,
            host=host,
            name=f"hermetic-{build_id[:12]}",
            trace=trace,
            environment=environment,
        )
        observer.stage("build", f"{image.reference.split('@')[0]}@sha256:{image.digest[:12]}…")
        outcome = backend.run(plan, workspace, publish / LOG_FILE, observer, request.cancel)
        log_summary = replace(outcome.log, path=request.out_dir / LOG_FILE)
        status, reason = _verdict(outcome, spec)
        failed_copy = _handback_failure(workspace.out) if outcome.build_dir is not None else None
        if status is BuildStatus.BUILT and failed_copy is not None:
            status = BuildStatus.FAILED
            reason = f"the build directory could not be handed back: {failed_copy}"
        manifest = OutputManifest.of([])
        if status is BuildStatus.BUILT and outcome.build_dir is not None:
            observer.stage("hash", ", ".join(spec.outputs))
            try:
                manifest = collect_outputs(outcome.build_dir, spec.outputs)
                _check_output_size(manifest, spec, request.max_output_bytes)
                copy_outputs(outcome.build_dir, manifest, publish / ARTIFACTS_DIR)
            except OutputError as e:
                status, reason, manifest = (
                    BuildStatus.FAILED,
                    str(e),
                    OutputManifest.of([]),
                )
        trace_record = _publish_trace(
            outcome.trace, request.trace, publish, config.trace_limits.max_file_bytes
        )
        result = BuildResult(
            build_id=build_id,
            status=status,
            reason=reason,
            exit_code=outcome.exit_code,
            digest=manifest.digest if status is BuildStatus.BUILT else None,
            outputs=manifest.files,
            image=image.reference,
            source_digest=snapshot.digest,
            inputs=tuple(
                InputRecord(url=item.url, sha256=item.sha256, dest=str(item.dest), fetched=was)
                for item, (_, was) in zip(spec.inputs, fetched, strict=True)
            ),
            source_date_epoch=epoch,
            source_date_epoch_from=epoch_from,
            env=plan.env,
            build_dir=environment.build_dir,
            limits=plan.limits,
            resources=outcome.resources,
            log=log_summary,
            trace=trace_record,
            duration_s=outcome.duration_s,
            started_at=started_at,
            finished_at=_now(),
            spec_path=str(spec.path),
            out_dir=str(request.out_dir),
            hermetic_version=__version__,
        )
        (publish / RESULT_FILE).write_text(result.to_json_text())
        if request.attest is not None:
            request.attest(result, publish)
    return result

"""diffoscope on the outputs that differ, and on nothing else: text, JSON and HTML.

The files come from builds or from other nodes, so they are hostile input to diffoscope's
many parsers: diffoscope runs in a container of the locked ``diffoscope`` image (network
off, read-only root, not root inside it (this user's own uid, as ``--userns=keep-id``
maps it), all capabilities dropped, no new privileges, rlimits on memory, CPU time, file
size and processes, a size-capped /tmp, a timeout), with the files mounted read-only and
only the report directory writable. It never runs on the host.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sandbox.beneath import open_beneath
from sandbox.config import SandboxConfig
from sandbox.errors import Error
from sandbox.images import ImageCatalog
from sandbox.proc import run as run_program
from sandbox.spec import ImageReference

log = logging.getLogger(__name__)

DIFFOSCOPE_TIMEOUT_S = 600
_GRACE_S = 60  # the outer limit stays above diffoscope's own
MAX_FILE_BYTES = 256 * 1024**2
MAX_REPORT_BYTES = 64 * 1024**2
DIFFOSCOPE_IMAGE = "diffoscope"


@dataclass(frozen=True, kw_only=True)
class DiffoscopeSandbox:
    """The container diffoscope runs in, and its limits."""

    image: str  # repository@sha256:…, from images/diffoscope's lock
    podman: str = "podman"
    memory_bytes: int = 4 * 1024**3  # heap and anonymous maps (RLIMIT_DATA)
    tmp_bytes: int = 2 * 1024**3  # /tmp, where diffoscope unpacks archives
    processes: int = 256  # RLIMIT_NPROC: diffoscope runs a tool per file, not a fork bomb

    @classmethod
    def from_config(cls, config: SandboxConfig) -> DiffoscopeSandbox:
        """The locked diffoscope image of ``config.images_dir``.

        Raises:
            sandbox.errors.ImageError: the image has no lock.
        """
        image = ImageCatalog(config.images_dir).resolve(ImageReference(name=DIFFOSCOPE_IMAGE))
        return cls(image=image.reference, podman=config.podman_bin)

    def argv(self, staging: Path, reports: Path, timeout_s: int, command: list[str]) -> list[str]:
        """``podman run`` of diffoscope over ``staging`` (read-only) into ``reports``."""
        cpu = timeout_s + _GRACE_S
        return [
            self.podman,
            "run",
            "--rm",
            "--pull=never",  # the locked image, built here, or nothing
            "--network=none",
            "--read-only",
            "--cap-drop=all",
            "--security-opt=no-new-privileges",
            # not root in the container: this user's uid, which can write the reports
            "--userns=keep-id",
            f"--timeout={cpu}",
            f"--ulimit=data={self.memory_bytes}:{self.memory_bytes}",
            f"--ulimit=cpu={cpu}:{cpu}",
            f"--ulimit=fsize={self.tmp_bytes}:{self.tmp_bytes}",
            f"--ulimit=nproc={self.processes}:{self.processes}",
            f"--tmpfs=/tmp:rw,nosuid,nodev,noexec,size={self.tmp_bytes}",
            "--env=HOME=/tmp",
            "--env=TMPDIR=/tmp",
            "--env=LANG=C.UTF-8",
            f"--volume={staging}:/in:ro",
            f"--volume={reports}:/out:rw",
            "--workdir=/tmp",
            self.image,
            *command,
        ]


@dataclass(frozen=True, kw_only=True)
class DiffReport:
    """Where diffoscope wrote its reports, and what it could not compare."""

    html: Path | None
    text: Path | None
    json: Path | None
    skipped: tuple[str, ...] = ()  # paths left out (too large)
    error: str = ""


def diff_outputs(
    *,
    control: Path,
    other: Path,
    paths: list[str],
    report_dir: Path,
    timeout_s: int = DIFFOSCOPE_TIMEOUT_S,
    config: SandboxConfig | None = None,
) -> DiffReport:
    """Compare the differing outputs of two builds' artifact directories.

    Args:
        control: the control build's artifacts directory.
        other: the other build's.
        paths: relative paths that differ.
        report_dir: where the reports go (diffoscope.txt, .json, .html).
        timeout_s: diffoscope's own time limit.
        config: whose locked diffoscope image and podman to use (default: from the
            environment).

    Returns:
        The reports; ``error`` says why there are none.
    """
    staging = report_dir / "differing"
    skipped = []
    for name, root in (("control", control), ("experiment", other)):
        for path in paths:
            try:  # never through a link, never a link itself
                fd = open_beneath(root, path)
            except (OSError, ValueError):
                continue
            with os.fdopen(fd, "rb") as source:
                if not _is_regular(source.fileno()):
                    continue
                if os.fstat(source.fileno()).st_size > MAX_FILE_BYTES:
                    skipped.append(path)
                    continue
                dest = staging / name / path
                dest.parent.mkdir(parents=True, exist_ok=True)
                with dest.open("xb") as copy:
                    shutil.copyfileobj(source, copy, 1 << 20)
    reports = report_dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    names = {"text": "diffoscope.txt", "json": "diffoscope.json", "html": "diffoscope.html"}
    outputs = {kind: report_dir / name for kind, name in names.items()}
    command = [
        "diffoscope",
        "--no-progress",
        # the staging copies' own mtimes are noise; modes are compared by hermetic
        "--exclude-directory-metadata=yes",
        "--timeout",
        str(timeout_s),
        "--max-report-size",
        str(MAX_REPORT_BYTES),
        "--text",
        f"/out/{names['text']}",
        "--json",
        f"/out/{names['json']}",
        "--html",
        f"/out/{names['html']}",
        "/in/control",
        "/in/experiment",
    ]
    (staging / "control").mkdir(parents=True, exist_ok=True)
    (staging / "experiment").mkdir(parents=True, exist_ok=True)
    config = config or SandboxConfig.from_env()
    if config.backend == "fake":
        return _fake_reports(staging, sorted(set(paths)), outputs, tuple(sorted(set(skipped))))
    try:
        sandbox = DiffoscopeSandbox.from_config(config)
        argv = sandbox.argv(staging, reports, timeout_s, command)
        done = run_program(argv, timeout=timeout_s + 2 * _GRACE_S, check=False)
        for kind, name in names.items():  # out of the directory the container could write
            made = reports / name
            if made.is_file() and not made.is_symlink():
                os.replace(made, outputs[kind])
        shutil.rmtree(reports, ignore_errors=True)
    except Error as e:
        return DiffReport(
            html=None,
            text=None,
            json=None,
            skipped=tuple(sorted(set(skipped))),
            error=str(e),
        )
    if done.returncode not in (0, 1):  # 0 same, 1 different, anything else: failed
        error = done.stderr.decode("utf-8", "replace")[-2000:]
        if done.returncode == 125:  # podman's own: most often the image is not there
            error += f" (build the image: hermetic image build {DIFFOSCOPE_IMAGE})"
        return DiffReport(
            html=None,
            text=None,
            json=None,
            skipped=tuple(sorted(set(skipped))),
            error=f"diffoscope exited with {done.returncode}: {error}",
        )

    def written(kind: str) -> Path | None:
        return outputs[kind] if outputs[kind].is_file() else None

    return DiffReport(
        html=written("html"),
        text=written("text"),
        json=written("json"),
        skipped=tuple(sorted(set(skipped))),
    )


def _is_regular(fd: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(fd).st_mode)


def _fake_reports(
    staging: Path, paths: list[str], outputs: dict[str, Path], skipped: tuple[str, ...]
) -> DiffReport:
    """The fake backend's stand-in for diffoscope (unit tests run no container): a plain
    unified diff of the staged files, written as the three reports and marked as fake."""
    import difflib
    import html
    import json

    lines = ["(fake backend: a unified diff, not diffoscope)"]
    for path in paths:
        sides = []
        for name in ("control", "experiment"):
            file = staging / name / path
            sides.append(file.read_text("utf-8", "replace").splitlines() if file.is_file() else [])
        lines += difflib.unified_diff(
            sides[0], sides[1], f"control/{path}", f"experiment/{path}", lineterm=""
        )
    text = "\n".join(lines) + "\n"
    outputs["text"].write_text(text)
    outputs["json"].write_text(json.dumps({"fake": True, "paths": paths, "diff": text}))
    outputs["html"].write_text(f"<pre>{html.escape(text)}</pre>\n")
    return DiffReport(
        html=outputs["html"], text=outputs["text"], json=outputs["json"], skipped=skipped
    )

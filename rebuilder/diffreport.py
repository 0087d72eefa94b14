"""diffoscope on the outputs that differ, and on nothing else: text, JSON and HTML."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import Error
from sandbox.proc import run as run_program

log = logging.getLogger(__name__)

DIFFOSCOPE_TIMEOUT_S = 600
_GRACE_S = 60  # the outer limit stays above diffoscope's own
MAX_FILE_BYTES = 256 * 1024**2
MAX_REPORT_BYTES = 64 * 1024**2


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
) -> DiffReport:
    """Compare the differing outputs of two builds' artifact directories.

    Args:
        control: the control build's artifacts directory.
        other: the other build's.
        paths: relative paths that differ.
        report_dir: where the reports go (diffoscope.txt, .json, .html).
        timeout_s: diffoscope's own time limit.

    Returns:
        The reports; ``error`` says why there are none.
    """
    staging = report_dir / "differing"
    skipped = []
    for name, root in (("control", control), ("experiment", other)):
        for path in paths:
            source = root / path
            if not source.is_file() or source.is_symlink():
                continue
            if source.stat().st_size > MAX_FILE_BYTES:
                skipped.append(path)
                continue
            dest = staging / name / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
    outputs = {
        kind: report_dir / f"diffoscope.{kind if kind != 'text' else 'txt'}"
        for kind in ("text", "json", "html")
    }
    argv = [
        "diffoscope",
        "--no-progress",
        # the staging copies' own mtimes are noise; modes are compared by hermetic
        "--exclude-directory-metadata=yes",
        "--timeout",
        str(timeout_s),
        "--max-report-size",
        str(MAX_REPORT_BYTES),
        "--text",
        str(outputs["text"]),
        "--json",
        str(outputs["json"]),
        "--html",
        str(outputs["html"]),
        str(staging / "control"),
        str(staging / "experiment"),
    ]
    (staging / "control").mkdir(parents=True, exist_ok=True)
    (staging / "experiment").mkdir(parents=True, exist_ok=True)
    try:
        done = run_program(argv, timeout=timeout_s + _GRACE_S, check=False)
    except Error as e:
        return DiffReport(
            html=None,
            text=None,
            json=None,
            skipped=tuple(sorted(set(skipped))),
            error=e.diagnostics(),
        )
    if done.returncode not in (0, 1):  # 0 same, 1 different, anything else: failed
        error = done.stderr.decode("utf-8", "replace")[-2000:]
        return DiffReport(
            html=None,
            text=None,
            json=None,
            skipped=tuple(sorted(set(skipped))),
            error=f"diffoscope exited with {done.returncode}: {error}",
        )

    def written(kind: str) -> Path | None:
        return outputs[kind] if outputs[kind].exists() else None

    return DiffReport(
        html=written("html"),
        text=written("text"),
        json=written("json"),
        skipped=tuple(sorted(set(skipped))),
    )

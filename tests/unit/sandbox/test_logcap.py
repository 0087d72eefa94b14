from __future__ import annotations

import hashlib
from pathlib import Path

from sandbox.logcap import CappedLog


def test_log_under_the_cap_is_kept_whole(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "build.log", cap=100)
    log.write(b"hello\n")
    summary = log.close()
    assert (tmp_path / "build.log").read_bytes() == b"hello\n"
    assert not summary.truncated and summary.bytes_seen == 6


def test_flood_is_cut_with_a_marker(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "build.log", cap=1000)
    for _ in range(500):
        log.write(b"x" * 99 + b"\n")
    summary = log.close()
    data = (tmp_path / "build.log").read_bytes()
    assert data.startswith(b"x" * 99 + b"\n")
    assert data.endswith(
        b"[hermetic: log truncated at 1000 bytes; at least 49000 more bytes dropped]\n"
    )
    assert len(data) < 1100
    assert summary.truncated and summary.bytes_seen == 50000 and summary.bytes_kept == 1000
    assert summary.sha256 == "sha256:" + hashlib.sha256(data).hexdigest()

from __future__ import annotations

import threading
from pathlib import Path

from sandbox.cri_log import CriLineJoiner, CriLogFollower

T = b"2026-11-22T00:11:57.648798993+00:00"


def test_partial_lines_are_joined_per_stream() -> None:
    joiner = CriLineJoiner()
    out = [
        joiner.feed(T + b" stderr P /usr/bin/sh: 1: "),
        joiner.feed(T + b" stdout F readonly:/etc/x"),
        joiner.feed(T + b" stderr F cannot create /etc/x"),
        joiner.feed(T + b" stdout F "),
    ]
    assert out == [None, b"readonly:/etc/x\n", b"/usr/bin/sh: 1: cannot create /etc/x\n", b"\n"]
    joiner.feed(T + b" stdout P no newline at the end")
    assert joiner.flush() == [b"no newline at the end"]


def test_follower_reads_to_the_end_once_finished(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    log.write_bytes(T + b" stdout F one\n" + T + b" stdout F tw")  # record cut mid-write
    seen: list[bytes] = []
    follower = CriLogFollower(log, seen.append)
    thread = threading.Thread(target=follower.run)
    thread.start()
    with log.open("ab") as stream:
        stream.write(b"o\n" + T + b" stdout F three\n")
    follower.finished.set()
    thread.join(5)
    assert seen == [b"one\n", b"two\n", b"three\n"]

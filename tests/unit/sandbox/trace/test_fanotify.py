"""Parsing fanotify's FID events into build-dir paths (no kernel needed)."""

from __future__ import annotations

import os
import struct

from sandbox.trace.fanotify import BuildReads
from sandbox.trace.fanotify_group import (
    FAN_CLOSE_NOWRITE,
    FAN_CREATE,
    FAN_ONDIR,
    FAN_Q_OVERFLOW,
    FAN_RENAME,
    INFO_DFID_NAME,
    INFO_FID,
    INFO_NEW_DFID_NAME,
    INFO_OLD_DFID_NAME,
)

BUILD_FS = b"B" * 8
STATE_FS = b"S" * 8


def handle(fsid: bytes, number: int) -> bytes:
    return fsid + struct.pack("<i", 1) + struct.pack("<Q", number)


def record(kind: int, handle_: bytes, name: str = "") -> bytes:
    fsid, handle_type, raw = handle_[:8], handle_[8:12], handle_[12:]
    body = fsid + struct.pack("<I", len(raw)) + handle_type + raw
    if name:
        body += name.encode() + b"\0"
    body += b"\0" * (-(len(body) + 4) % 4)
    return struct.pack("<BBH", kind, 0, len(body) + 4) + body


def event(mask: int, *records: bytes) -> bytes:
    info = b"".join(records)
    return struct.pack("<IBBHQii", 24 + len(info), 3, 0, 24, mask, -1, 0) + info


ROOT = handle(BUILD_FS, 1)
SUB = handle(BUILD_FS, 2)
MOVED = handle(BUILD_FS, 2)


def reader(max_paths: int = 1000, max_bytes: int = 1 << 40) -> BuildReads:
    read_end, write_end = os.pipe()
    os.close(write_end)
    return BuildReads(
        read_end, {ROOT: (None, "/build")}, STATE_FS, "build-ended-x", max_paths, max_bytes
    )


def mkdir(parent: bytes, name: str, made: bytes) -> bytes:
    return event(
        FAN_CREATE | FAN_ONDIR, record(INFO_DFID_NAME, parent, name), record(INFO_FID, made)
    )


def read(parent: bytes, name: str) -> bytes:
    return event(FAN_CLOSE_NOWRITE, record(INFO_DFID_NAME, parent, name))


def test_reads_are_placed_through_directory_handles() -> None:
    watch = reader()
    watch._parse(
        event(FAN_CLOSE_NOWRITE, record(INFO_DFID_NAME, ROOT, "in.txt"))
        + event(FAN_CREATE | FAN_ONDIR, record(INFO_DFID_NAME, ROOT, "src"), record(INFO_FID, SUB))
        + event(FAN_CLOSE_NOWRITE, record(INFO_DFID_NAME, SUB, "main.c"))
        + event(
            FAN_RENAME | FAN_ONDIR,
            record(INFO_OLD_DFID_NAME, ROOT, "src"),
            record(INFO_NEW_DFID_NAME, ROOT, "lib"),
            record(INFO_FID, MOVED),
        )
        + event(FAN_CLOSE_NOWRITE, record(INFO_DFID_NAME, MOVED, "main.c"))
        + event(FAN_CLOSE_NOWRITE, record(INFO_DFID_NAME, handle(BUILD_FS, 99), "lost"))
    )
    assert list(watch.result.reads.elements()) == [
        "/build/in.txt",
        "/build/src/main.c",
        "/build/lib/main.c",
    ]
    assert watch.result.unresolved == 1
    os.close(watch.group)


def test_the_sentinel_ends_the_builds_share_of_the_stream() -> None:
    watch = reader()
    watch._parse(
        event(FAN_CLOSE_NOWRITE, record(INFO_DFID_NAME, ROOT, "before"))
        + event(FAN_CREATE, record(INFO_DFID_NAME, ROOT, "build-ended-x"))  # wrong fs: a fake
        + event(FAN_CREATE, record(INFO_DFID_NAME, handle(STATE_FS, 1), "build-ended-x"))
        + event(FAN_CLOSE_NOWRITE, record(INFO_DFID_NAME, ROOT, "handback-copy"))
    )
    assert watch.result.finished
    assert list(watch.result.reads) == ["/build/before"]
    os.close(watch.group)


def test_overflow_is_reported() -> None:
    watch = reader()
    watch._parse(event(FAN_Q_OVERFLOW))
    assert watch.result.overflowed
    os.close(watch.group)


def test_distinct_paths_and_directories_are_capped_and_the_rest_counted() -> None:
    watch = reader(max_paths=3)
    many = b"".join(
        event(FAN_CLOSE_NOWRITE, record(INFO_DFID_NAME, ROOT, f"f{i}")) for i in range(10)
    )
    watch._parse(many + event(FAN_CLOSE_NOWRITE, record(INFO_DFID_NAME, ROOT, "f0")))
    assert watch.result.reads == {"/build/f0": 2, "/build/f1": 1, "/build/f2": 1}
    assert watch.result.dropped == 7
    # Directories beyond the cap are not placed: their reads count as unresolved.
    watch._parse(
        b"".join(
            event(
                FAN_CREATE | FAN_ONDIR,
                record(INFO_DFID_NAME, ROOT, f"d{i}"),
                record(INFO_FID, handle(BUILD_FS, 10 + i)),
            )
            for i in range(3)
        )
        + event(FAN_CLOSE_NOWRITE, record(INFO_DFID_NAME, handle(BUILD_FS, 12), "x"))
    )
    assert sorted(filter(None, map(watch.path_of, watch.tree))) == [
        "/build",
        "/build/d0",
        "/build/d1",
    ]
    assert watch.result.unresolved == 1
    os.close(watch.group)


def test_a_renamed_directory_moves_everything_below_it() -> None:
    a, sub = handle(BUILD_FS, 3), handle(BUILD_FS, 4)
    watch = reader()
    watch._parse(
        mkdir(ROOT, "a", a)
        + mkdir(a, "sub", sub)
        + read(sub, "f")
        + event(
            FAN_RENAME | FAN_ONDIR,
            record(INFO_OLD_DFID_NAME, ROOT, "a"),
            record(INFO_NEW_DFID_NAME, ROOT, "b"),
            record(INFO_FID, a),
        )
        + read(sub, "f")
    )
    # Before the fix the second read was placed at the stale /build/a/sub/f.
    assert watch.result.reads == {"/build/a/sub/f": 1, "/build/b/sub/f": 1}
    os.close(watch.group)


def test_the_paths_kept_are_bounded_by_bytes() -> None:
    deep = handle(BUILD_FS, 5)
    watch = reader(max_bytes=20_000)
    long = "d" * 250
    watch._parse(mkdir(ROOT, long, deep) + b"".join(read(deep, f"{long}{i}") for i in range(100)))
    kept = len(watch.result.reads)
    assert 0 < kept < 100 and watch.result.dropped == 100 - kept
    assert watch.kept_bytes <= 20_000
    # Negative control: the same reads under a roomy budget are all kept.
    roomy = reader()
    roomy._parse(mkdir(ROOT, long, deep) + b"".join(read(deep, f"{long}{i}") for i in range(100)))
    assert len(roomy.result.reads) == 100 and roomy.result.dropped == 0
    os.close(watch.group)
    os.close(roomy.group)

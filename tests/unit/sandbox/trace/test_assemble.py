"""Turning raw tracer events into a trace: attribution, the runner left out, writers."""

from __future__ import annotations

from typing import Any

from sandbox.trace.assemble import assemble
from sandbox.trace.fanotify import FileReads

# Host pids 100.. map to build pids: 1 init, 5 runner, 6 env->sh, 7 cat, 8 subshell.
PIDS: list[list[Any]] = [
    ["pid", 100, 1, 50],
    ["pid", 105, 5, 100],
    ["pid", 106, 6, 105],
    ["pid", 107, 7, 106],
    ["pid", 108, 8, 106],
]
RUNNER: list[list[Any]] = [
    ["exec", 100, "/run/podman-init", ["init"], True, []],
    ["exec", 105, "/.hermetic/busybox", ["busybox", "sh", "/.hermetic/runner.sh"], True, []],
    ["open", 105, "/build/staged", 0o1101],  # the runner's own copy: not the build's
    ["exec", 106, "/.hermetic/busybox", ["busybox", "env", "-i"], True, []],
]


def build(events: list[list[Any]], reads: FileReads | None = None) -> Any:
    return assemble(
        events=events,
        reads=reads,
        level="standard",
        build_dir="/build",
        initial_paths={"/build/in.txt"},
        interfaces=["lo"],
    )


def test_programs_tree_and_exit_status() -> None:
    trace = build(
        [
            *RUNNER,
            ["exec", 106, "/usr/bin/sh", ["sh", "-c", "x"], True, []],
            ["exec", 107, "/usr/local/bin/cat", ["cat"], False, []],  # PATH search miss
            ["exec", 107, "/usr/bin/cat", ["cat", "in.txt"], True, []],
            ["exit", 107, 0],
            ["exit", 106, 3],
            *PIDS,  # pid events may come late
        ]
    )
    assert [(e.pid, e.ppid, e.path) for e in trace.executions] == [
        (6, 5, "/usr/bin/sh"),
        (7, 6, "/usr/bin/cat"),
    ]
    assert trace.exec_failures == 1
    assert [(p.pid, p.exit_status) for p in trace.processes] == [(6, 3), (7, 0)]
    assert all(p.pid not in (1, 5) for p in trace.processes), "init and runner are not the build"
    assert trace.files == ()


def test_a_redirect_opened_by_the_shell_is_written_by_the_program() -> None:
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/sh", ["sh"], True, []],
            ["open", 106, "/build/out.txt", 0o1101],  # dash opens "> out.txt" itself
            ["exec", 107, "/usr/bin/cat", ["cat", "in.txt"], True, ["/build/out.txt", "/dev/null"]],
            ["open", 107, "/build/in.txt", 0],
            ["open", 108, "/build/sub.log", 0o101],  # a subshell that never execs
        ]
    )
    assert trace.writer_of("/build/out.txt").path == "/usr/bin/cat"
    assert trace.writer_of("/build/sub.log").path == "/usr/bin/sh"
    files = {f.path: f for f in trace.files}
    assert files["/build/out.txt"].created_by == (6,)
    assert files["/build/out.txt"].written_by == (6, 7)
    assert files["/build/in.txt"].read_by == (7,) and files["/build/in.txt"].created_by == ()
    assert "/build/staged" not in files


def test_rename_carries_the_writer_and_removal_forgets_it() -> None:
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/gcc", ["gcc"], True, []],
            ["open", 106, "/build/a.tmp", 0o1101],
            ["rename", 106, "/build/a.tmp", "/build/a.o"],
            ["open", 106, "/build/gone", 0o1101],
            ["unlink", 106, "/build/gone"],
            ["mkdir", 106, "/build/d"],
        ]
    )
    assert trace.writer_of("/build/a.o").path == "/usr/bin/gcc"
    assert trace.writer_of("/build/gone") is None
    files = {f.path: f for f in trace.files}
    assert files["/build/a.o"].renamed_from == "/build/a.tmp"
    assert files["/build/gone"].removed_by == (6,)
    assert files["/build/d"].created_by == (6,)


def test_nondeterminism_sources() -> None:
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/head", ["head"], True, []],
            ["open", 106, "/dev/urandom", 0],
            ["open", 106, "/etc/passwd", 0],
            ["getrandom", 106, 16, 0],
            ["getrandom", 106, 8, 1],
            ["uname", 106],
            ["listdir", 106, "/build"],
            ["listdir", 106, "/build"],
            ["cpus", 106],
        ]
    )
    found = {(n.source, n.detail): n.count for n in trace.nondeterminism}
    assert found == {
        ("random", "/dev/urandom"): 1,
        ("user_database", "/etc/passwd"): 1,
        ("getrandom", "16 bytes"): 1,
        ("heap_key", "getrandom(8, GRND_NONBLOCK)"): 1,
        ("uname", ""): 1,
        ("listdir", "/build"): 2,
        ("cpu_count", "sched_getaffinity"): 1,
    }
    assert trace.summary()["nondeterminism"]["listdir"] == 2


def test_network_attempts() -> None:
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/bash", ["bash"], True, []],
            ["net", 106, "connect", 2, 1, "127.0.0.1", 8080, "refused"],
            ["net", 106, "connect", 10, 2, "2001:db8::1", 53, "unreachable"],
        ]
    )
    assert [(n.family, n.type, n.address, n.port, n.failed) for n in trace.network] == [
        ("inet", "stream", "127.0.0.1", 8080, True),
        ("inet6", "dgram", "2001:db8::1", 53, True),
    ]
    assert trace.summary()["network_targets"] == [
        "connect 127.0.0.1:8080",
        "connect 2001:db8::1:53",
    ]


def test_fanotify_reads_without_a_pid_and_gaps() -> None:
    reads = FileReads(
        reads=["/build/in.txt", "/build/in.txt", "/build/src.c"], overflowed=True, finished=True
    )
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/cat", ["cat"], True, []],
            ["open", 106, "/build/in.txt", 0],
            ["unreadable", 106, 257, 3],
        ],
        reads,
    )
    files = {f.path: f for f in trace.files}
    assert files["/build/in.txt"].read_by == (6,) and files["/build/in.txt"].unattributed_reads == 1
    assert files["/build/src.c"].unattributed_reads == 1 and files["/build/src.c"].read_by == ()
    assert any("overflowed" in gap for gap in trace.gaps)
    assert any("could not be read" in gap for gap in trace.gaps)
    assert trace.to_json()["complete"] is False

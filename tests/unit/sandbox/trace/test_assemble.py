"""Turning raw tracer events into a trace: attribution (hermetic's own processes are
told by pid, not by path), writers, network scope, hermetic path attempts, gaps."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sandbox.trace.assemble import assemble
from sandbox.trace.fanotify import FileReads
from tests.schemas import validate

# Host pids 100.. map to build pids: 1 init, 5 runner, 6 env->nsenter->sh, 7 cat,
# 8 subshell, 4 the runner's staging shell, 3 its tar.
PIDS: list[list[Any]] = [
    ["pid", 100, 1, 50, 100],
    ["pid", 105, 5, 100, 105],
    ["pid", 106, 6, 105, 106],
    ["pid", 107, 7, 106, 107],
    ["pid", 108, 8, 106, 108],
    ["pid", 104, 4, 105, 104],
    ["pid", 103, 3, 104, 103],
]
RUNNER: list[list[Any]] = [
    ["exec", 100, "/run/podman-init", ["init"], True, []],
    ["exec", 105, "/.hermetic/busybox", ["busybox", "sh", "/.hermetic/runner.sh"], True, []],
    ["exec", 104, "/.hermetic/busybox", ["busybox", "nsenter", "-S", "1000"], False, []],
    ["exec", 104, "/proc/self/exe", ["sh", "-c", "tar -x"], True, []],
    ["exec", 103, "/proc/self/exe", ["tar", "-x"], True, []],
    ["open", 103, "/build/staged", 0o1101],  # the runner's staging: not the build's
    ["mkdir", 103, "/build/dir"],
    ["open", 105, "/build/x", 0o1101],  # the runner itself
    ["exec", 106, "/.hermetic/busybox", ["busybox", "env", "-i"], False, []],
    ["exec", 106, "/.hermetic/busybox", ["busybox", "nsenter", "-S", "1000"], False, []],
]


def build(events: list[list[Any]], reads: FileReads | None = None) -> Any:
    trace = assemble(
        events=events,
        reads=reads,
        level="standard",
        build_dir="/build",
        initial_paths={"/build/in.txt"},
        interfaces=["lo"],
    )
    validate(trace.to_json(), "trace.schema.json")  # what trace.json would hold
    return trace


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
    assert all(p.pid not in (1, 3, 4, 5) for p in trace.processes), "hermetic's are not the build"
    assert trace.files == ()
    assert trace.hermetic_path_attempts == ()


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
    summary = trace.summary()
    assert summary["network_attempts"] == 1 and summary["loopback_attempts"] == 1
    assert summary["network_targets"] == ["connect 2001:db8::1:53"]


def test_loopback_traffic_is_told_apart_from_attempts_to_reach_out() -> None:
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/python3", ["python3"], True, []],
            ["net", 106, "bind", 2, 1, "127.0.0.1", 8000, "bound"],
            ["net", 106, "connect", 2, 1, "127.0.0.1", 8000, "connected"],
            ["net", 106, "sendto", 10, 2, "::1", 53, "sent"],
            ["net", 106, "sendmmsg", 2, 2, "0.0.0.0", 9, "sent"],
            ["net", 106, "sendmmsg", 2, 2, "192.0.2.1", 9, "unreachable"],
            ["net", 106, "connect", 2, 1, "169.254.169.254", 80, "unreachable"],
            ["net", 106, "connect", 17, 3, "0800aabbcc", 0, "unsupported-family"],
        ]
    )
    assert [n.loopback for n in trace.network] == [True, True, True, True, False, False, False]
    summary = trace.summary()
    assert summary["loopback_attempts"] == 4
    assert summary["network_attempts"] == 3
    assert summary["network_targets"] == [
        "connect 0800aabbcc:0",
        "connect 169.254.169.254:80",
        "sendmmsg 192.0.2.1:9",
    ]
    assert [n["loopback"] for n in trace.to_json()["network"]][:1] == [True]


def test_fanotify_reads_without_a_pid_and_gaps() -> None:
    reads = FileReads(
        reads=Counter(["/build/in.txt", "/build/in.txt", "/build/src.c"]),
        overflowed=True,
        finished=True,
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


def test_the_build_reaching_for_hermetics_tools_is_recorded_as_the_builds() -> None:
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/sh", ["sh", "-c", "x"], True, []],
            # denied (the build cannot enter /.hermetic): an exec failure, and recorded
            ["exec", 107, "/.hermetic/busybox", ["/.hermetic/busybox", "nc"], False, []],
            ["open", 108, "/.hermetic/state/run.sh", 0o1101],
            ["rename", 108, "/build/a", "/.hermetic/out/a"],
        ]
    )
    assert trace.exec_failures == 1
    assert [(a.pid, a.call, a.path) for a in trace.hermetic_path_attempts] == [
        (7, "exec", "/.hermetic/busybox"),
        (8, "open", "/.hermetic/state/run.sh"),
        (8, "rename", "/.hermetic/out/a"),
    ]
    assert trace.summary()["hermetic_path_attempts"] == 3


def test_hermetics_tools_run_by_the_build_are_the_builds_and_so_is_their_traffic() -> None:
    # If the build could run the runner's busybox (it cannot), the path would not hide it.
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/sh", ["sh", "-c", "x"], True, []],
            ["exec", 107, "/.hermetic/busybox", ["busybox", "nc", "10.0.0.1", "80"], True, []],
            ["net", 107, "connect", 2, 1, "10.0.0.1", 80, "unreachable"],
            ["exec", 108, "/proc/self/exe", ["sh"], True, []],
            ["net", 108, "connect", 2, 1, "10.0.0.2", 80, "unreachable"],
        ]
    )
    assert [e.path for e in trace.executions] == [
        "/usr/bin/sh",
        "/.hermetic/busybox",
        "/proc/self/exe",
    ]
    assert trace.summary()["network_attempts"] == 2


def test_the_runners_children_are_hermetics_until_they_start_the_build() -> None:
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["net", 106, "connect", 2, 1, "10.0.0.9", 80, "unreachable"],  # not yet the build
            ["exec", 106, "/usr/bin/setarch", ["setarch", "linux64", "sh"], True, []],
            ["exec", 106, "/usr/bin/sh", ["sh"], True, []],
            ["net", 106, "connect", 2, 1, "10.0.0.1", 80, "unreachable"],
        ]
    )
    assert [e.path for e in trace.executions] == ["/usr/bin/setarch", "/usr/bin/sh"]
    assert [n.address for n in trace.network] == ["10.0.0.1"]


def test_threads_and_orphans_of_the_build_are_the_builds() -> None:
    trace = build(
        [
            *PIDS,
            # 109: a thread of the build's first process (its parent is the runner's);
            # 110: an orphan the kernel handed to init before its first traced call.
            ["pid", 109, 9, 105, 106],
            ["pid", 110, 10, 100, 110],
            *RUNNER,
            ["exec", 106, "/usr/bin/python3", ["python3"], True, []],
            ["net", 109, "connect", 2, 1, "10.0.0.1", 80, "unreachable"],
            ["net", 110, "connect", 2, 1, "10.0.0.2", 80, "unreachable"],
            ["open", 110, "/build/orphan.txt", 0o1101],
        ]
    )
    assert [(n.pid, n.address) for n in trace.network] == [(9, "10.0.0.1"), (10, "10.0.0.2")]
    assert "/build/orphan.txt" in {f.path for f in trace.files}


def test_init_and_runner_are_found_by_pid_without_a_pid_one() -> None:
    trace = assemble(
        events=[
            ["pid", 200, 7, 50, 200],
            ["pid", 201, 8, 200, 201],
            ["pid", 202, 9, 201, 202],
            ["exec", 200, "/run/podman-init", ["init"], True, []],
            ["exec", 201, "/.hermetic/busybox", ["busybox", "sh"], True, []],
            ["open", 201, "/build/runner-file", 0o101],
            ["exec", 202, "/usr/bin/make", ["make"], True, []],
        ],
        reads=None,
        level="standard",
        build_dir="/build",
        initial_paths=set(),
        interfaces=["lo"],
        init_pid=200,
    )
    assert [e.path for e in trace.executions] == ["/usr/bin/make"]
    assert trace.files == ()


def test_cut_argument_lists_are_a_gap() -> None:
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/sh", ["sh"], True, [], False],
            ["exec", 107, "/usr/bin/ld", ["ld", "x" * 10], True, [], True],
        ]
    )
    assert any("argument lists of 1 executions were cut" in gap for gap in trace.gaps)
    assert trace.summary()["complete"] is False

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
    ["exec", 100, "/run/podman-init", ["init"], "ran", []],
    ["exec", 105, "/.hermetic/busybox", ["busybox", "sh", "/.hermetic/runner.sh"], "ran", []],
    ["exec", 104, "/.hermetic/busybox", ["busybox", "nsenter", "-S", "1000"], "ran", []],
    ["exec", 104, "/proc/self/exe", ["sh", "-c", "tar -x"], "ran", []],
    ["exec", 103, "/proc/self/exe", ["tar", "-x"], "ran", []],
    ["open", 103, "/build/staged", 0o1101],  # the runner's staging: not the build's
    ["mkdir", 103, "/build/dir"],
    ["open", 105, "/build/x", 0o1101],  # the runner itself
    ["exec", 106, "/.hermetic/busybox", ["busybox", "env", "-i"], "ran", []],
    ["exec", 106, "/.hermetic/busybox", ["busybox", "nsenter", "-S", "1000"], "ran", []],
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
            *PIDS,  # each before the first other event of its pid
            *RUNNER,
            ["exec", 106, "/usr/bin/sh", ["sh", "-c", "x"], "ran", []],
            ["exec", 107, "/usr/local/bin/cat", ["cat"], "failed", []],  # PATH search miss
            ["exec", 107, "/usr/bin/cat", ["cat", "in.txt"], "ran", []],
            ["exit", 107, 0],
            ["exit", 106, 3],
        ]
    )
    assert [(e.pid, e.ppid, e.path) for e in trace.executions] == [
        (6, 5, "/usr/bin/sh"),
        (7, 6, "/usr/bin/cat"),
    ]
    assert trace.exec_failures == 1
    assert [(e.pid, e.path, e.argv) for e in trace.failed_executions] == [
        (7, "/usr/local/bin/cat", ("cat",))
    ]
    assert [(p.pid, p.exit_status) for p in trace.processes] == [(6, 3), (7, 0)]
    assert all(p.pid not in (1, 3, 4, 5) for p in trace.processes), "hermetic's are not the build"
    assert trace.files == ()
    assert trace.hermetic_path_attempts == ()


def test_a_redirect_opened_by_the_shell_is_written_by_the_program() -> None:
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/sh", ["sh"], "ran", []],
            ["open", 106, "/build/out.txt", 0o1101],  # dash opens "> out.txt" itself
            [
                "exec",
                107,
                "/usr/bin/cat",
                ["cat", "in.txt"],
                "ran",
                ["/build/out.txt", "/dev/null"],
            ],
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
            ["exec", 106, "/usr/bin/gcc", ["gcc"], "ran", []],
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
            ["exec", 106, "/usr/bin/head", ["head"], "ran", []],
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
            ["exec", 106, "/usr/bin/bash", ["bash"], "ran", []],
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
            ["exec", 106, "/usr/bin/python3", ["python3"], "ran", []],
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
            ["exec", 106, "/usr/bin/cat", ["cat"], "ran", []],
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
            ["exec", 106, "/usr/bin/sh", ["sh", "-c", "x"], "ran", []],
            # denied (the build cannot enter /.hermetic): an exec failure, and recorded
            ["exec", 107, "/.hermetic/busybox", ["/.hermetic/busybox", "nc"], "failed", []],
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
            ["exec", 106, "/usr/bin/sh", ["sh", "-c", "x"], "ran", []],
            ["exec", 107, "/.hermetic/busybox", ["busybox", "nc", "10.0.0.1", "80"], "ran", []],
            ["net", 107, "connect", 2, 1, "10.0.0.1", 80, "unreachable"],
            ["exec", 108, "/proc/self/exe", ["sh"], "ran", []],
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
            ["exec", 106, "/usr/bin/setarch", ["setarch", "linux64", "sh"], "ran", []],
            ["exec", 106, "/usr/bin/sh", ["sh"], "ran", []],
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
            ["exec", 106, "/usr/bin/python3", ["python3"], "ran", []],
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
            ["exec", 200, "/run/podman-init", ["init"], "ran", []],
            ["exec", 201, "/.hermetic/busybox", ["busybox", "sh"], "ran", []],
            ["open", 201, "/build/runner-file", 0o101],
            ["exec", 202, "/usr/bin/make", ["make"], "ran", []],
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
            ["exec", 106, "/usr/bin/sh", ["sh"], "ran", [], False],
            ["exec", 107, "/usr/bin/ld", ["ld", "x" * 10], "ran", [], True],
        ]
    )
    assert any("argument lists of 1 executions were cut" in gap for gap in trace.gaps)
    assert trace.summary()["complete"] is False


def test_a_host_pid_reused_by_the_build_is_the_builds() -> None:
    # 103 was the runner's staging tar; after it exited, a process of the build got the
    # same host pid. Its pid event comes again: its calls are the build's, not hidden.
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/sh", ["sh"], "ran", []],
            ["exit", 103, 0],
            ["pid", 103, 30, 106, 103],
            ["net", 103, "connect", 2, 1, "10.0.0.3", 80, "unreachable"],
            ["open", 103, "/build/made-by-30", 0o1101],
        ]
    )
    assert [(n.pid, n.address) for n in trace.network] == [(30, "10.0.0.3")]
    assert "/build/made-by-30" in {f.path for f in trace.files}
    # Negative control: without its new pid event the old identity would hide it.
    stale = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/sh", ["sh"], "ran", []],
            ["net", 103, "connect", 2, 1, "10.0.0.3", 80, "unreachable"],
        ]
    )
    assert stale.network == ()


def test_exec_outcomes_observed_in_the_process() -> None:
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/sh", ["sh"], "ran", []],
            # a link into /.hermetic: refused, and where it led is an attempt
            ["exec", 107, "/build/x", ["./x"], "failed", [], False, "/.hermetic/busybox"],
            # through /proc/self/cwd, or a memfd: ran, listed as named
            ["exec", 107, "/proc/self/cwd/evil", ["evil"], "ran", []],
            ["exec", 108, "/memfd:payload (deleted)", ["payload"], "unknown", []],
        ]
    )
    assert [(e.path, e.outcome) for e in trace.executions] == [
        ("/usr/bin/sh", "ran"),
        ("/proc/self/cwd/evil", "ran"),
        ("/memfd:payload (deleted)", "unknown"),
    ]
    assert [(a.pid, a.call, a.path) for a in trace.hermetic_path_attempts] == [
        (7, "exec", "/.hermetic/busybox")
    ]
    assert [e.path for e in trace.failed_executions] == ["/build/x"]
    assert trace.to_json()["executions"][2]["outcome"] == "unknown"


def test_links_truncation_and_mode_changes_are_recorded() -> None:
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/perl", ["perl"], "ran", []],
            ["link", 106, "/build/in.txt", "/build/out.bin"],
            ["symlink", 106, "/build/out.link"],
            ["truncate", 106, "/build/in.txt"],
            ["chmod", 106, "/build/out.bin"],
            ["mknod", 106, "/build/empty"],
            ["rename", 106, "/build/out.bin", "/build/empty", 2],  # RENAME_EXCHANGE
        ]
    )
    files = {f.path: f for f in trace.files}
    assert files["/build/out.bin"].created_by == (6,) and files["/build/out.bin"].changed_by == (6,)
    assert files["/build/out.link"].created_by == (6,)
    assert files["/build/in.txt"].written_by == (6,) and files["/build/in.txt"].created_by == ()
    assert files["/build/empty"].created_by == (6,)
    assert {"/build/out.bin", "/build/out.link", "/build/empty"} <= set(trace.writers)
    assert trace.summary()["files_created"] == 3


def test_the_kernels_count_raises_what_the_trace_missed() -> None:
    events = [
        *PIDS,
        *RUNNER,
        ["exec", 106, "/usr/bin/atk", ["atk"], "ran", []],
        ["net", 106, "connect", 2, 1, "10.0.0.1", 80, "unreachable"],
        ["net", 106, "connect", 2, 1, "127.0.0.1", 9, "refused"],
        ["net", 106, "sendto", 2, 2, "192.0.2.1", 53, "unobserved"],
        ["net", 106, "bind", 2, 2, "10.0.0.2", 53, "address-unavailable"],
    ]

    def traced(kernel: int | None) -> Any:
        return assemble(
            events=events,
            reads=None,
            level="standard",
            build_dir="/build",
            initial_paths=set(),
            interfaces=["lo"],
            kernel_no_route=kernel,
        )

    agreeing = traced(2)  # the connect and the send to outside
    assert agreeing.gaps == () and agreeing.summary()["network_attempts"] == 3
    hidden = traced(7)  # five more the trace never saw (or saw as loopback)
    assert hidden.unseen_network_attempts == 5
    assert hidden.summary()["network_attempts"] == 8
    assert any("5 attempts to reach outside are missing" in gap for gap in hidden.gaps)
    assert hidden.to_json()["kernel"] == {"no_route": 7, "unseen_network_attempts": 5}
    assert traced(None).gaps == ()  # not checked (the session says why when it cannot)


def test_repeated_listings_arrive_counted() -> None:
    trace = build(
        [
            *PIDS,
            *RUNNER,
            ["exec", 106, "/usr/bin/sh", ["sh"], "ran", []],
            ["listdir", 106, "/build", 250000],
        ]
    )
    assert {(n.source, n.count) for n in trace.nondeterminism} == {("listdir", 250000)}

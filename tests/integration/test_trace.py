"""Tracing real builds: programs, files, the output's writer, network attempts,
nondeterminism sources, and that tracing never changes what is built."""

from __future__ import annotations

from typing import Any

from sandbox.result import BuildStatus
from sandbox.trace.levels import TraceLevel
from tests.integration.conftest import Builder, log_of, trace_of
from tests.integration.test_isolation import Listener, _host_address

HEAD = '[build]\nimage = "hermetic-minimal"\nsource_date_epoch = 1\n'


def by_program(trace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["argv"][0].rsplit("/", 1)[-1]: e for e in trace["executions"]}


def test_programs_files_writer_urandom_and_listing(minimal_image: str, build: Builder) -> None:
    script = "cat in.txt > out.txt; head -c1 /dev/urandom > r; ls -f ."
    spec = f'{HEAD}command = ["sh", "-c", "{script}"]\noutputs = ["out.txt"]\n'
    result = build(spec, files={"in.txt": "hello\n"})
    assert result.status is BuildStatus.BUILT, log_of(result)
    trace = trace_of(result)
    assert trace["complete"] and trace["network_interfaces"] == ["lo"]
    programs = by_program(trace)
    assert programs["sh"]["argv"] == ["/usr/bin/sh", "-c", script]
    assert programs["cat"]["argv"] == ["cat", "in.txt"]
    assert programs["head"]["argv"] == ["head", "-c1", "/dev/urandom"]
    assert programs["ls"]["argv"] == ["ls", "-f", "."]
    cat, head, ls = programs["cat"]["pid"], programs["head"]["pid"], programs["ls"]["pid"]
    assert all(e["ppid"] == programs["sh"]["pid"] for e in (programs["cat"], programs["head"]))
    files = {f["path"]: f for f in trace["files"]}
    assert files["/build/in.txt"]["read_by"] == [cat]
    assert cat in files["/build/out.txt"]["written_by"]
    assert trace["writers"]["/build/out.txt"]["program"] == "/usr/bin/cat"
    assert trace["writers"]["/build/out.txt"]["argv"] == ["cat", "in.txt"]
    sources = {(n["source"], n.get("detail"), n["pid"]) for n in trace["nondeterminism"]}
    assert ("random", "/dev/urandom", head) in sources
    assert ("listdir", "/build", ls) in sources
    exits = {p["pid"]: p["exit_status"] for p in trace["processes"]}
    assert exits[cat] == exits[head] == exits[ls] == 0
    assert trace["network"] == []
    summary = result.trace
    assert summary["file"] == "trace.json" and summary["sha256"].startswith("sha256:")
    assert summary["nondeterminism"]["random"] == 1
    # Negative control: the same build without the urandom read has no such source.
    quiet = build(
        spec.replace("head -c1 /dev/urandom > r; ", ""), name="quiet", files={"in.txt": "hello\n"}
    )
    assert "random" not in quiet.trace["nondeterminism"]


NET = (
    "for t in tcp/127.0.0.1/{port} tcp/{host}/{port} udp/8.8.8.8/53 tcp/2001:db8::1/80; do "
    "(echo x > /dev/$t) 2>/dev/null && echo reached:$t || echo blocked:$t; done"
)


def test_network_attempts_are_traced_and_failed(minimal_image: str, build: Builder) -> None:
    listener = Listener()
    try:
        script = NET.format(port=listener.port, host=_host_address())
        spec = f'{HEAD}command = ["bash", "-c", "{script}"]\noutputs = ["hermetic.toml"]\n'
        result = build(spec)
    finally:
        listener.close()
    assert result.status is BuildStatus.BUILT, log_of(result)
    assert "reached" not in log_of(result) and listener.accepted == 0
    attempts = [
        (n["call"], n["family"], n["type"], n["address"], n["port"], n["failed"])
        for n in trace_of(result)["network"]
    ]
    assert attempts == [
        ("connect", "inet", "stream", "127.0.0.1", listener.port, True),
        ("connect", "inet", "stream", _host_address(), listener.port, True),
        ("connect", "inet", "dgram", "8.8.8.8", 53, True),
        ("connect", "inet6", "stream", "2001:db8::1", 80, True),
    ]
    outcomes = [n["outcome"] for n in trace_of(result)["network"]]
    assert outcomes == ["refused", "unreachable", "unreachable", "unreachable"]
    # The host's loopback is the build's own: the attempt stays in its namespace.
    assert [n["loopback"] for n in trace_of(result)["network"]] == [True, False, False, False]
    assert result.trace["network_attempts"] == 3 and result.trace["loopback_attempts"] == 1


def test_two_thousand_short_processes_are_all_accounted_for(
    minimal_image: str, build: Builder
) -> None:
    script = "i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done"
    result = build(f'{HEAD}command = ["sh", "-c", "{script}"]\noutputs = ["hermetic.toml"]\n')
    assert result.status is BuildStatus.BUILT, log_of(result)
    trace = trace_of(result)
    trues = [e for e in trace["executions"] if e["path"] == "/bin/true"]
    assert len(trues) == 2000
    exits = {p["pid"]: p["exit_status"] for p in trace["processes"]}
    assert all(exits[e["pid"]] == 0 for e in trues)
    assert len({e["pid"] for e in trues}) == 2000
    assert trace["complete"]


def test_deep_tracing_sees_files_outside_the_build_dir(minimal_image: str, build: Builder) -> None:
    spec = f'{HEAD}command = ["id", "-un"]\noutputs = ["hermetic.toml"]\n'
    deep = trace_of(build(spec, name="deep", trace=TraceLevel.DEEP))
    read = {f["path"] for f in deep["other_reads"]}
    assert "/etc/passwd" in read
    assert any(n["source"] == "user_database" for n in deep["nondeterminism"])
    # Standard tracing lets the C library's own opens pass unseen.
    standard = trace_of(build(spec, name="standard"))
    assert standard["other_reads"] == []
    assert not any(n["source"] == "user_database" for n in standard["nondeterminism"])


def test_tracing_off_writes_no_trace(minimal_image: str, build: Builder) -> None:
    result = build(f'{HEAD}command = ["true"]\noutputs = ["hermetic.toml"]\n', trace=TraceLevel.OFF)
    assert result.status is BuildStatus.BUILT
    assert result.trace == {"level": "off"}
    assert not (result.log.path.parent / "trace.json").exists()

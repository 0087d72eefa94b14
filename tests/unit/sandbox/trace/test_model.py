"""The trace's own limits: trace.json cut to its cap with a gap, the caps' settings."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from sandbox.config import SandboxConfig
from sandbox.errors import Error
from sandbox.trace.limits import DEFAULT_TRACE_LIMITS, MIN_FILE_BYTES, TraceLimits
from sandbox.trace.model import (
    BuildTrace,
    Execution,
    FileRecord,
    NetworkAttempt,
    NondeterminismRead,
    OutputWriter,
    TraceFormatError,
)


def trace(files: int) -> BuildTrace:
    return BuildTrace(
        level="standard",
        executions=tuple(
            Execution(seq=i + 1, pid=10 + i, ppid=1, path="/usr/bin/cc", argv=("cc", f"f{i}.c"))
            for i in range(files // 20)
        ),
        processes=(),
        exec_failures=0,
        files=tuple(FileRecord(path=f"/build/f{i}.o", written_by=(10,)) for i in range(files)),
        network=(
            NetworkAttempt(
                pid=10,
                call="connect",
                family="inet",
                type="stream",
                address="192.0.2.1",
                port=80,
                outcome="unreachable",
            ),
        ),
        nondeterminism=(),
        interfaces=("lo",),
        writers={  # written by the first execution (when there is one)
            f"/build/f{i}.o": OutputWriter(pid=10, path="/usr/bin/cc", argv=("cc", "f0.c"), seq=1)
            for i in range(files if files >= 20 else 0)
        },
    )


def test_a_trace_that_fits_is_kept_whole() -> None:
    small = trace(10)
    kept, data = small.fitted(MIN_FILE_BYTES)
    assert kept is small and data == small.to_json_bytes()
    assert kept.to_json()["complete"]


@pytest.mark.parametrize("cap", [MIN_FILE_BYTES, 100_000, 250_000])
def test_a_trace_past_its_cap_is_cut_and_says_so(cap: int) -> None:
    big = trace(5000)
    assert len(big.to_json_bytes()) > cap  # the negative control: it does not fit
    cut, data = big.fitted(cap)
    assert len(data) <= cap
    document = json.loads(data)
    assert document == cut.to_json() and not document["complete"]
    (gap,) = document["gaps"]
    assert gap.startswith(f"trace.json was cut at {cap} bytes") and "files" in gap
    # Network evidence is kept first; every list keeps its first items.
    assert document["network"] == [n.to_json() for n in big.network]
    kept = len(document["files"])
    assert 0 < kept < 5000 and document["files"] == [f.to_json() for f in big.files[:kept]]
    assert f"{5000 - kept} of 5000 files" in gap
    summary = cut.summary()
    assert summary["complete"] is False and summary["gaps"] == [gap]
    assert summary["network_attempts"] == 1


def test_a_cut_that_keeps_some_writers_writes_them() -> None:
    full = trace(1500)
    cap = len(full.to_json_bytes()) - 20_000  # every file fits, not every writer
    cut, data = full.fitted(cap)
    assert len(data) <= cap
    document = json.loads(data)
    assert len(document["files"]) == 1500 and 0 < len(document["writers"]) < 1500
    assert BuildTrace.from_json(document) == cut  # it reads back
    assert cut.writers == {path: full.writers[path] for path in document["writers"]}


def test_nothing_after_a_list_that_was_cut_is_kept() -> None:
    # Writers name executions: kept after a cut of the executions, they would name
    # ones left out, and trace.json would not read back.
    base = trace(6000)  # 300 executions of about 100 bytes
    # then one too long to fit, which writes the one output: it is left out, with room
    # to spare for the writer that names it
    last = Execution(seq=301, pid=400, ppid=1, path="/usr/bin/ld", argv=("ld", "x" * 100_000))
    writer = OutputWriter(pid=last.pid, path=last.path, argv=last.argv, seq=last.seq)
    full = replace(
        base, executions=(*base.executions, last), files=(), writers={"/build/out": writer}
    )
    cut, data = full.fitted(MIN_FILE_BYTES)
    document = json.loads(data)
    assert len(document["executions"]) == 300 and document["writers"] == {}
    assert BuildTrace.from_json(document) == cut


def test_trace_limits_from_the_environment() -> None:
    env = {
        "HERMETIC_TRACE_MAX_EVENTS": "5000",
        "HERMETIC_TRACE_MAX_BYTES": "8MiB",
        "HERMETIC_TRACE_MAX_FILE": "1MiB",
    }
    config = SandboxConfig.from_env(env)
    assert config.trace_limits == TraceLimits(
        max_events=5000, max_event_bytes=8 * 1024**2, max_file_bytes=1024**2
    )
    assert SandboxConfig.from_env({}).trace_limits == DEFAULT_TRACE_LIMITS
    with pytest.raises(Error, match="HERMETIC_TRACE_MAX_FILE"):
        SandboxConfig.from_env({"HERMETIC_TRACE_MAX_FILE": "1KiB"})
    with pytest.raises(Error, match="HERMETIC_TRACE_MAX_EVENTS='many'"):
        SandboxConfig.from_env({"HERMETIC_TRACE_MAX_EVENTS": "many"})
    with pytest.raises(ValueError, match="max_events"):
        TraceLimits(max_events=0)


def test_names_that_are_not_utf8_keep_trace_json_valid() -> None:
    odd = "/build/bad\udcffname"  # the byte 0xff of a name, as os.fsdecode keeps it
    bad = BuildTrace(
        level="standard",
        executions=(),
        processes=(),
        exec_failures=0,
        files=(FileRecord(path=odd, written_by=(10,)),),
        network=(),
        nondeterminism=(),
        interfaces=("lo",),
    )
    data = bad.to_json_bytes()
    data.decode("ascii")  # before: invalid UTF-8, and check dropped every hint
    assert json.loads(data)["files"][0]["path"] == odd


def test_trace_json_reads_back_as_the_trace() -> None:
    execution = trace(30).executions[0]  # trace.json names a writer's exec by its seq
    writer = OutputWriter(
        pid=execution.pid, path=execution.path, argv=execution.argv, seq=execution.seq
    )
    written = replace(
        trace(30),
        gaps=("no fanotify",),
        writers={"/build/f0.o": writer},
        nondeterminism=(NondeterminismRead(source="listdir", pid=None, detail="/build"),),
    )
    assert BuildTrace.from_json(json.loads(written.to_json_bytes())) == written


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("_schema", "https://example.org/other"),
        ("complete", True),  # with a gap: a trace cannot be both
        ("executions", [{"seq": 1, "pid": "10", "ppid": 1, "path": "/bin/cc", "argv": []}]),
        ("writers", {"/build/x": {"pid": 1, "program": "cc", "exec": 99999}}),  # no such exec
        ("network", None),
    ],
)
def test_a_damaged_trace_json_is_a_format_error(key: str, value: object) -> None:
    document = replace(trace(10), gaps=("a gap",)).to_json()
    BuildTrace.from_json(document)  # positive control
    document[key] = value
    with pytest.raises(TraceFormatError, match=key):
        BuildTrace.from_json(document)


def test_trace_json_has_one_line_per_item() -> None:
    written = trace(40)
    data = written.to_json_bytes()
    assert json.loads(data) == written.to_json()
    lines = data.decode("ascii").splitlines()
    # each execution, file and table entry is one line of its own, compact
    for execution in written.to_json()["executions"]:
        assert f"  {json.dumps(execution, separators=(',', ':'))}," in lines or (
            f"  {json.dumps(execution, separators=(',', ':'))}" in lines
        )
    assert sum(1 for line in lines if line.startswith('  {"path":"/build/f')) == 40
    assert lines[0] == "{" and lines[-1] == "}"


def test_a_name_that_is_not_utf8_stays_ascii_in_trace_json() -> None:
    odd = replace(trace(0), files=(FileRecord(path="/build/\udcff", written_by=(10,)),))
    data = odd.to_json_bytes()
    assert data.isascii() and b"\\udcff" in data
    assert json.loads(data)["files"][0]["path"] == "/build/\udcff"

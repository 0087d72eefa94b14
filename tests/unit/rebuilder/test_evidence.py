"""Evidence in the outputs (varied values, modes) and hints from a trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rebuilder.compare import Difference
from rebuilder.evidence import Embedded, embedded_in, marks, suspects
from rebuilder.hints import hints_for
from rebuilder.variations import NAMES, vary
from sandbox.digests import Sha256
from sandbox.environment import NORMALIZED
from sandbox.outputs import OutputFile
from sandbox.trace.model import BuildTrace
from sandbox.uris import TRACE_SCHEMA
from tests.unit.rebuilder.conftest import CONTEXT


def output(path: str, digest: str, mode: int = 0o644) -> OutputFile:
    return OutputFile(path=path, sha256=Sha256(digest * 64), size=1, mode=mode)


def test_marks_are_the_values_a_build_could_copy() -> None:
    environment = vary(NAMES, seed=3, context=CONTEXT, base=NORMALIZED)
    found = marks(NAMES, environment)
    assert found["build_path"] == (environment.build_dir,)
    assert found["hostname"] == (environment.hostname,)
    assert found["home"] == (environment.home,)
    assert set(found["environment"]) == set(environment.extra_env[0])
    assert "umask" not in found and "time" not in found  # nothing to look for


def test_embedded_values_are_found_and_counted(tmp_path: Path) -> None:
    binary = tmp_path / "a.out"
    binary.write_bytes(b"\0ELF..." + b"/var/build-abc123/src\0" * 3 + b"host-x")
    wanted = {"build_path": ("/var/build-abc123/src",), "hostname": ("variation-zzz",)}
    assert embedded_in(binary, wanted) == (
        Embedded(variation="build_path", value="/var/build-abc123/src", count=3),
    )


def test_empty_files_and_links_hold_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "link").symlink_to("empty")
    assert embedded_in(tmp_path / "empty", {"hostname": ("x",)}) == ()
    assert embedded_in(tmp_path / "link", {"hostname": ("x",)}) == ()


def test_suspects_from_values_and_modes() -> None:
    content = Difference(path="a", control=output("a", "1"), other=output("a", "2"))
    mode = Difference(path="b", control=output("b", "1"), other=output("b", "1", 0o755))
    found = [Embedded(variation="home", value="/home/x", count=1)]
    assert suspects(NAMES, [content], found) == ("home",)
    assert suspects(NAMES, [content, mode], found) == ("home", "umask")
    assert suspects(("home",), [mode], found) == ("home",)  # only what was varied
    assert mode.kind == "mode" and content.kind == "content"


TRACE: dict[str, Any] = {
    "processes": [
        {"pid": 1, "ppid": 0},
        {"pid": 5, "ppid": 1},
        {"pid": 9, "ppid": 5},
        {"pid": 10, "ppid": 5},
        {"pid": 12, "ppid": 1},
        {"pid": 20, "ppid": 1},
        {"pid": 21, "ppid": 20},
    ],
    "executions": [
        {"pid": 5, "argv": ["sh", "-c", "build"]},
        {"pid": 9, "argv": ["cat", "/dev/urandom"]},
        {"pid": 10, "argv": ["hostname"]},
        {"pid": 12, "argv": ["ls", "-f"]},
        {"pid": 20, "argv": ["make"]},
        {"pid": 21, "argv": ["cc", "-c", "x.c"]},
    ],
    "nondeterminism": [
        {"source": "listdir", "pid": 12, "detail": "/build"},
        {"source": "uname", "pid": 5},
        {"source": "random", "pid": 9, "detail": "/dev/urandom"},
        {"source": "uname", "pid": 10},
        {"source": "heap_key", "pid": 9, "detail": "getrandom(8, GRND_NONBLOCK)"},
        {"source": "listdir", "pid": None, "detail": "/build/sub"},
        {"source": "getrandom", "pid": 21, "detail": "8 bytes"},
        {"source": "listdir", "pid": 20, "detail": "/build"},
    ],
    "files": [
        # 9 created it, 10 appended to it; 10 read x.o, which 21 wrote
        {"path": "/build/out.bin", "created_by": [9], "written_by": [9, 10]},
        {"path": "/build/x.o", "created_by": [21], "written_by": [21], "read_by": [10]},
        {"path": "/build/x.c", "read_by": [21]},
    ],
    "writers": {
        "/build/out.bin": {"pid": 10, "program": "/usr/bin/hostname", "argv": ["hostname"]}
    },
}


def traced(compact: dict[str, Any]) -> BuildTrace:
    """A trace.json with the compact trace's records (and what hermetic adds), read back."""
    document = {
        "_schema": TRACE_SCHEMA,
        "level": "standard",
        "complete": True,
        "gaps": [],
        "network_interfaces": ["lo"],
        "notifications": 0,
        "tracer": {"events": 0, "dropped": 0, "peak_memory_bytes": 0},
        "exec_failures": 0,
        "other_reads": [],
        "network": [],
        "hermetic_path_attempts": [],
        "processes": [{**p, "execs": [], "exit_status": 0} for p in compact["processes"]],
        "executions": [
            {"seq": i, "ppid": 0, "path": e["argv"][0], **e}
            for i, e in enumerate(compact["executions"])
        ],
        "nondeterminism": [{"count": 1, **n} for n in compact["nondeterminism"]],
        "files": compact["files"],
        "writers": compact["writers"],
    }
    return BuildTrace.from_json(document)


def out_bin() -> list[Difference]:
    return [Difference(path="out.bin", control=output("out.bin", "1"), other=None)]


def test_hints_follow_every_writer_their_inputs_and_ancestors() -> None:
    (hint,) = hints_for(
        trace=traced(TRACE), build_dir="/build", found=out_bin(), embedded={}, culprits=[]
    )
    assert hint.writer is not None and hint.writer["pid"] == 10  # the last one
    touched = [(s.source, s.pid, s.relation) for s in hint.sources]
    assert touched == [
        ("random", 9, "its writer"),
        ("uname", 10, "its writer"),
        ("uname", 5, "an ancestor of its writer"),
        ("getrandom", 21, "wrote its input x.o"),
        ("listdir", 20, "an ancestor of the writer of x.o"),
    ]
    # ls ran beside the writers and wrote nothing they read; heap keys are noise
    assert all(s.pid != 12 and s.source != "heap_key" for s in hint.sources)
    assert [s.detail for s in hint.unattributed] == ["/build/sub"]


def test_sources_matching_a_culprit_come_first() -> None:
    (hint,) = hints_for(
        trace=traced(TRACE),
        build_dir="/build/",
        found=out_bin(),
        embedded={},
        culprits=["fileordering"],
    )
    assert hint.sources[0].source == "listdir"


def test_hints_without_a_trace_still_carry_output_evidence() -> None:
    mode = Difference(path="m", control=output("m", "1"), other=output("m", "1", 0o755))
    content = Difference(path="c", control=output("c", "1"), other=output("c", "2"))
    embedded = {"c": (Embedded(variation="build_path", value="/var/b", count=1),)}
    hints = hints_for(
        trace=None, build_dir="/build", found=[mode, content], embedded=embedded, culprits=[]
    )
    assert [h.path for h in hints] == ["m", "c"]  # equally strong: kept in path order
    assert hints[0].modes == ("0644", "0755") and hints[0].writer is None
    assert hints[1].embedded == embedded["c"]
    assert hints[1].to_json()["embedded"] == [
        {"variation": "build_path", "value": "/var/b", "count": 1}
    ]

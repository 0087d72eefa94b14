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
from tests.unit.rebuilder.test_variations import CONTEXT


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
    mode = Difference(path="b", control=output("b", "1"), other=output("b", "1", 0o664))
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
        {"pid": 12, "ppid": 1},
    ],
    "executions": [
        {"pid": 5, "argv": ["sh", "-c", "build"]},
        {"pid": 9, "argv": ["cat", "/dev/urandom"]},
        {"pid": 12, "argv": ["ls", "-f"]},
    ],
    "nondeterminism": [
        {"source": "listdir", "pid": 12, "detail": "/build"},
        {"source": "uname", "pid": 5},
        {"source": "random", "pid": 9, "detail": "/dev/urandom"},
        {"source": "heap_key", "pid": 9, "detail": "getrandom(8, GRND_NONBLOCK)"},
        {"source": "listdir", "pid": None, "detail": "/build/sub"},
    ],
    "writers": {"/build/out.bin": {"pid": 9, "program": "/usr/bin/cat", "argv": ["cat"]}},
}


def test_hints_follow_the_writer_and_its_ancestors() -> None:
    found = [Difference(path="out.bin", control=output("out.bin", "1"), other=None)]
    (hint,) = hints_for(trace=TRACE, build_dir="/build", found=found, embedded={}, culprits=[])
    assert hint.writer is not None and hint.writer["pid"] == 9
    touched = [(s.source, s.pid, s.program) for s in hint.sources]
    assert touched == [("random", 9, "cat /dev/urandom"), ("uname", 5, "sh -c build")]
    # the listing was by a process outside the writer's line; heap keys are noise
    assert all(s.source != "heap_key" for s in hint.sources)
    assert [s.detail for s in hint.unattributed] == ["/build/sub"]


def test_sources_matching_a_culprit_come_first() -> None:
    found = [Difference(path="out.bin", control=output("out.bin", "1"), other=None)]
    (hint,) = hints_for(
        trace=TRACE, build_dir="/build/", found=found, embedded={}, culprits=["kernel"]
    )
    assert [s.source for s in hint.sources] == ["uname", "random"]


def test_hints_without_a_trace_still_carry_output_evidence() -> None:
    mode = Difference(path="m", control=output("m", "1"), other=output("m", "1", 0o664))
    content = Difference(path="c", control=output("c", "1"), other=output("c", "2"))
    embedded = {"c": (Embedded(variation="build_path", value="/var/b", count=1),)}
    hints = hints_for(
        trace=None, build_dir="/build", found=[mode, content], embedded=embedded, culprits=[]
    )
    assert [h.path for h in hints] == ["m", "c"]  # equally strong: kept in path order
    assert hints[0].modes == ("0644", "0664") and hints[0].writer is None
    assert hints[1].embedded == embedded["c"]
    assert hints[1].to_json()["embedded"] == [
        {"variation": "build_path", "value": "/var/b", "count": 1}
    ]

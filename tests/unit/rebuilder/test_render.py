"""The terminal summary of a check: verdict first, then why, grouped for reading."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rebuilder.check import CheckResult
from rebuilder.compare import Difference
from rebuilder.evidence import Embedded
from rebuilder.hints import Hint, Source
from rebuilder.render import check_summary, shown
from sandbox.digests import Sha256
from sandbox.outputs import OutputFile


def output(digest: str, size: int = 10) -> OutputFile:
    return OutputFile(path="bin/app", sha256=Sha256(digest * 64), size=size, mode=0o755)


def listing(directory: str, pid: int = 7) -> Source:
    return Source(
        source="listdir", detail=directory, pid=pid, program="make all", relation="its writer"
    )


def result(hint: Hint) -> CheckResult:
    return CheckResult(
        reproducible=False,
        seed=42,
        variations=("build_path", "hostname"),
        skipped={"time": "libfaketime is not installed (package libfaketime)"},
        builds=(),
        differences=(Difference(path="bin/app", control=output("a"), other=output("b", 12)),),
        culprits=("build_path",),
        suspects=("build_path",),
        hints=(hint,),
        report=None,
        report_dir=Path("/tmp/check"),
        duration_s=3.25,
    )


def test_verdict_then_evidence_then_writer_then_sources() -> None:
    hint = Hint(
        path="bin/app",
        writer={"pid": 9, "program": "/usr/bin/ld", "argv": ["ld", "-o", "bin/app"]},
        sources=(listing("/build/src"), listing("/build/lib"), listing("/build/doc")),
        embedded=(Embedded(variation="build_path", value="/var/build-1/src", count=3),),
    )
    lines = check_summary(result(hint)).splitlines()
    assert lines[:5] == [
        "NOT REPRODUCIBLE: 1 output differs; culprit: build_path",
        "why:",
        "  bin/app",
        "    contains the build path '/var/build-1/src' (3 times) [build_path]",
        "    written by `ld -o bin/app` (pid 9)",
    ]
    # three listings by one process are one line, not three
    assert lines[5] == "    listdir /build/src and 2 more: `make all` (pid 7, its writer)"
    assert "  bin/app: sha256:aaaaaaaaaaaaaaaa… → sha256:bbbbbbbbbbbbbbbb… (10 → 12 bytes)" in lines
    assert "skipped time: libfaketime is not installed (package libfaketime)" in lines
    assert lines[-1] == "results /tmp/check"


def test_many_processes_are_cut_with_a_pointer_to_check_json() -> None:
    hint = Hint(
        path="bin/app",
        writer=None,
        sources=tuple(listing(f"/build/d{pid}", pid=pid) for pid in range(8)),
    )
    text = check_summary(result(hint))
    assert text.count("listdir /build/d") == 5
    assert "    … 3 more in check.json" in text.splitlines()


def test_multi_line_commands_stay_on_one_line() -> None:
    script = "fail=; \\\nfor t in a b; do\n  make $t; done"
    hint = Hint(
        path="bin/app",
        writer={"pid": 9, "program": "/bin/sh", "argv": ["/bin/sh", "-c", script]},
        sources=(Source(source="uname", detail="", pid=3, program=script, relation="its writer"),),
    )
    lines = check_summary(result(hint)).splitlines()
    assert "    written by `/bin/sh -c fail=; \\ for t in a b; do make $t; done` (pid 9)" in lines
    assert "    uname: `fail=; \\ for t in a b; do make $t; done` (pid 3, its writer)" in lines


FORGED = "out/x\nbuilt sha256:0000 (forged)\r\x1b[2K\u202eevil"


def test_names_cannot_forge_lines_or_drive_the_terminal() -> None:
    hint = Hint(path=FORGED, writer=None, sources=(listing(FORGED),))
    forged = replace(
        result(hint),
        differences=(Difference(path=FORGED, control=output("a"), other=output("b")),),
        notes=(f"note about {FORGED}",),
    )
    text = check_summary(forged)
    assert not [line for line in text.splitlines() if line.startswith("built sha256:0000")]
    assert "\r" not in text and "\x1b" not in text and "\u202e" not in text
    assert "out/x\\x0abuilt sha256:0000 (forged)\\x0d\\x1b[2K\\u202eevil" in text
    # The negative control: the name itself does hold a newline that would start a line.
    assert FORGED.splitlines()[1].startswith("built sha256:0000")


def test_shown_escapes_controls_and_keeps_the_rest() -> None:
    assert shown("a\tb\nc\x7f\x85é\udcff") == "a\\x09b\\x0ac\\x7f\\x85é\\udcff"
    assert shown("plain/path-1.0_ok") == "plain/path-1.0_ok"

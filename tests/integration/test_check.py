"""``hermetic check`` for real: small builds that each break for exactly one reason.

The output digest counts only the executable bit of a mode, so a file left to the
umask (0644 or 0664) is reproducible; the umask case embeds modes in an archive, as
packages do. The verdict and the culprit must be right.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rebuilder.check import CheckRequest, CheckResult, prepare_report_dir, run_check
from rebuilder.variations import NAMES, parse_vary
from sandbox.config import SandboxConfig
from sandbox.podman_backend import PodmanBackend
from sandbox.spec import Spec
from sandbox.trace.levels import TraceLevel
from tests.conftest import write_spec
from tests.integration.conftest import hello_spec

SPEC = """
[build]
image = "{image}"
command = ["sh", "-c", '''{script}''']
outputs = ["{output}"]
source_date_epoch = 1700000000
"""

# name, image, the build's script, the culprit (None: reproducible)
TABLE = [
    # Days since the epoch in 30-day steps: the clock alone decides it, not the zone
    # (the timezone variation moves 14 hours, which changes a calendar date half the day).
    ("time stamp", "minimal", "expr $(date +%s) / 2592000 > out.txt", "time"),
    ("build path", "minimal", "pwd > out.txt", "build_path"),
    ("hostname", "minimal", "uname -n > out.txt", "hostname"),
    ("uid", "minimal", "id -u > out.txt", "user_group"),
    ("home", "minimal", 'echo "$HOME" > out.txt', "home"),
    (
        "locale-dependent sort",
        "bookworm",
        "printf 'a\\nB\\nc\\n' | sort > out.txt",
        "locales",
    ),
    # The zone's offset: the zone alone decides it, not the hour the test runs at.
    ("timezone", "minimal", "date +%z > out.txt", "timezone"),
    (
        "umask",
        "minimal",
        "mkdir t && echo same > t/f && "
        "tar --mtime=@0 --owner=0 --group=0 --numeric-owner -cf out.txt t",
        "umask",
    ),
    ("unsorted ls -f", "minimal", "ls -f d > out.txt", "fileordering"),
    ("CPU count", "minimal", "nproc > out.txt", "num_cpus"),
    ("random bytes", "minimal", "head -c 16 /dev/urandom > out.txt", "inherent"),
    ("kernel release", "minimal", "uname -r > out.txt", "kernel"),
    (
        "extra environment",
        "minimal",
        "env | grep ^HERMETIC_VARIATION_ > out.txt || true",
        "environment",
    ),
    ("constant", "minimal", "echo hello > out.txt", None),
    (
        "SOURCE_DATE_EPOCH",
        "minimal",
        'date -u -d "@$SOURCE_DATE_EPOCH" +%F > out.txt',
        None,
    ),
]


def check_spec(
    tmp_path: Path,
    config: SandboxConfig,
    backend: PodmanBackend,
    spec_text: str,
    *,
    variations: tuple[str, ...] = NAMES,
    trace: TraceLevel = TraceLevel.STANDARD,
    jobs: int = 2,
) -> CheckResult:
    spec = Spec.from_toml(write_spec(tmp_path / "src", spec_text))
    directory = spec.source_dir / "d"
    directory.mkdir()
    for name in ("a", "b", "c"):
        (directory / name).write_text(name)
    request = CheckRequest(
        spec=spec,
        report_dir=prepare_report_dir(tmp_path / "report", tmp_path),
        variations=variations,
        seed=1234,
        jobs=jobs,
        trace=trace,
    )
    return run_check(request, config=config, backend=backend)


@pytest.mark.parametrize(("case", "image", "script", "culprit"), TABLE, ids=[c[0] for c in TABLE])
def test_verdict_and_culprit(
    tmp_path: Path,
    sandbox_config: SandboxConfig,
    backend: PodmanBackend,
    minimal_image: str,
    bookworm_image: str,
    case: str,
    image: str,
    script: str,
    culprit: str | None,
) -> None:
    if culprit == "num_cpus" and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: there is no smaller CPU count to show")
    image_name = minimal_image if image == "minimal" else bookworm_image
    text = SPEC.format(image=image_name, script=script, output="out.txt")
    result = check_spec(tmp_path, sandbox_config, backend, text)
    # the minimal image has no locale but C.UTF-8: nothing to switch to
    assert set(result.skipped) <= ({"locales"} if image == "minimal" else set())
    if culprit is None:
        assert result.reproducible, result.differences
        assert [b.role for b in result.builds] == ["control", "experiment"]
        return
    assert not result.reproducible
    assert list(result.culprits) == [culprit], [
        (b.variations, b.result.digest) for b in result.builds
    ]
    assert len(result.builds) < 2 + len(NAMES)  # fewer than one build per variation
    assert [d.path for d in result.differences] == ["out.txt"]


def test_hints_name_the_writer_and_what_it_touched(
    tmp_path: Path, sandbox_config: SandboxConfig, backend: PodmanBackend, minimal_image: str
) -> None:
    script = "head -c 16 /dev/urandom > out.txt; uname -n >> out.txt"
    result = check_spec(
        tmp_path,
        sandbox_config,
        backend,
        SPEC.format(image=minimal_image, script=script, output="out.txt"),
    )
    assert list(result.culprits) == ["inherent"]
    (hint,) = result.hints
    assert hint.writer is not None
    touched = {(source.source, source.detail) for source in hint.sources}
    assert ("random", "/dev/urandom") in touched
    assert ("uname", "") in touched
    # the host name the experiment got is in the output: that is evidence too
    assert [e.variation for e in hint.embedded] == ["hostname"]
    assert result.report is not None and result.report.html is not None
    assert result.report.html.exists()


def test_vary_minus_build_path_keeps_every_other_variation(
    tmp_path: Path, sandbox_config: SandboxConfig, backend: PodmanBackend, minimal_image: str
) -> None:
    script = "pwd > out.txt; uname -n >> out.txt"
    result = check_spec(
        tmp_path,
        sandbox_config,
        backend,
        SPEC.format(image=minimal_image, script=script, output="out.txt"),
        variations=parse_vary("-build_path"),
    )
    assert set(result.variations) | set(result.skipped) == set(NAMES) - {"build_path"}
    assert list(result.culprits) == ["hostname"]  # the build path stayed put


def test_builds_run_side_by_side_and_one_at_a_time_agree(
    tmp_path: Path, sandbox_config: SandboxConfig, backend: PodmanBackend, minimal_image: str
) -> None:
    text = SPEC.format(image=minimal_image, script="uname -n > out.txt", output="out.txt")
    parallel = check_spec(tmp_path / "p", sandbox_config, backend, text, jobs=3)
    serial = check_spec(tmp_path / "s", sandbox_config, backend, text, jobs=1)
    assert parallel.culprits == serial.culprits == ("hostname",)
    assert [b.result.digest for b in parallel.builds] == [b.result.digest for b in serial.builds]


@pytest.mark.slow
def test_hello_as_it_really_is(
    tmp_path: Path,
    sandbox_config: SandboxConfig,
    backend: PodmanBackend,
    bookworm_image: str,
    hello_tarball: Path,
) -> None:
    # Inspected: hello is built with -g, so the debug info holds the build directory.
    # (The linker also creates the binary 0777 & ~umask, 0755 or 0775: not counted.)
    result = check_spec(tmp_path, sandbox_config, backend, hello_spec(hello_tarball))
    assert not result.reproducible
    assert list(result.culprits) == ["build_path"]
    (hint,) = result.hints
    assert hint.path == "hello-2.10/hello"
    assert [e.variation for e in hint.embedded] == ["build_path"]
    assert hint.modes is None
    assert hint.writer is not None and hint.writer["program"].endswith("/ld")
    assert result.report is not None and result.report.html is not None


@pytest.mark.slow
def test_hello_with_its_build_path_fixed_is_reproducible(
    tmp_path: Path,
    sandbox_config: SandboxConfig,
    backend: PodmanBackend,
    bookworm_image: str,
    hello_tarball: Path,
) -> None:
    fixed = hello_spec(hello_tarball).replace(
        "./configure && make",
        './configure CFLAGS=\\"-g -O2 -ffile-prefix-map=$PWD=.\\" && make',
    )
    result = check_spec(tmp_path, sandbox_config, backend, fixed)
    assert result.reproducible, (result.culprits, result.differences)

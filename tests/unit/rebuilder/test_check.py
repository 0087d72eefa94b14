"""``run_check`` end to end on the fake backend: builds that depend on one thing each.

The fake backend runs no container; its script sees the plan's environment and
writes what a sensitive build would. The real thing is in tests/integration.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from rebuilder.check import CheckError, CheckRequest, CheckResult, prepare_report_dir, run_check
from rebuilder.variations import NAMES, parse_vary
from sandbox.config import SandboxConfig
from sandbox.environment import NORMALIZED, BuildEnvironment
from sandbox.fake import FakeBackend, FakeRun, Script
from sandbox.plan import BuildPlan
from sandbox.spec import Spec
from sandbox.trace.levels import TraceLevel
from tests.conftest import write_spec
from tests.unit.conftest import locked_images


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SandboxConfig:
    images = locked_images(tmp_path / "images")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    faketime = tmp_path / "libfaketime.so.1"
    faketime.write_bytes(b"")
    return SandboxConfig(
        store_dir=tmp_path / "store",
        work_dir=tmp_path / "work",
        images_dir=images,
        faketime=faketime,
        backend="fake",  # also diffoscope's stand-in: unit tests run no container
    )


@pytest.fixture
def spec(tmp_path: Path) -> Spec:
    path = write_spec(
        tmp_path / "src",
        """
[build]
image = "test-image"
command = ["make"]
outputs = ["out.txt"]
source_date_epoch = 1000
""",
    )
    return Spec.from_toml(path)


def check(
    tmp_path: Path,
    config: SandboxConfig,
    spec: Spec,
    script: Script,
    *,
    variations: tuple[str, ...] = NAMES,
    seed: int = 1,
    builds: int = 2,
    trace: TraceLevel = TraceLevel.OFF,
) -> tuple[CheckResult, FakeBackend]:
    backend = FakeBackend(script=script)
    request = CheckRequest(
        spec=spec,
        report_dir=prepare_report_dir(tmp_path / "report", tmp_path),
        variations=variations,
        seed=seed,
        builds=builds,
        trace=trace,
    )
    return run_check(request, config=config, backend=backend, euid=1000), backend


Write = Callable[[BuildEnvironment], bytes | tuple[bytes, int]]


def script(write: Write) -> Script:
    """A build writing ``write(environment)`` into out.txt (bytes, or (bytes, mode))."""

    def run(build_dir: Path, plan: BuildPlan) -> FakeRun:
        value = write(plan.environment)
        content, mode = value if isinstance(value, tuple) else (value, 0o644)
        (build_dir / "out.txt").write_bytes(content)
        (build_dir / "out.txt").chmod(mode)
        return FakeRun(log=b"built\n")

    return run


CASES: list[tuple[str, Write]] = [
    ("hostname", lambda env: env.hostname.encode()),
    ("build_path", lambda env: f"compiled in {env.build_dir}".encode()),
    ("home", lambda env: env.home.encode()),
    ("user_group", lambda env: f"by {env.uid}".encode()),
    ("locales", lambda env: b"a B" if env.lang == "C.UTF-8" else b"B a"),
    ("timezone", lambda env: b"00" if env.tz == "UTC" else b"14"),
    ("umask", lambda env: f"archived mode {0o666 & ~int(env.umask, 8):o}".encode()),
    ("fileordering", lambda env: env.source_order.value.encode()),
    ("time", lambda env: b"2014" if env.clock_offset is None else b"2015"),
    ("num_cpus", lambda env: b"4" if env.cpus is None else b"1"),
    ("aslr", lambda env: str(env.aslr).encode()),
    ("kernel", lambda env: b"6.18" if not env.uname26 else b"2.6.58"),
    ("environment", lambda env: repr(env.extra_env).encode()),
]


@pytest.mark.parametrize(("culprit", "write"), CASES, ids=[c[0] for c in CASES])
def test_each_single_sensitivity_is_found(
    tmp_path: Path, config: SandboxConfig, spec: Spec, culprit: str, write: Write
) -> None:
    result, backend = check(tmp_path, config, spec, script(write))
    assert result.reproducible is False
    assert list(result.culprits) == [culprit]
    # fewer builds than the two first plus one per variation
    assert len(backend.plans) < 2 + len(NAMES)
    document = json.loads((tmp_path / "report" / "check.json").read_text())
    assert document["culprits"] == [culprit] and document["reproducible"] is False
    assert [d["path"] for d in document["differences"]] == ["out.txt"]


def test_values_in_the_output_make_suspects_and_save_builds(
    tmp_path: Path, config: SandboxConfig, spec: Spec
) -> None:
    result, _ = check(tmp_path, config, spec, script(lambda env: env.hostname.encode()))
    assert result.suspects == ("hostname",)
    roles = [b.role for b in result.builds]
    # control + experiment, then hostname alone + everything else; the latter repeats
    # the control's digest, which shows the build repeats: no control-again is needed
    assert roles == ["control", "experiment"] + ["culprit-search"] * 2
    assert [b.variations for b in result.builds[2:]] == [
        ("hostname",),
        tuple(n for n in NAMES if n != "hostname"),
    ]
    (hint,) = result.hints
    assert hint.embedded[0].variation == "hostname"


def test_control_again_fills_a_spare_slot(
    tmp_path: Path, config: SandboxConfig, spec: Spec
) -> None:
    # two suspects and the rest: three builds on two jobs leave a slot for the control
    result, _ = check(
        tmp_path, config, spec, script(lambda env: f"{env.hostname} {env.home}".encode())
    )
    assert result.suspects == ("hostname", "home")
    assert list(result.culprits) == ["hostname", "home"]
    roles = [b.role for b in result.builds]
    assert roles == ["control", "experiment", "control-again"] + ["culprit-search"] * 3


def test_control_again_at_the_end_when_nothing_repeated_the_control(
    tmp_path: Path, config: SandboxConfig, spec: Spec
) -> None:
    # every search build varies a culprit: none repeats the control, so it is built again
    result, _ = check(
        tmp_path,
        config,
        spec,
        script(lambda env: f"{env.hostname} {env.home}".encode()),
        variations=("hostname", "home"),
    )
    assert list(result.culprits) == ["hostname", "home"]
    roles = [b.role for b in result.builds]
    assert roles == ["control", "experiment", "culprit-search", "culprit-search", "control-again"]


def test_inherent_when_the_first_search_batch_repeats_nothing(
    tmp_path: Path, config: SandboxConfig, spec: Spec
) -> None:
    # random bytes beside the host name: the host name is a suspect, but neither it
    # alone nor the rest repeats the control; the control built again differs too
    result, _ = check(
        tmp_path, config, spec, script(lambda env: os.urandom(8) + env.hostname.encode())
    )
    assert result.suspects == ("hostname",)
    assert list(result.culprits) == ["inherent"]
    roles = [b.role for b in result.builds]
    assert roles == ["control", "experiment", "culprit-search", "culprit-search", "control-again"]


def test_a_single_variation_is_checked_against_the_control_again(
    tmp_path: Path, config: SandboxConfig, spec: Spec
) -> None:
    result, _ = check(
        tmp_path, config, spec, script(lambda env: env.hostname.encode()), variations=("hostname",)
    )
    assert list(result.culprits) == ["hostname"]
    assert [b.role for b in result.builds] == ["control", "experiment", "control-again"]
    random, _ = check(
        tmp_path / "random", config, spec, script(lambda env: os.urandom(8)), variations=("home",)
    )
    assert list(random.culprits) == ["inherent"]


def test_another_experiment_that_repeats_the_control_shows_the_build_repeats(
    tmp_path: Path, config: SandboxConfig, spec: Spec
) -> None:
    # --builds 3 with different seeds: the second experiment's varied user happens to
    # write what the control wrote (uid parity), the first's does not
    def parity(env: BuildEnvironment) -> bytes:
        return b"even" if env.uid % 2 == 0 else b"odd"

    for seed in range(1, 40):
        result, _ = check(
            tmp_path / str(seed),
            config,
            spec,
            script(parity),
            variations=("user_group", "hostname"),
            seed=seed,
            builds=3,
        )
        experiments = [b for b in result.builds if b.role == "experiment"]
        digests = {b.result.digest for b in experiments}
        control = result.builds[0].result.digest
        if control in digests and len(digests) == 2:
            break
    else:
        pytest.fail("no seed gives one experiment of each parity")
    assert list(result.culprits) == ["user_group"]
    assert "control-again" not in [b.role for b in result.builds]


def test_only_the_experiments_are_traced(tmp_path: Path, config: SandboxConfig, spec: Spec) -> None:
    # the hints read the differing experiment's trace, and nothing reads the others'
    result, backend = check(
        tmp_path,
        config,
        spec,
        script(lambda env: env.hostname.encode()),
        trace=TraceLevel.STANDARD,
    )
    assert {b.role for b in result.builds} == {"control", "experiment", "culprit-search"}
    assert len(backend.plans) == len(result.builds) == 4
    # the experiment is the one build that varies both the host name and the build path
    # (the search builds the host name alone, and the rest without it)
    everything = [
        p
        for p in backend.plans
        if p.environment.hostname != NORMALIZED.hostname
        and p.environment.build_dir != NORMALIZED.build_dir
    ]
    assert len(everything) == 1
    assert [p for p in backend.plans if p.trace is not None] == everything


def test_reproducible(tmp_path: Path, config: SandboxConfig, spec: Spec) -> None:
    result, backend = check(tmp_path, config, spec, script(lambda env: b"same"), builds=3)
    assert result.reproducible is True
    assert [b.role for b in result.builds] == ["control", "experiment", "experiment"]
    assert result.culprits == () and result.report is None
    # each experiment varies everything, with its own seed
    first, second = (p.environment for p in backend.plans if p.environment != NORMALIZED)
    assert first.build_dir != second.build_dir != NORMALIZED.build_dir


def test_random_output_is_inherent(tmp_path: Path, config: SandboxConfig, spec: Spec) -> None:
    result, _ = check(tmp_path, config, spec, script(lambda env: os.urandom(16)))
    assert list(result.culprits) == ["inherent"]
    assert "control-again" in [b.role for b in result.builds]


def test_an_interaction(tmp_path: Path, config: SandboxConfig, spec: Spec) -> None:
    def both(env: BuildEnvironment) -> bytes:
        return b"odd" if env.tz != "UTC" and env.home != NORMALIZED.home else b"ok"

    result, _ = check(tmp_path, config, spec, script(both))
    assert list(result.culprits) == ["home+timezone"]


def test_executable_bit_difference_needs_no_diffoscope(
    tmp_path: Path, config: SandboxConfig, spec: Spec
) -> None:
    def write(env: BuildEnvironment) -> tuple[bytes, int]:
        return b"x", 0o644 if env.umask == "0022" else 0o755

    result, _ = check(tmp_path, config, spec, script(write))
    (difference,) = result.differences
    assert difference.kind == "mode" and result.report is None
    assert result.hints[0].modes == ("0644", "0755")
    assert list(result.culprits) == ["umask"]


def test_modes_the_umask_leaves_alone_do_not_count(
    tmp_path: Path, config: SandboxConfig, spec: Spec
) -> None:
    def write(env: BuildEnvironment) -> tuple[bytes, int]:
        return b"x", 0o666 & ~int(env.umask, 8)  # 0644 or 0664: a file left to the umask

    result, _ = check(tmp_path, config, spec, script(write))
    assert result.reproducible and not result.differences
    modes = {b.result.outputs[0].mode for b in result.builds}
    assert modes == {0o644, 0o664}  # recorded as they are, not counted


def test_content_difference_gets_diffoscope_reports(
    tmp_path: Path, config: SandboxConfig, spec: Spec
) -> None:
    result, _ = check(tmp_path, config, spec, script(dict(CASES)["hostname"]))
    report = result.report
    assert report is not None and not report.error
    assert report.html is not None and report.html.exists()
    assert report.json is not None and report.json.exists()
    assert (
        report.text is not None and "variation-" in report.text.read_text()
    )  # the experiment's host name


def test_vary_minus_one_keeps_the_others(tmp_path: Path, config: SandboxConfig, spec: Spec) -> None:
    result, backend = check(
        tmp_path,
        config,
        spec,
        script(lambda env: env.hostname.encode()),
        variations=parse_vary("-build_path"),
    )
    experiment = next(p.environment for p in backend.plans if p.environment != NORMALIZED)
    assert experiment.build_dir == NORMALIZED.build_dir
    assert experiment.hostname != NORMALIZED.hostname and experiment.umask == "0002"
    assert "build_path" not in result.variations and len(result.variations) == len(NAMES) - 1


def test_unavailable_variations_are_skipped_and_said(
    tmp_path: Path, config: SandboxConfig, spec: Spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    result, _ = check(tmp_path, config, spec, script(lambda env: b"same"))
    assert "num_cpus" in result.skipped and "num_cpus" not in result.variations


def test_a_failing_control_build_is_an_error(
    tmp_path: Path, config: SandboxConfig, spec: Spec
) -> None:
    with pytest.raises(CheckError, match="control build failed"):
        check(tmp_path, config, spec, lambda build_dir, plan: FakeRun(exit_code=2))


def test_an_experiment_that_fails_is_a_difference(
    tmp_path: Path, config: SandboxConfig, spec: Spec
) -> None:
    def fails_for_other_users(build_dir: Path, plan: BuildPlan) -> FakeRun:
        (build_dir / "out.txt").write_text("x")
        return FakeRun(exit_code=0 if plan.environment.uid == NORMALIZED.uid else 1)

    result, _ = check(tmp_path, config, spec, fails_for_other_users)
    assert list(result.culprits) == ["user_group"]
    assert any("did not finish" in note for note in result.notes)


def test_seed_repeats_a_check(tmp_path: Path, config: SandboxConfig, spec: Spec) -> None:
    _, first = check(tmp_path / "a", config, spec, script(lambda env: b"same"), seed=9)
    _, second = check(tmp_path / "b", config, spec, script(lambda env: b"same"), seed=9)
    # the builds ran side by side, so compare what was built, not in which order
    assert {p.environment for p in first.plans} == {p.environment for p in second.plans}
    assert len({p.environment for p in first.plans}) == 2


def test_report_dir_is_never_someone_elses(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(CheckError, match="not a hermetic check directory"):
        prepare_report_dir(precious, tmp_path)
    assert (precious / "thesis.tex").exists()
    ours = prepare_report_dir(tmp_path / "ours", tmp_path)
    (ours / "old").write_text("from an earlier check")
    assert not (prepare_report_dir(ours, tmp_path) / "old").exists()


def test_request_bounds(spec: Spec, tmp_path: Path) -> None:
    with pytest.raises(CheckError, match="at least 2 builds"):
        CheckRequest(spec=spec, report_dir=tmp_path, variations=NAMES, seed=1, builds=1)
    with pytest.raises(CheckError, match="--jobs"):
        CheckRequest(spec=spec, report_dir=tmp_path, variations=NAMES, seed=1, jobs=0)

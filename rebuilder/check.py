"""``hermetic check``: build under variations, compare, find the culprits, explain.

A control build runs in the normalized environment, experiments vary everything that
must not matter. When they differ, group testing finds the culprit variations (and a
rebuild of the control tells inherent nondeterminism from environment sensitivity when
no search build repeated the control), diffoscope compares the differing outputs while
the search runs, and the experiment's trace says which process wrote each of them and
what it consulted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from rebuilder.attest.untrusted_json import UntrustedJsonError, parse_json
from rebuilder.compare import Difference, differences, same
from rebuilder.culprits import find_culprits
from rebuilder.diffreport import DiffReport, diff_outputs
from rebuilder.errors import UserError
from rebuilder.evidence import Embedded, embedded_in, marks, suspects
from rebuilder.hints import Hint, hints_for
from rebuilder.variations import NAMES, VariationContext, unavailable, vary
from sandbox.backend import Cancel, SandboxBackend
from sandbox.build import ARTIFACTS_DIR, TRACE_FILE, BuildRequest, run_build
from sandbox.config import SandboxConfig
from sandbox.environment import NORMALIZED
from sandbox.errors import BuildCancelled
from sandbox.images import ImageCatalog
from sandbox.observer import BuildObserver, NullObserver
from sandbox.result import BuildResult
from sandbox.source_tree import OUT_MARKER
from sandbox.spec import Spec
from sandbox.trace.levels import TraceLevel
from sandbox.trace.model import BuildTrace, TraceFormatError
from sandbox.uris import CHECK_SCHEMA
from sandbox.workspace import claim_dir

log = logging.getLogger(__name__)

INHERENT = "inherent"


class BuildRole(StrEnum):
    """Why a check made a build."""

    CONTROL = "control"  # the normalized environment
    EXPERIMENT = "experiment"  # every variation at once
    CONTROL_AGAIN = "control-again"  # tells inherent nondeterminism from variations
    CULPRIT_SEARCH = "culprit-search"  # a group of variations, in the search


class CheckError(UserError):
    """A check could not decide (a build failed, nothing to vary)."""


@dataclass(frozen=True, kw_only=True)
class CheckRequest:
    """One check: what to build, how often, what to vary."""

    spec: Spec
    report_dir: Path
    variations: tuple[str, ...]
    seed: int
    builds: int = 2
    jobs: int = 2
    trace: TraceLevel = TraceLevel.STANDARD

    def __post_init__(self) -> None:
        if self.builds < 2:
            raise CheckError(f"--builds {self.builds}: a check needs at least 2 builds")
        if self.jobs < 1:
            raise CheckError(f"--jobs {self.jobs}: at least 1")


@dataclass(frozen=True, kw_only=True)
class CheckBuild:
    """One build of a check, and why it was made."""

    name: str
    role: BuildRole
    variations: tuple[str, ...]
    seed: int
    result: BuildResult

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role.value,
            "variations": list(self.variations),
            "seed": self.seed,
            "status": self.result.status.value,
            "digest": f"sha256:{self.result.digest}" if self.result.digest else None,
            "outputs": [item.to_json() for item in self.result.outputs],
            "out_dir": self.result.out_dir,
        }


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """What a check found."""

    reproducible: bool
    seed: int
    variations: tuple[str, ...]
    skipped: dict[str, str]
    builds: tuple[CheckBuild, ...]
    differences: tuple[Difference, ...]
    culprits: tuple[str, ...]
    suspects: tuple[str, ...]  # what the outputs pointed at before the search
    hints: tuple[Hint, ...]
    report: DiffReport | None
    report_dir: Path
    duration_s: float
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        report = self.report
        return {
            "_schema": CHECK_SCHEMA,
            "reproducible": self.reproducible,
            "seed": self.seed,
            "variations": list(self.variations),
            "skipped_variations": self.skipped,
            "culprits": list(self.culprits),
            "suspects": list(self.suspects),
            "hints": [hint.to_json() for hint in self.hints],
            "differences": [d.to_json() for d in self.differences],
            "builds": [build.to_json() for build in self.builds],
            "report": str(report.html) if report and report.html else None,
            "reports": {
                "html": str(report.html) if report and report.html else None,
                "text": str(report.text) if report and report.text else None,
                "json": str(report.json) if report and report.json else None,
                "skipped": list(report.skipped) if report else [],
                "error": report.error if report else "",
            },
            "report_dir": str(self.report_dir),
            "duration_s": round(self.duration_s, 3),
            "notes": list(self.notes),
        }


class CheckObserver(Protocol):
    """Progress of a check's builds (they may run side by side)."""

    def build_started(self, name: str, role: str, variations: tuple[str, ...]) -> None: ...

    def build_finished(self, name: str, result: BuildResult) -> None: ...

    def build_observer(self, name: str) -> BuildObserver: ...


class NullCheckObserver:
    def build_started(self, name: str, role: str, variations: tuple[str, ...]) -> None:
        pass

    def build_finished(self, name: str, result: BuildResult) -> None:
        pass

    def build_observer(self, name: str) -> BuildObserver:
        return NullObserver()


def prepare_report_dir(report: Path | None, cwd: Path) -> Path:
    """The check's directory: given, or fresh under ./hermetic-check/, emptied if ours.

    Raises:
        CheckError: the directory exists and is not one hermetic made.
    """
    if report is None:
        parent = cwd / "hermetic-check"
        parent.mkdir(exist_ok=True)
        (parent / OUT_MARKER).touch()
        report = parent / datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    report = report.resolve()
    if not claim_dir(report, "hermetic check"):
        raise CheckError(
            f"{report} exists and is not a hermetic check directory; "
            "choose another --report or remove it"
        )
    return report


def variation_context(spec: Spec, config: SandboxConfig) -> VariationContext:
    """What the image and this host offer to the variations."""
    locales: tuple[str, ...] | None = None
    definition = ImageCatalog(config.images_dir).definition(
        spec.image, spec_dir=spec.path.resolve().parent
    )
    if definition is not None:
        locales = tuple(line.split()[0] for line in definition.recipe.locales)
    return VariationContext(
        locales=locales,
        cpus=len(os.sched_getaffinity(0)),
        faketime=config.faketime.is_file(),
    )


class _Inherent(Exception):
    """The second control build differs from the first: nothing varied, yet different."""


class _Check:
    def __init__(
        self,
        request: CheckRequest,
        config: SandboxConfig,
        backend: SandboxBackend,
        observer: CheckObserver,
        context: VariationContext,
        euid: int | None,
    ) -> None:
        self.request = request
        self.euid = euid
        self.config = config
        self.backend = backend
        self.observer = observer
        self.context = context
        self.builds: list[CheckBuild] = []
        # Set when the check can no longer decide (the control failed, a build could not
        # run): the builds in flight are stopped at once instead of running to the end.
        self.cancel = Cancel()

    def run(self, batch: Sequence[tuple[BuildRole, tuple[str, ...], int]]) -> list[CheckBuild]:
        """Build each (role, variations, seed) side by side, up to --jobs at once.

        Raises:
            CheckError: the control build failed (the others were stopped).
            Error: a build could not run (the others were stopped).
        """
        named: list[tuple[str, BuildRole, tuple[str, ...], int]] = []
        for role, variations, seed in batch:
            name = f"{len(self.builds) + len(named) + 1:02d}-{role}"
            named.append((name, role, variations, seed))
        with ThreadPoolExecutor(max_workers=self.request.jobs) as pool:
            done = list(pool.map(lambda item: self._one(*item), named))
        finished = [build for build in done if build is not None]
        self.builds.extend(finished)
        for build in finished:
            if build.role is BuildRole.CONTROL and not build.result.built:
                raise control_failed(build)
        if len(finished) != len(done):
            raise CheckError("the check's builds were stopped")  # not reached: see _one
        return finished

    def _one(
        self, name: str, role: BuildRole, variations: tuple[str, ...], seed: int
    ) -> CheckBuild | None:
        if self.cancel.is_set():
            return None
        environment = vary(variations, seed=seed, context=self.context, base=NORMALIZED)
        self.observer.build_started(name, role, variations)
        # Only an experiment's trace is ever read (the hints): the other builds are
        # compared by their digests alone and run untraced, which saves the tracer's work.
        trace = self.request.trace if role is BuildRole.EXPERIMENT else TraceLevel.OFF
        try:
            result = run_build(
                BuildRequest(
                    spec=self.request.spec,
                    out_dir=self.request.report_dir / "builds" / name,
                    trace=trace,
                    environment=environment,
                    cancel=self.cancel,
                ),
                config=self.config,
                backend=self.backend,
                observer=self.observer.build_observer(name),
                euid=self.euid,
            )
        except BuildCancelled:
            return None
        except BaseException:
            self.cancel.set()  # this check cannot finish: stop the others now
            raise
        if role is BuildRole.CONTROL and not result.built:
            self.cancel.set()  # nothing can be compared with a failed control
        self.observer.build_finished(name, result)
        return CheckBuild(name=name, role=role, variations=variations, seed=seed, result=result)


def control_failed(control: CheckBuild) -> CheckError:
    """The error a check ends with when its control build failed."""
    return CheckError(
        f"the control build failed ({control.result.reason}); nothing can be compared. "
        f"Log: {control.result.log.path}"
    )


def run_check(
    request: CheckRequest,
    *,
    config: SandboxConfig,
    backend: SandboxBackend,
    observer: CheckObserver | None = None,
    euid: int | None = None,
) -> CheckResult:
    """Run a check (see the module docstring); each build runs as ``euid`` (the caller's
    effective user id; default: this process's).

    Raises:
        CheckError: the control build failed, or nothing can be varied here.
        Error: a build could not run at all.
    """
    started = time.monotonic()
    context = variation_context(request.spec, config)
    skipped = unavailable(request.variations, context)
    varied = tuple(name for name in request.variations if name not in skipped)
    if not varied:
        raise CheckError("nothing to vary: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    check = _Check(request, config, backend, observer or NullCheckObserver(), context, euid)
    first = check.run(
        [(BuildRole.CONTROL, (), request.seed)]
        + [
            (BuildRole.EXPERIMENT, varied, request.seed + index)
            for index in range(request.builds - 1)
        ]
    )
    control, experiments = first[0], first[1:]
    differing = [e for e in experiments if not same(control.result, e.result)]
    if not differing:
        return _result(request, check, varied, skipped, started, reproducible=True)
    experiment = differing[0]
    found = tuple(differences(control.result, experiment.result))
    embedded = _embedded(experiment, found, context)
    suspected = suspects(varied, found, [e for items in embedded.values() for e in items])
    content = [d.path for d in found if d.kind == "content"]
    # diffoscope needs only the control and this experiment: it runs while the search
    # builds (filling the slots a search batch leaves idle), not after them. Leaving the
    # block waits for it, also when the search raises.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hermetic-diffoscope") as side:
        pending = (
            side.submit(
                diff_outputs,
                control=Path(control.result.out_dir) / ARTIFACTS_DIR,
                other=Path(experiment.result.out_dir) / ARTIFACTS_DIR,
                paths=content,
                report_dir=request.report_dir,
                config=config,
            )
            if content
            else None  # modes or missing files only: nothing for diffoscope
        )
        repeated = len(differing) < len(experiments)  # another experiment matched
        culprits = _CulpritSearch(check, control, experiment, repeated=repeated).find(
            varied, suspected
        )
        hints = hints_for(
            trace=_trace(experiment, config.trace_limits.max_file_bytes)
            if request.trace is not TraceLevel.OFF
            else None,
            build_dir=experiment.result.build_dir,
            found=found,
            embedded=embedded,
            culprits=culprits,
        )
        report = pending.result() if pending is not None else None
    notes = []
    if not experiment.result.built:
        notes.append(f"the experiment build did not finish: {experiment.result.reason}")
    return _result(
        request,
        check,
        varied,
        skipped,
        started,
        reproducible=False,
        differences=found,
        culprits=tuple(culprits),
        suspects=suspected,
        hints=tuple(hints),
        report=report,
        notes=tuple(notes),
    )


class _CulpritSearch:
    """Builds variation sets against the control until the culprits are known.

    Suspects (variations the outputs point at) are built alone, beside one build of
    everything else, and the rest is found by group testing (rebuilder.culprits).

    Varying things proves nothing if the build differs with nothing varied, so the
    control is built again ("control-again"; if it differs, the culprit is
    ``inherent``) unless some other build already repeated the control's digest, which
    shows the same. It costs no time in a batch with a slot to spare (an odd number of
    builds, at the default 2 jobs) and is built there; otherwise the first batch goes
    without it (it usually repeats the control: a suspect alone beside a reproducing
    rest) and, if nothing has repeated the control by then, it is built alone before the
    next batch, or at the end. The choice never depends on --jobs, so neither do the
    builds a check makes.
    """

    def __init__(
        self, check: _Check, control: CheckBuild, experiment: CheckBuild, *, repeated: bool
    ) -> None:
        self.check = check
        self.control = control
        self.seed = experiment.seed
        self.repeated = repeated  # some build other than the control had its digest
        self.inherent_checked = False
        self.batches = 0

    def differs(self, sets: Sequence[tuple[str, ...]]) -> list[bool]:
        batch = [(BuildRole.CULPRIT_SEARCH, _in_order(group), self.seed) for group in sets]
        if self._needs_control_again():
            if len(batch) % 2 == 1 or not batch:  # a slot to spare, or nothing else
                batch.insert(0, (BuildRole.CONTROL_AGAIN, (), self.seed))
            elif self.batches > 0:
                self._control_again()  # alone: an inherent build ends the search here
        results = self.check.run(batch)
        self.batches += 1
        if results and results[0].role is BuildRole.CONTROL_AGAIN:
            self._judge(results.pop(0))
        repeats = [same(self.control.result, build.result) for build in results]
        self.repeated = self.repeated or any(repeats)
        return [not repeat for repeat in repeats]

    def _needs_control_again(self) -> bool:
        return not self.inherent_checked and not self.repeated

    def _control_again(self) -> None:
        (again,) = self.check.run([(BuildRole.CONTROL_AGAIN, (), self.seed)])
        self._judge(again)

    def _judge(self, again: CheckBuild) -> None:
        self.inherent_checked = True
        if not same(self.control.result, again.result):
            raise _Inherent
        self.repeated = True

    def find(self, varied: tuple[str, ...], suspected: tuple[str, ...]) -> list[str]:
        try:
            if len(varied) == 1:
                self.differs([])  # only the inherent check: the one variation is it
                return list(varied)
            culprits = find_culprits(varied, self.differs, suspects=suspected)
            if self._needs_control_again():  # no search build repeated the control
                self._control_again()
            return culprits
        except _Inherent:
            return [INHERENT]


def _in_order(group: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in NAMES if name in group)


def _embedded(
    experiment: CheckBuild, found: tuple[Difference, ...], context: VariationContext
) -> dict[str, tuple[Embedded, ...]]:
    """Varied values the experiment's differing outputs contain, by path."""
    environment = vary(
        experiment.variations, seed=experiment.seed, context=context, base=NORMALIZED
    )
    wanted = marks(experiment.variations, environment)
    artifacts = Path(experiment.result.out_dir) / ARTIFACTS_DIR
    found_in = {}
    for difference in found:
        if difference.kind == "content":
            items = embedded_in(artifacts / difference.path, wanted)
            if items:
                found_in[difference.path] = items
    return found_in


def _trace(build: CheckBuild, max_bytes: int) -> BuildTrace | None:
    """The build's trace.json, read and validated (unreadable evidence is no evidence)."""
    path = Path(build.result.out_dir) / TRACE_FILE
    try:
        return BuildTrace.from_json(parse_json(path.read_bytes(), str(path), max_bytes=max_bytes))
    except OSError:
        return None
    except (UntrustedJsonError, TraceFormatError) as e:
        log.warning("%s; hints without the trace", e)
        return None


def _result(
    request: CheckRequest,
    check: _Check,
    varied: tuple[str, ...],
    skipped: dict[str, str],
    started: float,
    *,
    reproducible: bool,
    differences: tuple[Difference, ...] = (),
    culprits: tuple[str, ...] = (),
    suspects: tuple[str, ...] = (),
    hints: tuple[Hint, ...] = (),
    report: DiffReport | None = None,
    notes: tuple[str, ...] = (),
) -> CheckResult:
    result = CheckResult(
        reproducible=reproducible,
        seed=request.seed,
        variations=varied,
        skipped=skipped,
        builds=tuple(check.builds),
        differences=differences,
        culprits=culprits,
        suspects=suspects,
        hints=hints,
        report=report,
        report_dir=request.report_dir,
        duration_s=time.monotonic() - started,
        notes=notes,
    )
    request.report_dir.mkdir(parents=True, exist_ok=True)
    (request.report_dir / "check.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result

"""A check's verdict as an in-toto Statement: about the control build's outputs, with the
predicate :class:`rebuilder.formats.check.CheckPredicate`."""

from __future__ import annotations

from datetime import datetime

from rebuilder.check import CheckResult
from rebuilder.formats.check import CheckedBuild, CheckPredicate
from rebuilder.formats.fields import Subject
from sandbox.digests import sha256_file

CHECK_ATTESTATION_FILE = "check.intoto.json"


def _report_digests(result: CheckResult) -> dict[str, str]:
    report = result.report
    if report is None:
        return {}
    found: dict[str, str] = {}
    for kind, path in (("html", report.html), ("text", report.text), ("json", report.json)):
        if path is not None and path.is_file():
            found[kind] = sha256_file(path)[0]
    return found


def check_predicate(result: CheckResult, *, builder_id: str, now: datetime) -> CheckPredicate:
    """The verdict of a check that ended at ``now`` (the checker's clock)."""
    return CheckPredicate(
        reproducible=result.reproducible,
        culprits=tuple(result.culprits),
        variations=tuple(result.variations),
        skipped=dict(result.skipped),
        seed=result.seed,
        builds=tuple(
            CheckedBuild(
                name=build.name,
                role=build.role.value,
                variations=tuple(build.variations),
                status=build.result.status.value,
                sha256=build.result.digest or None,
                image=build.result.image,
                source_sha256=build.result.source_digest,
            )
            for build in result.builds
        ),
        differences=tuple(difference.to_json() for difference in result.differences),
        report_digests=_report_digests(result),
        checker_id=builder_id,
        hermetic_version=result.builds[0].result.hermetic_version,
        finished_on=now,
    )


def check_statement(result: CheckResult, *, builder_id: str, now: datetime) -> bytes:
    """The Statement payload; subjects are the control build's outputs."""
    predicate = check_predicate(result, builder_id=builder_id, now=now)
    subjects = [Subject(item.path, item.sha256) for item in result.builds[0].result.outputs]
    return predicate.statement(subjects)

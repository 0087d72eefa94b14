"""A check's verdict as an in-toto Statement: about the control build's outputs, with a
predicate of ours. A signed "not reproducible" is evidence too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rebuilder.attest.statement import make_statement, subject
from rebuilder.check import CheckResult
from sandbox.digests import sha256_file

CHECK_PREDICATE = "https://hermetic.dev/attestations/check/v1"
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


def check_statement(result: CheckResult, *, builder_id: str) -> bytes:
    """The Statement payload; subjects are the control build's outputs."""
    control = result.builds[0].result
    predicate: dict[str, Any] = {
        "reproducible": result.reproducible,
        "culprits": list(result.culprits),
        "variations": list(result.variations),
        "skippedVariations": dict(result.skipped),
        "seed": result.seed,
        "builds": [
            {
                "name": build.name,
                "role": build.role,
                "variations": list(build.variations),
                "status": build.result.status.value,
                "digest": f"sha256:{build.result.digest}" if build.result.digest else None,
                "image": build.result.image,
                "sourceDigest": f"sha256:{build.result.source_digest}",
            }
            for build in result.builds
        ],
        "differences": [difference.to_json() for difference in result.differences],
        "reportDigests": {kind: {"sha256": d} for kind, d in _report_digests(result).items()},
        "checker": {"id": builder_id, "version": control.hermetic_version},
        "finishedOn": datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    subjects = [subject(item.path, item.sha256) for item in control.outputs]
    return make_statement(subjects, CHECK_PREDICATE, predicate)

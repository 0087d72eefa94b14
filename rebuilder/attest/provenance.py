"""SLSA Provenance v1 for one hermetic build: what was built, from what, how, and the
evidence that it was hermetic (network namespace, network attempts, limits in force)."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from typing import Any

from rebuilder import purls
from rebuilder.attest.predicates import SourceRef
from rebuilder.attest.statement import SLSA_PROVENANCE_V1, make_statement, subject
from sandbox.digests import sha256_bytes
from sandbox.result import BuildResult

BUILD_TYPE = "https://hermetic.dev/build-types/podman-sandbox/v1"
INPUT_PREFIX = "inputs/"
PROVENANCE_FILE = "provenance.intoto.json"


def default_builder_id() -> str:
    """``HERMETIC_BUILDER_ID``, else this account on this host (a local builder)."""
    explicit = os.environ.get("HERMETIC_BUILDER_ID")
    if explicit:
        return explicit
    return f"https://hermetic.dev/builders/local#{getpass.getuser()}@{socket.getfqdn()}"


def _bare(digest: str) -> str:
    return digest.removeprefix("sha256:")


def _dependencies(
    result: BuildResult, source: SourceRef, spec_sha256: str | None
) -> list[dict[str, Any]]:
    repository, _, image_digest = result.image.partition("@")
    found = [
        {"name": "image", "uri": repository, "digest": {"sha256": _bare(image_digest)}},
        source.to_dependency(),
    ]
    if spec_sha256 is not None:
        found.append({"name": "spec", "digest": {"sha256": _bare(spec_sha256)}})
    for item in result.inputs:
        # prefixed: an input placed at "source" or "spec" must not read as hermetic's own
        entry: dict[str, Any] = {
            "name": f"{INPUT_PREFIX}{item.dest}",
            "uri": item.url,
            "digest": {"sha256": _bare(item.sha256)},
        }
        if purl := purls.for_url(item.url):  # a package from a known registry
            entry["annotations"] = {"purl": purl}
        found.append(entry)
    return found


def _byproducts(result: BuildResult, result_json: bytes) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [
        {"name": "result.json", "digest": {"sha256": sha256_bytes(result_json)}},
        {"name": "build.log", "digest": {"sha256": _bare(result.log.sha256)}},
    ]
    trace = result.trace
    if trace.get("sha256"):
        found.append({"name": "trace.json", "digest": {"sha256": _bare(trace["sha256"])}})
    found.append(
        {
            "name": "hermeticity",
            "annotations": {
                "networkInterfaces": trace.get("network_interfaces"),
                # Attempts to reach outside the build's network namespace; traffic on
                # its own loopback is counted apart.
                "networkAttempts": trace.get("network_attempts"),
                "loopbackAttempts": trace.get("loopback_attempts"),
                "networkTargets": trace.get("network_targets"),
                "traceLevel": trace.get("level"),
                "traceComplete": trace.get("complete"),
                "traceGaps": trace.get("gaps"),
                "limits": {limit.name: limit.to_json() for limit in result.limits},
                "resources": result.resources.to_json(),
                "exitCode": result.exit_code,
            },
        }
    )
    return found


def provenance_statement(
    result: BuildResult,
    *,
    spec_document: Mapping[str, Any],
    result_json: bytes,
    builder_id: str,
    spec_sha256: str | None = None,
    source: SourceRef | None = None,
) -> bytes:
    """The Statement payload: subjects are the outputs; the predicate SLSA Provenance v1.

    Args:
        result: a build that produced its outputs.
        spec_document: the spec as given (the parsed hermetic.toml).
        result_json: the bytes of result.json as published (its digest is a byproduct).
        builder_id: who built it (runDetails.builder.id).
        spec_sha256: the sha256 of the spec file's bytes (None: not recorded, and a gate
            counts the spec as unknown).
        source: the source as bound (see :func:`rebuilder.attest.git_source.git_source`);
            default: the result's tree digest alone.
    """
    if source is not None and source.sha256 != result.source_digest:
        raise ValueError("the source named must be the tree the build used")
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {"spec": dict(spec_document)},
            "internalParameters": {
                "environment": dict(result.env),
                "buildDir": result.build_dir,
                "sourceDateEpoch": result.source_date_epoch,
                "sourceDateEpochFrom": result.source_date_epoch_from,
                "traceLevel": result.trace.get("level"),
            },
            "resolvedDependencies": _dependencies(
                result, source or SourceRef(sha256=result.source_digest), spec_sha256
            ),
        },
        "runDetails": {
            "builder": {"id": builder_id, "version": {"hermetic": result.hermetic_version}},
            "metadata": {
                "invocationId": result.build_id,
                "startedOn": result.started_at,
                "finishedOn": result.finished_at,
            },
            "byproducts": _byproducts(result, result_json),
        },
    }
    subjects = [subject(item.path, item.sha256) for item in result.outputs]
    return make_statement(subjects, SLSA_PROVENANCE_V1, predicate)

"""SLSA Provenance v1 for one hermetic build, made from its result (the format is
:class:`rebuilder.formats.provenance.Provenance`)."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from typing import Any

from rebuilder import purls
from rebuilder.formats.fields import Subject
from rebuilder.formats.provenance import (
    INPUT_PREFIX,
    Dependency,
    Hermeticity,
    Provenance,
    SourceRef,
)
from sandbox.digests import sha256_bytes
from sandbox.result import BuildResult
from sandbox.uris import LOCAL_BUILDER

PROVENANCE_FILE = "provenance.intoto.json"


def default_builder_id() -> str:
    """``HERMETIC_BUILDER_ID``, else this account on this host (a local builder)."""
    explicit = os.environ.get("HERMETIC_BUILDER_ID")
    if explicit:
        return explicit
    return f"{LOCAL_BUILDER}#{getpass.getuser()}@{socket.getfqdn()}"


def _bare(digest: str) -> str:
    return digest.removeprefix("sha256:")


def provenance_statement(
    result: BuildResult,
    *,
    spec_document: Mapping[str, Any],
    result_json: bytes,
    builder_id: str,
    spec_sha256: str | None = None,
    source: SourceRef | None = None,
) -> bytes:
    """The Statement payload of a build that produced its outputs: the subjects are the
    outputs, the predicate its :class:`Provenance`.

    Args:
        result: the build.
        spec_document: the spec as given (the parsed hermetic.toml).
        result_json: the bytes of result.json as published (its digest is a byproduct).
        builder_id: who built it (runDetails.builder.id).
        spec_sha256: the sha256 of the spec file's bytes (None: not recorded, and a gate
            counts the spec as unknown).
        source: the source as bound (see :func:`rebuilder.attest.git_source.git_source`);
            default: the result's tree digest alone.

    Raises:
        ValueError: ``source`` is not the tree the build used.
    """
    if source is not None and source.sha256 != result.source_digest:
        raise ValueError("the source named must be the tree the build used")
    repository, _, image_digest = result.image.partition("@")
    trace = result.trace
    byproducts = [
        Dependency(name="result.json", sha256=sha256_bytes(result_json)),
        Dependency(name="build.log", sha256=_bare(result.log.sha256)),
    ]
    if trace.get("sha256"):
        byproducts.append(Dependency(name="trace.json", sha256=_bare(trace["sha256"])))
    provenance = Provenance(
        builder_id=builder_id,
        spec=dict(spec_document),
        environment=dict(result.env),
        build_dir=result.build_dir,
        source_date_epoch=result.source_date_epoch,
        source_date_epoch_from=result.source_date_epoch_from,
        trace_level=trace.get("level"),
        image=Dependency(name="image", uri=repository, sha256=_bare(image_digest)),
        source=source or SourceRef(sha256=result.source_digest),
        spec_sha256=_bare(spec_sha256) if spec_sha256 is not None else None,
        inputs=tuple(
            Dependency(
                name=f"{INPUT_PREFIX}{item.dest}",
                uri=item.url,
                sha256=_bare(item.sha256),
                purl=purls.for_url(item.url),  # a package from a known registry
            )
            for item in result.inputs
        ),
        hermetic_version=result.hermetic_version,
        invocation_id=result.build_id,
        started_on=result.started_at,
        finished_on=result.finished_at,
        byproducts=tuple(byproducts),
        hermeticity=Hermeticity(
            network_interfaces=_texts(trace.get("network_interfaces")),
            # attempts to reach outside the build's network namespace; traffic on its
            # own loopback is counted apart
            network_attempts=trace.get("network_attempts"),
            loopback_attempts=trace.get("loopback_attempts"),
            network_targets=_texts(trace.get("network_targets")),
            trace_level=trace.get("level"),
            trace_complete=trace.get("complete"),
            trace_gaps=_texts(trace.get("gaps")),
            limits={limit.name: limit.to_json() for limit in result.limits},
            resources=result.resources.to_json(),
            exit_code=result.exit_code,
        ),
    )
    return provenance.statement([Subject(item.path, item.sha256) for item in result.outputs])


def _texts(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)

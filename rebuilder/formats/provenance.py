"""SLSA Provenance v1 as hermetic writes it for one build: what was built, from what
(image, source, spec, inputs), how, and the ``hermeticity`` byproduct (network namespace,
network attempts, trace completeness, limits in force).

:meth:`Provenance.from_dict` reads any SLSA v1 provenance: fields hermetic does not write
are ignored, a field it reads with the wrong type raises :class:`PredicateError`, and an
absent one is ``None`` (unknown, which the gate counts against admission).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from rebuilder.attest.untrusted_json import shown
from rebuilder.formats.fields import Fields, Predicate, PredicateError, once, parse_time
from sandbox.digests import is_sha256
from sandbox.uris import BUILD_TYPE, SLSA_PROVENANCE

INPUT_PREFIX = "inputs/"  # an input placed at "source" or "spec" must not read as ours
_GIT_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # sha1 or sha256 repositories


@dataclass(frozen=True, kw_only=True)
class SourceRef:
    """What a build was made from: hermetic's source tree digest and, when the builder saw
    that the tree is exactly a git commit's content, that commit and its repository."""

    sha256: str
    git_commit: str | None = None
    uri: str | None = None  # git+<repository>@<commit>[#<subdirectory>]

    def __post_init__(self) -> None:
        if not is_sha256(self.sha256):
            raise PredicateError(f"source tree digest {shown(self.sha256)} is not 64 hex digits")
        if self.git_commit is not None and not _GIT_COMMIT.fullmatch(self.git_commit):
            raise PredicateError(f"git commit {shown(self.git_commit)} is not a commit id")

    def to_dependency(self) -> dict[str, Any]:
        """As a SLSA resolved dependency named ``source``."""
        digest = {"sha256": self.sha256}
        if self.git_commit is not None:
            digest["gitCommit"] = self.git_commit
        found: dict[str, Any] = {"name": "source", "digest": digest}
        if self.uri is not None:
            found["uri"] = self.uri
        return found

    @classmethod
    def from_dependency(cls, dependency: Fields) -> SourceRef:
        digest = dependency.table("digest")
        tree = digest.sha256("sha256") if digest is not None else None
        if digest is None or tree is None:
            raise PredicateError(f"{dependency.where}: the source names no sha256 tree digest")
        commit = digest.text("gitCommit")
        return cls(sha256=tree, git_commit=commit, uri=dependency.text("uri"))


@dataclass(frozen=True, kw_only=True)
class Dependency:
    """A resolved dependency or byproduct named by its sha256 (``uri``: where from)."""

    name: str
    sha256: str | None
    uri: str | None = None
    purl: str | None = None  # a package of a known registry (annotations.purl)

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"name": self.name}
        if self.uri is not None:
            found["uri"] = self.uri
        found["digest"] = {"sha256": self.sha256}
        if self.purl is not None:
            found["annotations"] = {"purl": self.purl}
        return found

    @classmethod
    def from_fields(cls, item: Fields) -> Dependency:
        digest = item.table("digest")
        annotations = item.table("annotations")
        return cls(
            name=item.text("name") or "",
            sha256=digest.sha256("sha256") if digest is not None else None,
            uri=item.text("uri"),
            purl=annotations.text("purl") if annotations is not None else None,
        )


HERMETICITY = "hermeticity"  # the byproduct that carries the evidence


@dataclass(frozen=True, kw_only=True)
class Hermeticity:
    """The ``hermeticity`` byproduct's annotations (None: not recorded).

    ``network_attempts`` counts attempts to reach outside the build's own network
    namespace; ``loopback_attempts`` those inside it (recorded since loopback is told apart).
    """

    network_interfaces: tuple[str, ...] | None = None
    network_attempts: int | None = None
    loopback_attempts: int | None = None
    network_targets: tuple[str, ...] | None = None
    trace_level: str | None = None
    trace_complete: bool | None = None
    trace_gaps: tuple[str, ...] | None = None
    limits: Mapping[str, Any] | None = None
    resources: Mapping[str, Any] | None = None
    exit_code: int | None = None

    @property
    def complete(self) -> bool:
        """The trace says it saw everything: complete, and no gap recorded."""
        return self.trace_complete is True and not self.trace_gaps

    def to_dict(self) -> dict[str, Any]:
        """The byproduct, every annotation written (``null`` for what was not recorded)."""
        return {
            "name": HERMETICITY,
            "annotations": {
                "networkInterfaces": _list(self.network_interfaces),
                "networkAttempts": self.network_attempts,
                "loopbackAttempts": self.loopback_attempts,
                "networkTargets": _list(self.network_targets),
                "traceLevel": self.trace_level,
                "traceComplete": self.trace_complete,
                "traceGaps": _list(self.trace_gaps),
                "limits": _dict(self.limits),
                "resources": _dict(self.resources),
                "exitCode": self.exit_code,
            },
        }

    @classmethod
    def from_annotations(cls, annotations: Fields) -> Hermeticity:
        return cls(
            network_interfaces=annotations.texts("networkInterfaces"),
            network_attempts=annotations.count("networkAttempts"),
            loopback_attempts=annotations.count("loopbackAttempts"),
            network_targets=annotations.texts("networkTargets"),
            trace_level=annotations.text("traceLevel"),
            trace_complete=annotations.flag("traceComplete"),
            trace_gaps=annotations.texts("traceGaps"),
            limits=annotations.mapping("limits"),
            resources=annotations.mapping("resources"),
            exit_code=annotations.integer("exitCode"),
        )


def _list(value: tuple[str, ...] | None) -> list[str] | None:
    return None if value is None else list(value)


def _dict(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)


@dataclass(frozen=True, kw_only=True)
class Provenance(Predicate):
    """A SLSA Provenance v1 predicate of one hermetic build (``to_dict`` writes it,
    ``from_dict`` reads it back, or reads the facts the gate needs of another builder's).

    ``spec`` is the spec as given (the parsed hermetic.toml, free-form); ``environment``
    and the time texts are kept exactly as written.
    """

    builder_id: str
    build_type: str = BUILD_TYPE
    spec: Mapping[str, Any] | None = None
    environment: Mapping[str, str] | None = None
    build_dir: str | None = None
    source_date_epoch: int | None = None
    source_date_epoch_from: str | None = None
    trace_level: str | None = None
    image: Dependency | None = None
    source: SourceRef | None = None
    spec_sha256: str | None = None
    inputs: tuple[Dependency, ...] = ()
    hermetic_version: str | None = None
    invocation_id: str | None = None
    started_on: str | None = None
    finished_on: str | None = None
    byproducts: tuple[Dependency, ...] = ()  # result.json, build.log, trace.json
    hermeticity: Hermeticity | None = None
    _finished: datetime | None = field(default=None, init=False, repr=False, compare=False)
    _command: tuple[str, ...] | None = field(default=None, init=False, repr=False, compare=False)
    predicate_type: ClassVar[str] = SLSA_PROVENANCE

    def __post_init__(self) -> None:
        # what the gate reads must be well-formed, or the statement is invalid
        if self.finished_on is not None:
            finished = parse_time(self.finished_on, "predicate.runDetails.metadata.finishedOn")
            object.__setattr__(self, "_finished", finished)
        spec = Fields(self.spec or {}, "predicate.buildDefinition.externalParameters.spec")
        build = spec.table("build")
        object.__setattr__(self, "_command", build.texts("command") if build else None)

    @property
    def image_sha256(self) -> str | None:
        return self.image.sha256 if self.image is not None else None

    @property
    def command(self) -> tuple[str, ...] | None:
        """The build command the spec names (None: not stated)."""
        return self._command

    @property
    def finished_time(self) -> datetime | None:
        """When the build finished, as a time (in UTC)."""
        return self._finished

    def dependency(self, name: str) -> Dependency | None:
        """The input placed at ``name`` (as the spec's ``dest``)."""
        return next((d for d in self.inputs if d.name == f"{INPUT_PREFIX}{name}"), None)

    def byproduct(self, name: str) -> str | None:
        """The sha256 of a byproduct (``result.json``, ``build.log``, ``trace.json``)."""
        return next((b.sha256 for b in self.byproducts if b.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        dependencies = [] if self.image is None else [self.image.to_dict()]
        if self.source is not None:
            dependencies.append(self.source.to_dependency())
        if self.spec_sha256 is not None:
            dependencies.append({"name": "spec", "digest": {"sha256": self.spec_sha256}})
        dependencies += [item.to_dict() for item in self.inputs]
        byproducts = [item.to_dict() for item in self.byproducts]
        if self.hermeticity is not None:
            byproducts.append(self.hermeticity.to_dict())
        return {
            "buildDefinition": {
                "buildType": self.build_type,
                "externalParameters": {"spec": dict(self.spec or {})},
                "internalParameters": {
                    "environment": dict(self.environment or {}),
                    "buildDir": self.build_dir,
                    "sourceDateEpoch": self.source_date_epoch,
                    "sourceDateEpochFrom": self.source_date_epoch_from,
                    "traceLevel": self.trace_level,
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": self.builder_id, "version": {"hermetic": self.hermetic_version}},
                "metadata": {
                    "invocationId": self.invocation_id,
                    "startedOn": self.started_on,
                    "finishedOn": self.finished_on,
                },
                "byproducts": byproducts,
            },
        }

    @classmethod
    def from_dict(cls, predicate: Any) -> Provenance:
        """Read a SLSA Provenance v1 predicate.

        Raises:
            PredicateError: a field hermetic reads is malformed, or a fact (the image, the
                source, the spec, the hermeticity evidence) is stated twice.
        """
        fields = Fields(predicate, "predicate")
        definition = fields.table("buildDefinition") or Fields({}, "predicate.buildDefinition")
        run = fields.table("runDetails") or Fields({}, "predicate.runDetails")
        image: Dependency | None = None
        source: SourceRef | None = None
        spec: str | None = None
        inputs = []
        for dependency in definition.tables("resolvedDependencies"):
            name = dependency.text("name")
            digest = dependency.table("digest")
            if name == "image" and digest is not None:
                image = once(image, Dependency.from_fields(dependency), dependency)
            elif name == "source":
                source = once(source, SourceRef.from_dependency(dependency), dependency)
            elif name == "spec" and digest is not None:
                spec = once(spec, digest.sha256("sha256"), dependency)
            elif name is not None and name.startswith(INPUT_PREFIX):
                inputs.append(Dependency.from_fields(dependency))
        hermeticity: Hermeticity | None = None
        byproducts = []
        for byproduct in run.tables("byproducts"):
            if byproduct.text("name") == HERMETICITY:
                annotations = byproduct.table("annotations")
                found = Hermeticity.from_annotations(
                    annotations or Fields({}, f"{byproduct.where}.annotations")
                )
                hermeticity = once(hermeticity, found, byproduct)
            else:
                byproducts.append(Dependency.from_fields(byproduct))
        parameters = definition.table("externalParameters")
        internal = definition.table("internalParameters") or Fields({}, "internalParameters")
        builder = run.table("builder") or Fields({}, "predicate.runDetails.builder")
        version = builder.table("version")
        metadata = run.table("metadata") or Fields({}, "predicate.runDetails.metadata")
        environment = internal.mapping("environment")
        if environment is not None and not all(isinstance(v, str) for v in environment.values()):
            raise PredicateError(f"{internal.where}.environment: expected strings")
        return cls(
            builder_id=builder.text("id") or "",
            build_type=definition.text("buildType") or "",
            spec=parameters.mapping("spec") if parameters is not None else None,
            environment=environment,
            build_dir=internal.text("buildDir"),
            source_date_epoch=internal.integer("sourceDateEpoch"),
            source_date_epoch_from=internal.text("sourceDateEpochFrom"),
            trace_level=internal.text("traceLevel"),
            image=image,
            source=source,
            spec_sha256=spec,
            inputs=tuple(inputs),
            hermetic_version=version.text("hermetic") if version is not None else None,
            invocation_id=metadata.text("invocationId"),
            started_on=metadata.text("startedOn"),
            finished_on=metadata.text("finishedOn"),
            byproducts=tuple(byproducts),
            hermeticity=hermeticity,
        )

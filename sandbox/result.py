"""The result of one build: what ``result.json`` and ``--json`` contain."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sandbox.digests import Sha256, prefixed
from sandbox.logcap import LogSummary
from sandbox.monitor import ResourceUsage
from sandbox.outputs import OutputFile
from sandbox.plan import LimitPlan
from sandbox.uris import RESULT_SCHEMA


class BuildStatus(StrEnum):
    """How a build ended; everything but BUILT makes ``hermetic build`` exit 1."""

    BUILT = "built"
    FAILED = "failed"
    TIMEOUT = "timeout"
    LIMIT_EXCEEDED = "limit_exceeded"


@dataclass(frozen=True, kw_only=True)
class InputRecord:
    """An input as it was used."""

    url: str
    sha256: Sha256
    dest: str
    fetched: bool  # False: taken from the store without network

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "sha256": prefixed(self.sha256),
            "dest": self.dest,
            "fetched": self.fetched,
        }


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    """Everything a user, a rebuilder or a provenance statement needs to know of a build."""

    build_id: str
    status: BuildStatus
    reason: str
    exit_code: int | None
    digest: Sha256 | None
    outputs: tuple[OutputFile, ...]
    image: str
    source_digest: Sha256
    inputs: tuple[InputRecord, ...]
    source_date_epoch: int
    source_date_epoch_from: str
    env: tuple[tuple[str, str], ...]
    build_dir: str
    limits: tuple[LimitPlan, ...]
    resources: ResourceUsage
    log: LogSummary
    trace: dict[str, Any]
    duration_s: float
    started_at: str
    finished_at: str
    spec_path: str
    out_dir: str
    hermetic_version: str

    @property
    def built(self) -> bool:
        return self.status is BuildStatus.BUILT

    def to_json(self) -> dict[str, Any]:
        return {
            "_schema": RESULT_SCHEMA,
            "build_id": self.build_id,
            "status": self.status.value,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "digest": prefixed(self.digest) if self.digest else None,
            "outputs": [item.to_json() for item in self.outputs],
            "image": self.image,
            "source_digest": prefixed(self.source_digest),
            "inputs": [item.to_json() for item in self.inputs],
            "source_date_epoch": self.source_date_epoch,
            "source_date_epoch_from": self.source_date_epoch_from,
            "environment": dict(self.env),
            "build_dir": self.build_dir,
            "limits": {limit.name: limit.to_json() for limit in self.limits},
            "resources": self.resources.to_json(),
            "log": self.log.to_json(),
            "trace": self.trace,
            "duration_s": round(self.duration_s, 3),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "spec": self.spec_path,
            "out_dir": self.out_dir,
            "hermetic_version": self.hermetic_version,
        }

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"

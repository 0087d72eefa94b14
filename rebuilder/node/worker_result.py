"""What a node signs for a build that a scale-out worker ran: a statement the node writes
itself, from facts it computed from the request or checked against the returned files.

A worker (or anyone who can write to the broker) chooses every byte it returns. The node
takes from it only what it cannot know itself, and only after checking it:

- computed by the node from the request alone: the spec, its digest, the source tree
  digest, the image it resolves, the inputs, SOURCE_DATE_EPOCH, the environment and the
  build directory; the builder id, the hermetic version and the times (its own clock);
- computed by the node from the returned files: the outputs and their digests, the output
  set's digest, the digests of build.log and trace.json;
- the worker's report, checked for form and for agreement with the above: the build id,
  which inputs came from its cache, how each limit was enforced on its host, the
  resources used, the trace summary (the hermeticity evidence), the log's sizes.

Anything that disagrees, is missing or is malformed refuses the result; nothing the worker
wrote itself is signed (its result.json is replaced by the node's).
"""

from __future__ import annotations

import json
import re
import stat
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rebuilder.errors import Error, InfrastructureError
from rebuilder.node.requests import REQUEST_SPEC, RequestError, RequestLimits, unpack_source
from sandbox.beneath import TreeLimits, TreeTooLarge, read_beneath, walk_beneath
from sandbox.build import (
    ARTIFACTS_DIR,
    LOG_FILE,
    TRACE_FILE,
    resolve_source_date_epoch,
    with_image_env,
)
from sandbox.config import SandboxConfig
from sandbox.digests import Sha256, prefixed, sha256_bytes
from sandbox.environment import NORMALIZED
from sandbox.images import ImageCatalog, ResolvedImage
from sandbox.logcap import LogSummary
from sandbox.monitor import ResourceUsage
from sandbox.outputs import OutputManifest, describe_outputs
from sandbox.plan import Enforcement, LimitPlan
from sandbox.result import BuildResult, BuildStatus, InputRecord
from sandbox.source_tree import tree_digest
from sandbox.spec import Spec
from sandbox.trace.levels import TraceLevel
from sandbox.version import __version__

MAX_RESULT_JSON = 16 * 1024**2
MAX_TRACE_JSON = 256 * 1024**2
MAX_LOG = 4 * 1024**3
_TEXT = 4096  # longest free text taken from a worker (a limit's detail, a trace gap)
_BUILD_ID = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_UNITS = {"timeout": "s", "log": "bytes", "pids": "processes", "memory": "bytes", "disk": "bytes"}
_RESULT_KEYS = {
    "_schema", "build_id", "status", "reason", "exit_code", "digest", "outputs", "image",
    "source_digest", "inputs", "source_date_epoch", "source_date_epoch_from", "environment",
    "build_dir", "limits", "resources", "log", "trace", "duration_s", "started_at",
    "finished_at", "spec", "out_dir", "hermetic_version",
}  # fmt: skip
# the trace summary's fields that become hermeticity evidence, and their form (others the
# summary holds are counts, flags and lists of names, taken if they are only that)
_EVIDENCE: dict[str, type] = {
    "file": str,
    "sha256": str,
    "level": str,
    "complete": bool,
    "gaps": list,
    "network_interfaces": list,
    "network_attempts": int,
    "network_targets": list,
    "loopback_attempts": int,
}
_MAX_SUMMARY_FIELDS = 64


class WorkerResultError(InfrastructureError):
    """A worker's result that the node will not sign; says the first thing wrong."""


def _refuse(what: str) -> WorkerResultError:
    return WorkerResultError(f"a worker's result does not match the job: {what}; not signed")


@dataclass(frozen=True, kw_only=True)
class JobFacts:
    """What the node knows of a job from its request alone, without any worker."""

    spec: Spec
    spec_sha256: str
    source_digest: Sha256
    image: ResolvedImage
    epoch: int
    epoch_from: str
    env: tuple[tuple[str, str], ...]  # the build's whole environment


def job_facts(archive: bytes, limits: RequestLimits, config: SandboxConfig) -> JobFacts:
    """Unpack the request (as the node did at submission) and compute what it implies.

    Raises:
        WorkerResultError: the node cannot read the request or resolve its image.
    """
    with tempfile.TemporaryDirectory(prefix="hermetic-check-") as scratch:
        source = Path(scratch) / "src"
        try:
            unpack_source(archive, source, limits)
            spec = Spec.from_toml(source / REQUEST_SPEC)
            image = ImageCatalog(config.images_dir).resolve(spec.image, spec_dir=source)
        except (RequestError, Error) as e:
            raise _refuse(f"the node cannot read the request or its image ({e})") from None
        epoch, epoch_from = resolve_source_date_epoch(spec)
        built = with_image_env(spec, image, NORMALIZED)  # as run_build gives it the image's
        return JobFacts(
            spec=spec,
            spec_sha256=spec.sha256 or "",
            source_digest=tree_digest(source),
            image=image,
            epoch=epoch,
            epoch_from=epoch_from,
            env=NORMALIZED.variables(source_date_epoch=epoch, spec_env=built.env),
        )


def node_version() -> str:
    return __version__


def now_text() -> str:
    """The node's clock, as result.json writes times."""
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Fields:
    """Typed reads of a JSON object from a worker; any surprise refuses the result."""

    def __init__(self, document: object, where: str) -> None:
        if not isinstance(document, dict):
            raise _refuse(f"{where} is not an object")
        self.document: dict[str, Any] = document
        self.where = where

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        value = self.document.get(key)
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise _refuse(f"{self.where}.{key} is not a number")
        if not isinstance(value, kind):
            raise _refuse(f"{self.where}.{key} is missing or malformed")
        return value

    def count(self, key: str) -> int:
        value: int = self.get(key, int)
        if value < 0:
            raise _refuse(f"{self.where}.{key} is negative")
        return value

    def text(self, key: str) -> str:
        value: str = self.get(key, str)
        if len(value) > _TEXT:
            raise _refuse(f"{self.where}.{key} is too long")
        return value


def _returned_outputs(results: Path) -> OutputManifest:
    """The outputs as the node reads them from the returned files."""
    artifacts = results / ARTIFACTS_DIR
    try:
        returned = [
            path for path, mode in walk_beneath(artifacts, TreeLimits()) if not stat.S_ISDIR(mode)
        ]
    except FileNotFoundError:
        returned = []
    except (OSError, TreeTooLarge) as e:
        raise _refuse(f"the outputs returned cannot be read ({e})") from None
    try:
        return describe_outputs(artifacts, returned)
    except Error as e:
        raise _refuse(f"an output returned is unsafe ({e})") from None


def _limits(document: object, spec: Spec) -> tuple[LimitPlan, ...]:
    fields = _Fields(document, "result.json limits")
    if set(fields.document) != set(_UNITS):
        raise _refuse("the limits are not the five hermetic enforces")
    expected = {
        "timeout": spec.limits.timeout_s,
        "log": spec.limits.log_bytes,
        "memory": spec.limits.memory_bytes,
        "disk": spec.limits.disk_bytes,
        "pids": spec.limits.pids,
    }
    plans = []
    for name in ("timeout", "log", "pids", "memory", "disk"):
        limit = _Fields(fields.document[name], f"result.json limits.{name}")
        value = limit.count("value")
        # a host may lower the process limit to its own hard limit, never raise any
        if value != expected[name] and not (name == "pids" and 0 < value < expected[name]):
            raise _refuse(f"the {name} limit is not the spec's")
        if limit.get("unit", str) != _UNITS[name]:
            raise _refuse(f"the {name} limit's unit is not {_UNITS[name]}")
        ways = limit.get("enforced_by", list)
        try:
            enforced = tuple(Enforcement(way) for way in ways)
        except (ValueError, TypeError):
            raise _refuse(f"the {name} limit names an unknown enforcement") from None
        if not enforced:
            raise _refuse(f"the {name} limit is not enforced")
        plans.append(
            LimitPlan(
                name=name,
                value=value,
                unit=_UNITS[name],
                enforced_by=enforced,
                detail=limit.text("detail"),
            )
        )
    return tuple(plans)


def _plain_value(value: object) -> bool:
    """A count, a flag, a short text, a list of short texts or a table of counts."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return value >= 0
    if isinstance(value, str):
        return len(value) <= _TEXT
    if isinstance(value, list):
        return all(isinstance(item, str) and len(item) <= _TEXT for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(k, str) and len(k) <= _TEXT and isinstance(v, int) and v >= 0
            for k, v in value.items()
        )
    return False


def _trace(document: object, level: TraceLevel, trace_json: bytes | None) -> dict[str, Any]:
    fields = _Fields(document, "result.json trace")
    if trace_json is None:
        # no trace returned: the summary says only that there is none
        allowed = {"unavailable", TraceLevel.OFF.value if level is TraceLevel.OFF else ""}
        if set(fields.document) != {"level"} or fields.text("level") not in allowed:
            raise _refuse("a trace summary without its trace.json")
        return {"level": fields.text("level")}
    for key, kind in _EVIDENCE.items():
        if kind is int:
            fields.count(key)
        else:
            fields.get(key, kind)
    if len(fields.document) > _MAX_SUMMARY_FIELDS or not all(
        isinstance(key, str) and _plain_value(value) for key, value in fields.document.items()
    ):
        raise _refuse("the trace summary holds more than counts, flags and names")
    if fields.text("level") != level.value:
        raise _refuse(f"the trace level is not the node's ({level.value})")
    if fields.text("file") != TRACE_FILE:
        raise _refuse("the trace summary names another file")
    if fields.text("sha256") != prefixed(sha256_bytes(trace_json)):
        raise _refuse("trace.json is not the one the summary states")
    if fields.document["complete"] != (not fields.document["gaps"]):
        raise _refuse("the trace summary calls a trace with gaps complete")
    # the worker's report of what the build did; parsed back from JSON: plain data only
    summary: dict[str, Any] = json.loads(json.dumps(fields.document))
    return summary


def _inputs(document: object, spec: Spec) -> tuple[InputRecord, ...]:
    if not isinstance(document, list) or len(document) != len(spec.inputs):
        raise _refuse("the inputs are not the spec's")
    records = []
    for index, (item, entry) in enumerate(zip(spec.inputs, document, strict=True)):
        fields = _Fields(entry, f"result.json inputs[{index}]")
        stated = (fields.get("url", str), fields.get("sha256", str), fields.get("dest", str))
        if stated != (item.url, prefixed(item.sha256), str(item.dest)):
            raise _refuse(f"another input at {item.dest}")
        records.append(
            InputRecord(
                url=item.url,
                sha256=item.sha256,
                dest=str(item.dest),
                fetched=fields.get("fetched", bool),
            )
        )
    return tuple(records)


def node_result(
    results: Path,
    facts: JobFacts,
    *,
    trace: TraceLevel,
    out_dir: Path,
    started_at: str,
    finished_at: str,
) -> BuildResult:
    """The result the node vouches for: its own facts, and the worker's report where it
    agrees with them (see the module docstring).

    Args:
        results: the returned files, written below the job through no link.
        facts: what the node computed from the request.
        trace: the trace level the node asked for.
        out_dir: where the results will be (as result.json names it).
        started_at: when the node sent the job (its clock).
        finished_at: when the answer arrived (its clock).

    Raises:
        WorkerResultError: naming the first thing that does not match.
    """
    try:
        document = json.loads(read_beneath(results, "result.json", limit=MAX_RESULT_JSON))
        log = read_beneath(results, LOG_FILE, limit=MAX_LOG)
        try:
            trace_json: bytes | None = read_beneath(results, TRACE_FILE, limit=MAX_TRACE_JSON)
        except FileNotFoundError:
            trace_json = None
    except (OSError, ValueError) as e:
        raise _refuse(f"result.json, build.log or trace.json cannot be read ({e})") from None
    fields = _Fields(document, "result.json")
    if set(fields.document) != _RESULT_KEYS:
        raise _refuse("result.json does not have the fields hermetic writes")
    if fields.text("status") != BuildStatus.BUILT.value or fields.get("exit_code", int) != 0:
        raise _refuse("result.json does not say built")
    build_id = fields.text("build_id")
    if not _BUILD_ID.fullmatch(build_id):
        raise _refuse("the build id is not 32 hex digits")
    if fields.text("hermetic_version") != node_version():
        raise _refuse(f"the worker runs another hermetic version (the node's: {node_version()})")
    spec = facts.spec
    if fields.text("image") != facts.image.reference:
        raise _refuse("another image")
    if fields.text("source_digest") != prefixed(facts.source_digest):
        raise _refuse("another source tree")
    if (fields.get("source_date_epoch", int), fields.text("source_date_epoch_from")) != (
        facts.epoch,
        facts.epoch_from,
    ):
        raise _refuse("another SOURCE_DATE_EPOCH")
    env = facts.env
    if fields.get("environment", dict) != dict(env):
        raise _refuse("another environment")
    if fields.text("build_dir") != NORMALIZED.build_dir:
        raise _refuse("another build directory")
    manifest = _returned_outputs(results)
    if fields.get("outputs", list) != [item.to_json() for item in manifest.files]:
        raise _refuse("the outputs stated are not the files returned")
    if fields.get("digest", str) != prefixed(manifest.digest):
        raise _refuse("the output set's digest is not the one stated")
    if not manifest.files:
        raise _refuse("a build with no outputs")
    resources = _Fields(fields.document["resources"], "result.json resources")
    stated_log = _Fields(fields.document["log"], "result.json log")
    if stated_log.text("sha256").removeprefix("sha256:") != sha256_bytes(log):
        raise _refuse("build.log is not the one stated")
    if stated_log.count("kept") != len(log) or stated_log.count("bytes") < len(log):
        raise _refuse("build.log's size is not the one stated")
    duration = fields.get("duration_s", (int, float))
    if not 0 <= duration < 10**7:
        raise _refuse("the duration is out of range")
    cpu = resources.get("cpu_seconds", (int, float))
    if not 0 <= cpu < 10**9:
        raise _refuse("the CPU time is out of range")
    return BuildResult(
        build_id=build_id,
        status=BuildStatus.BUILT,
        reason="built",
        exit_code=0,
        digest=manifest.digest,
        outputs=manifest.files,
        image=facts.image.reference,
        source_digest=facts.source_digest,
        inputs=_inputs(fields.document["inputs"], spec),
        source_date_epoch=facts.epoch,
        source_date_epoch_from=facts.epoch_from,
        env=env,
        build_dir=NORMALIZED.build_dir,
        limits=_limits(fields.document["limits"], spec),
        resources=ResourceUsage(
            peak_memory_bytes=resources.count("peak_memory_bytes"),
            cpu_seconds=float(cpu),
            bytes_written=resources.count("bytes_written"),
            tasks_started=resources.count("tasks_started"),
            samples=resources.count("samples"),
        ),
        log=LogSummary(
            path=out_dir / LOG_FILE,
            sha256=prefixed(sha256_bytes(log)),
            bytes_seen=stated_log.count("bytes"),
            bytes_kept=len(log),
            truncated=stated_log.get("truncated", bool),
        ),
        trace=_trace(fields.document["trace"], trace, trace_json),
        duration_s=float(duration),
        started_at=started_at,
        finished_at=finished_at,
        spec_path=REQUEST_SPEC,
        out_dir=str(out_dir),
        hermetic_version=node_version(),
    )

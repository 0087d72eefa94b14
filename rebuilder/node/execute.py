"""Running one rebuild request: unpack, build in the sandbox, and state what was built.

Shared by the node's own workers and by Celery workers on other machines; it never signs
(the node's key stays on the node). Request faults (a bad archive or spec, a mismatched
input) are results; anything else raised is the infrastructure's fault and is retried.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from rebuilder.attest.provenance import provenance_statement
from rebuilder.node.jobs import Outcome
from rebuilder.node.requests import REQUEST_SPEC, RequestError, unpack_source
from rebuilder.node.statements import Outputs
from sandbox.backend import SandboxBackend
from sandbox.build import RESULT_FILE, BuildRequest, run_build
from sandbox.config import SandboxConfig
from sandbox.digests import sha256_file
from sandbox.errors import ImageError, InputError, OutputError, SpecError
from sandbox.result import BuildResult
from sandbox.spec import Spec
from sandbox.trace.levels import TraceLevel

Connect = Callable[[SandboxConfig], AbstractContextManager[SandboxBackend]]
# The request's own fault: rebuilding it elsewhere or later gives the same answer.
REQUEST_FAULTS = (RequestError, SpecError, InputError, ImageError, OutputError)


@dataclass(frozen=True, kw_only=True)
class Execution:
    outcome: Outcome
    reason: str = ""
    digest: str | None = None
    outputs: Outputs = ()
    statement: bytes | None = None  # the unsigned provenance payload, when built
    out_dir: Path | None = None
    executor: str = ""  # which worker ran it


def execute(
    archive: bytes,
    directory: Path,
    *,
    attempt: int,
    config: SandboxConfig,
    connect: Connect,
    trace: TraceLevel,
    builder_id: str,
    executor: str = "",
) -> Execution:
    """Build a request in ``directory`` (results in ``directory/out``)."""
    source = directory / f"src-{attempt}"
    shutil.rmtree(source, ignore_errors=True)
    statements: list[bytes] = []
    try:
        unpack_source(archive, source)
        spec = Spec.from_toml(source / REQUEST_SPEC)

        def state(result: BuildResult, published: Path) -> None:
            if result.built and result.outputs:
                statements.append(
                    provenance_statement(
                        result,
                        spec_document=spec.document,
                        result_json=(published / RESULT_FILE).read_bytes(),
                        builder_id=builder_id,
                        spec_sha256=sha256_file(spec.path)[0],
                    )
                )

        request = BuildRequest(spec=spec, out_dir=directory / "out", trace=trace, attest=state)
        with connect(config) as backend:
            result = run_build(request, config=config, backend=backend)
    except REQUEST_FAULTS as e:
        return Execution(outcome=Outcome.BUILD_FAILED, reason=e.diagnostics(), executor=executor)
    finally:
        shutil.rmtree(source, ignore_errors=True)
    if not result.built:
        return Execution(outcome=Outcome.BUILD_FAILED, reason=result.reason, executor=executor)
    return Execution(
        outcome=Outcome.BUILT,
        digest=f"sha256:{result.digest}",
        outputs=tuple(sorted((item.path, item.sha256) for item in result.outputs)),
        statement=statements[0],
        out_dir=directory / "out",
        executor=executor,
    )

"""Running one rebuild request: unpack, build in the sandbox, and state what was built.

Shared by the node's own workers and by Celery workers on other machines; it never signs
(the node's key stays on the node). A :class:`~sandbox.errors.UserError` (a bad archive or
spec, a refused or mismatched input) is the request's fault and a result; anything else
raised is the infrastructure's fault and is retried. A reason a client reads names nothing
of the node: no host path, no digest of what the node read, no text of the node's own files.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from rebuilder.attest.provenance import provenance_statement
from rebuilder.formats.rebuild import Outputs
from rebuilder.node.jobs import Outcome
from rebuilder.node.requests import REQUEST_SPEC, RequestLimits, unpack_source
from sandbox.backend import Cancel, SandboxBackend
from sandbox.beneath import remove_tree
from sandbox.build import RESULT_FILE, BuildRequest, run_build
from sandbox.config import SandboxConfig
from sandbox.digests import sha256_file
from sandbox.errors import SpecError, UserError
from sandbox.input_policy import InputPolicy
from sandbox.result import BuildResult
from sandbox.spec import Spec
from sandbox.trace.levels import TraceLevel

Connect = Callable[[SandboxConfig], AbstractContextManager[SandboxBackend]]


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
    input_policy: InputPolicy,
    limits: RequestLimits | None = None,
    executor: str = "",
    cancel: Cancel | None = None,
) -> Execution:
    """Build a request in ``directory`` (results in ``directory/out``).

    Args:
        input_policy: what the request's inputs may be fetched from (for this job: see
            :meth:`InputPolicy.for_job`).
        limits: caps on the unpacked request and the largest limits its spec may ask for.
        cancel: set when the job's deadline passes: the build is stopped.

    Raises:
        BuildCancelled: ``cancel`` was set while the build ran.
    """
    limits = limits or RequestLimits()
    source = directory / f"src-{attempt}"
    remove_tree(source)
    statements: list[bytes] = []
    private = {
        source: "",  # the request's own files are named as the client named them
        directory: "<job>",
        config.work_dir: "<work>",
        config.store_dir: "<store>",
        config.images_dir: "<images>",
    }
    try:
        unpack_source(archive, source, limits)
        spec = Spec.from_toml(source / REQUEST_SPEC)
        refusal = limits.refusal(spec)
        if refusal is not None:
            return Execution(outcome=Outcome.BUILD_FAILED, reason=refusal, executor=executor)

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

        request = BuildRequest(
            spec=spec,
            out_dir=directory / "out",
            trace=trace,
            attest=state,
            input_policy=input_policy,
            cancel=cancel,
            max_output_bytes=limits.max_output_bytes,
        )
        with connect(config) as backend:
            result = run_build(request, config=config, backend=backend)
    except UserError as e:  # the request's fault: elsewhere or later, the same answer
        reason = client_reason(e, private)
        return Execution(outcome=Outcome.BUILD_FAILED, reason=reason, executor=executor)
    finally:
        remove_tree(source)
    if not result.built:
        reason = scrub(result.reason, private)
        return Execution(outcome=Outcome.BUILD_FAILED, reason=reason, executor=executor)
    return Execution(
        outcome=Outcome.BUILT,
        digest=f"sha256:{result.digest}",
        outputs=tuple(sorted((item.path, item.sha256) for item in result.outputs)),
        statement=statements[0],
        out_dir=directory / "out",
        executor=executor,
    )


def client_reason(error: UserError, private: dict[Path, str]) -> str:
    """A request fault as its client may read it."""
    if isinstance(error, SpecError):
        # the spec's path on the node is not the client's business: name it as sent
        return scrub(f"{REQUEST_SPEC}: {error.key}: {error.reason}", private)
    return scrub(str(error), private)


def scrub(text: str, private: dict[Path, str]) -> str:
    """Replace the node's own directories in a text with neutral names.

    Longer paths first, so a directory inside another keeps its own name; the request's
    source directory becomes nothing (``<src>/hermetic.toml`` reads ``hermetic.toml``).
    """
    for path, name in sorted(private.items(), key=lambda item: -len(str(item[0]))):
        for spelling in {str(path), str(path.resolve())}:
            if name:
                text = text.replace(spelling, name)
            else:
                text = text.replace(spelling + "/", "").replace(spelling, ".")
    return text

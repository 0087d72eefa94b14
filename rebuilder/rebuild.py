"""``hermetic rebuild``: independent nodes rebuild one spec; when K of them agree on every
output digest, they co-sign one combined statement.

Each node's attestation is verified against that node's key (pinned by the caller, or as
the node presents it), its outputs read from its own signed statement, and the largest
group of identical output sets decides. Only nodes that then check the combined statement
against their own result sign it; disagreeing nodes get diffoscope reports.
"""

from __future__ import annotations

import base64
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key

from rebuilder.attest.envelope import write_envelope
from rebuilder.attest.keys import (
    KeyProblem,
    key_fingerprint,
    load_public_key,
    public_key_from_dict,
)
from rebuilder.attest.verify import verify_attestation
from rebuilder.diffreport import DiffReport, diff_outputs
from rebuilder.errors import Error, UserError
from rebuilder.formats.fields import MAX_TEXT, PredicateError
from rebuilder.formats.provenance import Provenance, SourceRef
from rebuilder.formats.rebuild import Agreement, AgreementNode, NodeVerdict, Outputs
from rebuilder.node.client import Credentials, NodeClient, NodeError
from rebuilder.node.jobs import Outcome
from rebuilder.node.requests import pack_source
from sandbox.beneath import write_beneath
from sandbox.config import SandboxConfig
from sandbox.digests import is_sha256, sha256_bytes, sha256_file
from sandbox.source_tree import tree_digest
from sandbox.spec import Spec
from sandbox.uris import PAYLOAD_TYPE, SLSA_PROVENANCE
from sandbox.workspace import claim_dir, write_atomically

AGREEMENT_FILE = "rebuild.intoto.json"
RESULT_FILE = "rebuild.json"
# what `hermetic rebuild` downloads of disagreeing outputs for diffoscope, at most: per
# disagreeing node, and for the whole run (a hostile node lists as many as it likes)
MAX_DIFF_FILES = 100
MAX_DIFF_BYTES = 2 * 1024**3


class RebuildError(UserError):
    """The rebuild could not be carried out (a node key mismatch, nothing reachable)."""


@dataclass(frozen=True)
class NodeTarget:
    url: str
    key_file: Path | None = None  # pinned; else the node's own word (trust on first use)

    @classmethod
    def parse(cls, text: str) -> NodeTarget:
        """``URL`` or ``URL=KEYFILE``."""
        url, sep, key = text.partition("=") if "=" in text.split("://", 1)[-1] else (text, "", "")
        return cls(url, Path(key) if sep else None)


@dataclass(kw_only=True)
class NodeReport:
    """What one node did and said."""

    url: str
    name: str
    builder_id: str = ""
    keyid: str = ""
    key: Key | None = None
    job_id: str = ""
    state: str = "unreached"
    outcome: str = ""
    reason: str = ""
    outputs: Outputs = ()
    attestation: Path | None = None
    attestation_sha256: str = ""
    verdict: NodeVerdict = NodeVerdict.FAILED
    report: DiffReport | None = None
    facts: Provenance | None = None  # what its signed provenance says of the build

    def to_json(self) -> dict[str, Any]:
        """As ``rebuild.json`` lists it: what the agreement says of a node, in full."""
        return AgreementNode(
            url=self.url,
            builder_id=self.builder_id,
            keyid=self.keyid,
            job_id=self.job_id,
            outcome=self.outcome,
            verdict=self.verdict,
            reason=self.reason,
            outputs=self.outputs,
            attestation_sha256=self.attestation_sha256 or None,
        ).to_dict()


REBUILD_SCHEMA = "https://hermetic.dev/schemas/rebuild-result/v1"


@dataclass(kw_only=True)
class RebuildResult:
    agreed: bool
    threshold: int
    outputs: Outputs
    nodes: list[NodeReport]
    attestation: Path | None
    out_dir: Path
    signatures: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "_schema": REBUILD_SCHEMA,
            "agreed": self.agreed,
            "threshold": self.threshold,
            "signatures": self.signatures,
            "outputs": [{"name": n, "sha256": d} for n, d in self.outputs],
            "attestation": str(self.attestation) if self.attestation else None,
            "nodes": [
                {
                    **node.to_json(),
                    "attestationFile": str(node.attestation) if node.attestation else None,
                    "report": str(node.report.html) if node.report and node.report.html else None,
                }
                for node in self.nodes
            ],
            "out_dir": str(self.out_dir),
            "notes": self.notes,
        }


Progress = Callable[[NodeReport], None]


def prepare_out_dir(out_dir: Path) -> None:
    """A fresh results directory: hermetic's own is replaced (nothing stale survives), a
    foreign non-empty one is refused; the marker keeps it out of later source trees.

    Raises:
        RebuildError: the directory exists and hermetic did not make it.
    """
    if not claim_dir(out_dir, "hermetic rebuild"):
        raise RebuildError(f"{out_dir} exists and is not hermetic's; choose another --out")


def rebuild(
    spec: Spec,
    targets: Sequence[NodeTarget],
    *,
    threshold: int,
    credentials: Credentials,
    out_dir: Path,
    timeout_s: float = 3600.0,
    poll_s: float = 1.0,
    progress: Progress = lambda report: None,
    config: SandboxConfig | None = None,
) -> RebuildResult:
    """Ask every node to rebuild, then combine what K or more of them agree on.

    ``config`` names the locked diffoscope image that compares disagreeing outputs
    (default: from the environment)."""
    prepare_out_dir(out_dir)
    # what the agreement will bind: the tree sent and the spec file in it
    request = RequestBinding(
        source_sha256=tree_digest(spec.source_dir), spec_sha256=sha256_file(spec.path)[0]
    )
    with tempfile.TemporaryDirectory(prefix="hermetic-rebuild-") as scratch:
        archive = pack_source(spec.source_dir, Path(scratch))
    reports = [
        NodeReport(url=t.url, name=f"{i + 1:02d}-{_host(t.url)}") for i, t in enumerate(targets)
    ]
    clients = [NodeClient(t.url, credentials) for t in targets]
    try:
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            running = [
                pool.submit(
                    _run_on_node,
                    client,
                    target,
                    report,
                    archive,
                    out_dir,
                    timeout_s,
                    poll_s,
                    progress,
                )
                for client, target, report in zip(clients, targets, reports, strict=True)
            ]
            for future in running:
                future.result()
        return _combine(
            reports,
            clients,
            threshold,
            replace(request, request_sha256=sha256_bytes(archive)),
            out_dir,
            now=datetime.now(tz=UTC),
            config=config,
        )
    finally:
        for client in clients:
            client.close()


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0].replace(":", "_")


def _run_on_node(
    client: NodeClient,
    target: NodeTarget,
    report: NodeReport,
    archive: bytes,
    out_dir: Path,
    timeout_s: float,
    poll_s: float,
    progress: Progress,
) -> None:
    try:
        identity = client.identity()
        key = public_key_from_dict(identity["public_key"], f"{target.url}: its public key")
        keyid = key.keyid
        # the pinned key is the key material, whatever id or spelling either side uses
        pinned = load_public_key(target.key_file) if target.key_file else None
        if pinned is not None and key_fingerprint(pinned) != key_fingerprint(key):
            report.reason = (
                f"the node presents key {keyid[:16]}…, not the pinned {pinned.keyid[:16]}… "
                f"of {target.key_file}"
            )
            report.verdict = NodeVerdict.INVALID
            progress(report)
            return
        report.key, report.keyid, report.builder_id = key, key.keyid, identity["builder_id"]
        job = client.submit(archive)
        report.job_id, report.state = job["id"], job["state"]
        progress(report)
        deadline = time.monotonic() + timeout_s
        while job["state"] != "finished":
            if time.monotonic() > deadline:
                report.reason = (
                    f"job {report.job_id} still {report.state} after {timeout_s:.0f}s "
                    "(--timeout); it may finish on the node later"
                )
                progress(report)
                return
            time.sleep(poll_s)
            job = client.status(report.job_id)
            if job["state"] != report.state:
                report.state = job["state"]
                if report.state != "finished":  # the final word comes with the attestation
                    progress(report)
        report.outcome, report.reason = job["outcome"], job["reason"]
        _read_attestation(client, report, out_dir)
    except NodeError as e:
        report.reason = str(e)
    except (Error, ValueError, KeyError, TypeError) as e:  # a node answering nonsense
        report.reason = f"{target.url}: unusable answer: {e!r}"
    progress(report)


def _read_attestation(client: NodeClient, report: NodeReport, out_dir: Path) -> None:
    """Store the node's attestation as sent and believe it only if its key signed it."""
    data = client.attestation(report.job_id)
    path = out_dir / "nodes" / report.name / "attestation.intoto.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    report.attestation, report.attestation_sha256 = path, sha256_bytes(data)
    assert report.key is not None
    try:
        checked = verify_attestation(path, [report.key], threshold=1)
    except Error as e:
        report.verdict, report.reason = NodeVerdict.INVALID, f"unreadable attestation: {e}"
        return
    if not checked.ok:
        report.verdict = NodeVerdict.INVALID
        report.reason = "attestation does not verify: " + "; ".join(checked.reasons)
        return
    statement = checked.statement
    if (
        report.outcome == Outcome.BUILT
        and statement is not None
        and statement.predicate_type == SLSA_PROVENANCE
    ):
        try:
            report.facts = Provenance.from_dict(statement.predicate)
        except PredicateError as e:
            report.verdict, report.reason = NodeVerdict.INVALID, f"unreadable provenance: {e}"
            return
        report.outputs = statement.outputs
        report.verdict = NodeVerdict.BUILT


@dataclass(frozen=True, kw_only=True)
class RequestBinding:
    """What the client sent: the archive, the source tree in it and its spec file."""

    source_sha256: str
    spec_sha256: str
    request_sha256: str = ""


def _binding_problem(report: NodeReport, request: RequestBinding) -> str:
    """Why a node that built did not build this request ("" when it did): its provenance
    names another source or spec, or its outputs are not (name, sha256) pairs of plain
    names, none inside another."""
    if not all(
        is_sha256(digest) and len(name) <= MAX_TEXT and _plain(name)
        for name, digest in report.outputs
    ):
        return "its provenance lists malformed outputs"
    names = {name for name, _ in report.outputs}
    if any(
        "/".join(name.split("/")[:i]) in names
        for name in names
        for i in range(1, name.count("/") + 1)
    ):
        return "its provenance lists an output inside another output"
    facts = report.facts
    source = facts.source.sha256 if facts and facts.source else None
    spec = facts.spec_sha256 if facts else None
    if source != request.source_sha256 or spec != request.spec_sha256:
        return (
            f"its provenance names source {source and source[:16]}… and spec "
            f"{spec and spec[:16]}…, not the request's {request.source_sha256[:16]}… and "
            f"{request.spec_sha256[:16]}…"
        )
    return ""


def _plain(name: str) -> bool:
    """A relative path without empty, '.' or '..' parts (an output's name)."""
    return (
        not name.startswith("/")
        and all(part not in ("", ".", "..") for part in name.split("/"))
        and "\0" not in name
    )


def _agreement_node(report: NodeReport, verdict: NodeVerdict, reason: str) -> AgreementNode:
    return AgreementNode(
        url=report.url[:MAX_TEXT],
        builder_id=report.builder_id[:MAX_TEXT],
        keyid=report.keyid[:MAX_TEXT],
        job_id=report.job_id[:MAX_TEXT],
        outcome=report.outcome[:MAX_TEXT],
        verdict=verdict,
        reason=reason[:1000],
        outputs=report.outputs if verdict in (NodeVerdict.AGREE, NodeVerdict.DISAGREE) else (),
        attestation_sha256=report.attestation_sha256 or None,
    )


def distinct_keys(reports: Sequence[NodeReport]) -> int:
    """How many different keys these nodes sign with: one key on two nodes is one vote."""
    found = set()
    for report in reports:
        if report.key is not None:
            try:
                found.add(key_fingerprint(report.key))
            except KeyProblem:
                continue
    return len(found)


@dataclass(frozen=True, kw_only=True)
class Tally:
    """What the nodes' reports add up to (:func:`agree`): a verdict and reason per node,
    the agreed outputs, and the statement to co-sign when enough distinct keys agree."""

    verdicts: tuple[tuple[NodeVerdict, str], ...]  # per report, in order
    outputs: Outputs  # the majority's outputs (none: no majority)
    voters: int  # distinct keys among the agreeing nodes
    statement: Agreement | None  # to co-sign; None: too few agree
    notes: tuple[str, ...] = ()


def agree(
    reports: Sequence[NodeReport],
    threshold: int,
    request: RequestBinding,
    *,
    now: datetime,
) -> Tally:
    """Decide, from the nodes' reports alone, who agrees on what: a pure function.

    A node that built counts only for the request it was sent (its provenance names the
    request's source and spec); the largest group of identical output sets is the
    agreement, a tie has none; one key on two nodes is one vote.

    Args:
        reports: every node's report (``verdict`` BUILT for those whose build to compare).
        threshold: distinct agreeing keys needed.
        request: what the client sent (the agreement binds it).
        now: the client's clock, the agreement's ``createdOn``.
    """
    verdicts = []
    for report in reports:
        problem = _binding_problem(report, request) if report.verdict == NodeVerdict.BUILT else ""
        verdict = NodeVerdict.INVALID if problem else report.verdict
        verdicts.append((verdict, problem or report.reason))
    built = [
        r.outputs for r, (v, _) in zip(reports, verdicts, strict=True) if v == NodeVerdict.BUILT
    ]
    ranked = Counter(built).most_common(2)
    tied = len(ranked) == 2 and ranked[0][1] == ranked[1][1]
    # a tie has no majority: nobody agrees, whatever the threshold
    outputs: Outputs = ranked[0][0] if ranked and not tied else ()
    for index, (report, (verdict, reason)) in enumerate(zip(reports, verdicts, strict=True)):
        if verdict == NodeVerdict.BUILT:
            agrees = bool(outputs) and report.outputs == outputs
            verdicts[index] = (NodeVerdict.AGREE if agrees else NodeVerdict.DISAGREE, reason)
    agreeing = [r for r, (v, _) in zip(reports, verdicts, strict=True) if v == NodeVerdict.AGREE]
    voters = distinct_keys(agreeing)
    if voters < threshold:
        shared = (
            f" ({len(agreeing)} nodes, {voters} distinct keys)" if voters < len(agreeing) else ""
        )
        note = f"{voters} node(s) agree{shared}; {threshold} needed"
        return Tally(
            verdicts=tuple(verdicts), outputs=outputs, voters=voters, statement=None, notes=(note,)
        )
    statement = Agreement(
        outputs=outputs,
        threshold=threshold,
        request_sha256=request.request_sha256,
        source=SourceRef(sha256=request.source_sha256),
        spec_sha256=request.spec_sha256,
        nodes=tuple(
            _agreement_node(r, v, why) for r, (v, why) in zip(reports, verdicts, strict=True)
        ),
        created_on=now,
    )
    return Tally(verdicts=tuple(verdicts), outputs=outputs, voters=voters, statement=statement)


def _combine(
    reports: list[NodeReport],
    clients: list[NodeClient],
    threshold: int,
    request: RequestBinding,
    out_dir: Path,
    *,
    now: datetime,
    config: SandboxConfig | None = None,
) -> RebuildResult:
    """Tally the reports (:func:`agree`), then ask the agreeing nodes to co-sign, collect
    the others' signed refusals and diffoscope reports, and write the results."""
    tally = agree(reports, threshold, request, now=now)
    for report, (verdict, reason) in zip(reports, tally.verdicts, strict=True):
        report.verdict, report.reason = verdict, reason
    result = RebuildResult(
        agreed=False,
        threshold=threshold,
        outputs=tally.outputs,
        nodes=reports,
        attestation=None,
        out_dir=out_dir,
        notes=list(tally.notes),
    )
    _reports_for_disagreement(reports, clients, tally.outputs, out_dir, config)
    if tally.statement is None:
        _write_result(result)
        return result
    payload = tally.statement.payload()
    signatures = _ask_to_cosign(reports, clients, payload, out_dir)
    envelope = {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": signatures,
    }
    path = out_dir / AGREEMENT_FILE
    write_envelope(path, envelope)
    signing = [r for r in reports if r.verdict == NodeVerdict.AGREE and r.key is not None]
    keys = [r.key for r in signing if r.key is not None]
    checked = (
        verify_attestation(path, keys, threshold=threshold)
        if distinct_keys(signing) >= threshold
        else None
    )
    result.signatures = len(checked.signed_by) if checked else 0
    if checked is None or not checked.ok:
        reasons = "; ".join(checked.reasons) if checked else "too few distinct agreeing keys"
        result.notes.append(f"the combined statement did not get {threshold} signatures: {reasons}")
        path.rename(path.with_suffix(".unsigned.json"))
    else:
        result.agreed, result.attestation = True, path
    _write_result(result)
    return result


def _ask_to_cosign(
    reports: list[NodeReport], clients: list[NodeClient], payload: bytes, out_dir: Path
) -> list[dict[str, Any]]:
    """Show the agreement to every node that built: an agreeing node answers with its
    signature (or refuses), a disagreeing one with a signed refusal, kept beside its report.

    Returns:
        The agreeing nodes' signature entries.
    """
    signatures = []
    for report, client in zip(reports, clients, strict=True):
        agrees = report.verdict == NodeVerdict.AGREE
        if not agrees and report.verdict != NodeVerdict.DISAGREE:
            continue
        try:
            signed, answer = client.cosign(report.job_id, payload)
        except NodeError as e:
            if agrees:
                report.verdict, report.reason = NodeVerdict.REFUSED, f"co-signing failed: {e}"
            else:
                report.reason = f"no signed disagreement: {e}"
            continue
        if agrees and signed:
            signatures.append(answer)
        elif agrees:
            report.verdict, report.reason = NodeVerdict.REFUSED, "refused to co-sign the agreement"
        elif signed:  # it signed what it did not build: its word is worth nothing
            report.verdict = NodeVerdict.INVALID
            report.reason = "co-signed an agreement it disagrees with"
        else:
            path = out_dir / "nodes" / report.name / "disagreement.intoto.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_envelope(path, answer)
    return signatures


def _reports_for_disagreement(
    reports: list[NodeReport],
    clients: list[NodeClient],
    agreed: Outputs,
    out_dir: Path,
    config: SandboxConfig | None,
) -> None:
    """diffoscope between an agreeing node's outputs and each disagreeing node's.

    What is downloaded is capped (MAX_DIFF_FILES per node, MAX_DIFF_BYTES in all) and
    written through no link; a node whose outputs cannot be fetched or written gets that
    said in its own report, and the others go on."""
    reference = next(
        ((r, c) for r, c in zip(reports, clients, strict=True) if r.verdict == NodeVerdict.AGREE),
        None,
    )
    if reference is None:
        return
    ours = dict(agreed)
    budget = MAX_DIFF_BYTES
    for report, client in zip(reports, clients, strict=True):
        if report.verdict != NodeVerdict.DISAGREE:
            continue
        theirs = dict(report.outputs)
        differing = sorted(p for p in set(ours) | set(theirs) if ours.get(p) != theirs.get(p))
        left_out = len(differing) - MAX_DIFF_FILES
        differing = differing[:MAX_DIFF_FILES]
        base = out_dir / "nodes" / report.name / "diff"
        try:
            for side, (rep, cli) in (("control", reference), ("other", (report, client))):
                (base / side).mkdir(parents=True, exist_ok=True)
                for path in differing:
                    if path not in dict(rep.outputs):
                        continue
                    if budget <= 0:
                        raise NodeError(f"more than {MAX_DIFF_BYTES} bytes to compare in all")
                    data = cli.artifact(rep.job_id, path)
                    budget -= len(data)
                    write_beneath(base / side, path, data)
        except NodeError as e:
            report.reason = f"outputs differ; fetching them for diffoscope failed: {e}"
            continue
        except (OSError, ValueError) as e:  # a name that cannot be a file here
            report.reason = (
                f"outputs differ; they cannot be written for diffoscope "
                f"({type(e).__name__}: {getattr(e, 'strerror', None) or e})"
            )
            continue
        report.report = diff_outputs(
            control=base / "control",
            other=base / "other",
            paths=differing,
            report_dir=base,
            config=config,
        )
        if left_out > 0:
            report.reason = f"outputs differ; {left_out} more differing outputs not compared"


def _write_result(result: RebuildResult) -> None:
    data = json.dumps(result.to_json(), indent=2) + "\n"
    write_atomically(result.out_dir / RESULT_FILE, data.encode())

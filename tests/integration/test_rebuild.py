"""k-of-n rebuilds for real: nodes serving HTTP on loopback, building in rootless podman,
signing with their own keys; a compromised node, tampering, refusals, a killed node."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from rebuilder.attest.envelope import read_envelope
from rebuilder.attest.statement import parse_statement
from rebuilder.attest.verify import verify_attestation
from rebuilder.node.client import Credentials
from rebuilder.rebuild import NodeTarget, RebuildResult, rebuild
from sandbox import connect_backend
from sandbox.backend import Cancel, RunOutcome, SandboxBackend
from sandbox.config import SandboxConfig
from sandbox.input_policy import InputPolicy
from sandbox.observer import BuildObserver
from sandbox.plan import BuildPlan, HostCapabilities, Workspace
from sandbox.podman_api import PodmanSession
from sandbox.spec import Spec
from sandbox.uris import AGREEMENT_PREDICATE, DISAGREEMENT_PREDICATE
from tests.conftest import HERMETIC, write_spec
from tests.integration.conftest import hello_spec
from tests.nodes import TOKEN, RunningNode, free_port, write_tokens
from tests.schemas import validate_document, validate_envelope

SMALL = """
[build]
image = "{image}"
command = ["sh", "-c", '''{script}''']
outputs = ["out.txt"]
source_date_epoch = 1700000000
"""
ECHO = "echo x > out.txt"


@pytest.fixture
def config(sandbox_config: SandboxConfig, podman_session: PodmanSession) -> SandboxConfig:
    return replace(sandbox_config, podman_url=podman_session.url)


class Tampering(SandboxBackend):
    """A compromised rebuilder: alters the output after the build, before hashing."""

    def __init__(self, real: SandboxBackend) -> None:
        self.real = real

    def host_capabilities(self, image_reference: str) -> HostCapabilities:
        return self.real.host_capabilities(image_reference)

    def run(
        self,
        plan: BuildPlan,
        workspace: Workspace,
        log_path: Path,
        observer: BuildObserver,
        cancel: Cancel | None = None,
    ) -> RunOutcome:
        outcome = self.real.run(plan, workspace, log_path, observer, cancel)
        assert outcome.build_dir is not None
        with (outcome.build_dir / "out.txt").open("a") as out:
            out.write("a backdoor\n")
        return outcome


@contextmanager
def tampering(config: SandboxConfig) -> Iterator[SandboxBackend]:
    with connect_backend(config) as backend:
        yield Tampering(backend)


@contextmanager
def nodes(
    root: Path,
    config: SandboxConfig,
    count: int,
    input_policy: InputPolicy | None = None,
    **special: Any,
) -> Iterator[list[RunningNode]]:
    running: list[RunningNode] = []
    try:
        for index in range(count):
            options = special if index == count - 1 else {}
            running.append(
                RunningNode(
                    root / f"node{index}",
                    f"node{index}",
                    config,
                    input_policy=input_policy,
                    **options,
                )
            )
        yield running
    finally:
        for node in running:
            node.stop()


def run_rebuild(
    spec_dir: Path, running: list[RunningNode], threshold: int, out: Path
) -> RebuildResult:
    return rebuild(
        Spec.from_toml(spec_dir),
        [NodeTarget.parse(node.pinned) for node in running],
        threshold=threshold,
        credentials=Credentials(token=TOKEN),
        out_dir=out,
        poll_s=0.3,
        timeout_s=900,
        config=running[0].node.config,
    )


@pytest.mark.slow
def test_three_nodes_agree_on_hello_and_co_sign_one_statement(
    tmp_path: Path, config: SandboxConfig, bookworm_image: str, hello_tarball: Path
) -> None:
    # nodes fetch inputs only over http(s): the tarball comes from a loopback mirror
    # that the nodes' operator allows (file:// would read the node's own files)
    mirror = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0),
        functools.partial(http.server.SimpleHTTPRequestHandler, directory=hello_tarball.parent),
    )
    threading.Thread(target=mirror.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{mirror.server_address[1]}/{hello_tarball.name}"
    spec = write_spec(
        tmp_path / "src", hello_spec(hello_tarball).replace(hello_tarball.as_uri(), url)
    )
    policy = InputPolicy.of(
        allow=[f"http://127.0.0.1:{mirror.server_address[1]}/"], networks=["127.0.0.1/32"]
    )
    try:
        with nodes(tmp_path / "nodes", config, 3, input_policy=policy) as running:
            result = run_rebuild(spec.parent, running, 3, tmp_path / "out")
    finally:
        mirror.shutdown()
        mirror.server_close()
    assert result.agreed, [(n.verdict, n.reason) for n in result.nodes]
    assert [n.verdict for n in result.nodes] == ["agree"] * 3
    assert [name for name, _ in result.outputs] == ["hello-2.10/hello"]
    assert result.attestation is not None
    keys = [node.key for node in running]
    combined = verify_attestation(result.attestation, keys, threshold=3)
    assert combined.ok and len(combined.signed_by) == 3
    assert combined.statement is not None
    assert combined.statement.predicate_type == AGREEMENT_PREDICATE
    listed = combined.statement.predicate["nodes"]
    assert {n["attestation"]["sha256"] for n in listed} == {
        n.attestation_sha256 for n in result.nodes
    }
    # the installed command verifies it the same way
    args = [str(HERMETIC), "verify", str(result.attestation), "--threshold", "3"]
    for node in running:
        args += ["--key", str(node.public_key_file)]
    assert subprocess.run(args, capture_output=True, timeout=60).returncode == 0


def test_a_compromised_node_disagrees_k2_forms_k3_fails(
    tmp_path: Path, config: SandboxConfig, minimal_image: str
) -> None:
    spec = write_spec(
        tmp_path / "src", SMALL.format(image=minimal_image, script="echo release > out.txt")
    )
    with nodes(tmp_path / "nodes", config, 3, connect=tampering) as running:
        two = run_rebuild(spec.parent, running, 2, tmp_path / "k2")
        three = run_rebuild(spec.parent, running, 3, tmp_path / "k3")
    assert two.agreed and [n.verdict for n in two.nodes] == ["agree", "agree", "disagree"]
    bad = two.nodes[2]
    assert bad.report is not None and bad.report.text is not None
    assert "a backdoor" in bad.report.text.read_text()
    refusal = tmp_path / "k2" / "nodes" / bad.name / "disagreement.intoto.json"
    assert validate_envelope(refusal) == "rebuild-disagreement.schema.json"
    validate_document(json.loads((tmp_path / "k2" / "rebuild.json").read_text()))
    assert two.attestation is not None
    assert validate_envelope(two.attestation) == "rebuild-agreement.schema.json"
    for report in two.nodes:
        assert report.attestation is not None
        assert validate_envelope(report.attestation) == "provenance.schema.json"
    signed_no = verify_attestation(refusal, [running[2].key])
    assert signed_no.ok and signed_no.statement is not None
    assert signed_no.statement.predicate_type == DISAGREEMENT_PREDICATE
    assert two.attestation is not None
    assert verify_attestation(two.attestation, [n.key for n in running[:2]], threshold=2).ok
    assert not three.agreed and three.attestation is None
    assert "2 node(s) agree; 3 needed" in three.notes


def test_unauthenticated_and_unauthorized_requests_do_nothing(
    tmp_path: Path, config: SandboxConfig, minimal_image: str
) -> None:
    with nodes(tmp_path / "nodes", config, 1, scopes=("read",)) as (node,):
        # control: the same token reads, so the refusals below are the auth's doing
        control = httpx.get(f"{node.url}/v1/node", headers={"Authorization": f"Bearer {TOKEN}"})
        assert control.status_code == 200
        anonymous = httpx.post(f"{node.url}/v1/rebuilds", content=b"x")
        assert anonymous.status_code == 401
        wrong = httpx.post(
            f"{node.url}/v1/rebuilds", content=b"x", headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        read_only = httpx.post(
            f"{node.url}/v1/rebuilds", content=b"x", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert read_only.status_code == 403 and "'submit' scope" in read_only.text
        assert node.node.store.active() == 0
        huge = httpx.post(
            f"{node.url}/v1/rebuilds",
            content=b"0" * (65 * 1024**2),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert huge.status_code == 413


def test_a_tampered_attestation_is_not_believed(
    tmp_path: Path, config: SandboxConfig, minimal_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(
        tmp_path / "src", SMALL.format(image=minimal_image, script="echo x > out.txt")
    )
    with nodes(tmp_path / "nodes", config, 2) as running:
        genuine = running[1].node.attestation

        def forged(job_id: str) -> bytes | None:
            stored = genuine(job_id)
            if stored is None:
                return None
            document = json.loads(stored)
            statement = json.loads(base64.b64decode(document["payload"]))
            statement["subject"][0]["digest"]["sha256"] = "0" * 64
            document["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
            return json.dumps(document).encode()

        monkeypatch.setattr(running[1].node, "attestation", forged)
        result = run_rebuild(spec.parent, running, 2, tmp_path / "out")
    assert not result.agreed
    assert result.nodes[1].verdict == "invalid"
    assert "does not verify" in result.nodes[1].reason


def test_a_node_refuses_to_co_sign_other_subjects(
    tmp_path: Path, config: SandboxConfig, minimal_image: str
) -> None:
    spec = write_spec(
        tmp_path / "src", SMALL.format(image=minimal_image, script="echo x > out.txt")
    )
    with nodes(tmp_path / "nodes", config, 2) as running:
        result = run_rebuild(spec.parent, running, 2, tmp_path / "out")
        assert result.agreed
        node, job_id = running[0], result.nodes[0].job_id
        assert result.attestation is not None
        agreed = parse_statement(read_envelope(result.attestation).payload)
        agreed["subject"][0]["digest"]["sha256"] = "f" * 64
        answer = httpx.post(
            f"{node.url}/v1/rebuilds/{job_id}/cosign",
            content=json.dumps(agreed).encode(),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        provenance = read_envelope(result.nodes[0].attestation or Path()).payload
        forged = httpx.post(
            f"{node.url}/v1/rebuilds/{job_id}/cosign",
            content=provenance,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code == 409
    # its own provenance, re-presented for a co-signature, is not an agreement: refused
    assert forged.status_code == 400 and "co-signs only" in forged.text
    refusal = tmp_path / "refusal.json"
    refusal.write_text(json.dumps(answer.json()["disagreement"]))
    checked = verify_attestation(refusal, [node.key])
    assert checked.ok and checked.statement is not None
    assert checked.statement.predicate_type == DISAGREEMENT_PREDICATE
    own = {"name": "out.txt", "digest": {"sha256": result.outputs[0][1]}}
    assert checked.statement.document["subject"] == [own]  # its own outputs, not the proposal


def test_a_node_killed_mid_build_finishes_the_job_once_after_restart(
    tmp_path: Path, sandbox_config: SandboxConfig, minimal_image: str
) -> None:
    from rebuilder.attest.keys import generate_keypair
    from rebuilder.node.requests import pack_source

    generate_keypair(tmp_path / "key")
    tokens = write_tokens(tmp_path / "tokens.json", ["submit", "read", "cosign"])
    port = free_port()
    env = {
        **os.environ,
        "HERMETIC_IMAGES_DIR": str(sandbox_config.images_dir),
    }
    argv = [
        str(HERMETIC),
        "node",
        "serve",
        "--dir",
        str(tmp_path / "node"),
        "--key",
        str(tmp_path / "key"),
        "--tokens",
        str(tokens),
        "--listen",
        f"127.0.0.1:{port}",
        "--lease",
        "3",
    ]

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            argv,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/node", headers=auth, timeout=1)
                return process
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("the node did not start")

    auth = {"Authorization": f"Bearer {TOKEN}"}
    spec = write_spec(
        tmp_path / "src",
        SMALL.format(image=minimal_image, script="sleep 4; echo survived > out.txt"),
    )
    archive = pack_source(spec.parent, tmp_path / "pack")
    node = start()
    try:
        job = httpx.post(
            f"http://127.0.0.1:{port}/v1/rebuilds", content=archive, headers=auth
        ).json()
        url = f"http://127.0.0.1:{port}/v1/rebuilds/{job['id']}"
        while httpx.get(url, headers=auth).json()["state"] != "running":
            time.sleep(0.2)
        time.sleep(1)
        os.killpg(node.pid, signal.SIGKILL)  # the node and its workers, mid-build
        node.wait()
        node = start()
        deadline = time.monotonic() + 180
        while (status := httpx.get(url, headers=auth).json())["state"] != "finished":
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        envelope = httpx.get(f"{url}/attestation", headers=auth).json()
        statement = json.loads(base64.b64decode(envelope["payload"]))
        digest = statement["subject"][0]["digest"]["sha256"]
        listed = httpx.get(
            f"http://127.0.0.1:{port}/v1/attestations",
            params={"subject": f"sha256:{digest}"},
            headers=auth,
        ).json()
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        node.wait(30)
    assert status["outcome"] == "built", status
    assert status["attempts"] == 2  # the lost attempt, then the one that finished
    assert [job["id"] for job in listed["jobs"]] == [job["id"]]  # reported once
    # the killed node's container was removed when the node came back
    ids = subprocess.run(
        ["podman", "ps", "-a", "-q", "--filter", "label=dev.hermetic.build"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if ids:
        inspected = json.loads(
            subprocess.run(["podman", "inspect", *ids], capture_output=True, check=True).stdout
        )
        mounts = [m["Source"] for c in inspected for m in c["Mounts"]]
        assert not [m for m in mounts if m.startswith(str(tmp_path))], mounts

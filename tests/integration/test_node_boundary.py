"""A rebuilder node as a boundary, attacked as a client would (issue 11): real `hermetic node
serve` processes and in-process nodes on loopback, building in rootless podman.

Each refusal has a negative control (the probe would succeed without the defence, or the
probe can see what it looks for) and a positive control (the legitimate path still works).
"""

from __future__ import annotations

import base64
import http.server
import io
import ipaddress
import json
import os
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest

from rebuilder.attest.keys import generate_keypair
from rebuilder.node.auth import token_digest
from rebuilder.node.requests import pack_source
from sandbox.config import SandboxConfig
from sandbox.digests import Sha256, sha256_bytes
from sandbox.errors import DigestMismatch
from sandbox.fetch import fetch_input
from sandbox.input_policy import InputPolicy, IPAddress, address_rule, system_resolver
from sandbox.podman_api import PodmanSession
from sandbox.spec import InputSpec
from sandbox.store import ContentStore
from tests.chains import DEPTH, chain_script, lexically_inside, make_chain
from tests.conftest import HERMETIC, write_spec
from tests.nodes import TOKEN, RunningNode, free_port

DSC_URL = "https://deb.debian.org/debian/pool/main/h/hello/hello_2.10-3.dsc"
DSC_SHA256 = "75296f5ef618ae2f1849e22b142a2b5ab52c452ebefa4e7b0564c44617db3790"
OTHER_TOKEN = "hmt_a-second-tenant"
AUDIT_TOKEN = "hmt_an-auditor-with-read-all"

SPEC = """
[build]
image = "{image}"
command = ["sh", "-c", '''{script}''']
outputs = {outputs}
source_date_epoch = 1700000000
"""


def spec_text(image: str, script: str, outputs: list[str], inputs: str = "") -> str:
    return SPEC.format(image=image, script=script, outputs=json.dumps(outputs)) + inputs


def input_table(url: str, sha256: str, dest: str = "dep") -> str:
    return f'\n[[inputs]]\nurl = "{url}"\nsha256 = "{sha256}"\ndest = "{dest}"\n'


def mirror_networks() -> list[str]:
    """deb.debian.org's addresses that the public-only rule would refuse here.

    On an ordinary network the list is empty. Where this machine reaches Debian through
    an address from a documentation or private range (as some sandboxes do), the node's
    operator would allow exactly those addresses; the test does the same.
    """
    try:
        found: list[IPAddress] = system_resolver("deb.debian.org", 443)
    except OSError:
        return []
    return [f"{a}/{a.max_prefixlen}" for a in found if address_rule(a) is not None]


class Listener:
    """A loopback HTTP server standing in for an internal service; records each request."""

    def __init__(self, body: bytes = b"internal secret\n") -> None:
        self.seen: list[str] = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.seen.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@contextmanager
def served_node(
    root: Path, config: SandboxConfig, *options: str
) -> Iterator[tuple[str, Path, dict[str, dict[str, str]]]]:
    """`hermetic node serve` as its own process; yields (url, key file, auth by tenant)."""
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "key").exists():  # a node started again keeps its key
        generate_keypair(root / "key")
    tenants = {"alice": TOKEN, "bob": OTHER_TOKEN, "auditor": AUDIT_TOKEN}
    scopes = {
        "alice": ["submit", "read", "cosign"],
        "bob": ["submit", "read"],
        "auditor": ["read-all"],
    }
    (root / "tokens.json").write_text(
        json.dumps(
            {
                "tokens": [
                    {"name": name, "sha256": token_digest(token), "scopes": scopes[name]}
                    for name, token in tenants.items()
                ]
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HERMETIC_IMAGES_DIR": str(config.images_dir)}
    process = subprocess.Popen(
        [
            str(HERMETIC),
            "node",
            "serve",
            "--dir",
            str(root / "node"),
            "--key",
            str(root / "key"),
            "--tokens",
            str(root / "tokens.json"),
            "--listen",
            f"127.0.0.1:{port}",
            "--max-attempts",
            "1",
            *options,
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    auth = {name: {"Authorization": f"Bearer {token}"} for name, token in tenants.items()}
    try:
        for _ in range(300):
            try:
                httpx.get(f"{url}/v1/node", headers=auth["alice"], timeout=1)
                break
            except httpx.HTTPError:
                assert process.poll() is None, "the node exited"
                time.sleep(0.1)
        yield url, root / "key", auth
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def submit(url: str, auth: dict[str, str], source: Path, scratch: Path) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/rebuilds", content=pack_source(source, scratch), headers=auth, timeout=60
    )


def finished(url: str, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 600
    while (status := httpx.get(f"{url}/v1/rebuilds/{job_id}", headers=auth).json())[
        "state"
    ] != "finished":
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    result: dict[str, Any] = status
    return result


@pytest.fixture
def config(sandbox_config: SandboxConfig, podman_session: PodmanSession) -> SandboxConfig:
    return sandbox_config


def test_inputs_that_reach_the_node_itself_are_refused_before_any_fetch(
    tmp_path: Path, config: SandboxConfig, minimal_image: str, listener: Listener
) -> None:
    allowed_networks = [f"--allow-input-network={n}" for n in mirror_networks()]
    # http:// is allowed too, so that the loopback listener is refused by the address rule
    options = ["--allow-input=https://", "--allow-input=http://", *allowed_networks]
    with served_node(tmp_path / "n", config, *options) as (url, key, auth):
        attacks = {
            "key": (Path(key).as_uri(), "(scheme)"),
            "hostname": ("file:///etc/hostname", "(scheme)"),
            "loopback": (f"http://127.0.0.1:{listener.port}/secret", "(address)"),
            "metadata": ("http://169.254.169.254/latest/meta-data/", "(address)"),
        }
        for name, (attack, rule) in attacks.items():
            source = write_spec(
                tmp_path / name,
                spec_text(minimal_image, "cp dep out", ["out"], input_table(attack, "0" * 64)),
            ).parent
            answer = submit(url, auth["alice"], source, tmp_path / f"p-{name}")
            assert answer.status_code == 400, (name, answer.text)
            assert rule in answer.json()["detail"], answer.text
        assert listener.seen == []  # the internal service never heard of the node
        # positive control: an allowed https input from Debian is fetched and built
        source = write_spec(
            tmp_path / "dsc",
            spec_text(minimal_image, "cp dep out", ["out"], input_table(DSC_URL, DSC_SHA256)),
        ).parent
        answer = submit(url, auth["alice"], source, tmp_path / "p-dsc")
        assert answer.status_code == 202, answer.text
        status = finished(url, auth["alice"], answer.json()["id"])
        assert status["outcome"] == "built", status
        served = httpx.get(f"{url}/v1/rebuilds/{status['id']}/artifacts/out", headers=auth["alice"])
        assert sha256_bytes(served.content) == DSC_SHA256
    # negative control: without a node's policy (the local CLI's fetch), the key is read
    # and a mismatch would hand its digest to whoever chose the URL
    with pytest.raises(DigestMismatch) as leaked:
        fetch_input(
            InputSpec(url=key.as_uri(), sha256=Sha256("0" * 64), dest=PurePosixPath("x")),
            ContentStore(tmp_path / "local-store"),
        )
    assert sha256_bytes(key.read_bytes()) in str(leaked.value)


def test_the_loopback_listener_is_reached_only_when_the_operator_allows_it(
    tmp_path: Path, config: SandboxConfig, minimal_image: str
) -> None:
    body = b"mirror content\n"
    mirror = Listener(body)
    try:
        allow = f"--allow-input=http://127.0.0.1:{mirror.port}/"
        with served_node(tmp_path / "n", config, allow, "--allow-input-network=127.0.0.1/32") as (
            url,
            _,
            auth,
        ):
            table = input_table(f"http://127.0.0.1:{mirror.port}/dep", sha256_bytes(body))
            source = write_spec(
                tmp_path / "s", spec_text(minimal_image, "cp dep out", ["out"], table)
            )
            answer = submit(url, auth["alice"], source.parent, tmp_path / "p")
            assert answer.status_code == 202, answer.text
            status = finished(url, auth["alice"], answer.json()["id"])
        # the probe works: an operator-allowed internal mirror is fetched from
        assert status["outcome"] == "built", status
        assert mirror.seen == ["/dep"]
    finally:
        mirror.close()


def test_a_public_looking_name_that_resolves_to_loopback_gets_a_signed_refusal(
    tmp_path: Path, config: SandboxConfig, minimal_image: str, listener: Listener
) -> None:
    names = {"mirror.example.org": [ipaddress.ip_address("127.0.0.1")]}

    def resolve(host: str, port: int) -> list[IPAddress]:
        return names.get(host, [])  # a resolver the test controls, as DNS would answer

    url = f"http://mirror.example.org:{listener.port}/secret"
    spec = spec_text(minimal_image, "cp dep out", ["out"], input_table(url, sha256_bytes(b"x")))
    source = write_spec(tmp_path / "s", spec).parent
    for allowed, name in (((), "refused"), (("127.0.0.1/32",), "allowed")):
        policy = InputPolicy.of(allow=["http://"], networks=list(allowed))
        policy = InputPolicy(allow=policy.allow, networks=policy.networks, resolver=resolve)
        node = RunningNode(tmp_path / name, name, config, input_policy=policy)
        try:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            answer = submit(node.url, auth, source, tmp_path / f"p-{name}")
            assert answer.status_code == 202, answer.text  # the name looks public
            status = finished(node.url, auth, answer.json()["id"])
            failure = httpx.get(f"{node.url}/v1/rebuilds/{status['id']}/attestation", headers=auth)
        finally:
            node.stop()
        if name == "refused":
            assert status["outcome"] == "build-failed", status
            assert "(address)" in status["reason"]
            # the node's lookup is not told: neither the address nor its kind
            assert "does not resolve to public addresses only" in status["reason"]
            assert "127.0.0.1" not in status["reason"] and "loopback" not in status["reason"]
            statement = json.loads(base64.b64decode(failure.json()["payload"]))
            assert statement["predicate"]["reason"] == status["reason"]  # signed
            assert listener.seen == []
        else:
            # control: the same name, resolved by the same resolver, is fetched from the
            # address that was checked once the operator allows it (the digest differs:
            # what matters is that the listener was reached, and the digest is not told)
            assert listener.seen == ["/secret"]
            assert "does not match" in status["reason"]
            assert sha256_bytes(b"internal secret\n") not in status["reason"]


def test_a_digest_mismatch_tells_the_client_no_digest_but_the_local_cli_both(
    tmp_path: Path, config: SandboxConfig, minimal_image: str
) -> None:
    wrong = "1" * 64
    options = [f"--allow-input-network={n}" for n in mirror_networks()]
    with served_node(tmp_path / "n", config, *options) as (url, _, auth):
        table = input_table(DSC_URL, wrong)
        source = write_spec(tmp_path / "s", spec_text(minimal_image, "cp dep out", ["out"], table))
        status = finished(
            url,
            auth["alice"],
            submit(url, auth["alice"], source.parent, tmp_path / "p").json()["id"],
        )
    assert status["outcome"] == "build-failed"
    assert "does not match" in status["reason"] and wrong in status["reason"]
    assert DSC_SHA256 not in status["reason"]
    # control: the local CLI, with the user's own file, shows both digests
    local = tmp_path / "dep.bin"
    local.write_bytes(b"my own file\n")
    table = input_table(local.as_uri(), wrong)
    spec = write_spec(tmp_path / "local", spec_text(minimal_image, "cp dep out", ["out"], table))
    env = {**os.environ, "HERMETIC_IMAGES_DIR": str(config.images_dir)}
    done = subprocess.run(
        [str(HERMETIC), "build", str(spec), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert wrong in done.stderr and sha256_bytes(b"my own file\n") in done.stderr


def test_the_symlink_chain_is_refused_in_outputs_publication_serving_and_requests(
    tmp_path: Path, config: SandboxConfig, minimal_image: str
) -> None:
    passwd = Path("/etc/passwd").read_bytes()
    dirs = "/".join(f"x{i}" for i in range(DEPTH))
    up = "/".join([".."] * DEPTH)
    # negative control: the chain passes a check by spelling, and the kernel follows it
    # out of the tree to the host's /etc/passwd
    assert lexically_inside("a", f"{dirs}/dd/{up}/etc/passwd")
    planted = make_chain(tmp_path / "probe")
    assert planted.read_bytes() == passwd
    env = {**os.environ, "HERMETIC_IMAGES_DIR": str(config.images_dir)}

    # --out publication, through the installed CLI
    chain = write_spec(tmp_path / "chain", spec_text(minimal_image, chain_script(), ["a", "ok"]))
    out = tmp_path / "out-chain"
    done = subprocess.run(
        [str(HERMETIC), "build", str(chain), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert "symlink leaving" in json.loads(done.stdout)["reason"]
    assert not os.path.lexists(out / "artifacts" / "a")
    inside = write_spec(
        tmp_path / "inside", spec_text(minimal_image, chain_script(), ["ok", "real.txt"])
    )
    kept = tmp_path / "out-inside"
    done = subprocess.run(
        [str(HERMETIC), "build", str(inside), "--out", str(kept)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert os.readlink(kept / "artifacts" / "ok") == "real.txt"  # an inside link is kept
    assert (kept / "artifacts" / "ok").read_text() == "real\n"

    with served_node(tmp_path / "n", config) as (url, _, auth):
        alice = auth["alice"]
        # output collection on a node
        status = finished(
            url, alice, submit(url, alice, chain.parent, tmp_path / "p1").json()["id"]
        )
        assert status["outcome"] == "build-failed" and "symlink leaving" in status["reason"], status
        built = finished(
            url, alice, submit(url, alice, inside.parent, tmp_path / "p2").json()["id"]
        )
        assert built["outcome"] == "built", built
        base = f"{url}/v1/rebuilds/{built['id']}/artifacts"
        link = httpx.get(f"{base}/ok", headers=alice)
        assert link.content == b"real.txt" and link.headers["X-Hermetic-Symlink"] == "1"
        # serving: the chain planted among a built job's artifacts is never followed
        artifacts = tmp_path / "n" / "node" / "jobs" / built["id"] / "out" / "artifacts"
        make_chain(artifacts / "planted")
        for path in (f"planted/{dirs}/dd/etc/passwd", f"planted/{dirs}/dd/{up}/etc/passwd"):
            answer = httpx.get(f"{base}/{path}", headers=alice)
            assert answer.status_code == 404 and passwd not in answer.content
        answer = httpx.get(f"{base}/planted/a", headers=alice)
        assert passwd not in answer.content and answer.headers.get("X-Hermetic-Symlink") == "1"
        assert httpx.get(f"{base}/real.txt", headers=alice).content == b"real\n"  # control
        # the request's own hermetic.toml as the chain
        request = io.BytesIO()
        with tarfile.open(fileobj=request, mode="w:gz") as archive:
            for name, target in (
                (f"{dirs}/dd", up),
                ("hermetic.toml", f"{dirs}/dd/{up}/etc/passwd"),
            ):
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, target
                archive.addfile(info)
        answer = httpx.post(f"{url}/v1/rebuilds", content=request.getvalue(), headers=alice)
        assert answer.status_code == 400, answer.text
        # refused by resolution (the link check runs before the regular-file check)
        assert "leads out of the tree" in answer.text, answer.text
        assert "root" not in answer.text  # nothing of /etc/passwd came back


def test_a_tenant_cannot_read_another_tenants_job_over_http(
    tmp_path: Path, config: SandboxConfig, minimal_image: str
) -> None:
    source = write_spec(tmp_path / "s", spec_text(minimal_image, "echo x > out", ["out"])).parent
    with served_node(tmp_path / "n", config) as (url, _, auth):
        job = submit(url, auth["alice"], source, tmp_path / "p").json()
        status = finished(url, auth["alice"], job["id"])  # control: the owner reads it
        assert status["outcome"] == "built"
        digest = json.loads(
            base64.b64decode(
                httpx.get(
                    f"{url}/v1/rebuilds/{job['id']}/attestation", headers=auth["alice"]
                ).json()["payload"]
            )
        )["subject"][0]["digest"]["sha256"]
        for path in ("", "/attestation", "/artifacts/out"):
            answer = httpx.get(f"{url}/v1/rebuilds/{job['id']}{path}", headers=auth["bob"])
            assert answer.status_code == 404, (path, answer.text)
        listed = httpx.get(
            f"{url}/v1/attestations", params={"subject": f"sha256:{digest}"}, headers=auth["bob"]
        )
        assert listed.json()["jobs"] == []
        audited = httpx.get(f"{url}/v1/rebuilds/{job['id']}", headers=auth["auditor"])
        assert audited.status_code == 200 and audited.json()["submitted_by"] == "token:alice"
        assert httpx.get(f"{url}/openapi.json").status_code == 401
        assert httpx.get(f"{url}/openapi.json", headers=auth["bob"]).status_code == 200


# --- review node-1: client-chosen limits, the deadline, deep trees, sparse outputs, -------
# --- connections and a stop with requests in flight ----------------------------------------


def test_the_node_s_ceilings_refuse_greedy_limits_and_its_deadline_stops_a_build(
    tmp_path: Path, config: SandboxConfig, minimal_image: str
) -> None:
    greedy = spec_text(minimal_image, "sleep 100000; echo > out", ["out"]) + (
        '\n[limits]\ntimeout = "168h"\nmemory = "1000TiB"\ndisk = "1000TiB"\n'
        'log = "1000TiB"\npids = 4000000\n'
    )
    long = spec_text(minimal_image, "sleep 100000; echo > out", ["out"])
    quick = spec_text(minimal_image, "echo bob > out", ["out"])
    options = ("--deadline", "40", "--workers", "1", "--max-timeout", "2h")
    with served_node(tmp_path / "n", config, *options) as (url, _, auth):
        source = write_spec(tmp_path / "greedy", greedy).parent
        answer = submit(url, auth["alice"], source, tmp_path / "p1")
        assert answer.status_code == 400, answer.text
        for name in ("timeout", "memory", "disk", "log", "pids"):
            assert f"limits.{name}" in answer.json()["detail"]
        # a build whose own timeout (1h, within the node's 2h) outlasts the job's deadline
        job = submit(
            url, auth["alice"], write_spec(tmp_path / "long", long).parent, tmp_path / "p2"
        )
        assert job.status_code == 202, job.text
        stopped = finished(url, auth["alice"], job.json()["id"])
        assert stopped["outcome"] == "deadline-exceeded", stopped
        assert "stopped" in stopped["reason"] and stopped["attempts"] == 1
        # the node's one worker is free again: the next job builds
        bob = submit(url, auth["bob"], write_spec(tmp_path / "bob", quick).parent, tmp_path / "p3")
        assert finished(url, auth["bob"], bob.json()["id"])["outcome"] == "built"
        signed = httpx.get(
            f"{url}/v1/rebuilds/{stopped['id']}/attestation", headers=auth["alice"]
        ).json()
        assert json.loads(base64.b64decode(signed["payload"]))["predicate"]["outcome"] == (
            "deadline-exceeded"
        )
    # negative control: without a node's ceilings the greedy spec is a valid spec
    from sandbox.spec import Spec

    assert Spec.from_toml(tmp_path / "greedy" / "hermetic.toml").limits.timeout_s == 168 * 3600


def test_a_deep_build_tree_is_the_build_s_fault_and_the_node_restarts(
    tmp_path: Path, config: SandboxConfig, minimal_image: str
) -> None:
    script = (
        "i=0; while [ $i -lt 1200 ]; do mkdir d; cd d; i=$((i+1)); done; cd /build; echo x > out"
    )
    deep = write_spec(tmp_path / "deep", spec_text(minimal_image, script, ["out"])).parent
    shallow = write_spec(
        tmp_path / "shallow", spec_text(minimal_image, script.replace("1200", "20"), ["out"])
    ).parent
    for start in range(2):  # the second start finds what the first left behind
        with served_node(tmp_path / "n", config) as (url, _, auth):
            if start == 0:
                status = finished(
                    url,
                    auth["alice"],
                    submit(url, auth["alice"], deep, tmp_path / "p").json()["id"],
                )
                assert status["outcome"] == "build-failed", status  # the build's own doing
                assert "too large" in status["reason"] and status["attempts"] == 1
            else:  # control: the restarted node builds an ordinary nested tree
                status = finished(
                    url,
                    auth["alice"],
                    submit(url, auth["alice"], shallow, tmp_path / "q").json()["id"],
                )
                assert status["outcome"] == "built", status
    work = tmp_path / "n" / "node" / "work"
    assert not work.exists() or not any(work.iterdir())  # no scratch left behind


def test_a_sparse_output_counts_at_its_full_size(
    tmp_path: Path, config: SandboxConfig, minimal_image: str
) -> None:
    sparse = write_spec(tmp_path / "s", spec_text(minimal_image, "truncate -s 100M out", ["out"]))
    small = write_spec(tmp_path / "t", spec_text(minimal_image, "truncate -s 1M out", ["out"]))
    with served_node(tmp_path / "n", config, "--max-output", "64MiB") as (url, _, auth):
        big = finished(
            url,
            auth["alice"],
            submit(url, auth["alice"], sparse.parent, tmp_path / "p").json()["id"],
        )
        ok = finished(
            url,
            auth["alice"],
            submit(url, auth["alice"], small.parent, tmp_path / "q").json()["id"],
        )
    assert big["outcome"] == "build-failed" and "sparse files count in full" in big["reason"]
    artifacts = tmp_path / "n" / "node" / "jobs" / big["id"] / "out" / "artifacts"
    assert not artifacts.exists()  # nothing was copied out
    assert ok["outcome"] == "built", ok  # control: a sparse file within the cap is an output
    # negative control: the same build, without a node's cap, is copied out at full size
    env = {**os.environ, "HERMETIC_IMAGES_DIR": str(config.images_dir)}
    done = subprocess.run(
        [str(HERMETIC), "build", str(sparse), "--out", str(tmp_path / "local")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    copied = tmp_path / "local" / "artifacts" / "out"
    assert copied.stat().st_size == 100 * 1024**2 and copied.stat().st_blocks * 512 >= 10**8


def test_slow_clients_do_not_exhaust_the_node_s_connections(
    tmp_path: Path, config: SandboxConfig
) -> None:
    import socket

    with served_node(tmp_path / "n", config, "--max-connections", "20") as (url, _, auth):
        port = int(url.rsplit(":", 1)[1])
        held = []
        for _ in range(200):  # headers that never end, and no token
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /v1/node HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        # the node closes what it does not keep: the probe sees those connections end
        closed = 0
        for sock in held:
            sock.settimeout(60)
            try:
                closed += sock.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == len(held)  # the first twenty by the header timeout, the rest at once
        # a client with a token is served (retrying while the attack's slots drain)
        deadline = time.monotonic() + 120
        while True:
            try:
                answer = httpx.get(f"{url}/v1/node", headers=auth["bob"], timeout=30)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        assert answer.status_code == 200
        for sock in held:
            sock.close()


def _cmdline(process: Path) -> bytes:
    try:
        return (process / "cmdline").read_bytes()
    except OSError:
        return b""


def test_a_stop_does_not_wait_for_a_stalled_upload(tmp_path: Path, config: SandboxConfig) -> None:
    import socket

    with served_node(tmp_path / "n", config) as (url, _, auth):
        port = int(url.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port))
        token = auth["alice"]["Authorization"]
        sock.sendall(
            b"POST /v1/rebuilds HTTP/1.1\r\nHost: x\r\nAuthorization: "
            + token.encode()
            + b"\r\nContent-Length: 1000000\r\n\r\n"
            + b"x" * 10
        )
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):  # control: the request is in flight, unanswered
            sock.recv(1)
        process = next(
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and f"127.0.0.1:{port}".encode() in _cmdline(p)
        )
        os.kill(process, signal.SIGTERM)
        for _ in range(1200):  # it exits on its own: the stalled upload does not hold it
            if not Path(f"/proc/{process}").exists() or b"zombie" in _status(process):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the node did not stop with an upload in flight")
        sock.close()


def _status(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/status").read_bytes().lower()
    except OSError:
        return b"zombie"

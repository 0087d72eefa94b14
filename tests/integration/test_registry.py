"""Registry images pinned by digest, with a real registry (docker-registry on loopback,
htpasswd authentication): pulled on first use with the user's auth.json, recorded in the
provenance, and refused when the digest is wrong, the image is not pinned, the manifest
was tampered with, credentials are missing, or TLS is skipped for a registry not marked
insecure."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tarfile
from pathlib import Path

from sandbox.config import SandboxConfig
from sandbox.podman_api import PodmanSession
from tests.conftest import HERMETIC, write_spec
from tests.integration.registry import PASSWORD, USER, LocalRegistry, local_registry

# The image holds a static busybox and one file, which the build copies.
SPEC = """
[build]
image = "{image}"
command = ["/bin/busybox", "cp", "/hello.txt", "out.txt"]
outputs = ["out.txt"]
source_date_epoch = 1700000000
"""


def podman(*args: str) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def push(registry: LocalRegistry, local: str, remote: str, tmp_path: Path) -> str:
    """Push with podman; the manifest digest the registry holds."""
    digest_file = tmp_path / "digest"
    podman(
        "push", "--tls-verify=false", f"--creds={USER}:{PASSWORD}",
        f"--digestfile={digest_file}", local, f"{registry.address}/{remote}",
    )  # fmt: skip
    return digest_file.read_text().strip()


def auth_file(path: Path, registry: LocalRegistry) -> Path:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    path.write_text(json.dumps({"auths": {registry.address: {"auth": token}}}))
    return path


def pushed_image(registry: LocalRegistry, tmp_path: Path, name: str) -> str:
    """A small image of its own (podman import: a static busybox and one file), pushed,
    then removed here: the registry is the only place it exists. Returns
    ``repository@sha256:…``."""
    rootfs = tmp_path / f"{name}.tar"
    payload = tmp_path / f"{name}.txt"
    payload.write_text(f"{name} {tmp_path.name} {os.getpid()}\n")  # new content every run
    with tarfile.open(rootfs, "w") as tar:
        tar.add(payload, arcname="hello.txt")
        tar.add("/bin/busybox", arcname="bin/busybox")  # busybox-static, a set-up package
    local = f"localhost/hermetic-test/{name}:1"
    podman("import", str(rootfs), local)
    digest = push(registry, local, f"team/{name}:1", tmp_path)
    podman("rmi", local)
    return f"{registry.address}/team/{name}@{digest}"


def test_registry_image_by_digest(
    tmp_path: Path, sandbox_config: SandboxConfig, podman_session: PodmanSession
) -> None:
    pulled: list[str] = []
    with local_registry(tmp_path / "registry") as registry:
        reference = pushed_image(registry, tmp_path, "first")
        repository, _, digest = reference.partition("@")
        assert not podman_session.image_exists(reference)

        def build(image: str, name: str, **env: str) -> subprocess.CompletedProcess[str]:
            spec = write_spec(tmp_path / f"src-{name}", SPEC.format(image=image))
            environment = {
                **os.environ,
                "HERMETIC_IMAGES_DIR": str(sandbox_config.images_dir),
                "HERMETIC_STORE": str(sandbox_config.store_dir),
                "HERMETIC_WORK_DIR": str(sandbox_config.work_dir),
                "HERMETIC_PODMAN_URL": podman_session.url,
                "XDG_CONFIG_HOME": str(tmp_path / "config"),
                "XDG_RUNTIME_DIR": str(tmp_path / "runtime"),  # no auth.json of the user's
                "HERMETIC_SIGN": "",
                **env,
            }
            return subprocess.run(
                [HERMETIC, "build", str(spec), "--out", str(tmp_path / f"out-{name}")],
                env=environment, capture_output=True, text=True, timeout=600,
            )  # fmt: skip

        (tmp_path / "runtime").mkdir(mode=0o700)  # a runtime dir without the user's auth.json
        insecure = {"HERMETIC_INSECURE_REGISTRIES": registry.address}
        credentials = {"REGISTRY_AUTH_FILE": str(auth_file(tmp_path / "auth.json", registry))}
        try:
            # negative controls: TLS is not skipped unless the user marks the registry;
            # without credentials, no pull; a tag is refused before anything runs
            no_tls = build(reference, "no-tls", **credentials)
            assert no_tls.returncode == 2, no_tls.stderr
            assert "http response to https client" in no_tls.stderr.lower(), no_tls.stderr
            no_auth = build(reference, "no-auth", **insecure)
            assert no_auth.returncode == 2, no_auth.stderr
            assert "unauthorized" in no_auth.stderr.lower(), no_auth.stderr
            tagged = build(f"{repository}:1", "tag", **insecure, **credentials)
            assert tagged.returncode == 2 and "tag without a digest" in tagged.stderr
            assert not podman_session.image_exists(reference), "nothing was pulled so far"

            # a digest the registry does not have is refused
            wrong = f"{repository}@sha256:{'0' * 64}"
            missing = build(wrong, "wrong", **insecure, **credentials)
            assert missing.returncode == 2 and "manifest unknown" in missing.stderr.lower()

            # positive: pulled by digest with the user's credentials, built, recorded
            built = build(reference, "ok", **insecure, **credentials)
            pulled.append(reference)
            assert built.returncode == 0, built.stderr
            assert podman_session.image_exists(reference)
            out = tmp_path / "out-ok"
            assert (out / "artifacts" / "out.txt").read_text().startswith("first ")
            assert json.loads((out / "result.json").read_text())["image"] == reference
            envelope = json.loads((out / "provenance.intoto.json").read_text())
            statement = json.loads(base64.b64decode(envelope["payload"]))
            image = statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]
            assert image == {
                "name": "image",
                "uri": repository,
                "digest": {"sha256": digest.removeprefix("sha256:")},
            }
            assert PASSWORD not in (out / "result.json").read_text() + json.dumps(statement)

            # a tampered manifest (same size, one byte changed) fails podman's digest check
            second = pushed_image(registry, tmp_path, "second")
            manifest = registry.blob(second.partition("@")[2])
            text = manifest.read_text()
            manifest.write_text(text.replace("schemaVersion", "schemaVersioN", 1))
            tampered = build(second, "tampered", **insecure, **credentials)
            assert tampered.returncode == 2, tampered.stderr
            assert "does not match provided manifest digest" in tampered.stderr, tampered.stderr
            assert not podman_session.image_exists(second)
            # control: the same manifest restored is pulled and builds
            manifest.write_text(text)
            restored = build(second, "restored", **insecure, **credentials)
            pulled.append(second)
            assert restored.returncode == 0, restored.stderr
        finally:
            for image in pulled:
                subprocess.run(["podman", "rmi", "-f", image], capture_output=True, timeout=120)

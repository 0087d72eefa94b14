"""hermetic pin against real HTTP servers on loopback: where credentials go (review
real-1 #2, #8, #10, #11), which index serves a requirements file (#6), uv.lock's graph
and sources (#12), and hashes checked before anything is downloaded (#13).

The servers record every request, so each test sees what a client sent where."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from rebuilder.pin import (
    PackageIndex,
    PinError,
    PipPinner,
    npm_registry,
    pin_npm_packages,
    read_npm_lock,
    read_python_lock,
)
from sandbox.credentials import ScopedCredential
from sandbox.store import ContentStore
from tests.http_servers import Answer, Server, serving

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


def wheel(name: str, version: str) -> bytes:
    """A minimal valid pure-Python wheel (pip reads its METADATA)."""
    dist = f"{name.replace('-', '_')}-{version}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name.replace('-', '_')}/__init__.py", "")
        archive.writestr(
            f"{dist}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        )
        archive.writestr(
            f"{dist}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{dist}.dist-info/RECORD", "")
    return buffer.getvalue()


def sdist(name: str, version: str, requires: list[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = (
            f'[build-system]\nrequires = {json.dumps(requires)}\nbuild-backend = "backend"\n'
        ).encode()
        info = tarfile.TarInfo(f"{name}-{version}/pyproject.toml")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def project_page(name: str, files: dict[str, tuple[str, bytes]]) -> Answer:
    """A PEP 691 project page: filename -> (url, content)."""
    body = {
        "meta": {"api-version": "1.0"},
        "name": name,
        "files": [
            {"filename": filename, "url": url, "hashes": {"sha256": sha256(data)}}
            for filename, (url, data) in files.items()
        ],
    }
    return 200, {"Content-Type": SIMPLE_JSON}, json.dumps(body).encode()


DEMO = wheel("demo", "1.0")
DEMO_FILE = "demo-1.0-py3-none-any.whl"


def test_index_credentials_go_to_the_index_only(tmp_path: Path) -> None:
    """review real-1 #2: PIP_INDEX_URL=http://alice:s3cret@A/simple/ with files on B: B got
    'Basic alice:s3cret'. Now only A (the index's scheme, host and port) gets it."""
    index = Server(basic=("alice", "s3cret"))
    files = Server(routes={f"/files/{DEMO_FILE}": (200, {}, DEMO)})
    with serving(index, files):
        page = {DEMO_FILE: (f"{files.url}/files/{DEMO_FILE}", DEMO)}
        index.routes["/simple/demo/"] = project_page("demo", page)
        (tmp_path / "requirements.txt").write_text("demo==1.0\n")
        url = f"http://alice:s3cret@127.0.0.1:{index.port}/simple/"
        pinner = PipPinner(index=PackageIndex(url), store=ContentStore(tmp_path / "store"))
        (pinned,) = pinner.pin(read_python_lock(tmp_path / "requirements.txt", "3.11"))
    assert pinned.url == f"{files.url}/files/{DEMO_FILE}" and pinned.purl is None
    assert index.authorizations() == {"Basic YWxpY2U6czNjcmV0"}  # the probe sees the header
    assert files.authorizations() == {None}, "the file host never gets the index's password"


def test_plain_http_downloads_need_an_http_index(tmp_path: Path) -> None:
    """review real-1 #2: a uv.lock naming http://B/... beside an https index sent the
    index's header over plain http; now such a download is refused, and B is not asked."""
    files = Server(routes={f"/x/{DEMO_FILE}": (200, {}, DEMO)})
    with serving(files):
        (tmp_path / "uv.lock").write_text(
            f"""version = 1
[[package]]
name = "demo"
version = "1.0"
source = {{ registry = "https://index.invalid/simple" }}
wheels = [{{ url = "{files.url}/x/{DEMO_FILE}", hash = "sha256:{sha256(DEMO)}" }}]
"""
        )
        index = PackageIndex("https://alice:s3cret@index.invalid/simple/")
        pinner = PipPinner(index=index, store=ContentStore(tmp_path / "store"))
        with pytest.raises(PinError, match=r"uv.lock: package\[0\] demo: .*only https"):
            pinner.pin(read_python_lock(tmp_path / "uv.lock", "3.11"))
    assert files.seen == []
    assert not (tmp_path / "store").exists()


def test_a_requirements_files_index_is_used_and_extra_indexes_refused(tmp_path: Path) -> None:
    """review real-1 #6: '--index-url' in a requirements file was ignored silently (the
    user's index served the names); '--extra-index-url' invites dependency confusion."""
    users = Server(basic=("alice", "s3cret"))
    projects = Server(routes={f"/f/{DEMO_FILE}": (200, {}, DEMO)})
    with serving(users, projects):
        projects.routes["/simple/demo/"] = project_page(
            "demo", {DEMO_FILE: (f"{projects.url}/f/{DEMO_FILE}", DEMO)}
        )
        requirements = tmp_path / "requirements.txt"
        requirements.write_text(f"--index-url {projects.url}/simple/\ndemo==1.0\n")
        wanted = read_python_lock(requirements, "3.11")
        assert [w.index for w in wanted] == [f"{projects.url}/simple/"]
        user_index = PackageIndex(f"http://alice:s3cret@127.0.0.1:{users.port}/simple/")
        pinner = PipPinner(index=user_index, store=ContentStore(tmp_path / "store"))
        (pinned,) = pinner.pin(wanted)
    assert pinned.url == f"{projects.url}/f/{DEMO_FILE}"
    assert users.seen == [], "the user's index is not asked for the file's names"
    assert projects.authorizations() == {None}, "nor are its credentials sent elsewhere"
    for option in ("--extra-index-url https://x.example/simple", "-f ./wheels", "--find-links=x"):
        requirements.write_text(f"{option}\ndemo==1.0\n")
        with pytest.raises(PinError, match=r"requirements.txt:1: "):
            read_python_lock(requirements, "3.11")


def test_credentials_in_a_lockfile_url_are_used_for_it_and_never_written(tmp_path: Path) -> None:
    """review real-1 #10: a pylock.toml URL with user:pass went into hermetic.toml."""
    files = Server(basic=("bob", "hunter2"), routes={f"/files/{DEMO_FILE}": (200, {}, DEMO)})
    index = Server()  # the user's index, which does not know the project
    with serving(files, index):
        (tmp_path / "pylock.toml").write_text(
            f"""lock-version = "1.0"
[[packages]]
name = "demo"
version = "1.0"
[[packages.wheels]]
url = "http://bob:hunter2@127.0.0.1:{files.port}/files/{DEMO_FILE}"
hashes = {{ sha256 = "{sha256(DEMO)}" }}
"""
        )
        pinner = PipPinner(
            index=PackageIndex(index.url + "/simple/"), store=ContentStore(tmp_path / "store")
        )
        (pinned,) = pinner.pin(read_python_lock(tmp_path / "pylock.toml", "3.11"))
    assert pinned.url == f"{files.url}/files/{DEMO_FILE}"
    assert "hunter2" not in json.dumps(pinned.__dict__)
    assert index.authorizations() == {None}, "the file's credentials are for the file only"


def test_sha512_hashes_of_a_requirements_file_are_checked(tmp_path: Path) -> None:
    """review real-1 #10: '--hash=sha512:' was ignored, trusting the index alone."""
    index = Server(routes={f"/f/{DEMO_FILE}": (200, {}, DEMO)})
    with serving(index):
        index.routes["/simple/demo/"] = project_page(
            "demo", {DEMO_FILE: (f"{index.url}/f/{DEMO_FILE}", DEMO)}
        )
        requirements = tmp_path / "requirements.txt"
        requirements.write_text(f"demo==1.0 --hash=sha512:{'0' * 128}\n")
        pinner = PipPinner(
            index=PackageIndex(index.url + "/simple/"), store=ContentStore(tmp_path / "s")
        )
        with pytest.raises(PinError, match=r"requirements.txt:1: .*not the lockfile's sha512:0000"):
            pinner.pin(read_python_lock(requirements, "3.11"))
        right = hashlib.sha512(DEMO).hexdigest()
        requirements.write_text(f"demo==1.0 --hash=sha512:{right}\n")
        pinner = PipPinner(
            index=PackageIndex(index.url + "/simple/"), store=ContentStore(tmp_path / "s")
        )
        assert len(pinner.pin(read_python_lock(requirements, "3.11"))) == 1
    requirements.write_text(f"demo==1.0 --hash=md5:{'0' * 32}\n")
    with pytest.raises(PinError, match="too weak"):
        read_python_lock(requirements, "3.11")


def test_a_wrong_uv_lock_hash_is_refused_before_anything_is_downloaded(tmp_path: Path) -> None:
    """review real-1 #13: a wrong hash in uv.lock was found only while downloading (other
    files already fetched), and the error did not name the lockfile's entry."""
    other = wheel("other", "2.0")
    index = Server(
        routes={
            f"/f/{DEMO_FILE}": (200, {}, DEMO),
            "/f/other-2.0-py3-none-any.whl": (200, {}, other),
        }
    )
    with serving(index):
        index.routes["/simple/demo/"] = project_page(
            "demo", {DEMO_FILE: (f"{index.url}/f/{DEMO_FILE}", DEMO)}
        )
        index.routes["/simple/other/"] = project_page(
            "other", {"other-2.0-py3-none-any.whl": (f"{index.url}/f/other.whl", other)}
        )
        lock = f"""version = 1
[[package]]
name = "app"
version = "0.1"
source = {{ virtual = "." }}
dependencies = [{{ name = "other" }}, {{ name = "demo" }}]

[[package]]
name = "other"
version = "2.0"
source = {{ registry = "{index.url}/simple" }}
wheels = [{{ url = "{index.url}/f/other-2.0-py3-none-any.whl", hash = "sha256:{sha256(other)}" }}]

[[package]]
name = "demo"
version = "1.0"
source = {{ registry = "{index.url}/simple" }}
wheels = [{{ url = "{index.url}/f/{DEMO_FILE}", hash = "sha256:{"1" * 64}" }}]
"""
        (tmp_path / "uv.lock").write_text(lock)
        pinner = PipPinner(
            index=PackageIndex(index.url + "/simple/"), store=ContentStore(tmp_path / "store")
        )
        with pytest.raises(PinError, match=r"uv.lock: package\[2\] demo: .*nothing was downloaded"):
            pinner.pin(read_python_lock(tmp_path / "uv.lock", "3.11"))
        assert not [r for r in index.seen if r.path.startswith("/f/")], "no file was fetched"
        assert not (tmp_path / "store").exists()
        # control: the right hash pins both
        (tmp_path / "uv.lock").write_text(lock.replace("1" * 64, sha256(DEMO)))
        pinned = pinner.pin(read_python_lock(tmp_path / "uv.lock", "3.11"))
    assert sorted(p.filename for p in pinned) == [DEMO_FILE, "other-2.0-py3-none-any.whl"]


def test_uv_lock_follows_the_graph_for_the_target(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """review real-1 #12: uv.lock was read without markers (a Windows-only package stopped
    the pin) and url/git sources were skipped silently."""
    direct = wheel("direct", "3.0")
    files = Server(routes={"/direct-3.0-py3-none-any.whl": (200, {}, direct)})
    with serving(files):
        base = f"""version = 1
[[package]]
name = "app"
version = "0.1"
source = {{ editable = "." }}
dependencies = [
    {{ name = "colorama", marker = "sys_platform == 'win32'" }},
    {{ name = "click", extra = ["speedups"] }},
    {{ name = "direct" }},
    {{ name = "local" }},
]
[package.dev-dependencies]
test = [{{ name = "pytest" }}]

[[package]]
name = "colorama"
version = "0.4.6"
source = {{ registry = "https://pypi.org/simple" }}
[[package.wheels]]
url = "https://f.example/c/colorama-0.4.6-py2.py3-none-any.whl"
hash = "sha256:{"a" * 64}"

[[package]]
name = "click"
version = "8.1.7"
source = {{ registry = "https://pypi.org/simple" }}
[[package.wheels]]
url = "https://f.example/c/click-8.1.7-py3-none-any.whl"
hash = "sha256:{"b" * 64}"
[package.optional-dependencies]
speedups = [{{ name = "fast", marker = "platform_machine == 'x86_64'" }}]

[[package]]
name = "fast"
version = "1.0"
source = {{ registry = "https://pypi.org/simple" }}
[[package.wheels]]
url = "https://f.example/c/fast-1.0-py3-none-any.whl"
hash = "sha256:{"c" * 64}"

[[package]]
name = "pytest"
version = "8.0.0"
source = {{ registry = "https://pypi.org/simple" }}
[[package.wheels]]
url = "https://f.example/c/pytest-8.0.0-py3-none-any.whl"
hash = "sha256:{"d" * 64}"

[[package]]
name = "direct"
version = "3.0"
source = {{ url = "{files.url}/direct-3.0-py3-none-any.whl" }}
wheels = [{{ url = "{files.url}/direct-3.0-py3-none-any.whl", hash = "sha256:{sha256(direct)}" }}]

[[package]]
name = "local"
version = "0.1"
source = {{ directory = "libs/local" }}
"""
        path = tmp_path / "uv.lock"
        path.write_text(base)
        wanted = read_python_lock(path, "3.11")
        assert sorted(w.name for w in wanted) == ["click", "direct", "fast", "pytest"]
        assert "colorama" not in {w.name for w in wanted}, "win32 only: not for the target"
        assert "libs/local" in caplog.text, "a local source is named, not skipped silently"
        aarch64 = read_python_lock(path, "3.11", platform="manylinux_2_36_aarch64")
        assert "fast" not in {w.name for w in aarch64}, "the platform's machine counts"
        # the url source is pinned with its hash, from its own URL
        (direct_wanted,) = [w for w in wanted if w.name == "direct"]
        pinner = PipPinner(
            index=PackageIndex(files.url + "/simple/"), store=ContentStore(tmp_path / "s")
        )
        (pinned,) = pinner.pin([direct_wanted])
        assert pinned.sha256 == sha256(direct) and files.seen[-1].path.startswith("/direct")
    path.write_text(
        base.replace(
            'source = { directory = "libs/local" }',
            'source = { git = "https://g.example/x?rev=1" }',
        )
    )
    with pytest.raises(PinError, match=r"package\[6\] local: comes from git"):
        read_python_lock(path, "3.11")


BACKEND_FILE = "demo_backend-1.0-py3-none-any.whl"
NEWER_FILE = "demo_backend-9.0-py3-none-any.whl"


def _pip_config(tmp_path: Path, decoy: Server) -> Path:
    config = tmp_path / "machine-pip.conf"
    config.write_text(
        f"[global]\nextra-index-url = {decoy.url}/simple/\nfind-links = {tmp_path}/links\n"
    )
    return config


def test_build_backends_are_resolved_on_the_users_index_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review real-1 #11: pip resolved an sdist's build backend without the index's
    credentials (an authenticated index failed) and from other configured indexes
    (pip.conf's extra-index-url, find-links). Now pip runs with this index only, its
    credentials in pip's environment, not on its command line."""
    backend = wheel("demo-backend", "1.0")
    newer = wheel("demo-backend", "9.0")  # what a configured extra index would offer
    package = sdist("demo2", "1.0", ["demo-backend"])
    index = Server(basic=("alice", "s3cret"))
    decoy = Server()
    empty = Server()
    with serving(index, decoy, empty):
        index.routes.update(
            {
                "/simple/demo2/": project_page(
                    "demo2", {"demo2-1.0.tar.gz": (f"{index.url}/f/demo2-1.0.tar.gz", package)}
                ),
                "/simple/demo-backend/": project_page(
                    "demo-backend",
                    {BACKEND_FILE: (f"{index.url}/f/{BACKEND_FILE}", backend)},
                ),
                "/f/demo2-1.0.tar.gz": (200, {}, package),
                f"/f/{BACKEND_FILE}": (200, {}, backend),
            }
        )
        decoy.routes.update(
            {
                "/simple/demo-backend/": project_page(
                    "demo-backend",
                    {NEWER_FILE: (f"{decoy.url}/f/{NEWER_FILE}", newer)},
                ),
                f"/f/{NEWER_FILE}": (200, {}, newer),
            }
        )
        (tmp_path / "links").mkdir()
        (tmp_path / "links" / "demo_backend-8.0-py3-none-any.whl").write_bytes(
            wheel("demo-backend", "8.0")
        )
        monkeypatch.setenv("PIP_CONFIG_FILE", str(_pip_config(tmp_path, decoy)))
        monkeypatch.setenv("PIP_EXTRA_INDEX_URL", f"{decoy.url}/simple/")
        monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "links"))
        # control: the machine's pip settings as set here do reach a plain pip (so the
        # decoy would be asked if pin's pip were not isolated from them)
        plain = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--dest",
             str(tmp_path / "plain"), "--index-url", f"{empty.url}/simple/", "demo-backend"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert plain.returncode == 0, plain.stderr
        assert decoy.seen, "the probe sees a pip that reads the machine's settings"
        decoy.seen.clear()
        (tmp_path / "requirements.txt").write_text("demo2==1.0\n")
        url = f"http://alice:s3cret@127.0.0.1:{index.port}/simple/"
        pinner = PipPinner(
            index=PackageIndex(url),
            store=ContentStore(tmp_path / "store"),
            no_binary=frozenset({":all:"}),
        )
        pinned = pinner.pin(read_python_lock(tmp_path / "requirements.txt", "3.11"))
    assert {(p.filename, p.why) for p in pinned} == {
        ("demo2-1.0.tar.gz", "requirement"),
        ("demo_backend-1.0-py3-none-any.whl", "build backend of demo2"),
    }
    assert decoy.seen == [], "no other index, no find-links"
    assert "Basic YWxpY2U6czNjcmV0" in index.authorizations()


def test_npm_tokens_go_to_their_registry_only(tmp_path: Path) -> None:
    """review real-1 #8: the token was matched by host name alone (another port of the same
    host got it; http would carry it in clear). Now scheme, host, port and path must
    match, as npm's per-registry keys say."""
    tarball = b"fake tarball bytes"
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    metadata = json.dumps({"dist": {"integrity": integrity}}).encode()
    registry = Server(routes={"/ms/2.1.3": (200, {}, metadata)})
    other = Server(routes={"/other-service/ms-2.1.3.tgz": (200, {}, tarball)})
    with serving(registry, other):
        home = tmp_path / "home"
        home.mkdir()
        (home / ".npmrc").write_text(
            f"registry={registry.url}/\n//127.0.0.1:{registry.port}/:_authToken=${{NPM_TOKEN}}\n"
        )
        project = tmp_path / "project"
        project.mkdir()
        env = {"HOME": str(home), "NPM_TOKEN": "npm_SECRET"}
        found, credentials = npm_registry(project, env)
        lock = project / "package-lock.json"
        lock.write_text(
            json.dumps(
                {
                    "lockfileVersion": 3,
                    "packages": {
                        "": {"name": "p"},
                        "node_modules/ms": {
                            "version": "2.1.3",
                            "resolved": f"{other.url}/other-service/ms-2.1.3.tgz",
                            "integrity": integrity,
                        },
                    },
                }
            )
        )
        (pinned,) = pin_npm_packages(
            read_npm_lock(lock), ContentStore(tmp_path / "s"), token=credentials, registry=found
        )
    assert pinned.dest == "npm/ms-2.1.3.tgz"
    assert registry.authorizations() == {"Bearer npm_SECRET"}
    assert other.authorizations() == {None}, "another port of the same host gets nothing"


def test_a_projects_npmrc_chooses_the_registry_but_never_a_token(tmp_path: Path) -> None:
    """review real-1 #7 and the suspicion on ${ENV}: a project .npmrc's token (literal, or
    the user's variable sent to a host the project chose) is not used."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".npmrc").write_text("//npm.example/:_authToken=${NPM_TOKEN}\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / ".npmrc").write_text(
        "registry=https://evil.example/\n//evil.example/:_authToken=${NPM_TOKEN}\n"
        "//npm.example/:_authToken=npm_LITERAL\n"
    )
    registry, credentials = npm_registry(project, {"HOME": str(home), "NPM_TOKEN": "t0k"})
    assert registry == "https://evil.example/"
    assert [(c.scope.netloc, c.authorization) for c in credentials] == [
        ("npm.example", "Bearer t0k")
    ]
    assert not [c for c in credentials if c.scope.covers("https://evil.example/x")]


def test_index_credentials_reach_the_index_scope_only() -> None:
    index = PackageIndex("https://alice:s3cret@idx.example:8443/simple")
    assert index.url == "https://idx.example:8443/simple/"
    (credential,) = index.credentials
    assert credential.scope.covers("https://idx.example:8443/packages/x.whl")
    assert not credential.scope.covers("https://files.example/x.whl")
    assert not credential.scope.covers("http://idx.example:8443/x.whl")
    assert isinstance(credential, ScopedCredential)
    assert "s3cret" not in repr(index.__dict__) + repr(credential)

"""hermetic pin, without the network: lockfile parsing, wheel choice, hash checks before
downloading, settings from the user's files, and idempotent spec edits."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rebuilder.against import AgainstError, Published
from rebuilder.cli import app
from rebuilder.pin import (
    DEFAULT_PLATFORM,
    DEFAULT_PYTHON,
    PackageIndex,
    PinError,
    PinnedFile,
    PipPinner,
    Wanted,
    build_target,
    choose_file,
    npm_dest,
    npm_registry,
    pin_npm_packages,
    pip_index_url,
    read_npm_lock,
    read_python_lock,
    target_tags,
    write_inputs,
)
from sandbox.digests import Sha256
from sandbox.images import ImageCatalog
from sandbox.spec import Spec
from sandbox.store import ContentStore
from tests.conftest import REPO, write_spec

A, B = "a" * 64, "b" * 64


def lockfile(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_requirements(tmp_path: Path) -> None:
    path = lockfile(
        tmp_path,
        "requirements.txt",
        f"""# comment
--index-url https://example.org/simple
click==8.1.7 \\
    --hash=sha256:{A} \\
    --hash=sha256:{B.upper()}
six==1.17.0  # setuptools
colorama==0.4.6 ; sys_platform == "win32"
tomli==2.0.1 ; python_version < "3.12"
""",
    )
    wanted = read_python_lock(path, "3.11")
    assert [(w.name, w.version) for w in wanted] == [
        ("click", "8.1.7"),
        ("six", "1.17.0"),
        ("tomli", "2.0.1"),
    ]
    assert wanted[0].sha256 == {A, B} and wanted[0].where == f"{path}:3"
    assert [w.name for w in read_python_lock(path, "3.12")] == ["click", "six"]


@pytest.mark.parametrize("line", ["click>=8", "click", "click==8.*", "click>=8,==8.1.7"])
def test_an_unpinned_requirement_is_named(tmp_path: Path, line: str) -> None:
    path = lockfile(tmp_path, "requirements.txt", f"six==1.17.0\n{line}\n")
    with pytest.raises(PinError, match=r"requirements.txt:2: .* is not pinned"):
        read_python_lock(path, "3.11")


def test_uv_lock_and_pylock(tmp_path: Path) -> None:
    uv = lockfile(
        tmp_path,
        "uv.lock",
        f"""version = 1
[[package]]
name = "app"
version = "0.1.0"
source = {{ virtual = "." }}
dependencies = [{{ name = "click" }}]

[[package]]
name = "click"
version = "8.1.7"
source = {{ registry = "https://pypi.org/simple" }}
sdist = {{ url = "https://files.pythonhosted.org/p/click-8.1.7.tar.gz", hash = "sha256:{A}" }}
[[package.wheels]]
url = "https://files.pythonhosted.org/p/click-8.1.7-py3-none-any.whl"
hash = "sha256:{B}"
""",
    )
    (click,) = read_python_lock(uv, "3.11")
    assert (click.name, click.version, click.sha256) == ("click", "8.1.7", frozenset({A, B}))
    assert len(click.urls) == 2
    pylock = lockfile(
        tmp_path,
        "pylock.toml",
        f"""lock-version = "1.0"
[[packages]]
name = "six"
version = "1.17.0"
[[packages.wheels]]
url = "https://files.pythonhosted.org/p/six-1.17.0-py2.py3-none-any.whl"
hashes = {{ sha256 = "{A}" }}
[[packages]]
name = "pywin32"
version = "306"
marker = "sys_platform == 'win32'"
wheels = []
""",
    )
    (six,) = read_python_lock(pylock, "3.11")
    assert six.urls == (("https://files.pythonhosted.org/p/six-1.17.0-py2.py3-none-any.whl", A),)


FILES = [
    {"filename": "pkg-1.0.tar.gz", "url": "u/sdist", "hashes": {"sha256": A}},
    {"filename": "pkg-1.0-py3-none-any.whl", "url": "u/any", "hashes": {"sha256": B}},
    {
        "filename": "pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "url": "u/linux",
        "hashes": {"sha256": B},
    },
    {"filename": "pkg-1.0-cp311-cp311-win_amd64.whl", "url": "u/win", "hashes": {"sha256": B}},
    {"filename": "pkg-1.1-py3-none-any.whl", "url": "u/newer", "hashes": {"sha256": B}},
]


def test_the_best_wheel_for_the_target_else_the_sdist() -> None:
    tags = target_tags("3.11", "manylinux_2_36_x86_64")
    wanted = Wanted(name="pkg", version="1.0", where="r:1")
    assert choose_file(FILES, wanted, tags, sdist_only=False)["url"] == "u/linux"
    assert choose_file(FILES[:2], wanted, tags, sdist_only=False)["url"] == "u/any"
    assert choose_file(FILES, wanted, tags, sdist_only=True)["url"] == "u/sdist"
    old = target_tags("3.11", "manylinux_2_12_x86_64")  # too old a glibc for 2_17
    assert choose_file(FILES[:3], wanted, old, sdist_only=False)["url"] == "u/any"
    with pytest.raises(PinError, match="no wheel for this Python and platform and no sdist"):
        choose_file(FILES[3:4], wanted, tags, sdist_only=False)


class FakeIndex(PackageIndex):
    """The index's answers, scripted (the real index is in tests/integration)."""

    def __init__(self, files: list[dict[str, Any]]) -> None:
        super().__init__("https://index.invalid/simple/")
        self.scripted = files

    def files(self, name: str) -> list[dict[str, Any]]:
        return [dict(f, url=f"https://index.invalid/{f['url']}") for f in self.scripted]


def test_a_wrong_hash_is_refused_before_anything_is_downloaded(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    pinner = PipPinner(index=FakeIndex(FILES), store=store)
    good = Wanted(name="pkg", version="1.0", where="r:1")
    wrong = Wanted(name="pkg", version="1.1", where="r:2", sha256=frozenset({A}))
    with pytest.raises(PinError, match=r"r:2: .*not a hash the lockfile allows.*nothing was"):
        pinner.pin([good, wrong])  # the good one is checked first, and not fetched either
    assert not (tmp_path / "store").exists()


def test_npm_lockfiles(tmp_path: Path) -> None:
    integrity = "sha512-" + "A" * 86 + "=="
    entries: dict[str, dict[str, Any]] = {
        "": {"name": "app", "version": "1.0.0"},
        "node_modules/ms": {
            "version": "2.1.3",
            "resolved": "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz",
            "integrity": integrity,
        },
        "node_modules/@types/node": {
            "version": "20.1.0",
            "resolved": "https://registry.npmjs.org/@types/node/-/node-20.1.0.tgz",
            "integrity": integrity,
        },
        "node_modules/local": {"resolved": "packages/local", "link": True},
    }
    path = lockfile(
        tmp_path, "package-lock.json", json.dumps({"lockfileVersion": 3, "packages": entries})
    )
    found = read_npm_lock(path)
    assert [(p.name, p.version) for p in found] == [("@types/node", "20.1.0"), ("ms", "2.1.3")]
    path.write_text(json.dumps({"lockfileVersion": 1, "dependencies": {}}))
    with pytest.raises(PinError, match="v2 or v3 is needed"):
        read_npm_lock(path)
    del entries["node_modules/ms"]["integrity"]
    path.write_text(json.dumps({"lockfileVersion": 2, "packages": entries}))
    with pytest.raises(PinError, match="no resolved URL or integrity"):
        read_npm_lock(path)


def test_settings_come_from_the_users_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config" / "pip").mkdir(parents=True)
    assert pip_index_url({"HOME": str(home)}) == "https://pypi.org/simple/"
    (home / ".config" / "pip" / "pip.conf").write_text(
        "[global]\nindex-url = https://m.example/simple\n"
    )
    assert pip_index_url({"HOME": str(home)}) == "https://m.example/simple"
    assert (
        pip_index_url({"HOME": str(home), "PIP_INDEX_URL": "https://e/simple"})
        == "https://e/simple"
    )
    index = PackageIndex("https://user:secret@m.example:8443/simple")
    assert index.url == "https://m.example:8443/simple/" and "secret" not in index.url
    project = tmp_path / "project"
    project.mkdir()
    (home / ".npmrc").write_text(
        "registry=https://npm.example/\n//npm.example/:_authToken=${NPM_TOKEN}\n"
    )
    registry, credentials = npm_registry(project, {"HOME": str(home), "NPM_TOKEN": "t0k"})
    assert registry == "https://npm.example/"
    assert [c.authorization for c in credentials] == ["Bearer t0k"]
    assert credentials[0].scope.covers("https://npm.example/ms/-/ms-2.1.3.tgz")
    (project / ".npmrc").write_text("registry=https://other.example/\n")
    registry, credentials = npm_registry(project, {"HOME": str(home)})
    assert registry == "https://other.example/"
    assert not [c for c in credentials if c.scope.covers("https://other.example/x")]


def test_writing_inputs_is_idempotent_and_keeps_the_rest(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        f"""# my comment
[build]
command = ["make"]
outputs = ["o"]

[[inputs]]  # kept
url = "https://example.org/x.tar.gz"
sha256 = "{A}"
dest = "x.tar.gz"
""",
    )
    files = [
        PinnedFile(
            name="six",
            version="1.17.0",
            filename="six-1.17.0.tar.gz",
            url="https://files.pythonhosted.org/six-1.17.0.tar.gz",
            sha256=Sha256(B),
            dest="wheels/six-1.17.0.tar.gz",
        )
    ]
    assert write_inputs(spec, files, "wheels") == (0, 1)
    text = spec.read_text()
    assert write_inputs(spec, files, "wheels") == (1, 1)
    assert spec.read_text() == text and "# my comment" in text
    parsed = Spec.from_toml(spec)
    assert [str(i.dest) for i in parsed.inputs] == ["x.tar.gz", "wheels/six-1.17.0.tar.gz"]
    assert write_inputs(spec, [], "wheels") == (1, 0)
    assert [str(i.dest) for i in Spec.from_toml(spec).inputs] == ["x.tar.gz"]
    clash = [PinnedFile(**{**files[0].__dict__, "dest": "x.tar.gz"})]
    with pytest.raises(PinError, match="already another input's dest"):
        write_inputs(spec, clash, "x.tar.gz-prefix")


def test_against_names_a_pinned_published_file() -> None:
    published = Published.parse(f"https://files.pythonhosted.org/p/six-1.17.0.tar.gz#sha256={A}")
    assert published.name == "six-1.17.0.tar.gz" and published.sha256 == A
    for bad in ("https://x/y.whl", f"https://x/y.whl#sha256={A[:10]}", f"ftp://x/y#sha256={A}"):
        with pytest.raises(AgainstError, match="URL#sha256"):
            Published.parse(bad)


def test_pin_never_writes_through_a_link(tmp_path: Path) -> None:
    """review real-1 #3 (symrace): hermetic.toml -> ../victim/bashrc, or a link planted at
    the old temporary name .hermetic.toml.pin: the victim is never written."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "bashrc").write_text("# the user's shell\n")
    project = tmp_path / "project"
    spec = write_spec(project, '[build]\ncommand = ["true"]\noutputs = ["x"]\n')
    files = [
        PinnedFile(
            name="six",
            version="1.17.0",
            filename="six-1.17.0.tar.gz",
            url="https://files.pythonhosted.org/six-1.17.0.tar.gz",
            sha256=Sha256(B),
            dest="wheels/six-1.17.0.tar.gz",
        )
    ]
    (project / ".hermetic.toml.pin").symlink_to(victim / "bashrc")
    write_inputs(spec, files, "wheels")
    assert (victim / "bashrc").read_text() == "# the user's shell\n"
    assert "six-1.17.0" in spec.read_text() and not spec.is_symlink()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "hermetic.toml").symlink_to(victim / "bashrc")
    (victim / "bashrc").write_text('[build]\ncommand = ["true"]\noutputs = ["x"]\n')
    before = (victim / "bashrc").read_text()
    with pytest.raises(PinError, match="symbolic link"):
        write_inputs(linked / "hermetic.toml", files, "wheels")
    assert (victim / "bashrc").read_text() == before


def test_a_pin_that_would_break_the_spec_leaves_it_as_it_was(tmp_path: Path) -> None:
    """review real-1 #16: write_inputs validated only after replacing the spec."""
    spec = write_spec(tmp_path, '[build]\ncommand = ["true"]\noutputs = ["x"]\n')
    before = spec.read_text()
    bad = PinnedFile(
        name="x",
        version="1",
        filename="x.whl",
        url="https://user:pw@files.example/x.whl",
        sha256=Sha256(A),
        dest="wheels/x.whl",
    )
    with pytest.raises(PinError, match=r"would not be a valid spec.*credentials"):
        write_inputs(spec, [bad], "wheels")
    assert spec.read_text() == before
    twice = [dataclasses.replace(bad, url="https://files.example/x.whl")] * 2
    with pytest.raises(PinError, match="already another input's dest"):
        write_inputs(spec, twice, "wheels")
    assert spec.read_text() == before


def test_npm_dests_of_scoped_packages_never_collide() -> None:
    """review real-1 #16: @a-b/c and @a/b-c both became npm/a-b-c-1.0.0.tgz."""
    one = npm_dest("@a-b/c", "c-1.0.0.tgz")
    two = npm_dest("@a/b-c", "b-c-1.0.0.tgz")
    assert one == "npm/a-b+c-1.0.0.tgz" and two == "npm/a+b-c-1.0.0.tgz"
    assert npm_dest("ms", "ms-2.1.3.tgz") == "npm/ms-2.1.3.tgz"


def test_a_lockfile_naming_one_dest_twice_is_refused(tmp_path: Path) -> None:
    integrity = "sha512-" + "A" * 86 + "=="
    entries = {
        "": {"name": "app"},
        "node_modules/x": {
            "version": "1.0.0",
            "resolved": "https://registry.npmjs.org/x/-/x-1.0.0.tgz",
            "integrity": integrity,
        },
        "node_modules/y/node_modules/x": {
            "name": "x",
            "version": "1.0.0",
            "resolved": "https://mirror.example/x/-/x-1.0.0.tgz",
            "integrity": integrity,
        },
    }
    path = lockfile(
        tmp_path, "package-lock.json", json.dumps({"lockfileVersion": 3, "packages": entries})
    )
    with pytest.raises(PinError, match="names one file twice"):
        pin_npm_packages(
            read_npm_lock(path), ContentStore(tmp_path / "s"), registry="https://r.invalid/"
        )
    assert not (tmp_path / "s").exists()


def _image_of(spec_dir: Path) -> tuple[Spec, ImageCatalog]:
    """The spec and the images 'hermetic pin pip' finds its image among."""
    return Spec.from_toml(spec_dir / "hermetic.toml"), ImageCatalog(REPO / "images")


@pytest.mark.parametrize("example", ["python-sdists", "python-venv", "python-wheel"])
def test_the_examples_images_give_their_python_and_platform(example: str) -> None:
    assert build_target(*_image_of(REPO / "docs" / "examples" / example)) == (
        "3.11",
        "manylinux_2_36_x86_64",
    )


def test_the_python_and_platform_come_from_the_image_lock(tmp_path: Path) -> None:
    example = REPO / "docs" / "examples" / "python-sdists"
    (tmp_path / "hermetic.toml").write_text((example / "hermetic.toml").read_text())
    lock = json.loads((example / "hermetic.lock").read_text())
    lock["architecture"] = "arm64"
    lock["packages"].update({"python3": "3.13.5-1", "libc6": "2.41-12"})
    (tmp_path / "hermetic.lock").write_text(json.dumps(lock))
    spec, images = _image_of(tmp_path)
    found = build_target(spec, images)
    assert found == ("3.13", "manylinux_2_41_aarch64")
    # negative control: what pin assumed before, whatever the image
    assert found != (DEFAULT_PYTHON, DEFAULT_PLATFORM)
    files: list[dict[str, Any]] = [
        {"filename": f"pkg-1.0-{tag}.whl", "url": url, "hashes": {"sha256": A}}
        for tag, url in [
            ("cp311-cp311-manylinux_2_17_x86_64", "u/x86"),
            ("cp313-cp313-manylinux_2_17_aarch64", "u/arm"),
        ]
    ]
    wanted = Wanted(name="pkg", version="1.0", where="r:1")
    assert choose_file(files, wanted, target_tags(*found), sdist_only=False)["url"] == "u/arm"
    old = target_tags(DEFAULT_PYTHON, DEFAULT_PLATFORM)
    assert choose_file(files, wanted, old, sdist_only=False)["url"] == "u/x86"
    # without python3, the one python3.X the lock lists
    lock["packages"] = {k: v for k, v in lock["packages"].items() if "python3" not in k}
    lock["packages"]["python3.13-minimal"] = "3.13.5-2"
    (tmp_path / "hermetic.lock").write_text(json.dumps(lock))
    assert build_target(*_image_of(tmp_path))[0] == "3.13"
    # the flags win, each on its own
    assert build_target(spec, images, python="3.12") == ("3.12", "manylinux_2_41_aarch64")
    assert build_target(spec, images, platform="manylinux_2_28_x86_64") == (
        "3.13",
        "manylinux_2_28_x86_64",
    )


def test_an_image_that_cannot_say_its_python_is_refused(tmp_path: Path) -> None:
    given = ("3.12", "manylinux_2_17_x86_64")  # the flags, which are then enough
    pinned = tmp_path / "pinned"
    write_spec(
        pinned, f'[build]\nimage = "r.example/py@sha256:{A}"\ncommand = ["true"]\noutputs = ["x"]\n'
    )
    with pytest.raises(PinError, match=r"r.example/py@sha256:a+ is pinned by digest.*--python"):
        build_target(*_image_of(pinned))
    assert build_target(*_image_of(pinned), python=given[0], platform=given[1]) == given
    unlocked = tmp_path / "unlocked"
    write_spec(
        unlocked, '[build]\ncommand = ["true"]\noutputs = ["x"]\n[image]\npackages = ["python3"]\n'
    )
    with pytest.raises(PinError, match=r"has no lock.*hermetic image build.*or pass --python"):
        build_target(*_image_of(unlocked))
    assert build_target(*_image_of(unlocked), python=given[0], platform=given[1]) == given
    unknown = write_spec(
        tmp_path / "unknown", '[build]\nimage = "nowhere"\ncommand = ["true"]\noutputs = ["x"]\n'
    )
    assert build_target(*_image_of(unknown.parent), python=given[0], platform=given[1]) == given
    # the default image (debian-bookworm) has no Python: refused by the CLI, naming it
    spec = write_spec(tmp_path / "default", '[build]\ncommand = ["true"]\noutputs = ["x"]\n')
    (spec.parent / "requirements.txt").write_text("click==8.1.7\n")
    env = {"HERMETIC_IMAGES_DIR": str(REPO / "images"), "HERMETIC_STORE": str(tmp_path / "s")}
    args = ["pin", "pip", str(spec.parent / "requirements.txt"), "--spec", str(spec)]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2
    assert "image debian-bookworm: its lock" in result.output
    assert "lists no python3 package" in result.output
    assert "--python and --platform" in result.output
    assert not (tmp_path / "s").exists(), "nothing was fetched"

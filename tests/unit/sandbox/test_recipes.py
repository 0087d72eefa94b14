"""Project recipes: image = "./path" and inline [image], their locks, archives, image env,
and what 'hermetic image build TARGET' builds."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from rebuilder.scaffold import init_project
from sandbox.config import SandboxConfig
from sandbox.digests import Sha256
from sandbox.errors import ImageError, SpecError
from sandbox.image_build import mmdebstrap_argv
from sandbox.images import ImageCatalog, ImageDefinition, ImageLock, definition_for
from sandbox.recipe import ImageRecipe
from sandbox.registry import (
    is_loopback,
    registry_credentials,
    registry_of,
    tls_verify_for,
)
from sandbox.spec import Spec
from tests.conftest import REPO, write_spec

INLINE = """
[build]
command = ["make"]
outputs = ["out"]

[image]
packages = ["make"]
archives = ["updates", "security"]
env = { CFLAGS = "-ffile-prefix-map=${BUILD_DIR}=." }
"""


def fake_lock(definition: ImageDefinition, digest: str = "11" * 32) -> ImageLock:
    return ImageLock(
        name=definition.name,
        architecture="amd64",
        image_digest=Sha256(digest),
        config_digest=Sha256("22" * 32),
        rootfs_digest=Sha256("33" * 32),
        recipe_digest=definition.recipe.digest,
        packages={"make": "4.3-4.1"},
    )


def test_inline_image_and_its_lock(tmp_path: Path) -> None:
    spec = Spec.from_toml(write_spec(tmp_path / "proj", INLINE))
    recipe = spec.image.recipe
    assert recipe is not None and recipe.packages == ("make",)
    assert spec.image.lock_path == (tmp_path / "proj" / "hermetic.lock").resolve()
    assert recipe.sources() == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
    assert recipe.build_env("/b") == (("CFLAGS", "-ffile-prefix-map=/b=."),)
    catalog = ImageCatalog(tmp_path / "images")
    definition = catalog.definition(spec.image, spec_dir=spec.source_dir)
    assert definition is not None and not definition.catalog
    # the name carries the recipe digest; the labels carry no name (same image anywhere)
    assert definition.name == f"inline-{recipe.digest[:12]}"
    assert definition.labels == {"dev.hermetic.recipe": f"sha256:{recipe.digest}"}
    with pytest.raises(ImageError, match=r"has no lock .*hermetic image build"):
        catalog.resolve(spec.image, spec_dir=spec.source_dir)
    (tmp_path / "proj" / "hermetic.lock").write_text(fake_lock(definition).to_json())
    resolved = catalog.resolve(spec.image, spec_dir=spec.source_dir)
    assert resolved.reference == f"localhost/hermetic/{definition.name}@sha256:{'11' * 32}"
    # an edited [image] makes the lock stale; an edit elsewhere in the spec does not
    edited = INLINE.replace('outputs = ["out"]', 'outputs = ["out2"]')
    spec = Spec.from_toml(write_spec(tmp_path / "proj", edited))
    assert catalog.resolve(spec.image, spec_dir=spec.source_dir) == resolved
    spec = Spec.from_toml(write_spec(tmp_path / "proj", edited.replace('"make"]', '"make", "m4"]')))
    with pytest.raises(ImageError, match="recipe changed since the lock"):
        catalog.resolve(spec.image, spec_dir=spec.source_dir)


def test_recipe_beside_the_project(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "ci" / "image").mkdir(parents=True)
    (project / "ci" / "image" / "recipe.toml").write_text('packages = ["make"]\n')
    (project / "ci" / "tools.toml").write_text('packages = ["gcc"]\n')
    for value, lock_name, name in (
        ("./ci/image", "ci/image/recipe.lock.json", "image"),
        ("./ci/image/recipe.toml", "ci/image/recipe.lock.json", "image"),
        ("./ci/tools.toml", "ci/tools.lock.json", "tools"),
    ):
        spec = Spec.from_toml(
            write_spec(project, f'[build]\nimage = "{value}"\ncommand = ["m"]\noutputs = ["o"]\n')
        )
        assert spec.image.lock_path == (project / lock_name).resolve()
        assert spec.image.recipe is not None and spec.image.recipe.name == name
    # 'hermetic image build PATH' finds the same definition from the recipe or the spec
    catalog = ImageCatalog(tmp_path / "images")
    by_recipe = definition_for(str(project / "ci" / "tools.toml"), catalog)
    by_spec = definition_for(str(project), catalog)
    assert by_recipe.lock_path == by_spec.lock_path == (project / "ci/tools.lock.json").resolve()
    assert by_recipe.name == by_spec.name


@pytest.mark.parametrize(
    ("image", "where", "reason"),
    [
        ('"./missing"', "build.image", "no recipe at"),
        ('"../elsewhere"', "build.image", "must start with './'"),
        ('"/abs/recipe.toml"', "build.image", "must start with './'"),
        ('"./ci/../../x"', "build.image", "inside the project"),
    ],
)
def test_bad_recipe_paths(tmp_path: Path, image: str, where: str, reason: str) -> None:
    text = f'[build]\nimage = {image}\ncommand = ["m"]\noutputs = ["o"]\n'
    with pytest.raises(SpecError, match=reason) as caught:
        Spec.from_toml(write_spec(tmp_path, text))
    assert caught.value.key == where


@pytest.mark.parametrize(
    ("table", "key", "reason"),
    [
        ('flavour = "x"', "image.flavour", "unknown key"),
        ('packages = ["ok", "rm -rf /"]', "image.packages", "Debian package names"),
        ('archives = ["backports"]', "image.archives", "not one of updates, security"),
        ('mirror = "ftp://x/debian"', "image.mirror", "http"),
        (
            'mirror = "http://m.example/deb"\narchives = ["security"]',
            "image.security_mirror",
            "http",
        ),
        ('locales = ["en_US.UTF-8 UTF-8"]', "image.locales", "add 'locales'"),
        ("env = { PATH = '/x' }", "image.env.PATH", "not a variable"),
        ('suite = "Bookworm!"', "image.suite", "suite name"),
        ("source_date_epoch = -1", "image.source_date_epoch", "from 0 to"),
        ("source_date_epoch = 253402300800", "image.source_date_epoch", "from 0 to"),
    ],
)
def test_bad_inline_images(tmp_path: Path, table: str, key: str, reason: str) -> None:
    text = f'[build]\ncommand = ["m"]\noutputs = ["o"]\n[image]\n{table}\n'
    with pytest.raises(SpecError, match=reason) as caught:
        Spec.from_toml(write_spec(tmp_path, text))
    assert caught.value.key == key


def test_image_and_build_image_together_are_refused(tmp_path: Path) -> None:
    text = '[build]\nimage = "x"\ncommand = ["m"]\noutputs = ["o"]\n[image]\npackages = []\n'
    with pytest.raises(SpecError, match="both") as caught:
        Spec.from_toml(write_spec(tmp_path, text))
    assert caught.value.key == "image"


def test_mmdebstrap_gets_every_archive(tmp_path: Path) -> None:
    spec = Spec.from_toml(write_spec(tmp_path, INLINE))
    assert spec.image.recipe is not None
    argv = mmdebstrap_argv(spec.image.recipe, Path("/out/rootfs.tar"))
    assert argv[-5:] == ["bookworm", "/out/rootfs.tar", *spec.image.recipe.sources()]


@pytest.mark.parametrize(
    ("example", "marker", "variable"),
    [
        ("python-wheel", "pyproject.toml", "PIP_NO_INDEX"),
        ("go-hello", "go.mod", "GOFLAGS"),
        ("go-vendored", "go.mod", "GOFLAGS"),
        ("rust-hello", "Cargo.toml", "RUSTFLAGS"),
        ("rust-vendored", "Cargo.toml", "RUSTFLAGS"),
        ("cmake-hello", "CMakeLists.txt", "CFLAGS"),
        ("meson-hello", "meson.build", "CFLAGS"),
        ("node-pack", "package.json", "npm_config_offline"),
    ],
)
def test_the_toolchain_images_are_what_init_writes(
    tmp_path: Path, example: str, marker: str, variable: str
) -> None:
    """The examples' [image] tables are init's, so one image (and lock) serves both."""
    spec = Spec.from_toml(REPO / "docs" / "examples" / example)
    recipe = spec.image.recipe
    assert recipe is not None and recipe.archives == ("updates", "security")
    assert variable in dict(recipe.env)
    (tmp_path / marker).write_text("{}" if marker == "package.json" else "")
    written = Spec.from_toml(init_project(tmp_path).path).image.recipe
    assert written is not None and written.digest == recipe.digest


def test_toolchain_settings_follow_the_build_dir() -> None:
    go = Spec.from_toml(REPO / "docs" / "examples" / "go-hello").image.recipe
    assert go is not None
    env = dict(go.build_env("/elsewhere"))
    assert "-trimpath" in env["GOFLAGS"] and "-mod=vendor" in env["GOFLAGS"]
    assert env["GOCACHE"] == "/elsewhere/.cache/go-build"
    rust = Spec.from_toml(REPO / "docs" / "examples" / "rust-hello").image.recipe
    assert rust is not None
    assert dict(rust.build_env("/elsewhere"))["RUSTFLAGS"] == "--remap-path-prefix=/elsewhere=."


def test_old_recipes_keep_their_sources() -> None:
    """A recipe without archives gives mmdebstrap the bare mirror, as before, so that the
    images locked before archives existed keep their digests."""
    recipe = ImageRecipe.load(REPO / "images" / "debian-bookworm")
    assert recipe.sources() == ["http://deb.debian.org/debian"]


def test_registry_names_and_tls() -> None:
    assert registry_of("127.0.0.1:5000/team/img") == "127.0.0.1:5000"
    assert registry_of("registry.example/x") == "registry.example"
    assert registry_of("localhost/hermetic/x") == "localhost"
    assert registry_of("debian") is None and registry_of("library/debian") is None
    for loopback in ("localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"):
        assert is_loopback(loopback), loopback
    for remote in ("registry.example:5000", "10.0.0.1:5000", "[2001:db8::1]:5000"):
        assert not is_loopback(remote), remote
    assert tls_verify_for("127.0.0.1:5000", ()) is True
    assert tls_verify_for("127.0.0.1:5000", ("127.0.0.1:5000",)) is False
    with pytest.raises(ImageError, match="not a loopback address"):
        tls_verify_for("registry.example:5000", ("registry.example:5000",))


def test_insecure_registries_from_the_environment() -> None:
    config = SandboxConfig.from_env(
        {"HOME": "/h", "HERMETIC_INSECURE_REGISTRIES": " 127.0.0.1:5000 ,localhost:1"}
    )
    assert config.insecure_registries == ("127.0.0.1:5000", "localhost:1")


def test_registry_credentials_from_auth_json(tmp_path: Path) -> None:
    def auth(user: str, password: str) -> dict[str, str]:
        return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}

    file = tmp_path / "auth.json"
    file.write_text(
        json.dumps(
            {
                "auths": {
                    "127.0.0.1:5000": auth("alice", "s3cret:with:colons"),
                    "127.0.0.1:5000/team": auth("team", "t"),
                }
            }
        )
    )
    env = {"REGISTRY_AUTH_FILE": str(file), "HOME": str(tmp_path), "XDG_RUNTIME_DIR": "/none"}
    found = registry_credentials("127.0.0.1:5000/other/img", env)
    assert found is not None and (found.username, found.password) == ("alice", "s3cret:with:colons")
    assert "s3cret" not in repr(found)
    team = registry_credentials("127.0.0.1:5000/team/img", env)
    assert team is not None and team.username == "team"  # the most specific entry wins
    assert registry_credentials("other.example/x", env) is None
    header = json.loads(base64.urlsafe_b64decode(found.to_header()))
    assert header == {"username": "alice", "password": "s3cret:with:colons"}
    file.write_text('{"auths": {"127.0.0.1:5000": {"auth": "not base64!"}}}')
    with pytest.raises(ImageError, match="not base64"):
        registry_credentials("127.0.0.1:5000/x", env)

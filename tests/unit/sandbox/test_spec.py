"""Spec parsing: defaults, and a table of bad specs each refused with its key."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from sandbox.errors import ImageError, SpecError, SpecProblems
from sandbox.images import ImageCatalog
from sandbox.spec import DEFAULT_IMAGE, Limits, Spec
from tests.conftest import write_spec
from tests.unit.spec_cases import BAD_SPECS, HEX, MINIMAL, with_input


def parse(tmp_path: Path, text: str) -> Spec:
    return Spec.from_toml(write_spec(tmp_path, text))


def test_minimal_spec_takes_documented_defaults(tmp_path: Path) -> None:
    spec = parse(tmp_path, MINIMAL)
    assert spec.image.name == DEFAULT_IMAGE
    assert spec.command == ("make",)
    assert spec.outputs == ("out",)
    assert spec.env == ()
    assert spec.source_date_epoch is None
    assert spec.inputs == ()
    assert spec.limits == Limits()
    assert spec.limits.timeout_s == 3600
    assert spec.limits.memory_bytes == 4 * 1024**3
    assert spec.limits.pids == 4096
    assert spec.limits.disk_bytes == 10 * 1024**3
    assert spec.limits.log_bytes == 64 * 1024**2
    assert spec.source_dir == tmp_path.resolve()


def test_full_spec(tmp_path: Path) -> None:
    spec = parse(
        tmp_path,
        f"""
[build]
image = "registry.example/team/builder@sha256:{HEX}"
command = ["sh", "-c", "./configure && make"]
outputs = ["hello", "dist/*.tar.gz"]
env = {{ CFLAGS = "-O2", B = "x" }}
source_date_epoch = 1700000000

[[inputs]]
url = "https://example.org/dep-1.0.tar.gz"
sha256 = "sha256:{HEX.upper()}"
dest = "vendor/dep-1.0.tar.gz"

[limits]
timeout = "30m"
memory = "2GiB"
pids = 100
disk = "1GiB"
log = "1MiB"
""",
    )
    assert spec.image.repository == "registry.example/team/builder"
    assert spec.image.digest == HEX
    assert spec.env == (("B", "x"), ("CFLAGS", "-O2"))
    assert spec.inputs[0].sha256 == HEX
    assert spec.inputs[0].dest == PurePosixPath("vendor/dep-1.0.tar.gz")
    assert spec.limits == Limits(
        timeout_s=1800, memory_bytes=2 * 1024**3, pids=100, disk_bytes=1024**3, log_bytes=1024**2
    )


def test_spec_directory_is_accepted(tmp_path: Path) -> None:
    write_spec(tmp_path, MINIMAL)
    assert Spec.from_toml(tmp_path).command == ("make",)


@pytest.mark.parametrize(
    ("case", "text", "key", "reason"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS]
)
def test_bad_specs_are_refused_naming_file_and_key(
    tmp_path: Path, case: str, text: str, key: str, reason: str
) -> None:
    path = write_spec(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        Spec.from_toml(path)
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(path) in str(caught.value)
    assert key in str(caught.value)


def test_duplicate_dest_is_refused(tmp_path: Path) -> None:
    text = with_input() + f'\n[[inputs]]\nurl = "file:///x"\nsha256 = "{HEX}"\ndest = "a"\n'
    with pytest.raises(SpecError, match=r"inputs\[1\].dest"):
        parse(tmp_path, text)


def test_every_problem_is_collected_with_its_key(tmp_path: Path) -> None:
    text = f"""
[build]
command = []
outputs = ["ok"]
env = {{ "1X" = "a", TZ = 3 }}
extra = 1

[[inputs]]
url = "https://user:pw@example.org/x"
sha256 = "{HEX}"
dest = "x"

[[inputs]]
url = "https://example.org/y"
sha256 = "{HEX}"
dest = "x"

[limits]
pids = 0
memory = "lots"
"""
    with pytest.raises(SpecProblems) as caught:
        parse(tmp_path, text)
    keys = sorted(error.key for error in caught.value.errors)
    assert keys == [
        "build.command",
        "build.env.1X",
        "build.env.TZ",
        "build.extra",
        "inputs[0].url",
        "limits.memory",
        "limits.pids",
    ]
    # The second input is still read: its dest clashes with none once the first failed.
    assert str(caught.value).startswith(f"{tmp_path / 'hermetic.toml'}: 7 problems:")
    assert all(problem in str(caught.value) for problem in caught.value.problems)


def test_one_problem_is_a_plain_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        parse(tmp_path, MINIMAL.replace('["make"]', "[]"))
    assert not isinstance(caught.value, SpecProblems)
    assert caught.value.key == "build.command"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        Spec.from_toml(tmp_path / "nope.toml")


def _input(url: str) -> str:
    return MINIMAL + f'\n[[inputs]]\nurl = "{url}"\nsha256 = "{HEX}"\ndest = "x"\n'


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # review real-1 #10: credentials would go into result.json, the provenance, the SBOM
        ("https://alice:s3cret@files.example/x.whl", "credentials"),
        ("https://token@files.example/x.whl", "credentials"),
        # review real-1 #5: a file:// URL naming a host claims a place it is not read from
        ("file://files.pythonhosted.org/tmp/requests-2.31.0-py3-none-any.whl", "names the host"),
        ("https://files.example/x y.whl", "spaces"),
        ("https://files.example/x.whl\\n", "spaces"),
        ("https://files.example:99999/x", "not a valid URL"),
        ("https:///x.whl", "names no host"),
        ("ftp://files.example/x", "expected an https/http/file URL"),
    ],
)
def test_input_urls_without_credentials_or_false_hosts(
    tmp_path: Path, url: str, reason: str
) -> None:
    with pytest.raises(SpecError, match=reason) as caught:
        parse(tmp_path, _input(url))
    assert caught.value.key == "inputs[0].url"


@pytest.mark.parametrize(
    "url",
    [
        "https://files.example/x.whl",
        "http://127.0.0.1:8080/x",
        "file:///tmp/x",
        "file://localhost/x",
    ],
)
def test_input_urls_users_write_still_pass(tmp_path: Path, url: str) -> None:
    assert parse(tmp_path, _input(url)).inputs[0].url == url


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MINIMAL + '[build.env]\n"A\\n" = "x"\n', "build.env.A\n"),
        (MINIMAL.replace("[build]", '[build]\nimage = "debian-bookworm\\n"'), "build.image"),
        (
            MINIMAL.replace("[build]", f'[build]\nimage = "registry.example/x@sha256:{HEX}\\n"'),
            "build.image",
        ),
    ],
)
def test_names_are_matched_whole(tmp_path: Path, text: str, key: str) -> None:
    """A '$' in a pattern accepted a trailing newline (review real-1 #10)."""
    with pytest.raises(SpecError) as caught:
        parse(tmp_path, text)
    assert caught.value.key == key


def test_a_recipe_path_may_not_leave_the_project_through_a_link(tmp_path: Path) -> None:
    """review real-1 #9: 'ci -> /elsewhere' made './ci/image' a recipe (and lock) outside."""
    outside = tmp_path / "outside" / "image"
    outside.mkdir(parents=True)
    (outside / "recipe.toml").write_text('packages = ["make"]\n')
    project = tmp_path / "project"
    project.mkdir()
    (project / "ci").symlink_to(tmp_path / "outside")
    text = MINIMAL.replace("[build]", '[build]\nimage = "./ci/image"')
    with pytest.raises(SpecError, match="leads out of the project") as caught:
        parse(project, text)
    assert caught.value.key == "build.image"
    # control: a link that stays inside the project is fine
    (project / "ci").unlink()
    (project / "real").mkdir()
    (project / "real" / "image").mkdir()
    (project / "real" / "image" / "recipe.toml").write_text('packages = ["make"]\n')
    (project / "ci").symlink_to("real")
    assert parse(project, text).image.recipe is not None


def test_a_lock_that_is_a_link_is_refused(tmp_path: Path) -> None:
    """review real-1 #3 (lockrace): hermetic.lock -> ../victim/precious."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    project = tmp_path / "project"
    spec = parse(project, MINIMAL + '\n[image]\npackages = ["make"]\n')
    (project / "hermetic.lock").symlink_to(victim)
    with pytest.raises(ImageError, match="symbolic link"):
        ImageCatalog(tmp_path / "images").definition(spec.image, spec_dir=project)
    assert victim.read_text() == "precious\n"

"""hermetic init: detection per build system, the spec it writes, and never overwriting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rebuilder.cli import app
from rebuilder.scaffold import BuildSystem, InitError, detect, init_project
from sandbox.spec import Spec


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


HATCH = '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
CASES = [
    (
        {
            "Cargo.toml": '[package]\nname = "my-tool"\n',
            "src/main.rs": "fn main() {}",
            "Cargo.lock": "",
        },
        BuildSystem.CARGO,
        ("cargo", "build", "--release", "--locked"),
        ("target/release/my-tool",),
    ),
    (
        {"go.mod": "module example.org/x/cmd\n", "main.go": "package main\nfunc main() {}\n"},
        BuildSystem.GO,
        ("go", "build", "-o", "bin/", "./..."),
        ("bin",),
    ),
    (
        {"go.mod": "module github.com/a/lib\n", "lib.go": "package lib\n"},
        BuildSystem.GO,
        ("go", "build", "-o", "bin/lib.a", "."),
        ("bin",),
    ),
    (
        {
            "package.json": json.dumps(
                {"name": "@s/p", "version": "2.0.0", "scripts": {"build": "x"}}
            )
        },
        BuildSystem.NPM,
        ("sh", "-c", "npm run build && npm pack"),
        ("s-p-2.0.0.tgz",),
    ),
    (
        {"pyproject.toml": HATCH},
        BuildSystem.PYTHON,
        ("python3", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", "dist", "."),
        ("dist/*.whl",),
    ),
    ({"meson.build": "project('x', 'c')\n"}, BuildSystem.MESON, None, ("dist",)),
    ({"CMakeLists.txt": "project(x)\n"}, BuildSystem.CMAKE, None, ("dist",)),
    ({"configure": "#!/bin/sh\n", "Makefile.in": ""}, BuildSystem.AUTOTOOLS, None, ("dist",)),
    ({"Makefile": "all: prog doc\n\nprog: prog.o\n"}, BuildSystem.MAKE, ("make",), ("prog", "doc")),
    ({"Makefile": "tool: tool.c\n\tcc -o $@ $<\n"}, BuildSystem.MAKE, ("make",), ("tool",)),
]


@pytest.mark.parametrize(("files", "system", "command", "outputs"), CASES)
def test_detection_and_a_valid_spec(
    tmp_path: Path,
    files: dict[str, str],
    system: BuildSystem,
    command: tuple[str, ...] | None,
    outputs: tuple[str, ...],
) -> None:
    directory = project(tmp_path, files)
    found = detect(directory)
    assert found.system is system
    if command is not None:
        assert found.command == command
    assert found.outputs == outputs
    done = init_project(directory)
    spec = Spec.from_toml(done.path)  # what init writes is a valid spec with an inline image
    assert spec.command == found.command and spec.outputs == found.outputs
    assert spec.image.recipe is not None
    assert spec.image.recipe.archives == ("updates", "security")
    assert spec.image.lock_path == directory.resolve() / "hermetic.lock"
    assert "# Written by 'hermetic init'" in done.path.read_text()


def test_the_python_backend_comes_from_debian_or_is_named(tmp_path: Path) -> None:
    hatch = detect(project(tmp_path / "a", CASES[4][0]))
    assert "python3-hatchling" in hatch.image["packages"]
    odd = project(tmp_path / "b", {"pyproject.toml": '[build-system]\nrequires = ["maturin>=1"]\n'})
    assert any("maturin" in check and "hermetic pin pip" in check for check in detect(odd).checks)
    in_tree = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "b"\nbackend-path = ["."]'
    }
    assert "(in the source tree)" in detect(project(tmp_path / "c", in_tree)).checks[0]


def test_dependencies_to_vendor_are_named(tmp_path: Path) -> None:
    go = detect(project(tmp_path / "go", {"go.mod": "module m\nrequire x.org/y v1\n"}))
    assert any("go mod vendor" in check for check in go.checks)
    cargo = project(
        tmp_path / "rs", {"Cargo.toml": '[package]\nname = "a"\n[dependencies]\nb = "1"\n'}
    )
    assert any("cargo vendor" in check for check in detect(cargo).checks)


def test_configure_ac_alone_needs_autoreconf(tmp_path: Path) -> None:
    found = detect(project(tmp_path, {"configure.ac": "AC_INIT\n"}))
    assert found.command[2].startswith("autoreconf -fi && ./configure")
    assert {"autoconf", "automake", "libtool"} <= set(found.image["packages"])


def test_init_never_overwrites(tmp_path: Path) -> None:
    directory = project(tmp_path, {"Makefile": "x:\n", "hermetic.toml": "# mine\n"})
    with pytest.raises(InitError, match="never overwrites"):
        init_project(directory)
    assert (directory / "hermetic.toml").read_text() == "# mine\n"
    (directory / "hermetic.toml").unlink()
    (directory / "hermetic.toml").symlink_to(tmp_path / "elsewhere")  # a dangling link too
    with pytest.raises(InitError, match="never overwrites"):
        init_project(directory)
    assert not (tmp_path / "elsewhere").exists()


def test_nothing_recognized(tmp_path: Path) -> None:
    with pytest.raises(InitError, match="no build system recognized"):
        init_project(project(tmp_path, {"README": "hi"}))


def test_cli_prints_the_guess_and_what_to_check(tmp_path: Path) -> None:
    directory = project(tmp_path, {"go.mod": "module m\nrequire x.org/y v1\n", "a.go": "package a"})
    runner = CliRunner()
    done = runner.invoke(app, ["init", str(directory)])
    assert done.exit_code == 0, done.output
    assert "guessed go (found go.mod)" in done.output
    assert "check   dependencies" in done.output and "next    hermetic image build" in done.output
    again = runner.invoke(app, ["init", str(directory)])
    assert again.exit_code == 2 and "never overwrites" in again.output

"""The version constant is the distribution's: pyproject.toml reads it from that file."""

import tomllib
from importlib import metadata
from pathlib import Path

import sandbox.version
from rebuilder import __version__ as rebuilder_version
from sandbox.version import __version__

ROOT = Path(__file__).resolve().parents[3]


def test_pyproject_reads_the_version_from_the_constants_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    source = ROOT / project["tool"]["hatch"]["version"]["path"]
    assert source.resolve() == Path(sandbox.version.__file__).resolve()


def test_the_constant_is_the_installed_distributions_version() -> None:
    assert __version__ == metadata.version("hermetic")
    assert rebuilder_version == __version__

"""The version constant is the installed distribution's (pyproject.toml reads it)."""

from importlib import metadata

from rebuilder import __version__ as rebuilder_version
from sandbox.version import __version__


def test_the_constant_is_the_installed_distributions_version() -> None:
    assert __version__ == metadata.version("hermetic")
    assert rebuilder_version == __version__

"""hermetic's rebuilder: everything after one build, and the command line."""

from sandbox.version import __version__

__all__ = ["__version__"]

"""hermetic's version: the distribution's (pyproject.toml reads it from here), recorded in
every result. A constant, not importlib.metadata: that import alone costs a trivial build
more than its whole output hashing."""

__version__ = "0.1.0"

"""Errors of the rebuilder package; their root is the sandbox's, so the CLI catches one root."""

from __future__ import annotations

from sandbox.errors import Error as SandboxRootError


class Error(SandboxRootError):
    """Root of every error the rebuilder reports to a user."""

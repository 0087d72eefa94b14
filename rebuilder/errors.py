"""Errors of the rebuilder package, on the sandbox's tree (one root, so the CLI catches one):
:class:`UserError` for what was asked wrongly, :class:`InfrastructureError` for what may
succeed when tried again."""

from __future__ import annotations

from sandbox.errors import Error, InfrastructureError, UserError

__all__ = ["Error", "InfrastructureError", "SigningError", "UserError"]


class SigningError(InfrastructureError):
    """A signer (a key file, a KMS, Sigstore) could not sign: the statement stays unsigned,
    and a node tries the job again rather than publish it."""

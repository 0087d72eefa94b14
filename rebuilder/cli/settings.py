"""Every setting a command takes from the environment, read once into one object.

The library reads no environment variable of ours: the CLI builds :class:`Settings`
from ``HERMETIC_*`` (and XDG) variables when a command starts and passes its parts on.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from sandbox.config import SandboxConfig
from sandbox.uris import LOCAL_BUILDER

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, kw_only=True)
class SigningSettings:
    """Which keys sign, and who the signer says it is.

    Attributes:
        references: ``HERMETIC_SIGN`` split at commas; ``None`` when unset (then the
            ``keygen`` default key signs when it exists); empty for ``none``.
        default_key: where ``hermetic keygen`` puts a key (``$XDG_CONFIG_HOME/hermetic/
            signing-key``).
        builder_id: ``HERMETIC_BUILDER_ID``; None: a local builder of this account.
    """

    references: tuple[str, ...] | None = None
    default_key: Path
    builder_id: str | None = None

    def signing_references(self, explicit: tuple[str, ...] | list[str]) -> list[str]:
        """``--sign``, else ``HERMETIC_SIGN``, else the default key when it exists."""
        if explicit:
            return list(explicit)
        if self.references is not None:
            return list(self.references)
        return [str(self.default_key)] if self.default_key.exists() else []

    def local_builder_id(self) -> str:
        """The builder id of builds and checks run here."""
        return self.builder_id or f"{LOCAL_BUILDER}#{getpass.getuser()}@{socket.getfqdn()}"


@dataclass(frozen=True, kw_only=True)
class NodeClientSettings:
    """How commands reach rebuilder nodes, and a node its broker.

    Attributes:
        token: ``HERMETIC_NODE_TOKEN``, the bearer token of ``rebuild`` and ``gate``.
        broker: ``HERMETIC_BROKER``, the Celery broker URL of ``node serve``/``worker``.
    """

    token: str | None = None
    broker: str | None = None


@dataclass(frozen=True, kw_only=True)
class SigstoreSettings:
    """Which Sigstore instance verifies bundles (``HERMETIC_SIGSTORE_INSTANCE``:
    ``production`` or ``staging``), and whether its trust root is refreshed through TUF
    (``HERMETIC_SIGSTORE_OFFLINE=1``: the one shipped with sigstore-python)."""

    staging: bool = False
    offline: bool = False


@dataclass(frozen=True, kw_only=True)
class Settings:
    """One command's configuration: the sandbox, signing, nodes and Sigstore, and the
    effective user id it runs as (injected by tests, ``os.geteuid()`` otherwise)."""

    sandbox: SandboxConfig
    signing: SigningSettings
    node: NodeClientSettings = field(default_factory=NodeClientSettings)
    sigstore: SigstoreSettings = field(default_factory=SigstoreSettings)
    euid: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, euid: int | None = None) -> Settings:
        """Read every setting from ``env`` (default: the process environment) once.

        Raises:
            sandbox.errors.Error: a setting has a value that cannot be used.
        """
        env = os.environ if env is None else env
        configured = env.get("HERMETIC_SIGN", "").strip()
        references: tuple[str, ...] | None = None
        if configured.lower() == "none":
            references = ()
        elif configured:
            references = tuple(item.strip() for item in configured.split(",") if item.strip())
        # platformdirs reads the process's environment; an injected one names its own
        configured_home = env.get("XDG_CONFIG_HOME")
        config_dir = (
            Path(configured_home) / "hermetic"
            if configured_home
            else platformdirs.user_config_path("hermetic")
        )
        return cls(
            sandbox=SandboxConfig.from_env(env),
            signing=SigningSettings(
                references=references,
                default_key=config_dir / "signing-key",
                builder_id=env.get("HERMETIC_BUILDER_ID") or None,
            ),
            node=NodeClientSettings(
                token=env.get("HERMETIC_NODE_TOKEN") or None,
                broker=env.get("HERMETIC_BROKER") or None,
            ),
            sigstore=SigstoreSettings(
                staging=env.get("HERMETIC_SIGSTORE_INSTANCE", "production") == "staging",
                offline=env.get("HERMETIC_SIGSTORE_OFFLINE", "").lower() in _TRUE,
            ),
            euid=os.geteuid() if euid is None else euid,
        )

"""Registry images pinned by digest: which registry, whether TLS may be skipped, and the
user's credentials for it (containers-auth.json), read only to hand them to podman's pull.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.errors import ImageError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RegistryCredentials:
    """A user name and password for one registry; never printed, logged or recorded."""

    username: str
    password: str = field(repr=False)

    def to_header(self) -> str:
        """The X-Registry-Auth value podman's API takes (base64url JSON)."""
        data = json.dumps({"username": self.username, "password": self.password})
        return base64.urlsafe_b64encode(data.encode()).decode()


def registry_of(repository: str) -> str | None:
    """The registry host[:port] of a repository, or None for a short name.

    As in containers-registries.conf(5): the first component is a registry when it
    holds a '.' or a ':' or is 'localhost'.
    """
    first, slash, _ = repository.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def is_loopback(registry: str) -> bool:
    """Whether host[:port] names this machine only (localhost, 127.0.0.0/8, ::1)."""
    host = registry
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_verify_for(registry: str, insecure: tuple[str, ...]) -> bool:
    """Whether to verify TLS; only a loopback registry the user marked insecure skips it.

    Raises:
        ImageError: a registry marked insecure is not a loopback address.
    """
    if registry not in insecure:
        return True
    if not is_loopback(registry):
        raise ImageError(
            f"HERMETIC_INSECURE_REGISTRIES names {registry}, which is not a loopback address; "
            "only registries on this machine (localhost, 127.0.0.1, [::1]) may be used "
            "without TLS. Give that registry a certificate instead."
        )
    return False


def auth_files(env: Mapping[str, str]) -> list[Path]:
    """Where podman and docker keep credentials, in containers-auth.json(5)'s order."""
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    files.append(Path(runtime) / "containers" / "auth.json")
    home = Path(env.get("HOME") or Path.home())
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    files.append(config / "containers" / "auth.json")
    files.append(home / ".docker" / "config.json")
    return files


def registry_credentials(
    repository: str, env: Mapping[str, str] | None = None
) -> RegistryCredentials | None:
    """The user's credentials for the registry of ``repository``, if any file has them.

    The most specific entry wins ("host/ns/repo" over "host/ns" over "host"), as podman
    chooses.

    Raises:
        ImageError: an auth file that exists cannot be read or is malformed.
    """
    registry = registry_of(repository)
    if registry is None:
        return None
    env = os.environ if env is None else env
    path = repository
    candidates = []
    while True:
        candidates.append(path)
        if "/" not in path:
            break
        path = path.rpartition("/")[0]
    for file in auth_files(env):
        if not file.is_file():
            continue
        try:
            auths = json.loads(file.read_text("utf-8")).get("auths", {})
        except (OSError, ValueError, AttributeError) as e:
            raise ImageError(f"{file}: unreadable registry credentials: {e}") from None
        if not isinstance(auths, dict):
            raise ImageError(f"{file}: 'auths' is not an object")
        for key in candidates:
            entry = auths.get(key) or auths.get(f"https://{key}") or auths.get(f"http://{key}")
            if isinstance(entry, dict) and entry.get("auth"):
                log.debug("registry credentials for %s from %s", key, file)
                return _decode(str(entry["auth"]), file, key)
    return None


def _decode(value: str, file: Path, key: str) -> RegistryCredentials:
    try:
        username, colon, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        colon = ""
    if not colon:
        raise ImageError(f"{file}: auths.{key}.auth is not base64 of 'user:password'")
    return RegistryCredentials(username=username, password=password)

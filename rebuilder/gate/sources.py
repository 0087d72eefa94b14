"""Where the gate finds attestations: a directory (every regular ``*.json`` file under it,
links not followed), or rebuilder nodes' APIs, asked by subject digest. Every read is
bounded. A node that cannot be reached, or answers nonsense, fails closed unless the policy
names it optional."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rebuilder.errors import UserError
from rebuilder.gate.policy import Policy
from rebuilder.node.client import Credentials, NodeClient, NodeError

MAX_ATTESTATION_BYTES = 16 * 1024**2
MAX_NODE_BYTES = 64 * 1024**2  # all one node's answers: honest attestations are a few KiB
MAX_NODE_SECONDS = 300.0  # all one node's answers


class SourceError(UserError):
    """An attestation source the user named does not exist."""


@dataclass(kw_only=True)
class Collected:
    attestations: list[tuple[str, bytes]] = field(default_factory=list)  # (origin, bytes)
    unreachable: list[str] = field(default_factory=list)  # required sources that failed
    notes: list[str] = field(default_factory=list)


def _optional(policy: Policy, url: str) -> bool:
    return any(
        op.optional and url.rstrip("/") in {n.rstrip("/") for n in op.nodes}
        for op in policy.operators
    )


def collect(
    sources: Sequence[str], digests: Sequence[str], policy: Policy, credentials: Credentials
) -> Collected:
    """Every attestation the sources hold for these digests (directories: all of them)."""
    found = Collected()
    for source in sources:
        if "://" in source:
            _from_node(source, digests, policy, credentials, found)
            continue
        root = Path(source)
        if not root.is_dir():
            raise SourceError(f"--attestations {source}: no such directory (nor a URL)")
        for path in _json_files(root):
            data, why = read_bounded(path, MAX_ATTESTATION_BYTES)
            if data is None:
                found.notes.append(f"{path}: {why}; not read")
            else:
                found.attestations.append((str(path), data))
    return found


def _json_files(root: Path) -> list[Path]:
    """Every ``*.json`` under ``root``, in order; linked directories are not entered."""
    found = []
    for directory, subdirectories, files in os.walk(root, followlinks=False):
        subdirectories.sort()
        found += [Path(directory, name) for name in files if name.endswith(".json")]
    return sorted(found)


def read_bounded(path: Path, limit: int) -> tuple[bytes | None, str]:
    """A regular file's bytes, at most ``limit``, read through one descriptor that did not
    follow a link (what is checked is what is read); else None and why."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        why = "a link (not followed)" if e.errno == errno.ELOOP else e.strerror or str(e)
        return None, why
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            return None, "not a regular file"
        data = stream.read(limit + 1)
    if len(data) > limit:
        return None, f"more than {limit} bytes"
    return data, ""


def _from_node(
    url: str, digests: Sequence[str], policy: Policy, credentials: Credentials, found: Collected
) -> None:
    client = NodeClient(url, credentials, timeout_s=30)
    deadline = time.monotonic() + MAX_NODE_SECONDS
    budget = MAX_NODE_BYTES
    try:
        seen = set()
        for digest in digests:
            for job_id in client.by_subject(digest):
                if job_id in seen:
                    continue
                seen.add(job_id)
                if budget <= 0 or time.monotonic() > deadline:
                    raise NodeError(
                        f"{url}: more than {MAX_NODE_BYTES} bytes or {MAX_NODE_SECONDS:.0f}s "
                        "of attestations; not read further"
                    )
                data = client.attestation(job_id, limit=min(MAX_ATTESTATION_BYTES, budget))
                budget -= len(data)
                origin = f"{url.rstrip('/')}/v1/rebuilds/{job_id}/attestation"
                found.attestations.append((origin, data))
    except NodeError as e:
        if _optional(policy, url):
            found.notes.append(f"optional node unreachable: {e}")
        else:
            found.unreachable.append(str(e))
    finally:
        client.close()

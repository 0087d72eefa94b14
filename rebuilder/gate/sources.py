"""Where the gate finds attestations: a directory (every JSON file under it), or
rebuilder nodes' APIs, asked by subject digest. An unreachable node fails closed unless
the policy names it optional."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rebuilder.errors import Error
from rebuilder.gate.policy import Policy
from rebuilder.node.client import Credentials, NodeClient, NodeError

MAX_ATTESTATION_BYTES = 16 * 1024**2


class SourceError(Error):
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
        for path in sorted(root.rglob("*.json")):
            if path.is_file() and path.stat().st_size <= MAX_ATTESTATION_BYTES:
                found.attestations.append((str(path), path.read_bytes()))
    return found


def _from_node(
    url: str, digests: Sequence[str], policy: Policy, credentials: Credentials, found: Collected
) -> None:
    client = NodeClient(url, credentials, timeout_s=30)
    try:
        seen = set()
        for digest in digests:
            for job in client.by_subject(digest):
                if job["id"] not in seen:
                    seen.add(job["id"])
                    origin = f"{url.rstrip('/')}/v1/rebuilds/{job['id']}/attestation"
                    found.attestations.append((origin, client.attestation(job["id"])))
    except (NodeError, KeyError, ValueError, TypeError) as e:  # TypeError: a node's nonsense
        if _optional(policy, url):
            found.notes.append(f"optional node unreachable: {e}")
        else:
            found.unreachable.append(str(e))
    finally:
        client.close()

"""Fetching pinned inputs into the store: the only step of a build that uses the network."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests

from sandbox.errors import InputError
from sandbox.spec import InputSpec
from sandbox.store import ContentStore

log = logging.getLogger(__name__)

FetchProgress = Callable[[str, int, int | None], None]
"""Called with (url, bytes so far, total bytes or None)."""

_CHUNK = 1 << 20
_CONNECT_TIMEOUT_S = 15
_READ_TIMEOUT_S = 120


def trusted_cas() -> str | bool:
    """The CA bundle HTTPS fetches trust: the system's, like curl and apt.

    SSL_CERT_FILE or REQUESTS_CA_BUNDLE override it; without a system bundle,
    requests' own (certifi) is used.
    """
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(name):
            return os.environ[name]
    cafile = ssl.get_default_verify_paths().cafile
    return cafile if cafile and Path(cafile).is_file() else True


def fetch_input(
    item: InputSpec, store: ContentStore, progress: FetchProgress | None = None
) -> tuple[Path, bool]:
    """Make the input available in the store.

    Args:
        item: the input as the spec pins it.
        store: where verified inputs live.
        progress: receives byte counts while downloading.

    Returns:
        The stored file and whether it had to be fetched (False: already stored).

    Raises:
        DigestMismatch: the fetched bytes have another digest; nothing was kept.
        InputError: the URL cannot be read.
    """
    cached = store.get(item.sha256)
    if cached is not None:
        log.debug("input %s already stored", item.url)
        return cached, False

    def report(done: int) -> None:
        if progress is not None:
            progress(item.url, done, total)

    parts = urlsplit(item.url)
    total: int | None = None
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
        try:
            total = path.stat().st_size
            with path.open("rb") as stream:
                chunks: Iterator[bytes] = iter(lambda: stream.read(_CHUNK), b"")
                return store.add(chunks, expected=item.sha256, what=item.url, on_bytes=report), True
        except OSError as e:
            raise InputError(f"cannot read input {item.url}: {e}") from e
    try:
        with requests.get(
            item.url,
            stream=True,
            timeout=(_CONNECT_TIMEOUT_S, _READ_TIMEOUT_S),
            verify=trusted_cas(),
        ) as response:
            response.raise_for_status()
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            chunks = response.iter_content(chunk_size=_CHUNK)
            return store.add(chunks, expected=item.sha256, what=item.url, on_bytes=report), True
    except requests.RequestException as e:
        raise InputError(f"cannot fetch input {item.url}: {e}") from e

"""The upstream sources ``bench/check_vs_reprotest`` checks beside GNU hello: read from
``bench/corpus.toml`` (each pinned by sha256), fetched into the user's input store.

``python -m bench.corpus`` (as the build user) fetches every source that is not stored yet,
verifying its digest, and prints a JSON object: name -> path of the stored file.
"""

from __future__ import annotations

import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sandbox.config import SandboxConfig
from sandbox.digests import Sha256
from sandbox.fetch import fetch_input
from sandbox.spec import InputSpec
from sandbox.store import ContentStore

CORPUS = Path(__file__).resolve().parent / "corpus.toml"
_KEYS = {"name", "url", "sha256", "top", "build", "artifact"}


class CorpusError(Exception):
    """corpus.toml says something a source cannot be built from."""


@dataclass(frozen=True, kw_only=True)
class Source:
    """One upstream tarball, how to build it, and what it makes."""

    name: str
    url: str
    sha256: Sha256
    top: str  # the directory the tarball unpacks into
    build: str  # run in ``top``
    artifact: str  # relative to ``top``

    @property
    def file(self) -> str:
        return PurePosixPath(self.url).name

    @property
    def command(self) -> str:
        """The shell command both tools run, in a directory holding the tarball.

        reprotest builds as root, where tar would give the files the archive's owners,
        which its disorderfs mount (fileordering) refuses: --no-same-owner, as a user's
        tar does anyway."""
        return f"tar --no-same-owner -xzf {self.file} && cd {self.top} && {self.build}"

    @property
    def output(self) -> str:
        return f"{self.top}/{self.artifact}"

    def spec(self) -> str:
        """hermetic.toml for it: the default image, the tarball as a pinned input."""
        return f"""
[build]
image = "debian-bookworm"
command = ["sh", "-c", {json.dumps(self.command)}]
outputs = [{json.dumps(self.output)}]
source_date_epoch = 1700000000
[[inputs]]
url = {json.dumps(self.url)}
sha256 = "{self.sha256}"
dest = {json.dumps(self.file)}
"""


def load_corpus(path: Path = CORPUS) -> tuple[Source, ...]:
    """The sources of ``path``, validated.

    Raises:
        CorpusError: a missing or unknown key, a bad digest, a name used twice.
    """
    sources = []
    for index, table in enumerate(tomllib.loads(path.read_text()).get("source", [])):
        where = f"{path}: source {index + 1}"
        if set(table) != _KEYS:
            raise CorpusError(f"{where}: keys must be exactly {sorted(_KEYS)}, not {sorted(table)}")
        if not all(isinstance(value, str) and value for value in table.values()):
            raise CorpusError(f"{where}: every value must be a non-empty string")
        digest = table["sha256"]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise CorpusError(f"{where}: sha256 must be 64 lowercase hex digits")
        if not table["url"].startswith("https://") or not table["url"].endswith(".tar.gz"):
            raise CorpusError(f"{where}: url must be an https:// URL of a .tar.gz")
        sources.append(Source(**{**table, "sha256": Sha256(digest)}))
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise CorpusError(f"{path}: a name is used twice")
    return tuple(sources)


def fetch_corpus(sources: tuple[Source, ...], store: ContentStore) -> dict[str, Path]:
    """Every source in the store (fetched and verified when missing): name -> stored file."""
    return {
        source.name: fetch_input(
            InputSpec(url=source.url, sha256=source.sha256, dest=PurePosixPath(source.file)),
            store,
        )[0]
        for source in sources
    }


def main() -> None:
    store = ContentStore(SandboxConfig.from_env().store_dir)
    stored = fetch_corpus(load_corpus(), store)
    json.dump({name: str(path) for name, path in stored.items()}, sys.stdout)


if __name__ == "__main__":
    main()

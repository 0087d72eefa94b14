"""``hermetic check --against URL#sha256=…``: compare an output with the published artifact
of the same name (the wheel on the package index, the npm tarball), fetched and checked
against the pinned digest; on a difference, diffoscope says where."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from rebuilder.diffreport import DiffReport, diff_outputs
from rebuilder.errors import UserError
from sandbox.digests import Sha256, parse_sha256
from sandbox.fetch import fetch_input
from sandbox.outputs import OutputFile
from sandbox.spec import InputSpec
from sandbox.store import ContentStore

_AGAINST_RE = re.compile(r"^(?P<url>(https?|file)://[^#\s]+)#sha256=(?P<digest>[0-9a-fA-F]{64})$")


class AgainstError(UserError):
    """A published artifact cannot be named, fetched or matched to an output."""


@dataclass(frozen=True, kw_only=True)
class Published:
    """A published artifact, pinned by the digest the user expects it to have."""

    url: str
    sha256: Sha256

    @property
    def name(self) -> str:
        return unquote(urlsplit(self.url).path).rsplit("/", 1)[-1]

    @classmethod
    def parse(cls, text: str) -> Published:
        """``URL#sha256=<64 hex>``.

        Raises:
            AgainstError: anything else.
        """
        match = _AGAINST_RE.match(text.strip())
        if not match:
            raise AgainstError(
                f"--against {text!r}: expected URL#sha256=<64 hex>, such as "
                "https://files.pythonhosted.org/…/pkg-1.0-py3-none-any.whl#sha256=…"
            )
        return cls(url=match["url"], sha256=parse_sha256(match["digest"]))


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """An output against its published counterpart."""

    published: Published
    output: str
    output_sha256: str
    report: DiffReport | None = None

    @property
    def matches(self) -> bool:
        return self.output_sha256 == self.published.sha256

    def to_json(self) -> dict[str, Any]:
        report = self.report
        return {
            "url": self.published.url,
            "published_sha256": f"sha256:{self.published.sha256}",
            "output": self.output,
            "output_sha256": f"sha256:{self.output_sha256}",
            "matches": self.matches,
            "diff": str(report.text) if report and report.text else None,
            "diff_html": str(report.html) if report and report.html else None,
        }


def compare_published(
    published: Published,
    *,
    artifacts: Path,
    outputs: tuple[OutputFile, ...],
    store: ContentStore,
    report_dir: Path,
) -> Comparison:
    """Fetch the published artifact (digest-checked) and compare the output named like it.

    Raises:
        AgainstError: no output (or more than one) has the published file's name.
        InputError, DigestMismatch: the published file cannot be fetched, or is not what
            its pinned digest says.
    """
    named = [o for o in outputs if PurePosixPath(o.path).name == published.name]
    if len(named) != 1:
        found = ", ".join(o.path for o in outputs) or "none"
        raise AgainstError(
            f"--against {published.url}: {len(named)} outputs are named {published.name} "
            f"(outputs: {found}); compare one output with the file of the same name"
        )
    output = named[0]
    item = InputSpec(url=published.url, sha256=published.sha256, dest=PurePosixPath("published"))
    path, _ = fetch_input(item, store)
    comparison = Comparison(published=published, output=output.path, output_sha256=output.sha256)
    if comparison.matches:
        return comparison
    staged = report_dir / "published" / output.path
    staged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, staged)
    report = diff_outputs(
        control=artifacts,
        other=report_dir / "published",
        paths=[output.path],
        report_dir=report_dir / f"against-{published.name}",
    )
    return Comparison(
        published=published, output=output.path, output_sha256=output.sha256, report=report
    )

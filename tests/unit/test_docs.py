"""The documentation as users read it: a short front page, links that resolve inside the
repository, an index of every page, every URI and setting the code uses documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from tests.schemas import SCHEMAS, schema_by_uri

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = sorted([REPO / "README.md", *DOCS.rglob("*.md")])
_LINK = re.compile(r"(?<!!)\[[^]]*\]\((?P<target>[^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} (?P<title>.+?)\s*$", re.MULTILINE)
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE_URI = re.compile(
    r'"(https://(?:hermetic\.dev/(?:schemas|attestations|build-types)|slsa\.dev|spdx\.dev'
    r'|cyclonedx\.org|in-toto\.io)/[^"{}]*)"'
)
_CODE_SETTING = re.compile(r'"(HERMETIC_[A-Z0-9_]*[A-Z0-9])"')


def _source_files() -> list[Path]:
    return [p for package in ("rebuilder", "sandbox") for p in (REPO / package).rglob("*.py")]


def _anchor(title: str) -> str:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _links(page: Path) -> list[str]:
    return _LINK.findall(_FENCE.sub("", page.read_text()))


def test_the_readme_is_a_front_page() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for needed in (".ci/example", ".ci/test", "docs/index.md"):
        assert needed in text


def test_the_link_checker_finds_a_broken_link(tmp_path: Path) -> None:
    """Negative control of the link test: the pattern sees links, and a missing target
    does not resolve."""
    page = tmp_path / "page.md"
    page.write_text("see [a](missing.md) and [b](../../outside.md#x)\n```\n[c](code.md)\n```\n")
    assert _links(page) == ["missing.md", "../../outside.md#x"]
    assert not (tmp_path / "missing.md").exists()
    assert _anchor("In-toto layout: `hermetic layout`") == "in-toto-layout-hermetic-layout"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_link_resolves_inside_the_repository(page: Path) -> None:
    for target in _links(page):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        assert resolved.is_relative_to(REPO), f"{page}: {target} leaves the repository"
        assert resolved.exists(), f"{page}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            anchors = {_anchor(t) for t in _HEADING.findall(_FENCE.sub("", resolved.read_text()))}
            assert anchor in anchors, f"{page}: {target}: no heading #{anchor} in {resolved.name}"


def test_the_index_lists_every_page() -> None:
    index = (DOCS / "index.md").read_text()
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "index.md":
            assert f"]({page.name})" in index, f"docs/index.md does not list {page.name}"
    adr_index = (DOCS / "adr" / "index.md").read_text()
    for record in sorted((DOCS / "adr").glob("0*.md")):
        assert f"]({record.name})" in adr_index, f"docs/adr/index.md does not list {record.name}"


@pytest.mark.parametrize("schema", sorted(p.name for p in SCHEMAS.glob("*.json")))
def test_every_schema_is_a_valid_draft_2020_12_schema_named_by_its_file(schema: str) -> None:
    document = json.loads((SCHEMAS / schema).read_text())
    Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"] == f"https://hermetic.dev/schemas/{schema}"
    assert document["title"] and document["description"]


def test_every_uri_the_code_writes_names_a_schema() -> None:
    written = {m for path in _source_files() for m in _CODE_URI.findall(path.read_text())}
    assert len(written) >= 12  # the pattern finds them (the test would pass on none)
    table = schema_by_uri()
    assert not written - set(table), "URIs without a row in docs/formats.md"
    for uri, schema in table.items():
        assert (SCHEMAS / schema).is_file(), f"{uri}: {schema} does not exist"


def test_every_setting_the_code_reads_is_documented() -> None:
    read = {m for path in _source_files() for m in _CODE_SETTING.findall(path.read_text())}
    assert "HERMETIC_SIGN" in read  # the pattern finds them
    page = (DOCS / "environment.md").read_text()
    documented = set(re.findall(r"^\| `(HERMETIC_[A-Z0-9_]+)`", page, re.MULTILINE))
    documented |= set(re.findall(r"`(HERMETIC_TRACE_MAX_[A-Z]+)`", page))
    assert not read - documented, "settings missing from docs/environment.md"
    used_elsewhere = (REPO / ".ci" / "lib.sh").read_text() + (REPO / "tests").joinpath(
        "conftest.py"
    ).read_text()
    for name in documented - read:
        assert name in used_elsewhere or name == "HERMETIC_HELLO_TARBALL", (
            f"docs/environment.md documents {name}, which nothing reads"
        )

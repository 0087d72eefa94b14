"""Bad input is our own error, never a traceback, on the node and in a check: property
tests of request archives (tar headers and bytes), requests whose spec is bad (a signed
failure, never a retry), and trace.json as hints read it. Found cases are @example lines."""

from __future__ import annotations

import contextlib
import io
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from rebuilder.attest.keys import generate_keypair, load_public_key, load_signer
from rebuilder.attest.verify import verify_attestation
from rebuilder.compare import Difference
from rebuilder.hints import hints_for
from rebuilder.node.api import ApiSettings, create_app
from rebuilder.node.auth import TokenRegistry, add_token
from rebuilder.node.jobs import JobState, Outcome
from rebuilder.node.node import Node, NodeSettings
from rebuilder.node.requests import REQUEST_SPEC, RequestError, unpack_source
from sandbox.digests import Sha256
from sandbox.outputs import OutputFile
from sandbox.trace.model import BuildTrace, TraceFormatError
from sandbox.uris import TRACE_SCHEMA
from tests.strategies import ANYTHING, SPECS, TEXT, toml_document
from tests.unit.conftest import FAKE_SPEC, fake_sandbox

# --- request archives -----------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(
        [
            REQUEST_SPEC,
            "a",
            "a/b",
            "./c",
            "d/",
            "/abs",
            "../up",
            "a/../../up",
            "l/escape",
            "x" * 300,
            "ü",
            "a\\b",
        ]
    ),
    st.text(min_size=1, max_size=30),
)
KINDS = st.sampled_from(
    [
        tarfile.REGTYPE,
        tarfile.AREGTYPE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
    ]
)


@st.composite
def members(draw: st.DrawFn) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(draw(NAMES))
    info.type = draw(KINDS)
    info.linkname = draw(st.one_of(st.sampled_from(["..", "/etc", "a", "../../x", "l"]), TEXT))
    info.mode = draw(st.integers(min_value=0, max_value=0o7777))
    data = draw(st.binary(max_size=64)) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else b""
    info.size = len(data)
    info.mtime = draw(st.integers(min_value=0, max_value=2**33))
    return info, data


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    entries = draw(st.lists(members(), max_size=6))
    if draw(st.booleans()):  # a usable spec, so unpacking goes past the first checks
        spec = tarfile.TarInfo(REQUEST_SPEC)
        spec.size = len(FAKE_SPEC)
        entries.insert(draw(st.integers(0, len(entries))), (spec, FAKE_SPEC.encode()))
    form = draw(st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]))
    buffer = io.BytesIO()
    try:
        with tarfile.open(fileobj=buffer, mode="w:gz", format=form) as archive:
            for info, data in entries:
                archive.addfile(info, io.BytesIO(data) if data else None)
    except (ValueError, UnicodeError):
        assume(False)  # the writer refuses it (a name too long for ustar): not an archive
    raw = buffer.getvalue()
    cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))  # sometimes truncated
    return raw if cut is None else raw[:cut]


def _inside(dest: Path) -> Iterator[str]:
    """Why an unpacked tree breaks the promise (nothing outside it, no setuid)."""
    root = dest.resolve()
    for path in dest.rglob("*"):
        if not path.resolve().is_relative_to(root):
            yield f"{path} leads outside"
        if not path.is_symlink() and path.stat().st_mode & 0o6000:
            yield f"{path} is setuid or setgid"


@given(archives())
@example(b"")
@example(b"\x1f\x8b")  # a gzip header and nothing else
def test_a_request_archive_unpacks_inside_its_tree_or_is_a_request_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        dest = Path(scratch) / "src"
        try:
            unpack_source(data, dest)
        except RequestError:
            return
        assert (dest / REQUEST_SPEC).is_file()
        assert list(_inside(dest)) == []


@given(st.binary(max_size=300))
def test_any_bytes_are_a_request_or_a_request_error(data: bytes) -> None:
    with (
        tempfile.TemporaryDirectory() as scratch,
        contextlib.suppress(RequestError),  # anything else fails the test
    ):
        unpack_source(data, Path(scratch) / "src")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A node's API (on the fake backend); its workers never start here."""
    root = tmp_path_factory.mktemp("api")
    generate_keypair(root / "key")
    settings = NodeSettings(
        directory=root / "node",
        builder_id="https://t/n",
        max_active_jobs=10**6,
        max_client_jobs=10**6,  # one client submits every example; its cap is tested elsewhere
    )
    node = Node(settings, load_signer(str(root / "key")), config=fake_sandbox(root))
    token = add_token(root / "tokens.json", "t", ["submit"])
    app = create_app(
        node,
        ApiSettings(tokens=TokenRegistry.load(root / "tokens.json"), requests_per_minute=10**6),
    )
    yield TestClient(app), {"Authorization": f"Bearer {token}"}
    node.close()


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(archives(), st.binary(max_size=200)))
def test_the_node_answers_any_request_with_202_or_400(
    api: tuple[TestClient, dict[str, str]], data: bytes
) -> None:
    http, auth = api
    answer = http.post("/v1/rebuilds", content=data, headers=auth)  # a 500 raises here
    assert answer.status_code in (202, 400), answer.text
    if answer.status_code == 400:
        assert isinstance(answer.json()["detail"], str)


# --- requests whose spec is bad: a signed failure, never a retry --------------------------


@settings(max_examples=80)
@given(SPECS)
@example({"build": {"command": ["make"], "outputs": ["o"]}, "limits": {"timeout": 10**15}})
def test_a_bad_spec_on_a_node_ends_in_a_signed_failure(document: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        generate_keypair(root / "key")
        node = Node(
            NodeSettings(directory=root / "node", builder_id="https://t/n"),
            load_signer(str(root / "key")),
            config=fake_sandbox(root),
        )
        try:
            source = root / "src"
            source.mkdir()
            (source / REQUEST_SPEC).write_text(toml_document(document), errors="surrogatepass")
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
                archive.add(source / REQUEST_SPEC, arcname=REQUEST_SPEC)
            job = node.submit(buffer.getvalue(), "t")
            claimed = node.store.claim("w", 60)
            assert claimed is not None
            node.run_job(claimed, "w")
            done = node.job(job.id)
            assert done.state is JobState.FINISHED, done  # not queued again: not a retry
            assert done.outcome in (Outcome.BUILT, Outcome.BUILD_FAILED), done.reason
            attestation = node.attestation(job.id)
            assert attestation is not None
            (root / "a.json").write_bytes(attestation)
            assert verify_attestation(root / "a.json", [load_public_key(root / "key.pub")]).ok
        finally:
            node.close()


# --- trace.json -------------------------------------------------------------------------

PIDS = st.one_of(st.integers(-2, 50), ANYTHING)
RECORDS = {
    "processes": st.fixed_dictionaries(
        {"pid": PIDS, "ppid": PIDS, "execs": st.lists(PIDS, max_size=2), "exit_status": PIDS}
    ),
    "executions": st.fixed_dictionaries(
        {
            "seq": PIDS,
            "pid": PIDS,
            "ppid": PIDS,
            "path": TEXT,
            "argv": st.one_of(st.lists(TEXT, max_size=3), ANYTHING),
        }
    ),
    "nondeterminism": st.fixed_dictionaries(
        {
            "source": st.one_of(st.sampled_from(["random", "uname", "heap_key"]), ANYTHING),
            "count": PIDS,
        },
        optional={"pid": st.one_of(st.none(), PIDS), "detail": TEXT},
    ),
    "files": st.fixed_dictionaries(
        {"path": st.one_of(st.just("/build/out.txt"), TEXT)},
        optional={
            key: st.one_of(st.lists(st.integers(0, 50), max_size=3), ANYTHING)
            for key in ("created_by", "written_by", "read_by")
        },
    ),
}
TRACES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            **{
                key: st.one_of(st.lists(value, max_size=4), ANYTHING)
                for key, value in RECORDS.items()
            },
            "writers": st.one_of(
                st.dictionaries(
                    st.one_of(st.just("/build/out.txt"), TEXT),
                    st.one_of(
                        st.fixed_dictionaries(
                            {"pid": PIDS, "program": TEXT, "argv": st.lists(TEXT, max_size=2)}
                        ),
                        ANYTHING,
                    ),
                    max_size=3,
                ),
                ANYTHING,
            ),
        },
    ),
    ANYTHING,
)
DIFFERENCE = Difference(
    path="out.txt",
    control=OutputFile(path="out.txt", sha256=Sha256("a" * 64), size=1, mode=0o644),
    other=OutputFile(path="out.txt", sha256=Sha256("b" * 64), size=1, mode=0o755),
)


# what every trace.json has beside the records drawn above
FRAME: dict[str, Any] = {
    "_schema": TRACE_SCHEMA,
    "level": "standard",
    "complete": True,
    "gaps": [],
    "network_interfaces": [],
    "notifications": 0,
    "tracer": {"events": 0, "dropped": 0, "peak_memory_bytes": 0},
    "exec_failures": 0,
    **{key: [] for key in ("executions", "processes", "files", "other_reads", "network")},
    **{key: [] for key in ("hermetic_path_attempts", "nondeterminism")},
    "writers": {},
}


@given(TRACES)
@example({"writers": {"/build/out.txt": {}}})  # a writer without a pid
@example({"writers": {"/build/out.txt": {"pid": 0, "program": "", "argv": [""]}}})  # older
@example({"files": [{"path": "/build/out.txt", "read_by": "1"}]})
@example([])  # not an object: AttributeError escaped from hints before
def test_any_trace_json_is_a_trace_or_a_format_error_and_gives_hints(trace: Any) -> None:
    document = {**FRAME, **trace} if isinstance(trace, dict) else trace
    try:
        parsed = BuildTrace.from_json(document)
    except TraceFormatError:
        return
    assert BuildTrace.from_json(parsed.to_json()) == parsed  # what it read, it writes
    hints = hints_for(
        trace=parsed, build_dir="/build", found=[DIFFERENCE], embedded={}, culprits=["inherent"]
    )
    assert [hint.path for hint in hints] == ["out.txt"]
    hint = hints[0]
    assert hint.writer is None or isinstance(hint.writer, dict)
    assert all(isinstance(source.source, str) for source in hint.sources)

"""Where the gate reads attestations: a hostile node (even an optional one) or a hostile
file in the attestations directory is a note or a failure of that source, never a crash,
an unbounded read or a file outside the directory (review gate-1, finding 6 and the
collect suspicion). The nodes here are real HTTP servers on loopback."""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rebuilder.gate.gate import run_gate
from rebuilder.gate.policy import load_policy
from rebuilder.gate.sources import MAX_ATTESTATION_BYTES
from rebuilder.node.client import Credentials
from tests.unit.rebuilder.gate.conftest import NOW, World

JOB = "0" * 32
HUGE = 4 * MAX_ATTESTATION_BYTES
Reply = Callable[[http.server.BaseHTTPRequestHandler], None]


class HostileNode:
    """A node that answers every GET with ``reply``, counting the body bytes it got out."""

    def __init__(self, reply: Reply) -> None:
        self.sent = 0
        node = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                try:
                    reply(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

            def send_body(self, body: bytes, length: int | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)
                node.sent += len(body)

        self.handler = Handler
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HostileNode:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def jobs(handler: http.server.BaseHTTPRequestHandler, *ids: str) -> None:
    handler.send_body(json.dumps({"jobs": [{"id": i} for i in ids]}).encode())  # type: ignore[attr-defined]


def deep(handler: http.server.BaseHTTPRequestHandler) -> None:
    """hostile_node.py: JSON nested 100,000 deep where the job list should be."""
    handler.send_body(b"[" * 100_000 + b"]" * 100_000)  # type: ignore[attr-defined]


def endless(handler: http.server.BaseHTTPRequestHandler) -> None:
    """hostile_node2.py: one job, whose attestation is four times the cap."""
    if handler.path.startswith("/v1/attestations"):
        jobs(handler, JOB)
        return
    handler.send_response(200)
    handler.send_header("Content-Length", str(HUGE))
    handler.end_headers()
    chunk = b" " * (1 << 20)
    for _ in range(HUGE // len(chunk)):
        handler.wfile.write(chunk)
        handler.server.node.sent += len(chunk)  # type: ignore[attr-defined]


def outside_id(handler: http.server.BaseHTTPRequestHandler) -> None:
    """A job id that would take the gate's next request elsewhere on the node."""
    jobs(handler, "../../v1/node")


@pytest.fixture
def world(tmp_path: Path) -> World:
    made = World(tmp_path)
    for name in ("acme", "globex", "initech"):
        made.operator(name)
    made.provenance("acme")
    made.provenance("globex")
    return made


@pytest.fixture
def node(request: pytest.FixtureRequest) -> Iterator[HostileNode]:
    with HostileNode(request.param) as running:
        running.server.node = running  # type: ignore[attr-defined]
        yield running


def decide_with(world: World, node: HostileNode, *, optional: bool) -> tuple[bool, list[str]]:
    """Decide hello with acme and globex in the directory and initech's node asked too."""
    policy = world.policy(
        operators="".join(
            f'\n[[operators]]\nname = "{name}"\nkeys = [{{ file = "{files[0]}" }}]\n'
            + (
                f'nodes = ["{node.url}"]\n' + ("optional = true\n" if optional else "")
                if name == "initech"
                else ""
            )
            for name, files in world.keys.items()
        )
    )
    decisions, _ = run_gate(
        [world.artifact],
        load_policy(policy),
        [str(world.store), node.url],
        credentials=Credentials(),
        now=NOW,
    )
    (decision,) = decisions
    return decision.admitted, [*decision.reasons, *decision.notes]


@pytest.mark.parametrize("node", [deep], indirect=True)
def test_a_node_answering_deeply_nested_json_is_a_failing_source(
    world: World, node: HostileNode
) -> None:
    admitted, told = decide_with(world, node, optional=True)
    assert admitted and any("optional node unreachable" in t for t in told), told
    admitted, told = decide_with(world, node, optional=False)
    assert not admitted and any("nested deeper" in t for t in told), told


@pytest.mark.parametrize("node", [endless], indirect=True)
def test_a_node_sending_a_huge_attestation_is_cut_at_the_cap(
    world: World, node: HostileNode
) -> None:
    admitted, told = decide_with(world, node, optional=True)
    assert admitted, told  # acme and globex still admit it
    assert any(f"more than {MAX_ATTESTATION_BYTES} bytes" in t for t in told), told
    # what the server got out before the gate hung up: the cap and the sockets' buffers
    assert node.sent < HUGE // 2, f"the gate read {node.sent} bytes of a {HUGE}-byte answer"


@pytest.mark.parametrize("node", [outside_id], indirect=True)
def test_a_job_id_that_is_no_id_fails_the_node(world: World, node: HostileNode) -> None:
    admitted, told = decide_with(world, node, optional=False)
    assert not admitted and any("not a job id" in t for t in told), told


def test_a_link_in_the_attestations_directory_is_not_followed(world: World) -> None:
    """The suspicion on collect: stat() then read_bytes() of a path that may be a link."""
    admitted, _ = world.decide(world.policy())
    assert admitted  # control: acme and globex from the directory
    outside = world.root / "elsewhere"
    outside.mkdir()
    for path in sorted(world.store.glob("*.json"))[1:]:  # globex's, moved out, linked in
        moved = outside / path.name
        path.rename(moved)
        path.symlink_to(moved)
    admitted, reasons = world.decide(world.policy())
    assert not admitted and "(acme); 2 needed" in reasons[0]


def test_special_and_oversized_files_are_notes_not_reads(world: World) -> None:
    os.mkfifo(world.store / "fifo.json")  # a read would block for ever
    with (world.store / "big.json").open("wb") as big:
        big.truncate(MAX_ATTESTATION_BYTES + 1)
    decisions, _ = run_gate(
        [world.artifact],
        load_policy(world.policy()),
        [str(world.store)],
        credentials=Credentials(),
        now=NOW,
    )
    (decision,) = decisions
    assert decision.admitted, decision.reasons  # positive control: the others still count
    assert any("fifo.json: not a regular file" in n for n in decision.notes), decision.notes
    assert any("big.json: more than" in n for n in decision.notes), decision.notes

from __future__ import annotations

import socket

import pytest

from sandbox.trace.supervisor import _loopback, _outcome


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("0.0.0.0", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("2001:db8::1", False),
        ("8.8.8.8", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert _loopback(host) is loopback


def test_outcomes_in_a_namespace_with_only_lo() -> None:
    me = 1  # /proc/1/net/tcp has no listener on port 1 in any sane test machine
    assert _outcome(me, "connect", socket.SOCK_STREAM, "10.1.2.3", 80) == "unreachable"
    assert _outcome(me, "sendto", socket.SOCK_DGRAM, "8.8.8.8", 53) == "unreachable"
    assert _outcome(me, "connect", socket.SOCK_STREAM, "127.0.0.1", 1) == "refused"
    assert _outcome(me, "sendto", socket.SOCK_DGRAM, "127.0.0.1", 53) == "sent"
    assert _outcome(me, "bind", socket.SOCK_STREAM, "10.1.2.3", 80) == "address-unavailable"
    assert _outcome(me, "bind", socket.SOCK_STREAM, "127.0.0.1", 80) == "bound"

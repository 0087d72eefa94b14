"""A node's input policy and its guarded fetcher, against real local HTTP(S) servers.

Each refusal has a control: the same server, allowed by the operator, answers the same
URL, so the refusal is the policy's doing and the listener proves it saw no request.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sandbox.digests import Sha256
from sandbox.errors import DigestMismatch, InputError, InputRefused
from sandbox.fetch import fetch_input, guarded_get
from sandbox.input_policy import AllowedPrefix, InputPolicy, IPAddress, address_rule
from sandbox.spec import InputSpec
from sandbox.store import ContentStore
from tests.http_servers import DATA, DIGEST, Listener

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    server.routes["/dep.bin"] = (200, {}, DATA)
    yield server
    server.close()


def names(mapping: dict[str, list[str]]) -> InputPolicy:
    """A resolver the test controls: a public-looking name can resolve to loopback."""

    def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in mapping.get(host, [])]

    return InputPolicy(resolver=resolve)


def policy(
    allow: tuple[str, ...] = ("https://",),
    networks: tuple[str, ...] = (),
    resolve: dict[str, list[str]] | None = None,
    max_bytes: int = 1024**2,
    deadline_s: float = 30.0,
) -> InputPolicy:
    base = InputPolicy.of(
        allow=allow, networks=networks, max_bytes=max_bytes, deadline_s=deadline_s
    )
    if resolve is None:
        return base
    return InputPolicy(
        allow=base.allow,
        networks=base.networks,
        max_bytes=max_bytes,
        deadline_s=deadline_s,
        resolver=names(resolve).resolver,
    )


def item(url: str, digest: Sha256 = DIGEST) -> InputSpec:
    return InputSpec(url=url, sha256=digest, dest=PurePosixPath("dep.bin"))


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("file:///etc/hostname", "scheme"),
        ("ftp://example.org/x", "scheme"),
        ("gopher://example.org/x", "scheme"),
        ("http://example.org/x", "allow-input"),  # default: https only
        ("https://user:secret@example.org/x", "credentials"),
        ("https://169.254.169.254/latest/meta-data/", "address"),
        ("https://127.0.0.1/x", "address"),
        ("https://[::1]/x", "address"),
        ("https://[::ffff:127.0.0.1]/x", "address"),
        ("https://[64:ff9b::a9fe:a9fe]/x", "address"),  # NAT64 of 169.254.169.254
        ("https://localhost/x", "address"),
        ("https://metadata.localhost/x", "address"),
        ("https://0.0.0.0/x", "address"),
        ("https://10.1.2.3/x", "address"),
        ("https://224.0.0.1/x", "address"),
        ("https://example.org/a/../../x", "path"),
        ("https://example.org/a/%2e%2e/x", "path"),
        ("https://example.org/a\tb", "characters"),
    ],
)
def test_the_static_rules_refuse_before_any_lookup(url: str, rule: str) -> None:
    looked_up: list[str] = []

    def resolve(host: str, port: int) -> list[IPAddress]:
        looked_up.append(host)
        return []

    with pytest.raises(InputRefused) as refused:
        InputPolicy(resolver=resolve).check_url(url)
    assert refused.value.rule == rule
    assert looked_up == []


def test_an_allowed_url_passes_the_static_rules() -> None:
    target = InputPolicy().check_url("https://deb.debian.org/debian/pool/x.tar.gz?a=1")
    assert (target.host, target.port, target.request_path) == (
        "deb.debian.org",
        443,
        "/debian/pool/x.tar.gz?a=1",
    )


def test_prefixes_compare_host_and_port_not_spelling() -> None:
    only = policy(allow=("https://deb.debian.org/debian/",))
    assert only.check_url("https://deb.debian.org/debian/pool/x")
    assert only.check_url("https://DEB.debian.org:443/debian/pool/x")
    for other in (
        "https://deb.debian.org.evil.example/debian/x",
        "https://deb.debian.org:8443/debian/x",
        "https://evil.example/deb.debian.org/debian/x",
        "https://deb.debian.org/other/x",
    ):
        with pytest.raises(InputRefused, match="allow-input"):
            only.check_url(other)
    with pytest.raises(ValueError, match="schemes"):
        AllowedPrefix.parse("file:///srv/")


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("fec0::1", "private"),  # site-local: Python's is_global says True
        ("100.64.0.1", "reserved"),
        ("239.1.2.3", "multicast"),
        ("ff02::1", "multicast"),
        ("::", "unspecified"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("93.184.215.14", None),
        ("2a04:4e42::644", None),
    ],
)
def test_address_rules(address: str, rule: str | None) -> None:
    found = address_rule(ipaddress.ip_address(address))
    assert (found is None) if rule is None else (found is not None and rule in found)


def test_a_public_looking_name_resolving_to_loopback_is_refused(
    tmp_path: Path, listener: Listener
) -> None:
    url = f"http://mirror.example.org:{listener.port}/dep.bin"
    resolve = {"mirror.example.org": ["127.0.0.1"]}
    with pytest.raises(InputRefused, match="does not resolve to public addresses only"):
        fetch_input(
            item(url), ContentStore(tmp_path / "s"), policy=policy(("http://",), resolve=resolve)
        )
    assert listener.seen == []
    # control: the operator allows that network; the name resolves through the same
    # resolver and the fetch reaches the address that was checked (the system resolver
    # does not know the name: a second lookup would have failed)
    allowed = policy(("http://",), ("127.0.0.1/32",), resolve=resolve)
    path, fetched = fetch_input(item(url), ContentStore(tmp_path / "s"), policy=allowed)
    assert fetched and path.read_bytes() == DATA
    assert listener.seen == ["/dep.bin"]
    assert listener.headers["Host"] == f"mirror.example.org:{listener.port}"
    assert "Authorization" not in listener.headers and "Proxy-Authorization" not in listener.headers


def test_a_name_with_one_internal_address_is_refused(listener: Listener) -> None:
    mixed = policy(("http://",), resolve={"a.example.org": ["93.184.215.14", "10.0.0.7"]})
    target = mixed.check_url("http://a.example.org/dep.bin")
    with (
        pytest.raises(InputRefused, match="does not resolve to public addresses only"),
        guarded_get(target, mixed),
    ):
        pass


def test_a_name_that_does_not_resolve_reads_like_one_that_resolves_inside() -> None:
    """What the node's resolver knows is not told: internal names cannot be enumerated."""
    names = {"inside.example.org": ["10.0.0.7"], "public.example.org": ["93.184.215.14"]}
    checked = policy(("http://",), resolve=names)
    reasons = []
    for host in ("inside.example.org", "nowhere.example.org"):
        target = checked.check_url(f"http://{host}/x")
        with pytest.raises(InputRefused) as refused:
            checked.addresses(target)
        reasons.append(str(refused.value).replace(host, "HOST"))
    assert reasons[0] == reasons[1]
    # control: the policy does know the kind (a literal address, the client's own words,
    # is refused naming it), and a public name passes
    with pytest.raises(InputRefused, match="private"):
        checked.check_url("http://10.0.0.7/x")
    assert checked.addresses(checked.check_url("http://public.example.org/x"))


def test_the_node_s_own_public_address_is_refused() -> None:
    own = ipaddress.ip_address("93.184.215.14")
    names = {"me.example.org": [str(own)]}
    base = policy(("http://",), resolve=names)
    mine = InputPolicy(allow=base.allow, own=frozenset({own}), resolver=base.resolver)
    target = mine.check_url("http://me.example.org/x")
    with pytest.raises(InputRefused, match="does not resolve to public addresses only"):
        mine.addresses(target)
    with pytest.raises(InputRefused, match="the node itself"):
        mine.check_url(f"http://{own}/x")
    # control: the same address is public to a policy that does not know it is the node's
    assert base.addresses(base.check_url("http://me.example.org/x")) == [own]


def test_a_redirect_is_checked_like_the_first_url(tmp_path: Path, listener: Listener) -> None:
    inner = Listener()
    inner.routes["/secret"] = (200, {}, b"internal")
    try:
        listener.routes["/dep.bin"] = (
            302,
            {"Location": f"http://127.0.0.2:{inner.port}/secret"},
            b"",
        )
        # the first hop is allowed (127.0.0.1 only); the redirect's address is not
        hop = policy(("http://",), ("127.0.0.1/32",))
        url = f"http://127.0.0.1:{listener.port}/dep.bin"
        with pytest.raises(InputRefused, match="loopback"):
            fetch_input(item(url), ContentStore(tmp_path / "s"), policy=hop)
        assert listener.seen == ["/dep.bin"] and inner.seen == []
        # control: a redirect to an allowed place is followed
        listener.routes["/dep.bin"] = (302, {"Location": "/moved"}, b"")
        listener.routes["/moved"] = (200, {}, DATA)
        path, _ = fetch_input(item(url), ContentStore(tmp_path / "t"), policy=hop)
        assert path.read_bytes() == DATA
    finally:
        inner.close()


def test_a_fetch_stops_at_the_size_cap(tmp_path: Path, listener: Listener) -> None:
    big = b"x" * (3 * 1024**2)
    listener.routes["/big"] = (200, {}, big)
    capped = policy(("http://",), ("127.0.0.1/32",), max_bytes=1024**2)
    url = f"http://127.0.0.1:{listener.port}/big"
    digest = Sha256(hashlib.sha256(big).hexdigest())
    with pytest.raises(InputError, match="--max-input"):
        fetch_input(item(url, digest), ContentStore(tmp_path / "s"), policy=capped)
    # without a declared length, the fetch stops where the cap is reached
    listener.routes["/stream"] = (200, {"_no_length": "1"}, big)
    stream = f"http://127.0.0.1:{listener.port}/stream"
    with pytest.raises(InputError, match="stopped there"):
        fetch_input(item(stream, digest), ContentStore(tmp_path / "s"), policy=capped)
    assert list((tmp_path / "s" / "sha256").iterdir()) == []  # nothing kept
    # control: with room for it, the same URL is fetched
    roomy = policy(("http://",), ("127.0.0.1/32",), max_bytes=4 * 1024**2)
    path, _ = fetch_input(item(url, digest), ContentStore(tmp_path / "s"), policy=roomy)
    assert path.stat().st_size == len(big)


def test_a_fetch_that_never_ends_stops_at_the_deadline(tmp_path: Path) -> None:
    release = threading.Event()

    class Stalling(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"x")
            self.wfile.flush()
            release.wait(60)  # and then nothing more

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stalled = policy(("http://",), ("127.0.0.1/32",), deadline_s=1.0)
        url = f"http://127.0.0.1:{server.server_address[1]}/x"
        with pytest.raises(InputError, match=r"deadline|timed out"):
            fetch_input(item(url), ContentStore(tmp_path / "s"), policy=stalled)
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_a_mismatch_on_a_node_does_not_tell_the_digest(tmp_path: Path, listener: Listener) -> None:
    other = Sha256("0" * 64)
    allowed = policy(("http://",), ("127.0.0.1/32",))
    url = f"http://127.0.0.1:{listener.port}/dep.bin"
    with pytest.raises(DigestMismatch) as caught:
        fetch_input(item(url, other), ContentStore(tmp_path / "s"), policy=allowed)
    text = str(caught.value)
    assert "does not match" in text and other in text
    assert DIGEST not in text
    # control: the local CLI (no policy) tells both, the user's own file
    with pytest.raises(DigestMismatch) as local:
        fetch_input(item(url, other), ContentStore(tmp_path / "t"))
    assert DIGEST in str(local.value) and other in str(local.value)


def test_a_cached_input_is_still_checked_against_the_policy(tmp_path: Path) -> None:
    source = tmp_path / "dep.bin"
    source.write_bytes(DATA)
    store = ContentStore(tmp_path / "s")
    fetch_input(item(source.as_uri()), store)  # the local user fetched it
    with pytest.raises(InputRefused, match="scheme"):
        fetch_input(item(source.as_uri()), store, policy=InputPolicy())


# --- TLS: connect to the checked address, verify the host name -----------------------------


def _certificate(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A CA, a server certificate for ``name``; (server context, client context)."""
    now = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    later = datetime.datetime(2200, 1, 1, tzinfo=datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    return server, client


def test_tls_verifies_the_host_name_while_connecting_to_the_checked_address(
    tmp_path: Path,
) -> None:
    server_context, client_context = _certificate(tmp_path, "mirror.example.org")
    server = Listener(server_context)
    server.routes["/dep.bin"] = (200, {}, DATA)
    try:
        resolve = {"mirror.example.org": ["127.0.0.1"], "other.example.org": ["127.0.0.1"]}
        allowed = policy(("https://",), ("127.0.0.1/32",), resolve=resolve)
        good = allowed.check_url(f"https://mirror.example.org:{server.port}/dep.bin")
        with guarded_get(good, allowed, context=client_context) as (chunks, total):
            assert b"".join(chunks) == DATA and total == len(DATA)
        # the same address under a name the certificate does not carry: refused by TLS
        wrong = allowed.check_url(f"https://other.example.org:{server.port}/dep.bin")
        with (
            pytest.raises(InputError, match="does not verify"),
            guarded_get(wrong, allowed, context=client_context),
        ):
            pass
    finally:
        server.close()

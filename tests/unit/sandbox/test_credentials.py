"""Scoped credentials: sent inside their scheme, host, port and path only, never on a
redirect elsewhere, never taken from .netrc; against real loopback servers."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from sandbox.credentials import Scope, ScopedCredential, ScopedSession, strip_credentials
from tests.http_servers import Answer, Server, serving

OK: Answer = (200, {}, b"ok")


@pytest.mark.parametrize(
    ("scope", "url", "covered"),
    [
        ("https://idx.example/", "https://idx.example/simple/x/", True),
        ("https://idx.example/", "https://IDX.example:443/f.whl", True),
        ("https://idx.example/", "http://idx.example/f.whl", False),  # scheme
        ("https://idx.example/", "https://idx.example:8443/f.whl", False),  # port
        ("https://idx.example/", "https://idx.example.evil/f.whl", False),  # host
        ("https://idx.example/", "https://evil.example/idx.example/", False),
        ("https://r.example/npm/", "https://r.example/npm/ms/-/ms.tgz", True),
        ("https://r.example/npm/", "https://r.example/npmx/ms.tgz", False),  # path prefix
        ("https://r.example/npm/", "https://r.example/other/ms.tgz", False),
    ],
)
def test_scope(scope: str, url: str, covered: bool) -> None:
    assert Scope.of_url(scope).covers(url) is covered


def test_credentials_stay_in_scope_on_real_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The credential reaches its own server only: not another port of the same host, not
    a redirect's target, and no .netrc entry is added for hosts outside its scope."""
    other = Server(routes={"/file": OK})
    index = Server(routes={"/simple/": OK})
    with serving(index, other):
        index.routes["/redirect"] = (302, {"Location": f"{other.url}/file"}, b"")
        home = tmp_path / "home"
        home.mkdir()
        (home / ".netrc").write_text("machine 127.0.0.1 login netrc password from-netrc\n")
        (home / ".netrc").chmod(0o600)
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("NETRC", str(home / ".netrc"))
        credential = ScopedCredential.basic(Scope.of_url(index.url + "/"), "alice", "s3cret")
        session = ScopedSession([credential])
        assert session.get(index.url + "/simple/", timeout=10).status_code == 200
        assert session.get(other.url + "/file", timeout=10).status_code == 200
        assert session.get(index.url + "/redirect", timeout=10).status_code == 200
        assert index.authorizations() == {credential.authorization}
        assert other.authorizations() == {None}, "neither the credential nor .netrc's"
        # control: the probe sees what a session with credentials on it sends (the shape
        # of the bug the review found in pin: session.auth goes to every host)
        plain = requests.Session()
        plain.auth = ("alice", "s3cret")
        plain.get(other.url + "/file", timeout=10)
        assert credential.authorization in other.authorizations()


def test_credentials_are_never_shown() -> None:
    url, credential = ScopedCredential.from_url("https://alice:s3cret@idx.example:8443/simple/")
    assert url == "https://idx.example:8443/simple/" and credential is not None
    assert "s3cret" not in repr(credential)
    assert credential.scope == Scope(scheme="https", netloc="idx.example:8443", path="/simple/")
    assert strip_credentials("https://a:b@h.example/x?y") == "https://h.example/x?y"
    assert ScopedCredential.from_url("https://h.example/x") == ("https://h.example/x", None)

"""Package URLs for pinned inputs and image packages."""

from __future__ import annotations

import pytest

from rebuilder import purls

PYPI = "https://files.pythonhosted.org/packages/c4/e6/c1ac50/"


@pytest.mark.parametrize(
    ("url", "purl"),
    [
        (PYPI + "flit_core-3.9.0.tar.gz", "pkg:pypi/flit-core@3.9.0"),
        (PYPI + "Flask_Login-0.6.3-py3-none-any.whl", "pkg:pypi/flask-login@0.6.3"),
        (PYPI + "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl", "pkg:pypi/numpy@1.26.4"),
        ("https://registry.npmjs.org/ms/-/ms-2.1.3.tgz", "pkg:npm/ms@2.1.3"),
        (
            "https://registry.npmjs.org/@types/node/-/node-20.1.0.tgz",
            "pkg:npm/%40types/node@20.1.0",
        ),
        (
            "https://deb.debian.org/debian/pool/main/h/hello/hello_2.10.orig.tar.gz",
            "pkg:deb/debian/hello@2.10?arch=source",
        ),
        (
            "https://deb.debian.org/debian/pool/main/c/curl/curl_7.88.1-10+deb12u5_amd64.deb",
            "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=amd64",
        ),
        (
            "https://security.debian.org/debian-security/pool/updates/main/o/openssl/"
            "openssl_3.0.15-1~deb12u1_amd64.deb",
            "pkg:deb/debian/openssl@3.0.15-1~deb12u1?arch=amd64",
        ),
        ("https://static.crates.io/crates/itoa/itoa-1.0.9.crate", "pkg:cargo/itoa@1.0.9"),
        ("https://example.org/dep-1.0.tar.gz", None),
        ("file:///tmp/x.tar.gz", None),
    ],
)
def test_purl_for_url(url: str, purl: str | None) -> None:
    assert purls.for_url(url) == purl


def test_deb_and_oci() -> None:
    assert purls.deb("bsdutils", "1:2.38.1-5", distro="bookworm") == (
        "pkg:deb/debian/bsdutils@1:2.38.1-5?distro=debian-bookworm"
    )
    assert purls.deb("libc6:i386", "2.36") == "pkg:deb/debian/libc6@2.36?arch=i386"
    digest = "sha256:" + "a" * 64
    assert purls.oci(f"127.0.0.1:5000/team/img@{digest}") == (
        f"pkg:oci/img@{digest}?repository_url=127.0.0.1:5000/team/img"
    )


@pytest.mark.parametrize(
    "url",
    [
        # review real-1 #5: fetch_input ignores a file:// URL's host; http proves nothing
        "file://files.pythonhosted.org/tmp/requests-2.31.0-py3-none-any.whl",
        "http://files.pythonhosted.org/packages/requests-2.31.0-py3-none-any.whl",
        "https://files.pythonhosted.org:8443/packages/requests-2.31.0-py3-none-any.whl",
        "https://files.pythonhosted.org.evil.example/requests-2.31.0-py3-none-any.whl",
        "https://pypi.example/packages/requests-2.31.0-py3-none-any.whl",
        "http://127.0.0.1:8765/pool/main/o/openssl/openssl_3.0.11-1~deb12u2_amd64.deb",
        "https://evil.example/debian/pool/main/o/openssl/openssl_3.0.11-1_amd64.deb",
        "http://deb.debian.org/debian/pool/main/c/curl/curl_7.88.1-10+deb12u5_amd64.deb",
        "https://registry.npmjs.org.evil.example/ms/-/ms-2.1.3.tgz",
        "https://npm.example/ms/-/ms-2.1.3.tgz",
        "https://crates.io/api/v1/crates/itoa/1.0.9/download",
        "https://user:pw@files.pythonhosted.org/p/six-1.17.0.tar.gz",
        "https://files.pythonhosted.org/p/six-1.17.0.tar.gz%0A",
    ],
)
def test_no_purl_without_the_registrys_exact_https_host(url: str) -> None:
    assert purls.for_url(url) is None


def test_crate_versions_keep_their_pre_release() -> None:
    """review real-1 #16: foo-1.0.0-alpha.1.crate became pkg:cargo/foo-1.0.0@alpha.1."""
    crates = "https://static.crates.io/crates"
    assert purls.for_url(f"{crates}/foo/foo-1.0.0-alpha.1.crate") == "pkg:cargo/foo@1.0.0-alpha.1"
    assert purls.for_url(f"{crates}/sha-1/sha-1-0.10.0.crate") == "pkg:cargo/sha-1@0.10.0"
    assert purls.for_url(f"{crates}/foo/bar-1.0.0.crate") is None


def test_packages_of_another_archive_say_so() -> None:
    """The review's suspicion: every image package was labelled Debian's."""
    assert purls.deb("make", "4.3", repository_url="http://mirror.example/ubuntu") == (
        "pkg:deb/debian/make@4.3?repository_url=http://mirror.example/ubuntu"
    )
    assert purls.debian_archive("http://deb.debian.org/debian")
    assert not purls.debian_archive("http://mirror.example/debian")

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
            "http://deb.debian.org/debian/pool/main/c/curl/curl_7.88.1-10+deb12u5_amd64.deb",
            "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=amd64",
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

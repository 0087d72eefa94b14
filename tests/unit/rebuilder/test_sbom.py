"""SBOM pieces without a build: download locations SPDX's own validator accepts, and the
packages of an image from another archive than Debian's."""

from __future__ import annotations

from pathlib import Path

import pytest
from spdx_tools.spdx.validation.uri_validators import validate_download_location

from rebuilder.sbom import ImageContents, download_location, image_contents
from sandbox.config import SandboxConfig
from sandbox.digests import Sha256
from sandbox.images import ImageCatalog, ImageLock
from sandbox.spec import Spec
from tests.conftest import write_spec


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://deb.debian.org/debian/pool/main/h/hello/hello_2.10.orig.tar.gz", True),
        ("https://files.pythonhosted.org/packages/x/six-1.17.0.tar.gz", True),
        ("http://mirror.example/x.tar.gz", True),
        ("https://my-host.internal.example:8443/x.tgz", True),
        # review real-1 #14: these made the SBOM fail spdx-tools' validator
        ("file:///tmp/review-real/inject/trojan/requests-2.31.0-py3-none-any.whl", False),
        ("http://127.0.0.1:8765/pool/main/o/openssl/openssl.deb", False),
        ("http://localhost:8080/x.tgz", False),
        ("http://[::1]:8080/x.tgz", False),
        ("https://xn--bcher-kva.example/x", False),
        ("https://host_name.example/x", False),
    ],
)
def test_download_locations_are_what_spdx_accepts(url: str, kept: bool) -> None:
    location = download_location(url)
    assert (location == url) is kept
    assert validate_download_location(location) == [] or location == "NOASSERTION"
    if not kept:  # control: SPDX's validator refuses the URL itself
        assert validate_download_location(url) != []


def test_image_packages_from_another_archive_are_not_called_debians(tmp_path: Path) -> None:
    """The review's suspicion: every image package was 'Organization: Debian' and
    pkg:deb/debian, whatever the recipe's mirror."""
    text = '[build]\ncommand = ["m"]\noutputs = ["o"]\n[image]\npackages = ["make"]\n'
    for mirror, repository in (
        ("", None),
        ('mirror = "http://mirror.example/debian"\n', "http://mirror.example/debian"),
    ):
        project = tmp_path / str(len(mirror))
        spec = Spec.from_toml(write_spec(project, text + mirror))
        config = SandboxConfig(
            store_dir=tmp_path / "s", work_dir=tmp_path / "w", images_dir=tmp_path
        )
        definition = ImageCatalog(tmp_path).definition(spec.image, spec_dir=project)
        assert definition is not None
        lock = ImageLock(
            name=definition.name,
            architecture="amd64",
            image_digest=Sha256("1" * 64),
            config_digest=Sha256("2" * 64),
            rootfs_digest=Sha256("3" * 64),
            recipe_digest=definition.recipe.digest,
            packages={"make": "4.3-4.1"},
        )
        (project / "hermetic.lock").write_text(lock.to_json())
        contents = image_contents(spec, lock.reference, config)
        assert contents.known and contents.repository_url == repository
        purl = contents.purl("make", "4.3-4.1")
        if repository is None:
            assert contents.supplier == "Organization: Debian"
            assert purl == "pkg:deb/debian/make@4.3-4.1?distro=debian-bookworm"
        else:
            assert contents.supplier == "NOASSERTION" and "repository_url=" in purl
    assert not ImageContents(reference="r@sha256:" + "1" * 64, packages=()).known

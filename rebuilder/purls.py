"""Package URLs (purl) for what hermetic pins: Debian packages of an image, OCI images, and
inputs fetched from a registry whose URL layout says what package they are."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from packageurl import PackageURL

# sdist: NAME-VERSION.tar.gz / .zip; wheel: NAME-VERSION(-BUILD)?-PY-ABI-PLATFORM.whl
_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
_SDIST_RE = re.compile(r"^(?P<name>.+)-(?P<version>[0-9][^-]*)\.(tar\.gz|zip|tar\.bz2)$")
_DEB_POOL_RE = re.compile(r"/pool/[^/]+/[^/]+/(?P<source>[^/]+)/(?P<file>[^/]+)$")
_DEB_FILE_RE = re.compile(
    r"^(?P<name>[^_]+)_(?P<version>[^_]+?)(\.orig(-[A-Za-z0-9-]+)?\.tar\.\w+|\.debian\.tar\.\w+"
    r"|\.dsc|_(?P<arch>[a-z0-9-]+)\.u?deb)$"
)


def pypi_name(name: str) -> str:
    """PEP 503 normalization, which the pypi purl type uses."""
    return re.sub(r"[-_.]+", "-", name).lower()


def deb(name: str, version: str, *, distro: str | None = None, arch: str | None = None) -> str:
    """``pkg:deb/debian/NAME@VERSION`` (``name:arch`` names are split)."""
    name, _, suffix = name.partition(":")
    qualifiers = {}
    if arch or suffix:
        qualifiers["arch"] = arch or suffix
    if distro:
        qualifiers["distro"] = f"debian-{distro}"
    return PackageURL(
        type="deb", namespace="debian", name=name, version=version or None, qualifiers=qualifiers
    ).to_string()


def oci(reference: str) -> str:
    """``pkg:oci/NAME@sha256:…?repository_url=REPOSITORY`` for ``repository@sha256:…``."""
    repository, _, digest = reference.partition("@")
    name = repository.rsplit("/", 1)[-1]
    return PackageURL(
        type="oci", name=name, version=digest, qualifiers={"repository_url": repository}
    ).to_string()


def for_url(url: str) -> str | None:
    """The purl of a file fetched from a known registry, or None.

    Known: PyPI's files (sdists and wheels), the npm registry's tarballs, Debian's pool
    (source and binary packages) and crates.io.
    """
    parts = urlsplit(url)
    host, path = parts.hostname or "", unquote(parts.path)
    filename = path.rsplit("/", 1)[-1]
    if host == "files.pythonhosted.org":
        match = _WHEEL_RE.match(filename) or _SDIST_RE.match(filename)
        if match:
            return PackageURL(
                type="pypi", name=pypi_name(match["name"]), version=match["version"]
            ).to_string()
    if host == "registry.npmjs.org" and "/-/" in path:
        package = path.lstrip("/").split("/-/", 1)[0]
        scope, _, name = package.rpartition("/")
        prefix = f"{name}-"
        if filename.startswith(prefix) and filename.endswith(".tgz"):
            version = filename[len(prefix) : -len(".tgz")]
            return PackageURL(
                type="npm", namespace=scope or None, name=name, version=version
            ).to_string()
    if (pool := _DEB_POOL_RE.search(path)) and (match := _DEB_FILE_RE.match(pool["file"])):
        return deb(match["name"], match["version"], arch=match["arch"] or "source")
    if host in ("static.crates.io", "crates.io") and filename.endswith(".crate"):
        stem = filename.removesuffix(".crate")
        name, _, version = stem.rpartition("-")
        if name:
            return PackageURL(type="cargo", name=name, version=version).to_string()
    return None

"""Package URLs (purl) for what hermetic pins: Debian packages of an image, OCI images, and
inputs fetched from a registry whose URL layout says what package they are."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from packageurl import PackageURL

# sdist: NAME-VERSION.tar.gz / .zip; wheel: NAME-VERSION(-BUILD)?-PY-ABI-PLATFORM.whl
# (matched whole: fullmatch, \Z; a '$' would let a trailing newline through)
_WHEEL_RE = re.compile(r"(?P<name>[^-\s]+)-(?P<version>[^-\s]+)(-\d[^-\s]*)?(-[^-\s]+){3}\.whl")
_SDIST_RE = re.compile(r"(?P<name>\S+)-(?P<version>[0-9][^-\s]*)\.(tar\.gz|zip|tar\.bz2)")
_DEB_POOL_RE = re.compile(r"/pool/(?:updates/)?[^/]+/[^/]+/(?P<source>[^/]+)/(?P<file>[^/]+)\Z")
_DEB_FILE_RE = re.compile(
    r"(?P<name>[^_\s]+)_(?P<version>[^_\s]+?)(\.orig(-[A-Za-z0-9-]+)?\.tar\.\w+"
    r"|\.debian\.tar\.\w+|\.dsc|_(?P<arch>[a-z0-9-]+)\.u?deb)"
)


def pypi_name(name: str) -> str:
    """PEP 503 normalization, which the pypi purl type uses."""
    return re.sub(r"[-_.]+", "-", name).lower()


def deb(
    name: str,
    version: str,
    *,
    distro: str | None = None,
    arch: str | None = None,
    repository_url: str | None = None,
) -> str:
    """``pkg:deb/debian/NAME@VERSION`` (``name:arch`` names are split); with
    ``repository_url`` for a package from another archive than Debian's own."""
    name, _, suffix = name.partition(":")
    qualifiers = {}
    if arch or suffix:
        qualifiers["arch"] = arch or suffix
    if distro:
        qualifiers["distro"] = f"debian-{distro}"
    if repository_url:
        qualifiers["repository_url"] = repository_url
    return PackageURL(
        type="deb", namespace="debian", name=name, version=version or None, qualifiers=qualifiers
    ).to_string()


def debian_archive(url: str) -> bool:
    """Whether an APT archive URL is one of Debian's own (http or https: apt checks the
    archive's signature either way)."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    return host in DEBIAN_HOSTS


def oci(reference: str) -> str:
    """``pkg:oci/NAME@sha256:…?repository_url=REPOSITORY`` for ``repository@sha256:…``."""
    repository, _, digest = reference.partition("@")
    name = repository.rsplit("/", 1)[-1]
    return PackageURL(
        type="oci", name=name, version=digest, qualifiers={"repository_url": repository}
    ).to_string()


# The registries whose URL layout says what package a file is, by exact host, over https
# only: a purl is a claim about where a file comes from, and only a file fetched from that
# host (authenticated by TLS) backs it. Any other host, a mirror, http or file:// gets none.
PYPI_FILES_HOST = "files.pythonhosted.org"
NPM_REGISTRY_HOST = "registry.npmjs.org"
DEBIAN_HOSTS = frozenset({"deb.debian.org", "security.debian.org", "ftp.debian.org"})
CRATES_HOST = "static.crates.io"
_CRATE_PATH_RE = re.compile(r"/crates/(?P<name>[A-Za-z0-9_-]+)/(?P<file>[^/]+)\.crate")


def for_url(url: str) -> str | None:
    """The purl of a file fetched from a known registry, or None.

    Known, over https and by exact host: PyPI's files (sdists and wheels), the npm
    registry's tarballs, Debian's pool (source and binary packages) and crates.io's
    downloads.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "https" or parts.username or port not in (None, 443):
        return None
    host, path = (parts.hostname or "").lower(), unquote(parts.path)
    filename = path.rsplit("/", 1)[-1]
    if host == PYPI_FILES_HOST:
        match = _WHEEL_RE.fullmatch(filename) or _SDIST_RE.fullmatch(filename)
        if match:
            return PackageURL(
                type="pypi", name=pypi_name(match["name"]), version=match["version"]
            ).to_string()
    if host == NPM_REGISTRY_HOST and "/-/" in path:
        package = path.lstrip("/").split("/-/", 1)[0]
        scope, _, name = package.rpartition("/")
        prefix = f"{name}-"
        if filename.startswith(prefix) and filename.endswith(".tgz"):
            version = filename[len(prefix) : -len(".tgz")]
            return PackageURL(
                type="npm", namespace=scope or None, name=name, version=version
            ).to_string()
    if (
        host in DEBIAN_HOSTS
        and (pool := _DEB_POOL_RE.search(path))
        and (match := _DEB_FILE_RE.fullmatch(pool["file"]))
    ):
        return deb(match["name"], match["version"], arch=match["arch"] or "source")
    if host == CRATES_HOST and (crate := _CRATE_PATH_RE.fullmatch(path)):
        # the directory names the crate: NAME-VERSION.crate is split where NAME ends, so a
        # pre-release (foo-1.0.0-alpha.1) keeps its whole version
        name, stem = crate["name"], crate["file"]
        if stem.startswith(f"{name}-") and len(stem) > len(name) + 1:
            return PackageURL(type="cargo", name=name, version=stem[len(name) + 1 :]).to_string()
    return None

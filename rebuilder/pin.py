"""``hermetic pin``: lockfiles become pinned inputs.

pip requirements (``name==version``, with or without ``--hash``), ``pylock.toml`` (PEP 751)
and ``uv.lock`` are resolved to exact files on the package index for the build's Python
and platform (a wheel where one fits, else the sdist and the wheels its build backend
needs); an npm ``package-lock.json`` (v2, v3) gives every tarball with its integrity.
Every hash a lockfile gives is checked against the index or registry before anything is
downloaded; every file is then downloaded into the content store, checked again, and
written into the spec as ``[[inputs]]`` under ``wheels/`` or ``npm/``. This module (and
the fetching it does) is the only place that talks to an index or a registry.
"""

from __future__ import annotations

import base64
import configparser
import dataclasses
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import tomlkit
from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from rebuilder import purls
from rebuilder.errors import UserError
from sandbox.credentials import (
    CredentialError,
    Scope,
    ScopedCredential,
    ScopedSession,
    strip_credentials,
)
from sandbox.digests import Sha256, parse_sha256
from sandbox.errors import DigestMismatch, ImageError, SpecError
from sandbox.fetch import trusted_cas
from sandbox.images import ImageCatalog, ImageLock
from sandbox.spec import Spec
from sandbox.store import ContentStore
from sandbox.workspace import UnsafeWrite, write_atomically

log = logging.getLogger(__name__)

PYPI = "https://pypi.org/simple/"
NPM_REGISTRY = "https://registry.npmjs.org/"
WHEELS_DIR = "wheels"
NPM_DIR = "npm"
DEFAULT_PYTHON = "3.11"  # read_python_lock's and PipPinner's (Debian 12's)
DEFAULT_PLATFORM = "manylinux_2_36_x86_64"  # glibc 2.36, Debian 12
# Debian architectures -> the machine in manylinux tags (the ones manylinux has)
_MACHINES = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "i386": "i686",
    "armhf": "armv7l",
    "ppc64el": "ppc64le",
    "s390x": "s390x",
}
_SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_TIMEOUT = (15, 120)
_SDIST_BUILD_DEFAULT = ("setuptools>=40.8.0", "wheel")  # PEP 517's default backend
# the hashes pip accepts in --hash (its STRONG_HASHES); anything weaker is refused
_HASHES = ("sha256", "sha384", "sha512")
_PIP_TIMEOUT_S = 600


class PinError(UserError):
    """A lockfile cannot be pinned: unpinned, a wrong hash, nothing that fits, unreachable."""


class UnknownProject(PinError):
    """The index has no project of that name."""


@dataclass(frozen=True, kw_only=True)
class PinnedFile:
    """One file that becomes an input."""

    name: str
    version: str
    filename: str
    url: str
    sha256: Sha256
    dest: str
    purl: str | None = None
    why: str = ""  # "requirement", "build backend of X", "npm"


@dataclass(frozen=True, kw_only=True)
class Wanted:
    """A requirement as a lockfile pins it."""

    name: str
    version: str
    where: str  # file:line, for errors
    sha256: frozenset[str] = frozenset()  # hashes the lockfile allows (empty: none given)
    urls: tuple[tuple[str, str], ...] = ()  # (url, sha256) the lockfile names, if any
    # sha384/sha512 hashes a requirements file gives: checked once the file is downloaded
    other_hashes: tuple[tuple[str, str], ...] = ()
    index: str | None = None  # the index the lockfile names (-i, uv's registry, pylock's)
    off_index: bool = False  # the lockfile's files are at URLs of their own (uv's url source)


# ---------------------------------------------------------------- settings


def pip_index_url(env: Mapping[str, str] | None = None, home: Path | None = None) -> str:
    """The index the user's pip uses: PIP_INDEX_URL, else pip.conf's index-url, else PyPI."""
    env = os.environ if env is None else env
    if env.get("PIP_INDEX_URL"):
        return env["PIP_INDEX_URL"]
    home = home or Path(env.get("HOME") or Path.home())
    config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    files = [Path("/etc/pip.conf"), home / ".pip" / "pip.conf", config_home / "pip" / "pip.conf"]
    if env.get("PIP_CONFIG_FILE"):
        files.append(Path(env["PIP_CONFIG_FILE"]))
    url = PYPI
    for file in files:  # later files win, as in pip
        parser = configparser.ConfigParser()
        try:
            parser.read(file)
        except (configparser.Error, OSError) as e:
            raise PinError(f"{file}: unreadable pip configuration: {e}") from None
        for section in ("global", "install", "download"):
            if parser.has_option(section, "index-url"):
                url = parser.get(section, "index-url")
    return url


def npm_registry(
    directory: Path, env: Mapping[str, str] | None = None
) -> tuple[str, tuple[ScopedCredential, ...]]:
    """The registry (the project's .npmrc, else the user's, else npm's) and the user's
    registry credentials, each scoped to the registry it was written for.

    Credentials come from the user's own ``~/.npmrc`` only (``${VAR}`` expanded there):
    a project's .npmrc may choose its registry, as npm lets it, but a token or a variable
    reference in it is not used (it could send the user's token to a host the project
    chose).
    """
    env = os.environ if env is None else env
    registry = env.get("npm_config_registry") or NPM_REGISTRY
    home = Path(env.get("HOME") or Path.home())
    user = _npmrc(home / ".npmrc")
    project = _npmrc(directory / ".npmrc")
    registry = project.get("registry") or user.get("registry") or registry
    registry = registry if registry.endswith("/") else registry + "/"
    try:
        registry_scope = Scope.of_url(registry)
    except CredentialError as e:
        raise PinError(f"npm registry {registry}: {e}") from None
    credentials = []
    for key, value in user.items():
        nerf, _, kind = key.rpartition(":")
        if not nerf.startswith("//") or kind not in ("_authToken", "_auth"):
            continue
        # a key names host[:port]/path, no scheme: the registry's, when it is the same host
        scope = Scope.of_url("https:" + nerf)
        if scope.netloc == registry_scope.netloc:
            scope = Scope(scheme=registry_scope.scheme, netloc=scope.netloc, path=scope.path)
        secret = _expand(value, env)
        if not secret:
            continue
        if kind == "_authToken":
            credentials.append(ScopedCredential.bearer(scope, secret))
        else:
            credentials.append(ScopedCredential(scope=scope, authorization=f"Basic {secret}"))
    return registry, tuple(credentials)


def _npmrc(path: Path) -> dict[str, str]:
    """``key = value`` pairs of an .npmrc (the last of a key wins), or {} without one."""
    if not path.is_file():
        return {}
    found = {}
    for line in path.read_text("utf-8", "replace").splitlines():
        key, eq, value = line.strip().partition("=")
        if eq and not key.startswith(("#", ";")):
            found[key.strip()] = value.strip()
    return found


def _expand(value: str, env: Mapping[str, str]) -> str:
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), value)


# ---------------------------------------------------------------- Python lockfiles


def build_target(
    spec: Spec, images: ImageCatalog, *, python: str | None = None, platform: str | None = None
) -> tuple[str, str]:
    """The build's Python (``3.11``) and wheel platform (``manylinux_2_36_x86_64``): the
    ones given, else what the lock of the spec's image lists (``python3``'s version;
    ``libc6``'s glibc and the lock's architecture).

    Raises:
        PinError: a value is not given and the image's lock cannot say it.
    """
    if python is not None and platform is not None:
        return python, platform
    image = str(spec.image)
    definition = images.definition(spec.image, spec_dir=spec.path.resolve().parent)
    flags = "pass --python and --platform (e.g. --python 3.11 --platform manylinux_2_36_x86_64)"
    if definition is None:
        raise PinError(
            f"the spec's image {image} is pinned by digest: no lock lists its packages, so "
            f"its Python and platform are unknown; {flags}"
        )
    try:
        lock = definition.locked()
    except ImageError as e:
        raise PinError(f"{e}; it tells pin the image's Python and platform, or {flags}") from e
    found_python = python or _lock_python(lock)
    found_platform = platform or _lock_platform(lock)
    if found_python is None or found_platform is None:
        missing = "python3 package" if found_python is None else "libc6 of a known architecture"
        lock_path = str(definition.lock_path)
        where = "" if lock_path in image else f" ({lock_path})"
        raise PinError(
            f"the spec's image {image}: its lock{where} lists no {missing} (add python3 to "
            f"the image's packages if the build runs pip), or {flags}"
        )
    return found_python, found_platform


def _lock_python(lock: ImageLock) -> str | None:
    """``python3`` 3.11.2-1+b1 -> 3.11; without it, the one ``python3.X`` package."""
    if "python3" in lock.packages:
        match = re.match(r"^(?:\d+:)?(3\.\d+)\.", lock.packages["python3"])
        return match.group(1) if match else None
    found = {
        match.group(1)
        for name in lock.packages
        if (match := re.fullmatch(r"python(3\.\d+)(?:-minimal)?", name))
    }
    return found.pop() if len(found) == 1 else None


def _lock_platform(lock: ImageLock) -> str | None:
    """``libc6`` 2.36-9+deb12u14 on amd64 -> manylinux_2_36_x86_64."""
    match = re.match(r"^(?:\d+:)?2\.(\d+)", lock.packages.get("libc6", ""))
    machine = _MACHINES.get(lock.architecture)
    if match is None or machine is None:
        return None
    return f"manylinux_2_{match.group(1)}_{machine}"


def read_python_lock(path: Path, python: str, *, platform: str = DEFAULT_PLATFORM) -> list[Wanted]:
    """The pinned requirements of a requirements file, pylock.toml or uv.lock, for the
    build's Python and platform (environment markers are evaluated for them).

    Raises:
        PinError: unreadable, a requirement that is not pinned to one version, an option
            or a source that cannot be pinned (named, with its line or package).
    """
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PinError(f"{path}: cannot read it: {e}") from None
    environment = _environment(python, platform)
    if path.name == "uv.lock":
        return _uv_lock(path, text, environment)
    if path.name.startswith("pylock.") and path.suffix == ".toml":
        return _pylock(path, text, environment)
    return _requirements(path, text, environment)


def _environment(python: str, platform: str) -> dict[str, str]:
    """PEP 508 marker values of the build: CPython ``python`` on Linux, the platform's
    machine (``manylinux_2_36_aarch64`` -> ``aarch64``)."""
    machine = re.sub(r"^(?:manylinux\d*|musllinux|linux)(?:_\d+_\d+)?_", "", platform)
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": machine or "x86_64",
        "os_name": "posix",
        "extra": "",
    }


def _marker_holds(marker: object, environment: dict[str, str], where: str) -> bool:
    if not marker:
        return True
    try:
        return Marker(str(marker)).evaluate(environment)
    except InvalidMarker as e:
        raise PinError(f"{where}: marker {marker!r}: {e}") from None


# requirements-file options: where files come from is the index's (or the file's -i) only
_INDEX_OPTION_RE = re.compile(r"(?:-i|--index-url)(?:\s+|=)(?P<url>\S+)")
_REFUSED_OPTIONS = {
    "--extra-index-url": "a second index lets any project of that name win on either "
    "(dependency confusion); use one index that mirrors both",
    "-f": "files from a directory or page are not pinned by an index; pin them as [[inputs]]",
    "--find-links": "files from a directory or page are not pinned by an index; pin them "
    "as [[inputs]]",
}
_HASH_OPTION_RE = re.compile(r"--hash[= ](?P<alg>[A-Za-z0-9]+):(?P<value>[0-9A-Fa-f]+)")


def _requirements(path: Path, text: str, environment: dict[str, str]) -> list[Wanted]:
    wanted = []
    index: str | None = None
    logical = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not logical:
            start = number
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        entry, logical = logical.strip(), ""
        where = f"{path}:{start}"
        if not entry:
            continue
        if entry.startswith("-"):
            option = re.split(r"[\s=]", entry, maxsplit=1)[0]
            if match := _INDEX_OPTION_RE.fullmatch(entry):
                if index is not None and match["url"] != index:
                    raise PinError(f"{where}: a second --index-url; give one index")
                index = match["url"]
                continue
            reason = _REFUSED_OPTIONS.get(option, "not supported here")
            raise PinError(f"{where}: {option}: {reason}")
        hashes: dict[str, set[str]] = {}
        for match in _HASH_OPTION_RE.finditer(entry):
            algorithm = match["alg"].lower()
            if algorithm not in _HASHES:
                raise PinError(
                    f"{where}: --hash={algorithm}: is too weak to pin a file; use sha256 "
                    "(pip refuses it too)"
                )
            hashes.setdefault(algorithm, set()).add(match["value"].lower())
        spec = _HASH_OPTION_RE.sub("", entry).strip()
        if "--hash" in spec:
            raise PinError(f"{where}: a --hash that is not ALGORITHM:HEX")
        try:
            requirement = Requirement(spec)
        except InvalidRequirement as e:
            raise PinError(f"{where}: {e}") from None
        if not _marker_holds(requirement.marker, environment, where):
            continue
        pins = [s for s in requirement.specifier if s.operator in ("==", "===")]
        if len(pins) != 1 or "*" in pins[0].version or len(requirement.specifier) != 1:
            raise PinError(
                f"{where}: {spec!r} is not pinned; pin it as '{requirement.name}==VERSION' "
                "(pip-compile or 'pip freeze' writes such files)"
            )
        if requirement.url:
            raise PinError(f"{where}: {spec!r} names a URL; pin the file as an [[inputs]] entry")
        wanted.append(
            Wanted(
                name=requirement.name,
                version=pins[0].version,
                where=where,
                sha256=frozenset(hashes.pop("sha256", set())),
                other_hashes=tuple(sorted((a, h) for a, values in hashes.items() for h in values)),
            )
        )
    if index is not None:  # as pip does, the file's index serves every requirement of it
        wanted = [dataclasses.replace(item, index=index) for item in wanted]
    return wanted


def _lock_files(
    entries: list[Any], where: str, *, default_url: str | None = None
) -> tuple[tuple[str, str], ...]:
    """(url, sha256) of a lockfile's sdist and wheel entries.

    Raises:
        PinError: an entry without a URL or without a sha256.
    """
    found = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise PinError(f"{where}: a file entry is not a table")
        url = entry.get("url") or default_url
        if "hash" in entry:  # uv.lock: "sha256:<hex>"
            algorithm, _, digest = str(entry["hash"]).partition(":")
            digest = digest if algorithm == "sha256" else ""
        else:  # pylock.toml: hashes = { sha256 = "<hex>" }
            hashes = entry.get("hashes")
            digest = str(hashes.get("sha256", "")) if isinstance(hashes, dict) else ""
        if not url or not isinstance(url, str):
            raise PinError(
                f"{where}: a file without a URL ({entry.get('path', '?')}): only files on an "
                "index or at a URL can be pinned"
            )
        if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise PinError(f"{where}: {strip_credentials(url)} has no sha256 hash in the lockfile")
        found.append((url, digest.lower()))
    return tuple(found)


def _uv_lock(path: Path, text: str, environment: dict[str, str]) -> list[Wanted]:
    """The packages a uv.lock installs for the target: the project's dependencies (and its
    dev groups), followed through every dependency edge whose marker holds, with extras.

    Raises:
        PinError: a package from git (or anything else that is not a file), a file
            without a hash, a dependency the lockfile does not hold.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PinError(f"{path}: {e}") from None
    packages = [p for p in data.get("package", []) if isinstance(p, dict)]
    by_name: dict[str, list[int]] = {}
    for index, package in enumerate(packages):
        by_name.setdefault(canonicalize_name(str(package.get("name", ""))), []).append(index)

    def where(index: int) -> str:
        return f"{path}: package[{index}] {packages[index].get('name')}"

    def source_of(index: int) -> dict[str, Any]:
        source = packages[index].get("source", {})
        return source if isinstance(source, dict) else {}

    roots = [i for i in range(len(packages)) if {"virtual", "editable"} & set(source_of(i))]
    if not roots:  # no project in the lockfile: everything it lists is wanted
        roots = list(range(len(packages)))
    reached: set[int] = set()
    seen: set[tuple[int, frozenset[str]]] = set()
    pending = [(i, frozenset[str](), True) for i in roots]
    while pending:
        index, extras, is_root = pending.pop()
        if (index, extras) in seen:
            continue
        seen.add((index, extras))
        reached.add(index)
        package = packages[index]
        edges = list(package.get("dependencies", []))
        optional = package.get("optional-dependencies", {})
        for extra in extras:
            edges += optional.get(extra, []) if isinstance(optional, dict) else []
        groups = package.get("dev-dependencies", {})
        if is_root and isinstance(groups, dict):
            for group in groups.values():
                edges += list(group)
        for edge in edges:
            if not isinstance(edge, dict) or not _marker_holds(
                edge.get("marker"), environment, where(index)
            ):
                continue
            candidates = by_name.get(canonicalize_name(str(edge.get("name", ""))), [])
            if "version" in edge:
                candidates = [
                    c for c in candidates if packages[c].get("version") == edge["version"]
                ]
            if "source" in edge:
                candidates = [c for c in candidates if source_of(c) == edge["source"]]
            if len(candidates) != 1:
                raise PinError(
                    f"{where(index)}: its dependency {edge.get('name')!r} is not one package "
                    "of the lockfile; run 'uv lock' again"
                )
            pending.append((candidates[0], frozenset(edge.get("extra", [])), False))
    wanted = []
    for index in sorted(reached):
        package, source = packages[index], source_of(index)
        if {"virtual", "editable"} & set(source):
            continue  # the project itself: it is the source tree
        if {"path", "directory"} & set(source):
            log.warning(
                "%s: comes from %s, not an index: it must be in the source tree (not pinned)",
                where(index),
                source.get("path") or source.get("directory"),
            )
            continue
        if "registry" not in source and "url" not in source:
            kind = next(iter(source), "no source")
            raise PinError(
                f"{where(index)}: comes from {kind} ({source.get(kind, '')}); hermetic pin "
                "pins files only: vendor it into the source tree, or publish a wheel and lock it"
            )
        files = [package["sdist"]] if "sdist" in package else []
        files += package.get("wheels", [])
        urls = _lock_files(files, where(index), default_url=source.get("url"))
        if not urls:
            raise PinError(f"{where(index)}: no sdist or wheel with a hash")
        wanted.append(
            Wanted(
                name=str(package["name"]),
                version=str(package["version"]),
                where=where(index),
                sha256=frozenset(h for _, h in urls),
                urls=urls,
                index=str(source["registry"]) if "registry" in source else None,
                off_index="registry" not in source,
            )
        )
    return wanted


def _pylock(path: Path, text: str, environment: dict[str, str]) -> list[Wanted]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PinError(f"{path}: {e}") from None
    wanted = []
    for index, package in enumerate(data.get("packages", [])):
        where = f"{path}: packages[{index}] {package.get('name')}"
        if not _marker_holds(package.get("marker"), environment, where):
            continue
        for kind in ("vcs", "directory"):
            if kind in package:
                raise PinError(
                    f"{where}: comes from a {kind}; hermetic pin pins files only: vendor it "
                    "into the source tree, or publish a wheel and lock it"
                )
        files = [package["sdist"]] if "sdist" in package else []
        files += package.get("wheels", [])
        files += [package["archive"]] if "archive" in package else []
        if "version" not in package or not files:
            raise PinError(f"{where}: needs a version and files with sha256 hashes")
        urls = _lock_files(files, where)
        wanted.append(
            Wanted(
                name=str(package["name"]),
                version=str(package["version"]),
                where=where,
                sha256=frozenset(h for _, h in urls),
                urls=urls,
                index=str(package["index"]) if package.get("index") else None,
            )
        )
    return wanted


# ---------------------------------------------------------------- the index


def target_tags(python: str, platform: str) -> list[Tag]:
    """The wheel tags the build's CPython accepts, best first."""
    major, minor = (int(part) for part in python.split(".")[:2])
    platforms = _platforms(platform)
    return [
        *cpython_tags((major, minor), platforms=platforms),
        *compatible_tags((major, minor), interpreter=f"cp{major}{minor}", platforms=platforms),
    ]


def _platforms(platform: str) -> list[str]:
    """manylinux_2_36_x86_64 and every older glibc's tag it accepts."""
    match = re.match(r"^manylinux_2_(\d+)_(\w+)$", platform)
    if not match:
        return [platform]
    newest, arch = int(match.group(1)), match.group(2)
    found = [f"manylinux_2_{minor}_{arch}" for minor in range(newest, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    for minor, name in legacy.items():
        if minor <= newest:
            found.insert(found.index(f"manylinux_2_{minor}_{arch}") + 1, f"{name}_{arch}")
    return [*found, f"linux_{arch}"]


@dataclass(frozen=True)
class _Secret:
    value: str = field(repr=False)


class PackageIndex:
    """A PEP 691 (JSON) simple index. Credentials in its URL (or given for its host) go
    to that scheme, host and port only, as pip sends them; never into a record."""

    def __init__(self, url: str, *, credentials: Iterable[ScopedCredential] = ()) -> None:
        url = url if url.endswith("/") else url + "/"
        clean, own = ScopedCredential.from_url(url)
        parts = urlsplit(clean)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PinError(f"index {clean}: not an http(s) URL of a package index")
        self.url = clean  # without credentials
        self._pip_url = _Secret(url)  # with them: for pip's resolver, in its environment
        origin = Scope.of_url(f"{parts.scheme}://{parts.netloc}/")
        own_credentials = (
            ()
            if own is None
            else (ScopedCredential(scope=origin, authorization=own.authorization),)
        )
        self.credentials = (*own_credentials, *credentials)
        self.session: requests.Session = ScopedSession(self.credentials, verify=trusted_cas())

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    def files(self, name: str) -> list[dict[str, Any]]:
        """The files of a project: filename, absolute url, hashes (and yanked, …).

        Raises:
            PinError: the index cannot be read, or does not know the project.
        """
        page = urljoin(self.url, f"{canonicalize_name(name)}/")
        try:
            response = self.session.get(page, headers={"Accept": _SIMPLE_JSON}, timeout=_TIMEOUT)
        except requests.RequestException as e:
            raise PinError(f"cannot reach the package index {self.url}: {e}") from None
        if response.status_code == 404:
            raise UnknownProject(f"{name}: no such project on {self.url}")
        if response.status_code >= 400 or "json" not in response.headers.get("content-type", ""):
            raise PinError(
                f"{page}: HTTP {response.status_code}; the index must serve PEP 691 JSON"
            )
        files: list[dict[str, Any]] = response.json().get("files", [])
        for item in files:
            item["url"] = urljoin(page, item["url"]).split("#", 1)[0]
        return files

    def check_download(self, url: str, where: str) -> None:
        """Refuse what pin must not fetch: anything but https, or http from an https index.

        Raises:
            PinError: naming the URL and where the lockfile gave it.
        """
        scheme = urlsplit(url).scheme
        if scheme == "https" or (scheme == "http" and self.scheme == "http"):
            return
        raise PinError(
            f"{where}: {strip_credentials(url)}: only https downloads (http only from an "
            f"http index, which {self.url} is not)"
        )


def choose_file(
    files: Iterable[dict[str, Any]], wanted: Wanted, tags: list[Tag], *, sdist_only: bool
) -> dict[str, Any]:
    """The best wheel for the target (by tag order), else the sdist, of exactly that version.

    Raises:
        PinError: nothing of that version fits.
    """
    rank = {tag: index for index, tag in enumerate(tags)}
    wheels: list[tuple[int, dict[str, Any]]] = []
    sdists = []
    version = wanted.version
    for item in files:
        filename = str(item.get("filename", ""))
        try:
            if filename.endswith(".whl"):
                _, wheel_version, _, wheel_tags = parse_wheel_filename(filename)
                if str(wheel_version) == version or wheel_version.public == version:
                    best = min((rank[t] for t in wheel_tags if t in rank), default=None)
                    if best is not None:
                        wheels.append((best, item))
            elif filename.endswith((".tar.gz", ".zip")):
                _, sdist_version = parse_sdist_filename(filename)
                if str(sdist_version) == version or sdist_version.public == version:
                    sdists.append(item)
        except (InvalidWheelFilename, InvalidSdistFilename):
            continue
    if wheels and not sdist_only:
        return min(wheels, key=lambda pair: pair[0])[1]
    if sdists:
        return sdists[0]
    raise PinError(
        f"{wanted.where}: {wanted.name}=={version} has no wheel for this Python and platform "
        "and no sdist on the index"
    )


# ---------------------------------------------------------------- pip


@dataclass(kw_only=True)
class PipPinner:
    """Pins Python requirements for one target interpreter and platform."""

    index: PackageIndex  # the user's; a lockfile may name its own (Wanted.index)
    store: ContentStore
    python: str = DEFAULT_PYTHON
    platform: str = DEFAULT_PLATFORM
    no_binary: frozenset[str] = frozenset()  # canonical names to take as sdists (or :all:)
    pinned: dict[str, PinnedFile] = field(default_factory=dict)  # by filename
    indexes: dict[str, PackageIndex] = field(default_factory=dict)  # by URL

    def pin(self, wanted: list[Wanted]) -> list[PinnedFile]:
        """Resolve, check hashes (before any download), download, add build backends.

        Raises:
            PinError: a hash the lockfile gives is not the index's, nothing fits, a
                download does not match, or a URL that must not be fetched.
        """
        tags = target_tags(self.python, self.platform)
        with ThreadPoolExecutor(max_workers=8) as pool:  # every check before any download
            chosen = list(pool.map(lambda item: (item, self._choose(item, tags)), wanted))
        for item, (url, sha256, filename) in chosen:
            self._add(item, url, sha256, filename, "requirement")
        for item, (_, _, filename) in chosen:
            if not filename.endswith(".whl"):
                self._backend_of(item, filename)
        return sorted(self.pinned.values(), key=lambda p: p.dest)

    def index_of(self, item: Wanted) -> PackageIndex:
        """The index a requirement comes from: its lockfile's, else the user's."""
        if item.index is None or strip_credentials(item.index).rstrip("/") == self.index.url.rstrip(
            "/"
        ):
            return self.index
        if item.index not in self.indexes:
            # the user's credentials still reach only their own index's host
            self.indexes[item.index] = PackageIndex(item.index, credentials=self.index.credentials)
        return self.indexes[item.index]

    def _choose(self, item: Wanted, tags: list[Tag]) -> tuple[str, Sha256, str]:
        sdist_only = bool({":all:", canonicalize_name(item.name)} & self.no_binary)
        index = self.index_of(item)
        if item.urls:  # the lockfile names the files: choose among them, by their hashes
            files = [
                {"filename": _filename(url), "url": url, "hashes": {"sha256": sha}}
                for url, sha in item.urls
            ]
        else:
            files = [f for f in index.files(item.name) if not f.get("yanked")]
        choice = choose_file(files, item, tags, sdist_only=sdist_only)
        url, filename = str(choice["url"]), str(choice["filename"])
        published = str(choice.get("hashes", {}).get("sha256", "")).lower()
        if not published:
            raise PinError(f"{strip_credentials(url)}: the index gives no sha256 for it")
        index.check_download(url, item.where)
        if item.urls:
            published = self._published(item, index, filename) or published
        if item.sha256 and published not in item.sha256:
            raise PinError(
                f"{item.where}: {filename} has sha256:{published} on the index, "
                f"which is not a hash the lockfile allows ({', '.join(sorted(item.sha256))}); "
                "nothing was downloaded"
            )
        return url, parse_sha256(published), filename

    def _published(self, item: Wanted, index: PackageIndex, filename: str) -> str | None:
        """The sha256 the index publishes for a file a lockfile names (None: the file is
        not on the index, e.g. a URL source, and is checked when it is downloaded)."""
        if item.off_index:
            return None  # files at URLs of their own: no index to ask
        try:
            files = index.files(item.name)
        except UnknownProject:
            return None
        for entry in files:
            if entry.get("filename") == filename:
                return str(entry.get("hashes", {}).get("sha256", "")).lower() or None
        return None

    def _add(self, item: Wanted, url: str, sha256: Sha256, filename: str, why: str) -> None:
        if filename in self.pinned:
            return
        clean, credential = ScopedCredential.from_url(url)
        credentials = self.index_of(item).credentials
        session = ScopedSession(
            (*credentials, *([credential] if credential else [])), verify=trusted_cas()
        )
        stored = _download(url, sha256, self.store, session, where=item.where)
        for algorithm, expected in item.other_hashes:
            actual = _file_hash(stored, algorithm)
            if actual != expected:
                raise PinError(
                    f"{item.where}: {filename} has {algorithm}:{actual}, not the lockfile's "
                    f"{algorithm}:{expected}; nothing was written into the spec"
                )
        self.pinned[filename] = PinnedFile(
            name=item.name,
            version=item.version,
            filename=filename,
            url=clean,
            sha256=sha256,
            dest=f"{WHEELS_DIR}/{filename}",
            purl=purls.for_url(clean),
            why=why,
        )

    def _backend_of(self, item: Wanted, filename: str) -> None:
        """The wheels an sdist's build backend needs (its build-system.requires, resolved
        by pip for the target), so that pip builds it offline from wheels/."""
        sdist = self.store.get(self.pinned[filename].sha256)
        assert sdist is not None
        requires = _build_requires(sdist, filename)
        index = self.index_of(item)
        for name, version, url, sha256 in self._resolve(requires, index):
            backend = Wanted(name=name, version=version, where=f"{item.where} (build backend)")
            index.check_download(url, backend.where)
            self._add(backend, url, sha256, _filename(url), f"build backend of {item.name}")

    def _resolve(
        self, requires: list[str], index: PackageIndex
    ) -> list[tuple[str, str, str, Sha256]]:
        """pip's own resolver, for the target interpreter, wheels only, nothing installed.

        pip runs with a clean environment and no configuration file of the user's or the
        machine's (``PIP_CONFIG_FILE=/dev/null``): only this index, whose credentials
        reach it in the environment, never on the command line.
        """
        major, minor = self.python.split(".")[:2]
        with tempfile.TemporaryDirectory(prefix="hermetic-pin-") as temp:
            report = Path(temp) / "report.json"
            argv = [
                sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                "--quiet", "--report", str(report), "--only-binary=:all:",
                "--python-version", f"{major}.{minor}", "--implementation", "cp",
                "--abi", f"cp{major}{minor}",
                *(f"--platform={p}" for p in _platforms(self.platform)), *requires,
            ]  # fmt: skip
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=_PIP_TIMEOUT_S,
                check=False,
                env=_pip_environment(index, home=Path(temp)),
                cwd=temp,
            )
            if done.returncode != 0:
                raise PinError(
                    f"pip could not resolve the build requirements {requires} on {index.url}:\n"
                    f"{done.stderr.strip()[-3000:]}"
                )
            data = json.loads(report.read_text())
        found = []
        for entry in data.get("install", []):
            info = entry.get("download_info", {})
            hashes = info.get("archive_info", {}).get("hashes", {})
            url = strip_credentials(str(info.get("url")))
            if "sha256" not in hashes:
                raise PinError(f"pip resolved {url} without a sha256")
            metadata = entry.get("metadata", {})
            found.append(
                (
                    str(metadata.get("name")),
                    str(metadata.get("version")),
                    url,
                    parse_sha256(hashes["sha256"]),
                )
            )
        return found


def _pip_environment(index: PackageIndex, *, home: Path) -> dict[str, str]:
    """pip's environment for the resolver: this index and nothing of the user's or the
    machine's pip settings (extra indexes, find-links, constraints)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PIP_CONFIG_FILE": os.devnull,  # no /etc/pip.conf, no ~/.config/pip/pip.conf
        "PIP_INDEX_URL": index._pip_url.value,  # credentials: the environment, not argv
        "PIP_NO_INPUT": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_KEYRING_PROVIDER": "disabled",
    }
    cas = trusted_cas()
    if isinstance(cas, str):
        env["PIP_CERT"] = cas
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def _same_index(one: str, other: str) -> bool:
    return strip_credentials(one).rstrip("/") == strip_credentials(other).rstrip("/")


def _filename(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1]


def _file_hash(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _build_requires(sdist: Path, filename: str) -> list[str]:
    """build-system.requires of an sdist's pyproject.toml (PEP 517's default without one)."""
    text = None
    try:
        if filename.endswith(".zip"):
            with zipfile.ZipFile(sdist) as archive:
                names = [n for n in archive.namelist() if n.count("/") == 1]
                member = next((n for n in names if n.endswith("/pyproject.toml")), None)
                text = archive.read(member).decode() if member else None
        else:
            with tarfile.open(sdist) as archive:
                for info in archive:
                    if info.name.count("/") == 1 and info.name.endswith("/pyproject.toml"):
                        stream = archive.extractfile(info)
                        text = stream.read().decode() if stream else None
                        break
    except (OSError, tarfile.TarError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise PinError(f"{filename}: cannot read the sdist: {e}") from None
    if text is None:
        return list(_SDIST_BUILD_DEFAULT)
    system = tomllib.loads(text).get("build-system", {})
    if "requires" not in system:
        return list(_SDIST_BUILD_DEFAULT)
    return [str(r) for r in system["requires"]]


def _download(
    url: str, sha256: Sha256, store: ContentStore, session: requests.Session, *, where: str
) -> Path:
    """Into the content store, checked against the pinned digest.

    Raises:
        PinError: the download fails, or its content is not what the lockfile pins.
    """
    cached = store.get(sha256)
    if cached is not None:
        return cached
    shown = strip_credentials(url)
    try:
        with session.get(url, stream=True, timeout=_TIMEOUT) as response:
            response.raise_for_status()
            return store.add(response.iter_content(1 << 20), expected=sha256, what=shown)
    except requests.RequestException as e:
        raise PinError(f"{where}: cannot download {shown}: {e}") from None
    except DigestMismatch as e:
        raise PinError(
            f"{where}: {shown} is not the file the lockfile pins (sha256:{sha256}; it has "
            f"sha256:{e.actual}); nothing was written into the spec"
        ) from None


# ---------------------------------------------------------------- npm


@dataclass(frozen=True, kw_only=True)
class NpmPackage:
    name: str
    version: str
    url: str
    integrity: str  # sha512-<base64>
    where: str


def read_npm_lock(path: Path) -> list[NpmPackage]:
    """Every registry tarball of a package-lock.json (lockfile v2 or v3).

    Raises:
        PinError: unreadable, v1, or a package without resolved/integrity.
    """
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise PinError(f"{path}: cannot read it: {e}") from None
    if data.get("lockfileVersion") not in (2, 3) or "packages" not in data:
        raise PinError(
            f"{path}: lockfileVersion {data.get('lockfileVersion')!r}; v2 or v3 is needed "
            "(npm 7 or later writes them: 'npm install --lockfile-version 3')"
        )
    found = {}
    for key, entry in data["packages"].items():
        if not key or entry.get("link") or entry.get("inBundle") or entry.get("bundled"):
            continue  # the project itself, workspace links, bundled copies
        where = f"{path}: packages[{key!r}]"
        if "resolved" not in entry or "integrity" not in entry:
            raise PinError(f"{where}: no resolved URL or integrity; run 'npm install' again")
        name = entry.get("name") or key.rsplit("node_modules/", 1)[-1]
        integrity = str(entry["integrity"]).split()[0]
        if not integrity.startswith("sha512-"):
            raise PinError(f"{where}: integrity {integrity[:20]}… is not sha512")
        found[entry["resolved"]] = NpmPackage(
            name=name,
            version=str(entry.get("version", "")),
            url=str(entry["resolved"]),
            integrity=integrity,
            where=where,
        )
    return sorted(found.values(), key=lambda p: (p.name, p.version))


def pin_npm_packages(
    packages: list[NpmPackage],
    store: ContentStore,
    *,
    token: Iterable[ScopedCredential] = (),
    registry: str,
) -> list[PinnedFile]:
    """Check every integrity against the registry, then download, verify and store.

    Args:
        packages: what the lockfile pins.
        store: where the tarballs go.
        token: the user's registry credentials (:func:`npm_registry`), each sent inside
            its own scheme, host, port and path only.
        registry: the registry whose metadata the integrities are checked against.

    Raises:
        PinError: a lockfile integrity the registry does not publish (before downloading
            any tarball), a download whose sha512 differs, a URL that must not be fetched,
            or two packages that would land on the same dest.
    """
    session = ScopedSession(token, verify=trusted_cas())
    registry_scheme = urlsplit(registry).scheme

    def allowed(package: NpmPackage) -> None:
        scheme = urlsplit(package.url).scheme
        if scheme != "https" and not (scheme == "http" and registry_scheme == "http"):
            raise PinError(
                f"{package.where}: {strip_credentials(package.url)}: only https downloads "
                f"(http only from an http registry, which {registry} is not)"
            )

    def published(package: NpmPackage) -> None:
        url = urljoin(registry, package.name.replace("/", "%2F")) + f"/{package.version}"
        try:
            response = session.get(url, timeout=_TIMEOUT)
            response.raise_for_status()
            integrity = response.json().get("dist", {}).get("integrity")
        except (requests.RequestException, ValueError, AttributeError) as e:
            raise PinError(f"{package.where}: cannot read {url}: {e}") from None
        if integrity != package.integrity:
            raise PinError(
                f"{package.where}: the lockfile's integrity {package.integrity[:30]}… is not "
                f"what {registry} publishes for {package.name}@{package.version} "
                f"({str(integrity)[:30]}…); nothing was downloaded"
            )

    def fetch(package: NpmPackage) -> PinnedFile:
        expected = base64.b64decode(package.integrity.removeprefix("sha512-")).hex()
        sha512, sha256 = hashlib.sha512(), hashlib.sha256()
        shown = strip_credentials(package.url)
        with tempfile.SpooledTemporaryFile(max_size=16 << 20) as temp:
            try:
                with session.get(package.url, stream=True, timeout=_TIMEOUT) as response:
                    response.raise_for_status()
                    for chunk in response.iter_content(1 << 20):
                        sha512.update(chunk)
                        sha256.update(chunk)
                        temp.write(chunk)
            except requests.RequestException as e:
                raise PinError(f"{package.where}: cannot download {shown}: {e}") from None
            if sha512.hexdigest() != expected:
                raise PinError(
                    f"{package.where}: {shown}: sha512 does not match the lockfile's integrity"
                )
            digest = parse_sha256(sha256.hexdigest())
            temp.seek(0)
            store.add(iter(lambda: temp.read(1 << 20), b""), expected=digest, what=shown)
        return PinnedFile(
            name=package.name,
            version=package.version,
            filename=_filename(shown),
            url=shown,
            sha256=digest,
            dest=npm_dest(package.name, _filename(shown)),
            purl=purls.for_url(shown),
            why="npm",
        )

    for package in packages:
        allowed(package)
    dests: dict[str, NpmPackage] = {}
    for package in packages:
        dest = npm_dest(package.name, _filename(strip_credentials(package.url)))
        if dest in dests:
            raise PinError(
                f"{package.where}: its tarball would be {dest}, as that of "
                f"{dests[dest].where}; the lockfile names one file twice"
            )
        dests[dest] = package
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(published, packages))  # every check before any tarball
        return sorted(pool.map(fetch, packages), key=lambda p: p.dest)


def npm_dest(name: str, filename: str) -> str:
    """``npm/<file>``; a scoped package's file is prefixed by its scope and a '+', which
    no npm name holds: ``@a-b/c`` and ``@a/b-c`` never share a dest."""
    scope = name.rpartition("/")[0].lstrip("@")
    return f"{NPM_DIR}/{scope + '+' if scope else ''}{filename}"


# ---------------------------------------------------------------- the spec


def write_inputs(spec_path: Path, files: list[PinnedFile], prefix: str) -> tuple[int, int]:
    """Replace the spec's inputs under ``prefix/`` by these, keeping everything else
    (comments too). Running again with the same files changes nothing.

    The new text is validated as a spec before it replaces the old, and it replaces it
    atomically, never through a symbolic link.

    Returns:
        (inputs removed, inputs written).

    Raises:
        PinError: the spec cannot be read, parsed or written, a dest is taken by another
            input, or the result would not be a valid spec (the file is left as it was).
    """
    if spec_path.is_symlink():
        raise PinError(
            f"{spec_path} is a symbolic link; pin writes into the spec file itself only "
            "(give --spec the file it points to)"
        )
    try:
        before = spec_path.read_text("utf-8")
        document = tomlkit.parse(before)
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.TOMLKitError) as e:
        raise PinError(f"{spec_path}: {e}") from None
    existing = document.get("inputs")
    kept = tomlkit.aot()
    removed = 0
    for item in existing or []:
        if str(item.get("dest", "")).startswith(f"{prefix}/"):
            removed += 1
        else:
            kept.append(item)
    taken = {str(item.get("dest")) for item in kept}
    for pinned in files:
        if pinned.dest in taken:
            raise PinError(f"{spec_path}: inputs: {pinned.dest} is already another input's dest")
        taken.add(pinned.dest)
        table = tomlkit.table()
        table.add("url", pinned.url)
        table.add("sha256", pinned.sha256)
        table.add("dest", str(PurePosixPath(pinned.dest)))
        kept.append(table)
    if "inputs" in document:
        del document["inputs"]
    if len(kept):
        document.add("inputs", kept)
    text = tomlkit.dumps(document)
    data = tomllib.loads(text)
    if data == tomllib.loads(before):  # the same data: leave the file as it is
        return removed, len(files)
    try:
        Spec.from_document(data, path=spec_path, source_dir=spec_path.resolve().parent)
    except SpecError as e:
        raise PinError(
            f"{spec_path} would not be a valid spec, and is left as it was: {e}"
        ) from None
    try:
        write_atomically(spec_path, text.encode("utf-8"))
    except (OSError, UnsafeWrite) as e:
        raise PinError(f"{spec_path}: cannot write it: {e}") from None
    return removed, len(files)

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
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import tomlkit
from packaging.markers import Marker
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
from sandbox.digests import Sha256, parse_sha256
from sandbox.fetch import trusted_cas
from sandbox.store import ContentStore

log = logging.getLogger(__name__)

PYPI = "https://pypi.org/simple/"
NPM_REGISTRY = "https://registry.npmjs.org/"
WHEELS_DIR = "wheels"
NPM_DIR = "npm"
DEFAULT_PYTHON = "3.11"  # the python image's (Debian 12)
DEFAULT_PLATFORM = "manylinux_2_36_x86_64"  # glibc 2.36, Debian 12
_SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_TIMEOUT = (15, 120)
_SDIST_BUILD_DEFAULT = ("setuptools>=40.8.0", "wheel")  # PEP 517's default backend


class PinError(UserError):
    """A lockfile cannot be pinned: unpinned, a wrong hash, nothing that fits, unreachable."""


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


def npm_registry(directory: Path, env: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """The registry and its token from the project's and the user's .npmrc."""
    env = os.environ if env is None else env
    registry, token = env.get("npm_config_registry") or NPM_REGISTRY, None
    home = Path(env.get("HOME") or Path.home())
    tokens: dict[str, str] = {}
    for file in (home / ".npmrc", directory / ".npmrc"):  # the project's wins
        if not file.is_file():
            continue
        for line in file.read_text("utf-8", "replace").splitlines():
            key, eq, value = line.strip().partition("=")
            if not eq or key.startswith(("#", ";")):
                continue
            key, value = key.strip(), value.strip()
            if key == "registry":
                registry = value
            elif key.endswith(":_authToken") and key.startswith("//"):
                tokens[key[2 : -len(":_authToken")].rstrip("/")] = _expand(value, env)
    host_path = urlsplit(registry)._replace(scheme="").geturl().lstrip("/").rstrip("/")
    token = tokens.get(host_path)
    return registry if registry.endswith("/") else registry + "/", token


def _expand(value: str, env: Mapping[str, str]) -> str:
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), value)


# ---------------------------------------------------------------- Python lockfiles


def read_python_lock(path: Path, python: str) -> list[Wanted]:
    """The pinned requirements of a requirements file, pylock.toml or uv.lock.

    Raises:
        PinError: unreadable, or a requirement that is not pinned to one version.
    """
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PinError(f"{path}: cannot read it: {e}") from None
    if path.name == "uv.lock":
        return _uv_lock(path, text)
    if path.name.startswith("pylock.") and path.suffix == ".toml":
        return _pylock(path, text, python)
    return _requirements(path, text, python)


def _environment(python: str) -> dict[str, str]:
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
    }


def _requirements(path: Path, text: str, python: str) -> list[Wanted]:
    wanted = []
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
        if not entry or entry.startswith(("-i ", "--index-url", "--extra-index-url", "-f ")):
            continue
        if entry.startswith("-"):
            raise PinError(f"{path}:{start}: {entry.split()[0]} is not supported here")
        hashes = frozenset(re.findall(r"--hash[= ]sha256:([0-9a-fA-F]{64})", entry))
        spec = re.sub(r"--hash[= ]\S+", "", entry).strip()
        where = f"{path}:{start}"
        try:
            requirement = Requirement(spec)
        except InvalidRequirement as e:
            raise PinError(f"{where}: {e}") from None
        if requirement.marker and not requirement.marker.evaluate(_environment(python)):
            continue
        pins = [s for s in requirement.specifier if s.operator in ("==", "===")]
        if len(pins) != 1 or "*" in pins[0].version or len(requirement.specifier) != 1:
            raise PinError(
                f"{where}: {spec!r} is not pinned; pin it as '{requirement.name}==VERSION' "
                "(pip-compile or 'pip freeze' writes such files)"
            )
        wanted.append(
            Wanted(
                name=requirement.name,
                version=pins[0].version,
                where=where,
                sha256=frozenset(h.lower() for h in hashes),
            )
        )
    return wanted


def _uv_lock(path: Path, text: str) -> list[Wanted]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PinError(f"{path}: {e}") from None
    wanted = []
    for index, package in enumerate(data.get("package", [])):
        source = package.get("source", {})
        if "registry" not in source:
            continue  # the project itself (virtual, editable) or a path
        files = [package["sdist"]] if "sdist" in package else []
        files += package.get("wheels", [])
        urls = tuple(
            (str(f["url"]), str(f["hash"]).removeprefix("sha256:"))
            for f in files
            if str(f.get("hash", "")).startswith("sha256:")
        )
        wanted.append(
            Wanted(
                name=str(package["name"]),
                version=str(package["version"]),
                where=f"{path}: package[{index}] {package['name']}",
                sha256=frozenset(h for _, h in urls),
                urls=urls,
            )
        )
    return wanted


def _pylock(path: Path, text: str, python: str) -> list[Wanted]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PinError(f"{path}: {e}") from None
    wanted = []
    for index, package in enumerate(data.get("packages", [])):
        marker = package.get("marker")
        if marker and not Marker(marker).evaluate(_environment(python)):
            continue
        files = [package["sdist"]] if "sdist" in package else []
        files += package.get("wheels", [])
        urls = tuple(
            (str(f["url"]), str(f["hashes"]["sha256"]))
            for f in files
            if "url" in f and "sha256" in f.get("hashes", {})
        )
        where = f"{path}: packages[{index}] {package.get('name')}"
        if "version" not in package or not urls:
            raise PinError(f"{where}: needs a version and files with sha256 hashes")
        wanted.append(
            Wanted(
                name=str(package["name"]),
                version=str(package["version"]),
                where=where,
                sha256=frozenset(h for _, h in urls),
                urls=urls,
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


class PackageIndex:
    """A PEP 691 (JSON) simple index; credentials in its URL are used, never recorded."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url if url.endswith("/") else url + "/")
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        self.url = urlunsplit(parts._replace(netloc=netloc))  # without credentials
        self.session = requests.Session()
        if parts.username:
            self.session.auth = (parts.username, parts.password or "")
        self.session.verify = trusted_cas()

    def files(self, name: str) -> list[dict[str, Any]]:
        """The files of a project: filename, absolute url, hashes (and yanked, …)."""
        page = urljoin(self.url, f"{canonicalize_name(name)}/")
        try:
            response = self.session.get(page, headers={"Accept": _SIMPLE_JSON}, timeout=_TIMEOUT)
        except requests.RequestException as e:
            raise PinError(f"cannot reach the package index {self.url}: {e}") from None
        if response.status_code == 404:
            raise PinError(f"{name}: no such project on {self.url}")
        if response.status_code >= 400 or "json" not in response.headers.get("content-type", ""):
            raise PinError(
                f"{page}: HTTP {response.status_code}; the index must serve PEP 691 JSON"
            )
        files: list[dict[str, Any]] = response.json().get("files", [])
        for item in files:
            item["url"] = urljoin(page, item["url"]).split("#", 1)[0]
        return files


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

    index: PackageIndex
    store: ContentStore
    python: str = DEFAULT_PYTHON
    platform: str = DEFAULT_PLATFORM
    no_binary: frozenset[str] = frozenset()  # canonical names to take as sdists (or :all:)
    pinned: dict[str, PinnedFile] = field(default_factory=dict)  # by filename

    def pin(self, wanted: list[Wanted]) -> list[PinnedFile]:
        """Resolve, check hashes (before any download), download, add build backends.

        Raises:
            PinError: a hash the lockfile gives is not the index's, nothing fits, or a
                download does not match.
        """
        tags = target_tags(self.python, self.platform)
        chosen = []
        for item in wanted:  # every check first: nothing is fetched if one fails
            chosen.append((item, self._choose(item, tags)))
        for item, (url, sha256, filename) in chosen:
            self._add(item.name, item.version, url, sha256, filename, "requirement")
        for item, (_, _, filename) in chosen:
            if not filename.endswith(".whl"):
                self._backend_of(item, filename)
        return sorted(self.pinned.values(), key=lambda p: p.dest)

    def _choose(self, item: Wanted, tags: list[Tag]) -> tuple[str, Sha256, str]:
        sdist_only = bool({":all:", canonicalize_name(item.name)} & self.no_binary)
        if item.urls:  # the lockfile names the files: choose among them, by their hashes
            files = [
                {"filename": url.rsplit("/", 1)[-1], "url": url, "hashes": {"sha256": sha}}
                for url, sha in item.urls
            ]
        else:
            files = [f for f in self.index.files(item.name) if not f.get("yanked")]
        choice = choose_file(files, item, tags, sdist_only=sdist_only)
        published = str(choice.get("hashes", {}).get("sha256", "")).lower()
        if not published:
            raise PinError(f"{choice['url']}: the index gives no sha256 for it")
        if item.sha256 and published not in item.sha256:
            raise PinError(
                f"{item.where}: {choice['filename']} has sha256:{published} on the index, "
                f"which is not a hash the lockfile allows ({', '.join(sorted(item.sha256))}); "
                "nothing was downloaded"
            )
        return str(choice["url"]), parse_sha256(published), str(choice["filename"])

    def _add(
        self, name: str, version: str, url: str, sha256: Sha256, filename: str, why: str
    ) -> None:
        if filename in self.pinned:
            return
        _download(url, sha256, self.store, self.index.session)
        self.pinned[filename] = PinnedFile(
            name=name,
            version=version,
            filename=filename,
            url=url,
            sha256=sha256,
            dest=f"{WHEELS_DIR}/{filename}",
            purl=purls.for_url(url) or _pypi_purl(name, version),
            why=why,
        )

    def _backend_of(self, item: Wanted, filename: str) -> None:
        """The wheels an sdist's build backend needs (its build-system.requires, resolved
        by pip for the target), so that pip builds it offline from wheels/."""
        sdist = self.store.get(self.pinned[filename].sha256)
        assert sdist is not None
        requires = _build_requires(sdist, filename)
        for name, version, url, sha256 in self._resolve(requires):
            wheel = url.rsplit("/", 1)[-1]
            self._add(name, version, url, sha256, wheel, f"build backend of {item.name}")

    def _resolve(self, requires: list[str]) -> list[tuple[str, str, str, Sha256]]:
        """pip's own resolver, for the target interpreter, wheels only, nothing installed."""
        major, minor = self.python.split(".")[:2]
        with tempfile.TemporaryDirectory(prefix="hermetic-pin-") as temp:
            report = Path(temp) / "report.json"
            argv = [
                sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                "--quiet", "--no-input", "--disable-pip-version-check",
                "--report", str(report), "--only-binary=:all:",
                "--python-version", f"{major}.{minor}", "--implementation", "cp",
                "--abi", f"cp{major}{minor}", "--index-url", self.index.url,
                *(f"--platform={p}" for p in _platforms(self.platform)), *requires,
            ]  # fmt: skip
            done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
            if done.returncode != 0:
                raise PinError(
                    f"pip could not resolve the build requirements {requires}:\n"
                    f"{done.stderr.strip()[-3000:]}"
                )
            data = json.loads(report.read_text())
        found = []
        for entry in data.get("install", []):
            info = entry.get("download_info", {})
            hashes = info.get("archive_info", {}).get("hashes", {})
            if "sha256" not in hashes:
                raise PinError(f"pip resolved {info.get('url')} without a sha256")
            metadata = entry.get("metadata", {})
            found.append(
                (
                    str(metadata.get("name")),
                    str(metadata.get("version")),
                    str(info["url"]),
                    parse_sha256(hashes["sha256"]),
                )
            )
        return found


def _pypi_purl(name: str, version: str) -> str:
    return f"pkg:pypi/{purls.pypi_name(name)}@{version}"


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


def _download(url: str, sha256: Sha256, store: ContentStore, session: requests.Session) -> Path:
    """Into the content store, checked against the pinned digest."""
    cached = store.get(sha256)
    if cached is not None:
        return cached
    try:
        with session.get(url, stream=True, timeout=_TIMEOUT) as response:
            response.raise_for_status()
            return store.add(response.iter_content(1 << 20), expected=sha256, what=url)
    except requests.RequestException as e:
        raise PinError(f"cannot download {url}: {e}") from None


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
    packages: list[NpmPackage], store: ContentStore, *, token: str | None, registry: str
) -> list[PinnedFile]:
    """Check every integrity against the registry, then download, verify and store.

    Raises:
        PinError: a lockfile integrity the registry does not publish (before downloading
            any tarball), or a download whose sha512 differs.
    """
    session = requests.Session()
    session.verify = trusted_cas()
    registry_host = urlsplit(registry).hostname

    def headers(url: str) -> dict[str, str]:
        # the token goes to its registry only, never to another host
        if token and urlsplit(url).hostname == registry_host:
            return {"Authorization": f"Bearer {token}"}
        return {}

    def published(package: NpmPackage) -> None:
        url = urljoin(registry, package.name.replace("/", "%2F")) + f"/{package.version}"
        try:
            response = session.get(url, headers=headers(url), timeout=_TIMEOUT)
            response.raise_for_status()
            integrity = response.json().get("dist", {}).get("integrity")
        except (requests.RequestException, ValueError) as e:
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
        with tempfile.SpooledTemporaryFile(max_size=16 << 20) as temp:
            try:
                with session.get(
                    package.url, headers=headers(package.url), stream=True, timeout=_TIMEOUT
                ) as response:
                    response.raise_for_status()
                    for chunk in response.iter_content(1 << 20):
                        sha512.update(chunk)
                        sha256.update(chunk)
                        temp.write(chunk)
            except requests.RequestException as e:
                raise PinError(f"cannot download {package.url}: {e}") from None
            if sha512.hexdigest() != expected:
                raise PinError(f"{package.url}: sha512 does not match the lockfile's integrity")
            digest = parse_sha256(sha256.hexdigest())
            temp.seek(0)
            store.add(iter(lambda: temp.read(1 << 20), b""), expected=digest, what=package.url)
        filename = package.url.rsplit("/", 1)[-1]
        scope = package.name.rpartition("/")[0].lstrip("@")
        return PinnedFile(
            name=package.name,
            version=package.version,
            filename=filename,
            url=package.url,
            sha256=digest,
            dest=f"{NPM_DIR}/{scope + '-' if scope else ''}{filename}",
            purl=purls.for_url(package.url),
            why="npm",
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(published, packages))  # every check before any tarball
        return sorted(pool.map(fetch, packages), key=lambda p: p.dest)


# ---------------------------------------------------------------- the spec


def write_inputs(spec_path: Path, files: list[PinnedFile], prefix: str) -> tuple[int, int]:
    """Replace the spec's inputs under ``prefix/`` by these, keeping everything else
    (comments too). Running again with the same files changes nothing.

    Returns:
        (inputs removed, inputs written).

    Raises:
        PinError: the spec cannot be read or parsed, or a dest is taken by another input.
    """
    try:
        document = tomlkit.parse(spec_path.read_text("utf-8"))
    except (OSError, tomlkit.exceptions.TOMLKitError) as e:
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
    before = spec_path.read_text("utf-8")
    if tomllib.loads(text) != tomllib.loads(before):  # the same data: leave the file as it is
        temp = spec_path.with_name(f".{spec_path.name}.pin")
        temp.write_text(text, "utf-8")
        temp.replace(spec_path)
    return removed, len(files)

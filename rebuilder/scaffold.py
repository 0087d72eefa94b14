"""``hermetic init``: guess a project's build system and write a commented spec for it.

Detection reads a few files of the project and nothing else; the spec carries an inline
``[image]`` with the toolchain and its reproducibility settings, a command and outputs.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import tomlkit

from rebuilder.errors import UserError
from sandbox.errors import SpecError
from sandbox.spec import SPEC_FILENAME, Spec
from sandbox.workspace import UnsafeWrite, create_file

ARCHIVES = ["updates", "security"]
_SKIP_DIRS = {".git", "vendor", "node_modules", "testdata", "target", "hermetic-out"}


class InitError(UserError):
    """The project cannot be initialized (a spec exists, nothing recognizable)."""


class BuildSystem(StrEnum):
    """The build systems ``init`` recognizes, in the order it looks for them."""

    CARGO = "cargo"
    GO = "go"
    NPM = "npm"
    PYTHON = "python"
    MESON = "meson"
    CMAKE = "cmake"
    AUTOTOOLS = "autotools"
    MAKE = "make"


# The toolchains' images: the same packages and settings as images/<name>/recipe.toml.
_C_IMAGE: dict[str, Any] = {
    "packages": ["gcc", "g++", "libc6-dev", "make", "cmake", "ninja-build", "meson", "pkg-config"],
    "env": {
        "CFLAGS": "-g -O2 -ffile-prefix-map=${BUILD_DIR}=.",
        "CXXFLAGS": "-g -O2 -ffile-prefix-map=${BUILD_DIR}=.",
    },
}
_IMAGES: dict[BuildSystem, dict[str, Any]] = {
    BuildSystem.CARGO: {
        "packages": ["rustc", "cargo"],
        "env": {
            "CARGO_HOME": "${BUILD_DIR}/.cache/cargo",
            "CARGO_NET_OFFLINE": "true",
            "CARGO_INCREMENTAL": "0",
            "RUSTFLAGS": "--remap-path-prefix=${BUILD_DIR}=.",
        },
    },
    BuildSystem.GO: {
        "packages": ["golang-go"],
        "env": {
            "GOFLAGS": "-mod=vendor -trimpath -buildvcs=false",
            "GOCACHE": "${BUILD_DIR}/.cache/go-build",
            "GOPATH": "${BUILD_DIR}/.cache/go",
            "GOPROXY": "off",
            "CGO_ENABLED": "0",
        },
    },
    BuildSystem.NPM: {
        "packages": ["nodejs", "npm"],
        "env": {
            "npm_config_cache": "${BUILD_DIR}/.cache/npm",
            "npm_config_offline": "true",
            "npm_config_audit": "false",
            "npm_config_fund": "false",
            "npm_config_update_notifier": "false",
        },
    },
    BuildSystem.PYTHON: {
        "packages": ["python3", "python3-venv", "python3-pip"],
        "env": {
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": "${BUILD_DIR}/wheels",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        },
    },
    BuildSystem.MESON: _C_IMAGE,
    BuildSystem.CMAKE: _C_IMAGE,
    BuildSystem.AUTOTOOLS: _C_IMAGE,
    BuildSystem.MAKE: _C_IMAGE,
}
# Python build backends Debian packages (python3-pip brings setuptools and wheel).
_BACKEND_PACKAGES = {
    "hatchling": "python3-hatchling",
    "poetry.core": "python3-poetry-core",
    "setuptools_scm": "python3-setuptools-scm",
}


@dataclass(frozen=True, kw_only=True)
class Detection:
    """What ``init`` guessed, and what the user should check."""

    system: BuildSystem
    evidence: str  # the file that decided it
    command: tuple[str, ...]
    outputs: tuple[str, ...]
    image: dict[str, Any]
    checks: tuple[str, ...] = field(default=())  # things to look at before trusting it

    def spec_text(self) -> str:
        """The commented ``hermetic.toml``, rendered by a TOML library (every value is
        quoted by it, whatever a project's files hold)."""
        doc = tomlkit.document()
        for line in (
            f"Written by 'hermetic init': a {self.system.value} project (found {self.evidence}).",
            "Check the command and the outputs, then:",
            "  hermetic image build .   (builds the [image] below and writes hermetic.lock)",
            "  hermetic build .",
            "Builds have no network: every dependency must be in the source or an [[inputs]].",
        ):
            doc.add(tomlkit.comment(line))
        doc.add(tomlkit.nl())
        build = tomlkit.table()
        build.add(tomlkit.comment("argv, run in the build directory (a copy of this directory)"))
        build.add("command", list(self.command))
        build.add(tomlkit.comment("globs relative to the build directory; a directory takes"))
        build.add(tomlkit.comment("every file under it"))
        build.add("outputs", list(self.outputs))
        build.add(
            tomlkit.comment("source_date_epoch = 1700000000  # default: the last commit's time")
        )
        doc.add("build", build)
        image = tomlkit.table()
        image.add(tomlkit.comment("The build image: Debian packages from the suite and its"))
        image.add(tomlkit.comment("updates and security archives, locked by 'hermetic image"))
        image.add(tomlkit.comment("build' in hermetic.lock (commit it)."))
        image.add("suite", "bookworm")
        image.add("archives", list(ARCHIVES))
        image.add("packages", list(self.image["packages"]))
        env = tomlkit.table()
        env.add(tomlkit.comment("What every build in this image sees: the toolchain's"))
        env.add(tomlkit.comment("reproducibility settings (${BUILD_DIR} is the build"))
        env.add(tomlkit.comment("directory). The spec's build.env overrides them."))
        for name, value in self.image["env"].items():
            env.add(name, value)
        image.add("env", env)
        doc.add("image", image)
        limits = tomlkit.table()
        limits.add("timeout", "30m")
        limits.add("disk", "4GiB")
        if self.system is BuildSystem.NPM:
            # V8 reserves address space, which the per-process RLIMIT_DATA fallback of the
            # memory limit (no cgroup memory controller) counts; real use is still watched
            limits.add("memory", "16GiB")
        doc.add("limits", limits)
        return tomlkit.dumps(doc)


# What a name from a project's files may be before it becomes part of a command or a
# path: the ecosystem's own rules (npm's package names, crate names, versions).
_NPM_NAME_RE = re.compile(r"(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9~][a-z0-9._~-]*")
_VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]*")
_CRATE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_PATH_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _checked(value: object, pattern: re.Pattern[str], where: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InitError(
            f"{where}: {value!r} is not a valid {what}; fix it, or write the spec by hand"
        )
    return value


def detect(directory: Path) -> Detection:
    """Guess the build system of the project in ``directory``.

    Raises:
        InitError: nothing hermetic recognizes.
    """
    for system, marker, guess in (
        (BuildSystem.CARGO, "Cargo.toml", _cargo),
        (BuildSystem.GO, "go.mod", _go),
        (BuildSystem.NPM, "package.json", _npm),
        (BuildSystem.PYTHON, "pyproject.toml", _python),
        (BuildSystem.PYTHON, "setup.py", _python),
        (BuildSystem.MESON, "meson.build", _meson),
        (BuildSystem.CMAKE, "CMakeLists.txt", _cmake),
        (BuildSystem.AUTOTOOLS, "configure", _autotools),
        (BuildSystem.AUTOTOOLS, "configure.ac", _autotools),
        (BuildSystem.MAKE, "Makefile", _make),
        (BuildSystem.MAKE, "GNUmakefile", _make),
        (BuildSystem.MAKE, "makefile", _make),
    ):
        if (directory / marker).is_file():
            command, outputs, checks, image = guess(directory, marker)
            return Detection(
                system=system,
                evidence=marker,
                command=command,
                outputs=outputs,
                image=image or _IMAGES[system],
                checks=checks,
            )
    raise InitError(
        f"{directory}: no build system recognized (looked for Cargo.toml, go.mod, "
        "package.json, pyproject.toml, setup.py, meson.build, CMakeLists.txt, configure, "
        "Makefile); write hermetic.toml by hand (see docs/init.md)"
    )


Guess = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], dict[str, Any] | None]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InitError(f"{path}: cannot read it: {e}") from None


def _shell(*steps: str) -> tuple[str, ...]:
    return ("sh", "-c", " && ".join(steps))


def _cargo(directory: Path, marker: str) -> Guess:
    manifest = _read_toml(directory / marker)
    package = manifest.get("package", {})
    where = str(directory / marker)
    name = _checked(
        package.get("name", directory.name) if isinstance(package, dict) else None,
        _CRATE_NAME_RE,
        where,
        "crate name",
    )
    locked = (directory / "Cargo.lock").is_file()
    command = ("cargo", "build", "--release", *(("--locked",) if locked else ()))
    outputs: list[str] = []
    bins = [
        _checked(b.get("name", name), _CRATE_NAME_RE, where, "binary name")
        for b in manifest.get("bin", [])
        if isinstance(b, dict)
    ]
    if (directory / "src" / "main.rs").is_file() and name not in bins:
        bins.append(name)
    outputs += [f"target/release/{b}" for b in bins]
    if (directory / "src" / "lib.rs").is_file() or "lib" in manifest:
        outputs.append(f"target/release/lib{name.replace('-', '_')}.rlib")
    checks = ["outputs: the binaries and libraries found in Cargo.toml and src/"]
    if manifest.get("dependencies") and not (directory / "vendor").is_dir():
        checks.append(
            "dependencies: the build is offline; run 'cargo vendor' and commit vendor/ "
            "and .cargo/config.toml (or pin the crates as [[inputs]])"
        )
    if not locked:
        checks.append("no Cargo.lock: commit one so that every build resolves the same crates")
    return command, tuple(outputs or [f"target/release/{name}"]), tuple(checks), None


def _go_files(directory: Path) -> list[Path]:
    found = []
    for path in sorted(directory.rglob("*.go")):
        parts = set(path.relative_to(directory).parts[:-1])
        if parts & _SKIP_DIRS or path.name.endswith("_test.go"):
            continue
        found.append(path)
    return found


def _go(directory: Path, marker: str) -> Guess:
    text = (directory / marker).read_text("utf-8", "replace")
    module = re.search(r"^module\s+(\S+)", text, re.MULTILINE)
    last = (module.group(1) if module else directory.name).rstrip("/").rsplit("/", 1)[-1]
    last = _checked(last, _PATH_NAME_RE, str(directory / marker), "module name")
    mains = [
        path
        for path in _go_files(directory)
        if re.search(r"^package\s+main\b", path.read_text("utf-8", "replace"), re.MULTILINE)
    ]
    checks = []
    if mains:
        command: tuple[str, ...] = ("go", "build", "-o", "bin/", "./...")
        checks.append("outputs: every main package is built into bin/")
    else:
        # a library: 'go build -o FILE' writes the package archive, which proves it builds
        command = ("go", "build", "-o", f"bin/{last}.a", ".")
        checks.append(f"outputs: a library; bin/{last}.a is its compiled archive")
    if re.search(r"^require\b", text, re.MULTILINE) and not (directory / "vendor").is_dir():
        checks.append("dependencies: the build is offline; run 'go mod vendor' and commit vendor/")
    return command, ("bin",), tuple(checks), None


def _npm(directory: Path, marker: str) -> Guess:
    try:
        package = json.loads((directory / marker).read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise InitError(f"{directory / marker}: cannot read it: {e}") from None
    if not isinstance(package, dict):
        raise InitError(f"{directory / marker}: not a JSON object")
    where = str(directory / marker)
    name = _checked(package.get("name", directory.name), _NPM_NAME_RE, where, "npm package name")
    version = _checked(package.get("version", "0.0.0"), _VERSION_RE, where, "version")
    tarball = f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    steps = []
    checks = []
    if (directory / "package-lock.json").is_file() or (directory / "npm-shrinkwrap.json").is_file():
        steps.append("npm ci")
        if package.get("dependencies") or package.get("devDependencies"):
            checks.append(
                "dependencies: the build is offline; pin the lockfile's tarballs "
                "('hermetic pin npm package-lock.json')"
            )
    elif package.get("dependencies"):
        checks.append("dependencies but no package-lock.json: run 'npm install' and commit it")
    if isinstance(package.get("scripts"), dict) and "build" in package["scripts"]:
        steps.append("npm run build")
    steps.append("npm pack")
    checks.append(f"outputs: npm pack writes {tarball}")
    return _shell(*steps), (tarball,), tuple(checks), None


def _python(directory: Path, marker: str) -> Guess:
    packages = list(_IMAGES[BuildSystem.PYTHON]["packages"])
    checks = ["outputs: the wheel in dist/"]
    if marker == "pyproject.toml":
        system = _read_toml(directory / marker).get("build-system", {})
        backend = str(system.get("build-backend", "setuptools.build_meta"))
        in_tree = bool(system.get("backend-path"))
        for requirement in system.get("requires", []):
            name = re.split(r"[ <>=!~;\[]", str(requirement), maxsplit=1)[0].lower()
            name = name.replace("-", "_")
            if name in ("setuptools", "wheel") or in_tree:
                continue
            debian = _BACKEND_PACKAGES.get(name) or _BACKEND_PACKAGES.get(name.replace("_", "."))
            if debian:
                packages.append(debian)
            else:
                checks.append(
                    f"build requirement {requirement!r} is not in the image: pin it as a wheel "
                    "('hermetic pin pip') or add its Debian package to [image] packages"
                )
        checks.insert(0, f"build backend: {backend}{' (in the source tree)' if in_tree else ''}")
    command = ("python3", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation")
    image = {**_IMAGES[BuildSystem.PYTHON], "packages": packages}
    return (*command, "-w", "dist", "."), ("dist/*.whl",), tuple(checks), image


_DESTDIR_CHECK = "outputs: everything the install step puts into dist/ (DESTDIR)"


def _meson(directory: Path, marker: str) -> Guess:
    command = _shell(
        "meson setup out --buildtype=debugoptimized --prefix=/usr",
        "meson compile -C out",
        'meson install -C out --destdir "$PWD/dist"',
    )
    return command, ("dist",), (_DESTDIR_CHECK,), None


def _cmake(directory: Path, marker: str) -> Guess:
    command = _shell(
        "cmake -G Ninja -S . -B out -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr",
        "cmake --build out",
        'DESTDIR="$PWD/dist" cmake --install out',
    )
    return command, ("dist",), (_DESTDIR_CHECK,), None


def _autotools(directory: Path, marker: str) -> Guess:
    steps = []
    image = None
    checks = [_DESTDIR_CHECK]
    if marker == "configure.ac":
        steps.append("autoreconf -fi")
        image = {**_C_IMAGE, "packages": [*_C_IMAGE["packages"], "autoconf", "automake", "libtool"]}
        checks.append("no configure script: autoreconf makes one (autoconf, automake, libtool)")
    steps += ["./configure --prefix=/usr", "make", 'make install DESTDIR="$PWD/dist"']
    return _shell(*steps), ("dist",), tuple(checks), image


def _make(directory: Path, marker: str) -> Guess:
    text = (directory / marker).read_text("utf-8", "replace")
    targets = re.findall(r"^([A-Za-z0-9_./-]+)\s*:(?!=)\s*([^\n#]*)", text, re.MULTILINE)
    targets = [(t, deps) for t, deps in targets if not t.startswith(".")]
    outputs: list[str] = []
    if targets:
        goal, deps = targets[0]
        if goal in ("all", "default", "build"):
            outputs = [d for d in deps.split() if "$" not in d and "%" not in d]
        else:
            outputs = [goal]
    checks = [
        "outputs: guessed from the Makefile's default goal; list the files it builds",
    ]
    return ("make",), tuple(outputs or ["CHANGE-ME"]), tuple(checks), None


@dataclass(frozen=True, kw_only=True)
class InitResult:
    """The written spec and what was guessed."""

    path: Path
    detection: Detection


def init_project(directory: Path) -> InitResult:
    """Write ``directory/hermetic.toml`` for the project there; never overwrite one.

    Raises:
        InitError: a spec exists, or the build system is not recognized.
    """
    directory = directory.resolve()
    if not directory.is_dir():
        raise InitError(f"{directory}: no such directory")
    path = directory / SPEC_FILENAME
    if path.exists() or path.is_symlink():
        raise InitError(f"{path} exists; init never overwrites a spec (remove it to start over)")
    detection = detect(directory)
    try:
        text = detection.spec_text()
        data = text.encode("utf-8")
        Spec.from_document(tomllib.loads(text), path=path, source_dir=directory)
    except (UnicodeEncodeError, tomllib.TOMLDecodeError, SpecError) as e:
        raise InitError(
            f"{directory}: the guessed spec would not be valid ({e}); write it by hand "
            "(see docs/init.md)"
        ) from None
    try:
        create_file(path, data)  # whole or not at all; never over a file made meanwhile
    except UnsafeWrite:
        raise InitError(f"{path} exists; init never overwrites a spec") from None
    return InitResult(path=path, detection=detection)

"""The build spec (``hermetic.toml``) as frozen data, validated before anything runs.

Every omitted field has a default documented in docs/spec.md; every error names the
file, the key and the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sandbox.digests import Sha256, parse_sha256
from sandbox.errors import Error, SpecError, SpecProblems
from sandbox.recipe import RECIPE_FILENAME, ImageRecipe
from sandbox.units import format_size, parse_duration, parse_size

DEFAULT_IMAGE = "debian-bookworm"
SPEC_FILENAME = "hermetic.toml"
INLINE_LOCK_FILENAME = "hermetic.lock"  # the lock of an inline [image], beside the spec
INLINE_IMAGE_NAME = "inline"
# matched whole (fullmatch): a '$' would let a trailing newline through
_IMAGE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_PINNED_IMAGE_RE = re.compile(
    r"(?P<repository>[A-Za-z0-9\[][A-Za-z0-9._:/\[\]-]*)@sha256:(?P<digest>[0-9a-f]{64})"
)
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_URL_TEXT_RE = re.compile(r"[!-~]+")  # printable ASCII, no spaces: what a URL is made of
_URL_SCHEMES = ("https", "http", "file")
MAX_SOURCE_DATE_EPOCH = 253402300799  # 9999-12-31T23:59:59Z: what file times and dates hold
MAX_PIDS = 4194304  # the kernel's PID_MAX_LIMIT
_T = TypeVar("_T")
# A spec is a page of TOML: a larger file is refused before it is read (a node reads
# strangers' specs; a gigabyte of comments would cost gigabytes of memory).
MAX_SPEC_BYTES = 1024**2
_RESERVED_ENV = {
    "SOURCE_DATE_EPOCH": "set build.source_date_epoch instead",
}


@dataclass(frozen=True, kw_only=True)
class ImageReference:
    """The spec's image: one of a name under ``images/`` (``name``), a reference pinned
    by digest (``repository`` and ``digest``), or a recipe of the project's own
    (``recipe``: a recipe file beside the spec, or the spec's ``[image]`` table), whose
    lock is ``lock_path``."""

    name: str | None = None
    repository: str | None = None
    digest: Sha256 | None = None
    recipe: ImageRecipe | None = None
    recipe_path: Path | None = None  # the recipe file; None for an inline [image]
    lock_path: Path | None = None

    def __str__(self) -> str:
        if self.name is not None:
            return self.name
        if self.recipe is not None:
            return str(self.recipe_path) if self.recipe_path else f"[image] of {self.lock_path}"
        return f"{self.repository}@sha256:{self.digest}"


def recipe_lock_path(recipe_file: Path) -> Path:
    """``X/recipe.toml`` -> ``X/recipe.lock.json`` (``X/foo.toml`` -> ``X/foo.lock.json``)."""
    return recipe_file.with_name(recipe_file.stem + ".lock.json")


def recipe_image_name(recipe_file: Path) -> str:
    """A recipe's image name: its directory's for ``recipe.toml``, else the file's stem."""
    stem = recipe_file.parent.name if recipe_file.name == RECIPE_FILENAME else recipe_file.stem
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._")
    return cleaned or "recipe"


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """An extra input fetched before the build and placed at ``dest``."""

    url: str
    sha256: Sha256
    dest: PurePosixPath


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Resource limits of one build; the defaults are the README's."""

    timeout_s: int = 3600
    memory_bytes: int = 4 * 1024**3
    pids: int = 4096
    disk_bytes: int = 10 * 1024**3
    log_bytes: int = 64 * 1024**2

    def above(self, ceiling: Limits) -> list[str]:
        """The limits larger than ``ceiling`` (a node's maximums for strangers' specs), each
        as ``limits.NAME = VALUE is more than MAXIMUM``; empty when every one fits."""
        found = []
        for key, attribute, shown in (
            ("timeout", "timeout_s", lambda v: f"{v}s"),
            ("memory", "memory_bytes", format_size),
            ("pids", "pids", str),
            ("disk", "disk_bytes", format_size),
            ("log", "log_bytes", format_size),
        ):
            value, most = getattr(self, attribute), getattr(ceiling, attribute)
            if value > most:
                found.append(f"limits.{key} = {shown(value)} is more than {shown(most)}")
        return found


@dataclass(frozen=True, kw_only=True)
class Spec:
    """A validated ``hermetic.toml``."""

    path: Path
    source_dir: Path
    image: ImageReference
    command: tuple[str, ...]
    outputs: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    source_date_epoch: int | None = None
    inputs: tuple[InputSpec, ...] = ()
    limits: Limits = field(default_factory=Limits)
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    sha256: str | None = field(default=None, compare=False)  # of the bytes parsed (from_toml)

    @classmethod
    def from_toml(cls, path: Path, *, source_dir: Path | None = None) -> Spec:
        """Read and validate a spec file.

        Args:
            path: the spec file, or a directory holding ``hermetic.toml``.
            source_dir: the source tree; defaults to the directory holding the spec.

        Raises:
            SpecError: naming the file, the key and the reason.
        """
        if path.is_dir():
            path = path / SPEC_FILENAME
        try:
            with path.open("rb") as stream:
                data = stream.read(MAX_SPEC_BYTES + 1)
            text = data.decode("utf-8")
        except FileNotFoundError:
            raise SpecError(path=path, key="(file)", reason="no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError(path=path, key="(file)", reason=str(e)) from e
        if len(data) > MAX_SPEC_BYTES:
            raise SpecError(
                path=path,
                key="(file)",
                reason=f"larger than {MAX_SPEC_BYTES} bytes; a spec is a short TOML file",
            )
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SpecError(path=path, key="(syntax)", reason=str(e)) from e
        except RecursionError:  # tomllib parses nested arrays and tables recursively
            raise SpecError(path=path, key="(syntax)", reason="nested too deeply") from None
        parsed = cls.from_document(
            document, path=path, source_dir=source_dir or path.resolve().parent
        )
        # what a provenance names is what was parsed, not the file as it is later
        return replace(parsed, sha256=hashlib.sha256(data).hexdigest())

    @classmethod
    def from_document(cls, document: Mapping[str, Any], *, path: Path, source_dir: Path) -> Spec:
        """Validate an already parsed spec document (see :meth:`from_toml`)."""
        return _SpecParser(path).parse(document, source_dir)

    @property
    def env_dict(self) -> dict[str, str]:
        """The spec's extra environment as a dict."""
        return dict(self.env)


class _SpecParser:
    """Walks a spec document once, collecting every error with its key: a user fixes
    them all after one run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[SpecError] = []

    def fail(self, key: str, reason: str) -> SpecError:
        return SpecError(path=self.path, key=key, reason=reason)

    def attempt(self, parse: Callable[[], _T], default: _T) -> _T:
        """``parse()``, or ``default`` with its error recorded."""
        try:
            return parse()
        except SpecError as e:
            self.problems.append(e)
            return default

    def table(self, value: object, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        """The table; every unknown key in it is recorded (and left out)."""
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {type(value).__name__}")
        for name in value:
            if name not in allowed:
                shown = name if _BARE_KEY_RE.fullmatch(name) else json.dumps(name)  # as TOML does
                where = f"{key}.{shown}" if key else shown
                self.problems.append(
                    self.fail(where, f"unknown key; allowed here: {', '.join(allowed)}")
                )
        return {name: item for name, item in value.items() if name in allowed}

    def parse(self, document: Mapping[str, Any], source_dir: Path) -> Spec:
        top = self.table(dict(document), "", ("build", "image", "inputs", "limits"))
        if "build" not in top:
            self.problems.append(
                self.fail("build", "missing table [build] (it needs command and outputs)")
            )
        no_table: dict[str, Any] = {}
        build = self.attempt(
            lambda: self.table(
                top.get("build", {}),
                "build",
                ("image", "command", "outputs", "env", "source_date_epoch"),
            ),
            no_table,
        )
        no_inputs: tuple[InputSpec, ...] = ()
        no_words: tuple[str, ...] = ()
        no_env: tuple[tuple[str, str], ...] = ()
        inputs = self.attempt(lambda: self.inputs(top.get("inputs", [])), no_inputs)
        image: ImageReference | None
        if "image" in top and "image" in build:
            self.problems.append(
                self.fail("image", "both [image] and build.image are given; keep one of them")
            )
            image = None
        elif "image" in top:
            image = self.attempt(lambda: self.inline_image(top["image"]), None)
        else:
            image = self.attempt(lambda: self.image(build.get("image", DEFAULT_IMAGE)), None)
        command = self.attempt(lambda: self.command(build.get("command")), no_words)
        outputs = self.attempt(lambda: self.outputs(build.get("outputs")), no_words)
        env = self.attempt(lambda: self.env(build.get("env", {})), no_env)
        epoch = self.attempt(lambda: self.epoch(build.get("source_date_epoch")), None)
        limits = self.attempt(lambda: self.limits(top.get("limits", {})), Limits())
        if len(self.problems) == 1:
            raise self.problems[0]
        if self.problems or image is None:
            raise SpecProblems(self.problems)
        return Spec(
            path=self.path,
            source_dir=source_dir,
            image=image,
            command=command,
            outputs=outputs,
            env=env,
            source_date_epoch=epoch,
            inputs=inputs,
            limits=limits,
            document=document,
        )

    def inline_image(self, value: object) -> ImageReference:
        if not isinstance(value, dict):
            raise self.fail("image", f"expected a table, got {type(value).__name__}")

        def fail(key: str, reason: str) -> Error:
            return self.fail(f"image.{key}", reason)

        recipe = ImageRecipe.from_table(value, name=INLINE_IMAGE_NAME, fail=fail)
        return ImageReference(
            recipe=recipe, lock_path=self.path.resolve().parent / INLINE_LOCK_FILENAME
        )

    def recipe_image(self, value: str) -> ImageReference:
        key = "build.image"
        relative = PurePosixPath(value)
        if ".." in relative.parts:
            raise self.fail(key, f"{value!r}: a recipe must be inside the project (no '..')")
        base = self.path.resolve().parent
        target = base / relative
        if target.is_dir():
            target = target / RECIPE_FILENAME
        # a link on the way must not lead out: the recipe and its lock are the project's
        if target.exists() and not target.resolve().is_relative_to(base):
            raise self.fail(
                key,
                f"{value!r} leads out of the project through a symbolic link "
                f"(to {target.resolve()}); a rebuilder gets the project's tree only",
            )
        if not target.is_file():
            raise self.fail(
                key,
                f"{value!r}: no recipe at {target}; give a directory holding {RECIPE_FILENAME} "
                "or a .toml recipe file (see docs/images.md)",
            )
        try:
            recipe = ImageRecipe.load(target, name=recipe_image_name(target))
        except Error as e:
            raise self.fail(key, str(e)) from None
        return ImageReference(recipe=recipe, recipe_path=target, lock_path=recipe_lock_path(target))

    def image(self, value: object) -> ImageReference:
        key = "build.image"
        if not isinstance(value, str) or not value:
            raise self.fail(key, "expected an image name or 'repository@sha256:<64 hex>'")
        if value.startswith("./"):
            return self.recipe_image(value)
        if value.startswith(("/", "../")):
            raise self.fail(
                key, f"{value!r}: a recipe path must start with './' and stay inside the project"
            )
        if _IMAGE_NAME_RE.fullmatch(value):
            return ImageReference(name=value)
        if match := _PINNED_IMAGE_RE.fullmatch(value):
            return ImageReference(
                repository=match.group("repository"), digest=Sha256(match.group("digest"))
            )
        if "@" in value:
            raise self.fail(key, f"{value!r}: the digest must be 'sha256:' and 64 hex characters")
        base = value.rsplit(":", 1)[0] if ":" in value.rsplit("/", 1)[-1] else value
        raise self.fail(
            key,
            f"{value!r} is a tag without a digest; pin it as '{base}@sha256:<64 hex>' "
            "or name an image under images/ (see 'hermetic image list') "
            "or a recipe beside the spec ('./path')",
        )

    def command(self, value: object) -> tuple[str, ...]:
        key = "build.command"
        if value is None:
            raise self.fail(key, "missing; give the build's argv, e.g. ['make']")
        if isinstance(value, str):
            raise self.fail(key, "expected an argv list, e.g. ['sh', '-c', './configure && make']")
        if not isinstance(value, list) or not value:
            raise self.fail(key, "must be a non-empty list of strings")
        if not all(isinstance(arg, str) and "\0" not in arg for arg in value):
            raise self.fail(key, "every argument must be a string without NUL characters")
        if not value[0] or "=" in value[0]:
            raise self.fail(key, "the program (first element) must be a non-empty name without '='")
        return tuple(value)

    def outputs(self, value: object) -> tuple[str, ...]:
        key = "build.outputs"
        if value is None:
            raise self.fail(key, "missing; list the files the build produces, e.g. ['hello']")
        if not isinstance(value, list) or not value:
            raise self.fail(key, "must be a non-empty list of glob patterns")
        for index, pattern in enumerate(value):
            where = f"{key}[{index}]"
            if not isinstance(pattern, str) or not pattern.strip():
                self.problems.append(self.fail(where, "must be a non-empty glob pattern"))
            else:
                self.attempt(partial(self.relative_path, pattern, where), None)
        return tuple(value)

    def relative_path(self, value: str, key: str) -> PurePosixPath:
        if "\0" in value:
            raise self.fail(key, "contains a NUL character")
        if value.startswith("/"):
            raise self.fail(key, f"{value!r} is absolute; give a path relative to the build dir")
        path = PurePosixPath(value)
        if ".." in path.parts:
            raise self.fail(key, f"{value!r} contains '..' and could escape the build directory")
        if str(path) in ("", "."):
            raise self.fail(key, "must name a path inside the build directory")
        return path

    def env(self, value: object) -> tuple[tuple[str, str], ...]:
        table = self.table(value, "build.env", tuple(value) if isinstance(value, dict) else ())
        pairs = []
        for name, text in sorted(table.items()):
            where = f"build.env.{name}"
            if not _ENV_NAME_RE.fullmatch(name):
                self.problems.append(self.fail(where, "not a valid environment variable name"))
            elif name in _RESERVED_ENV:
                self.problems.append(self.fail(where, f"reserved; {_RESERVED_ENV[name]}"))
            elif not isinstance(text, str) or "\0" in text:
                self.problems.append(
                    self.fail(where, "value must be a string without NUL characters")
                )
            else:
                pairs.append((name, text))
        return tuple(pairs)

    def epoch(self, value: object) -> int | None:
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 0 <= value <= MAX_SOURCE_DATE_EPOCH
        ):
            raise self.fail(
                "build.source_date_epoch",
                f"must be an integer from 0 to {MAX_SOURCE_DATE_EPOCH} (seconds since 1970)",
            )
        return value

    def inputs(self, value: object) -> tuple[InputSpec, ...]:
        if not isinstance(value, list):
            raise self.fail("inputs", "expected an array of tables ([[inputs]])")
        result: list[InputSpec] = []
        seen: set[PurePosixPath] = set()
        for index, item in enumerate(value):
            parsed = self.attempt(partial(self.input, index, item, seen), None)
            if parsed is not None:
                seen.add(parsed.dest)
                result.append(parsed)
        return tuple(result)

    def input(self, index: int, item: object, seen: set[PurePosixPath]) -> InputSpec:
        key = f"inputs[{index}]"
        entry = self.table(item, key, ("url", "sha256", "dest"))
        for required in ("url", "sha256", "dest"):
            if required not in entry:
                raise self.fail(f"{key}.{required}", "missing")
        url = self.url(entry["url"], f"{key}.url")
        if not isinstance(entry["sha256"], str):
            raise self.fail(f"{key}.sha256", "expected 64 hex characters")
        try:
            digest = parse_sha256(entry["sha256"])
        except ValueError as e:
            raise self.fail(f"{key}.sha256", str(e)) from None
        if not isinstance(entry["dest"], str):
            raise self.fail(f"{key}.dest", "expected a relative path")
        dest = self.relative_path(entry["dest"], f"{key}.dest")
        if dest in seen:
            raise self.fail(f"{key}.dest", f"{str(dest)!r} is already the dest of another input")
        return InputSpec(url=url, sha256=digest, dest=dest)

    def url(self, value: object, key: str) -> str:
        """An input URL: http(s) or a local file, without credentials or spaces.

        What the URL says is recorded (result, provenance, SBOM) and shown: credentials in
        it would be published; a ``file://`` URL naming a host would claim a place the file
        is not read from (it is read from this machine).
        """
        if not isinstance(value, str) or not _URL_TEXT_RE.fullmatch(value):
            raise self.fail(key, "expected a URL without spaces or control characters")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  (raises for a port out of range)
        except ValueError as e:
            raise self.fail(key, f"{value!r} is not a valid URL: {e}") from None
        if parts.scheme not in _URL_SCHEMES:
            raise self.fail(key, f"expected an {'/'.join(_URL_SCHEMES)} URL")
        if "@" in parts.netloc:
            raise self.fail(
                key,
                "a URL with credentials (user:password@) would be recorded and published; "
                "give the URL without them (hermetic pin uses your index's credentials "
                "without writing them down)",
            )
        if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
            raise self.fail(key, f"file:// URL names the host {parts.netloc!r}; write file:///path")
        if parts.scheme != "file" and not parts.hostname:
            raise self.fail(key, f"{value!r} names no host")
        return value

    def limits(self, value: object) -> Limits:
        table = self.table(value, "limits", ("timeout", "memory", "pids", "disk", "log"))
        values: dict[str, int] = {}
        parsers = {
            "timeout": ("timeout_s", parse_duration),
            "memory": ("memory_bytes", parse_size),
            "disk": ("disk_bytes", parse_size),
            "log": ("log_bytes", parse_size),
        }
        for name, (attribute, parse) in parsers.items():
            if name in table:
                try:
                    values[attribute] = parse(table[name])
                except ValueError as e:
                    self.problems.append(self.fail(f"limits.{name}", str(e)))
        if "pids" in table:
            pids = table["pids"]
            if isinstance(pids, bool) or not isinstance(pids, int) or not 1 <= pids <= MAX_PIDS:
                self.problems.append(
                    self.fail(
                        "limits.pids", f"expected an integer from 1 to {MAX_PIDS}, got {pids!r}"
                    )
                )
            else:
                values["pids"] = pids
        return Limits(**values)

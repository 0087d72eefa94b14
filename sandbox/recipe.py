"""An image recipe as frozen data: which Debian packages, from which archives, make an image.

A recipe is a TOML file (``images/NAME/recipe.toml``, or one beside a project) or the
``[image]`` table of a spec; both are validated here, with errors naming file and key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sandbox.digests import Sha256, canonical_json, sha256_bytes
from sandbox.errors import Error, ImageError

RECIPE_FILENAME = "recipe.toml"
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# 2023-11-14: a fixed default, so a recipe without one still gives the same image everywhere
DEFAULT_IMAGE_EPOCH = 1700000000
ARCHIVES = ("updates", "security")
VARIANTS = ("essential", "minbase", "required", "important", "standard", "apt")
RECIPE_KEYS = (
    "description",
    "suite",
    "mirror",
    "security_mirror",
    "archives",
    "components",
    "variant",
    "packages",
    "locales",
    "source_date_epoch",
    "strip_docs",
    "env",
)
BUILD_DIR_PLACEHOLDER = "${BUILD_DIR}"  # in env values: the build directory of each build
_RESERVED_ENV = ("SOURCE_DATE_EPOCH", "PATH", "HOME", "TZ", "LANG", "USER", "LOGNAME")
_MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z, as for a spec's source_date_epoch

# Every recipe string reaches mmdebstrap's argv, a sources.list line or a shell hook, so
# each is matched whole (fullmatch: no trailing newline slips through a '$') against the
# characters its kind may hold, before anything is built from it.
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")  # Debian policy 5.6.1
_SUITE_RE = re.compile(r"[a-z][a-z0-9-]*")
_COMPONENT_RE = re.compile(r"[a-z][a-z0-9-]*")
LOCALE_RE = re.compile(r"[A-Za-z0-9_.@-]+ [A-Za-z0-9_-]+")
_TEXT_RE = re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]*")  # no line breaks, tabs, NULs
# scheme://host[:port][/path]: no spaces, quotes, brackets of apt options or userinfo
_ARCHIVE_URL_RE = re.compile(
    r"https?://(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%+/-]*)?"
)


def checked_text(value: object, pattern: re.Pattern[str]) -> str | None:
    """``value`` when it is a string ``pattern`` matches whole, else None."""
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    return None


def archive_url(value: object) -> str | None:
    """An http(s) URL of an APT archive, matched whole and parsed: None unless it has a
    host, no credentials, query or fragment, and nothing apt would read as an option."""
    url = checked_text(value, _ARCHIVE_URL_RE)
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises for a port out of range)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        return None
    return url


@dataclass(frozen=True, kw_only=True)
class AptSource:
    """One ``deb URI SUITE COMPONENT…`` line, made of checked parts only."""

    uri: str
    suite: str
    components: tuple[str, ...]

    def __post_init__(self) -> None:
        parts_ok = (
            archive_url(self.uri) is not None
            and checked_text(self.suite, _SUITE_RE) is not None
            and bool(self.components)
            and all(checked_text(c, _COMPONENT_RE) is not None for c in self.components)
        )
        if not parts_ok:
            raise ImageError(f"not an APT source: {self.uri!r} {self.suite!r} {self.components!r}")

    def line(self) -> str:
        return f"deb {self.uri} {self.suite} {' '.join(self.components)}"


Fail = Callable[[str, str], Error]
"""Makes the error for (key, reason); the caller knows the file and the key's prefix."""


@dataclass(frozen=True, kw_only=True)
class ImageRecipe:
    """How to make an image from Debian packages."""

    name: str
    description: str
    suite: str
    mirror: str
    security_mirror: str
    archives: tuple[str, ...]  # beside the suite: "updates" (<suite>-updates), "security"
    components: tuple[str, ...]
    variant: str
    packages: tuple[str, ...]
    locales: tuple[str, ...]
    source_date_epoch: int
    strip_docs: bool
    # What builds in this image see beside the normalized environment (the spec's
    # build.env wins): the toolchain's reproducibility settings.
    env: tuple[tuple[str, str], ...] = ()
    digest: Sha256  # of the recipe's text, so a lock notices an edited recipe

    @classmethod
    def load(cls, path: Path, *, name: str | None = None) -> ImageRecipe:
        """Read a recipe file (``path`` may be a directory holding ``recipe.toml``).

        Args:
            path: the file or its directory.
            name: the image's name; default: the directory's name.

        Raises:
            ImageError: naming the file, key and reason.
        """
        if path.is_dir():
            path = path / RECIPE_FILENAME
        name = name or path.parent.name
        try:
            raw = path.read_bytes()
            data = tomllib.loads(raw.decode("utf-8"))
        except FileNotFoundError:
            raise ImageError(f"{path}: no such file; every image needs a recipe") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ImageError(f"{path}: {e}") from e

        def fail(key: str, reason: str) -> Error:
            return ImageError(f"{path}: {key}: {reason}")

        return cls.from_table(data, name=name, digest=sha256_bytes(raw), fail=fail)

    @classmethod
    def from_table(
        cls, data: Mapping[str, Any], *, name: str, digest: Sha256 | None = None, fail: Fail
    ) -> ImageRecipe:
        """Validate a parsed recipe table.

        Args:
            data: the table.
            name: the image's name.
            digest: what identifies the recipe's text; default: its canonical JSON's sha256
                (an inline ``[image]`` table, which is not a file of its own).
            fail: builds the error for a key and a reason.

        Raises:
            Error: whatever ``fail`` returns, for the first invalid key.
        """
        for key in data:
            if key not in RECIPE_KEYS:
                raise fail(key, f"unknown key; allowed: {', '.join(RECIPE_KEYS)}")
        description = data.get("description", "")
        if checked_text(description, _TEXT_RE) is None:
            raise fail("description", "must be one line of text")
        suite = checked_text(data.get("suite", DEFAULT_SUITE), _SUITE_RE)
        if suite is None:
            raise fail("suite", "must be a Debian suite name, e.g. 'bookworm'")
        mirror = archive_url(data.get("mirror", DEFAULT_MIRROR))
        if mirror is None:
            raise fail(
                "mirror",
                "must be an http:// or https:// URL of a Debian archive, without credentials "
                "or spaces, e.g. 'http://deb.debian.org/debian'",
            )
        variant = data.get("variant", "essential")
        if variant not in VARIANTS:
            raise fail("variant", f"must be one of {', '.join(VARIANTS)}")
        archives = _names(data.get("archives", []), "archives", fail, allowed=ARCHIVES)
        security = data.get("security_mirror", _security_mirror(mirror))
        if (security != "" or "security" in archives) and archive_url(security) is None:
            raise fail(
                "security_mirror",
                "must be an http(s) URL without credentials or spaces; give it when the "
                "mirror does not end in /debian",
            )
        components = _names(data.get("components", ["main"]), "components", fail)
        if not components:
            raise fail("components", "must name at least one component, e.g. ['main']")
        packages = data.get("packages", [])
        if not isinstance(packages, list) or not all(
            checked_text(p, _PACKAGE_RE) is not None for p in packages
        ):
            raise fail("packages", "must be a list of Debian package names")
        if len(set(packages)) != len(packages):
            raise fail("packages", "lists a package twice")
        locales = data.get("locales", [])
        if not isinstance(locales, list) or not all(
            checked_text(x, LOCALE_RE) is not None for x in locales
        ):
            raise fail("locales", "must be a list of locale.gen lines, e.g. 'en_US.UTF-8 UTF-8'")
        if locales and "locales" not in packages:
            raise fail("locales", "add 'locales' to packages: it generates them")
        epoch = data.get("source_date_epoch", DEFAULT_IMAGE_EPOCH)
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= _MAX_EPOCH:
            raise fail("source_date_epoch", f"must be an integer from 0 to {_MAX_EPOCH}")
        strip_docs = data.get("strip_docs", True)
        if not isinstance(strip_docs, bool):
            raise fail("strip_docs", "must be true or false")
        env = data.get("env", {})
        if not isinstance(env, dict):
            raise fail("env", 'must be a table of NAME = "value"')
        for key, value in env.items():
            if checked_text(key, _ENV_NAME_RE) is None or key in _RESERVED_ENV:
                raise fail(f"env.{key}", "not a variable an image may set")
            if checked_text(value, _TEXT_RE) is None:
                raise fail(f"env.{key}", "must be one line of text (no control characters)")
        if digest is None:
            digest = sha256_bytes(canonical_json(dict(data)))
        return cls(
            name=name,
            description=description,
            suite=suite,
            mirror=mirror,
            security_mirror=security,
            archives=archives,
            components=components,
            variant=variant,
            packages=tuple(packages),
            locales=tuple(locales),
            source_date_epoch=epoch,
            strip_docs=strip_docs,
            env=tuple(sorted(env.items())),
            digest=digest,
        )

    def build_env(self, build_dir: str) -> tuple[tuple[str, str], ...]:
        """The image's environment for a build in ``build_dir`` (placeholders filled)."""
        return tuple(
            (name, value.replace(BUILD_DIR_PLACEHOLDER, build_dir)) for name, value in self.env
        )

    def sources(self) -> list[str]:
        """The APT sources mmdebstrap uses (and writes into the image).

        A recipe without extra archives gives the bare mirror, as recipes always did, so
        that their images keep their digests. Each line is made from checked parts
        (:class:`AptSource`), never from text pasted together.
        """
        if not self.archives and self.components == ("main",):
            return [AptSource(uri=self.mirror, suite=self.suite, components=("main",)).uri]
        lines = [AptSource(uri=self.mirror, suite=self.suite, components=self.components)]
        if "updates" in self.archives:
            lines.append(
                AptSource(
                    uri=self.mirror, suite=f"{self.suite}-updates", components=self.components
                )
            )
        if "security" in self.archives:
            lines.append(
                AptSource(
                    uri=self.security_mirror,
                    suite=f"{self.suite}-security",
                    components=self.components,
                )
            )
        return [line.line() for line in lines]


def _security_mirror(mirror: str) -> str:
    """deb.debian.org/debian -> deb.debian.org/debian-security (Debian's layout)."""
    stripped = mirror.rstrip("/")
    return stripped + "-security" if stripped.endswith("/debian") else ""


def _names(
    value: object, key: str, fail: Fail, *, allowed: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        checked_text(item, _COMPONENT_RE) is not None for item in value
    ):
        raise fail(key, "must be a list of names")
    for item in value:
        if allowed is not None and item not in allowed:
            raise fail(key, f"{item!r} is not one of {', '.join(allowed)}")
    if len(set(value)) != len(value):
        raise fail(key, "lists a name twice")
    return tuple(value)

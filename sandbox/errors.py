"""hermetic's error tree (the sandbox's and the rebuilder's): one root, two branches.

:class:`UserError`: what was asked is wrong (a spec, an input, a request, a file given); the
same request gives the same error, so it is reported, never retried. :class:`InfrastructureError`:
the machine, a service or a host tool failed, not what was asked; trying again (later, or on
another worker) may succeed. Each message says what went wrong and what to do. The CLI
catches only :class:`Error`; anything else escaping is a bug.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing's: see sandbox/__init__.py
if TYPE_CHECKING:
    from collections.abc import Sequence


class Error(Exception):
    """Root of every error hermetic reports to a user (its text says what to do)."""


class UserError(Error):
    """What was asked is wrong: the same request fails the same way (not retried)."""


class InfrastructureError(Error):
    """The machine, a service or a tool failed, not the request: it may be retried."""


class SpecError(UserError):
    """A spec file is invalid; names the file, the key and the reason."""

    problems: tuple[str, ...] = ()  # each problem, when there are several

    def __init__(self, *, path: os.PathLike[str] | str, key: str, reason: str) -> None:
        self.path = os.fspath(path)
        self.key = key
        self.reason = reason
        super().__init__(f"{self.path}: {key}: {reason}")


class SpecProblems(SpecError):
    """Every problem of one spec, reported at once (the first one's key and reason are
    this error's own)."""

    def __init__(self, errors: Sequence[SpecError]) -> None:
        first = errors[0]
        super().__init__(path=first.path, key=first.key, reason=first.reason)
        self.errors = tuple(errors)
        self.problems = tuple(str(error) for error in errors)
        Exception.__init__(
            self,
            f"{first.path}: {len(errors)} problems:\n"
            + "\n".join(f"  {problem}" for problem in self.problems),
        )


class InputError(UserError):
    """A pinned input could not be fetched, or its digest does not match."""


class DigestMismatch(InputError):
    """Fetched bytes do not have the pinned digest; nothing was placed.

    ``actual`` is None when the digest must not be told: on a node, the actual digest of
    what the node read is knowledge the client did not send (it would turn a refused
    fetch of a node-local file into an oracle for its content).
    """

    def __init__(self, *, what: str, expected: str, actual: str | None) -> None:
        self.expected = expected
        self.actual = actual
        if actual is None:
            super().__init__(
                f"{what}: the content does not match the pinned sha256:{expected}; "
                "nothing was placed in the build directory"
            )
            return
        super().__init__(
            f"{what}: sha256 mismatch\n"
            f"  expected sha256:{expected}\n"
            f"  actual   sha256:{actual}\n"
            "Nothing was placed in the build directory. If the new content is the one you "
            "trust, pin its digest in the spec; otherwise the source has changed under you."
        )


class InputRefused(InputError):
    """A node's input policy refuses a URL before anything is fetched; names the rule."""

    def __init__(self, *, url: str, rule: str, reason: str) -> None:
        self.url = url
        self.rule = rule
        super().__init__(f"input {url} refused by the node's input policy ({rule}): {reason}")


class ImageError(UserError):
    """An image definition, lock or reference is unusable."""


class HostToolMissing(InfrastructureError):
    """A program hermetic needs is not installed."""

    def __init__(self, *, tool: str, package: str) -> None:
        self.tool = tool
        self.package = package
        super().__init__(
            f"'{tool}' is not installed; install the Debian package '{package}' "
            f"(apt-get install {package}) or run the set-up in the README"
        )


class HostToolFailed(InfrastructureError):
    """A host program exited with an error; its stderr is attached."""

    def __init__(self, *, argv: list[str], returncode: int | None, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        what = "timed out" if returncode is None else f"exited with {returncode}"
        tail = stderr.strip()[-4000:]
        super().__init__(f"{argv[0]} {what}: {' '.join(argv)}\n{tail}".rstrip())


class RootRefused(InfrastructureError):
    """hermetic was started as root without --allow-root (the host's set-up, not the
    request's: another worker may run it)."""

    def __init__(self) -> None:
        super().__init__(
            "refusing to run as root. A rootless container confines the build in a user "
            "namespace owned by an unprivileged user, so an escape lands as that user, not "
            "as root. Run hermetic as an unprivileged user (the set-up creates 'hermetic': "
            "runuser -u hermetic -- hermetic ...), or pass --allow-root "
            "(HERMETIC_ALLOW_ROOT=1) to accept the risk."
        )


class SandboxError(InfrastructureError):
    """The sandbox (podman, the runner) failed; not the build's fault."""


class BuildCancelled(Error):
    """A build was stopped on request (a check whose control build failed)."""


class OutputError(UserError):
    """The build's outputs are missing or unsafe to hand out."""

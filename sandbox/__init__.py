"""hermetic's sandbox: spec, planning, pinned inputs, images, the podman backend, outputs.

Nothing here prints; progress goes to a :class:`~sandbox.observer.BuildObserver`. The
package names its sandbox backends (:data:`BACKENDS`); each is imported only when
connected, so that ``import sandbox`` stays cheap (podman-py is loaded by a podman build).
"""

from __future__ import annotations

from sandbox.errors import Error, SandboxError

# Imports for type checkers only (they read any TYPE_CHECKING as true): the tracing
# helpers import this package first, and typing, collections and contextlib would be
# most of its cost to them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from sandbox.backend import SandboxBackend
    from sandbox.config import SandboxConfig

    BackendConnector = Callable[[SandboxConfig], AbstractContextManager[SandboxBackend]]

__all__ = ["BACKENDS", "Error", "connect_backend"]


def _podman(config: SandboxConfig) -> AbstractContextManager[SandboxBackend]:
    from sandbox.podman_backend import PodmanBackend  # imports podman-py only when used

    return PodmanBackend.connect(config)


def _fake(config: SandboxConfig) -> AbstractContextManager[SandboxBackend]:
    from sandbox.fake import FakeBackend

    return FakeBackend.connect(config)


BACKENDS: dict[str, BackendConnector] = {"podman": _podman, "fake": _fake}
"""Sandbox backends by name (HERMETIC_BACKEND)."""


def connect_backend(config: SandboxConfig) -> AbstractContextManager[SandboxBackend]:
    """Connect the configured backend for the duration of a ``with`` block.

    Raises:
        SandboxError: no backend has that name.
    """
    try:
        connector = BACKENDS[config.backend]
    except KeyError:
        raise SandboxError(
            f"unknown sandbox backend {config.backend!r} (HERMETIC_BACKEND); "
            f"known: {', '.join(sorted(BACKENDS))}"
        ) from None
    return connector(config)

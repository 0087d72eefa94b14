"""hermetic's sandbox: spec, planning, pinned inputs, images, the podman backend, outputs.

Nothing here prints; progress goes to a :class:`~sandbox.observer.BuildObserver`.
"""

from sandbox.errors import Error

__all__ = ["Error"]

"""The supervisor's native loop (``_loop.c``, ADR 0016), when it is built and current.

It is compiled when hermetic is installed (``.ci/loop_build.py``). A build of
another version of ``_loop.c`` than the one beside it (an editable install whose source
changed since) is never used, and neither is a missing one: the supervisor then runs its
Python loop, the reference, which records the same events more slowly.
``HERMETIC_SUPERVISOR_LOOP=python`` chooses the Python loop.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

SOURCE = Path(__file__).with_name("_loop.c")
CHOICE = "HERMETIC_SUPERVISOR_LOOP"


def source_digest() -> str:
    """The sha256 of the loop's C source, as the build records it."""
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def native_loop() -> ModuleType | None:
    """The compiled loop, or None: not built, built from another source, or not chosen."""
    if os.environ.get(CHOICE, "native") == "python":
        return None
    try:
        from sandbox.trace import _loop
    except ImportError:
        return None
    try:
        current = source_digest()
    except OSError:
        return None
    return _loop if getattr(_loop, "SOURCE_SHA256", None) == current else None

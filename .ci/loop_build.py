"""Hatch build hook (pyproject.toml), run by every install: compiles the supervisor's
native loop (``sandbox/trace/_loop.c``) beside its source, for a wheel and for an
editable install alike, with the source's sha256 in it (``sandbox.trace.native`` uses no
build of another source).

Without a C compiler or Python's headers it warns and builds nothing: the supervisor then
runs its Python loop, which records the same events more slowly.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
from setuptools import Distribution, Extension
from setuptools.command.build_ext import build_ext


class LoopBuildHook(BuildHookInterface):  # type: ignore[misc]
    """Builds ``sandbox/trace/_loop`` (an extension module) before the wheel."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        package = Path(self.root) / "sandbox" / "trace"
        source = package / "_loop.c"
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        extension = Extension(
            "sandbox.trace._loop",
            [str(source)],
            define_macros=[("HERMETIC_LOOP_SOURCE_SHA256", f'"{digest}"')],
            extra_compile_args=["-O2", "-Wall", "-Werror"],
        )
        with tempfile.TemporaryDirectory(prefix="hermetic-loop-") as scratch:
            command = build_ext(Distribution({"name": "hermetic", "ext_modules": [extension]}))
            command.build_lib = str(Path(scratch) / "lib")
            command.build_temp = str(Path(scratch) / "temp")
            try:
                command.ensure_finalized()
                command.run()
            except Exception as e:  # noqa: BLE001 - any compiler failure: the Python loop
                self.app.display_warning(
                    f"hermetic: the native supervisor loop was not built ({e}); tracing "
                    "uses the slower Python loop. Install gcc and python3-dev, then "
                    "reinstall."
                )
                return
            built = Path(command.get_ext_fullpath(extension.name))
            target = package / built.name
            # A new file renamed over the old one: a supervisor running on the old one
            # keeps its pages (a rewrite in place would change them under it). Other
            # Pythons' builds beside it stay.
            partial = target.with_name(target.name + ".partial")
            shutil.copyfile(built, partial)
            os.replace(partial, target)
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        build_data["force_include"][str(target)] = f"sandbox/trace/{target.name}"

"""The symlink-chain escape of issue 11, for tests: links that read as inside the tree but
lead out of it once the links on the way are followed."""

from __future__ import annotations

import os
from pathlib import Path

DEPTH = 20


def chain_script(target: str = "etc/passwd") -> str:
    """Shell that makes ``x0/…/x19/dd -> ../…`` (the tree root) and ``a -> x0/…/dd/../…/TARGET``
    in the current directory, and an ordinary inside link ``ok -> real.txt``."""
    dirs = "/".join(f"x{i}" for i in range(DEPTH))
    up = "/".join([".."] * DEPTH)
    return (
        f"mkdir -p {dirs} && ln -s {up} {dirs}/dd && ln -s {dirs}/dd/{up}/{target} a && "
        "echo real > real.txt && ln -s real.txt ok"
    )


def make_chain(root: Path, target: str = "etc/passwd") -> Path:
    """The same chain under ``root``; returns the escaping link ``root/a``."""
    dirs = Path(*[f"x{i}" for i in range(DEPTH)])
    (root / dirs).mkdir(parents=True, exist_ok=True)
    up = "/".join([".."] * DEPTH)
    os.symlink(up, root / dirs / "dd")
    os.symlink(f"{dirs.as_posix()}/dd/{up}/{target}", root / "a")
    (root / "real.txt").write_text("real\n")
    os.symlink("real.txt", root / "ok")
    return root / "a"


def lexically_inside(link: str, target: str) -> bool:
    """The old check (by spelling): what every defence here replaced."""
    parts = link.split("/")[:-1]
    for part in target.split("/"):
        if part == "..":
            if not parts:
                return False
            parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return not target.startswith("/")

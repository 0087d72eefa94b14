"""Who started what: an owner stamp on every container and scratch directory hermetic makes,
so that the next command can remove what a killed hermetic process left behind.

An owner is a process, named by boot id, pid and the kernel's start time of that pid: a pid
reused by another process, or the same pid after a reboot, is a different owner. Nothing is
ever recognized by a name pattern alone: only stamps hermetic wrote are read.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_LABEL = "dev.hermetic.owner"
"""The container label holding the owner stamp (``Owner.stamp``)."""

_STAMP_RE = re.compile(
    r"^(?P<boot>[0-9a-f]{32})\.(?P<pid>[1-9][0-9]{0,9})\.(?P<start>[0-9]{1,20})$"
)


@cache
def boot_id() -> str:
    """This boot's id (32 hex digits); it changes with every reboot."""
    text = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return text.replace("-", "")


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (None: no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19])  # field 22 of proc(5), counted from field 3


@dataclass(frozen=True, kw_only=True)
class Owner:
    """A process that owns containers and directories."""

    boot: str
    pid: int
    start: int

    @classmethod
    def current(cls) -> Owner:
        """This process."""
        pid = os.getpid()
        start = process_start(pid)
        assert start is not None  # we are running
        return cls(boot=boot_id(), pid=pid, start=start)

    @classmethod
    def parse(cls, stamp: str) -> Owner | None:
        """Read a stamp; None when it is not one hermetic writes."""
        match = _STAMP_RE.match(stamp)
        if match is None:
            return None
        return cls(boot=match["boot"], pid=int(match["pid"]), start=int(match["start"]))

    @property
    def stamp(self) -> str:
        """The owner as a label value and a file-name part (no '/' or spaces)."""
        return f"{self.boot}.{self.pid}.{self.start}"

    def alive(self) -> bool:
        """Whether this owner still runs (same boot, same pid, same start time)."""
        return self.boot == boot_id() and process_start(self.pid) == self.start


def stamped_prefix(kind: str) -> str:
    """A name prefix for a directory this process owns: ``<kind>-<stamp>-``."""
    return f"{kind}-{Owner.current().stamp}-"


def owner_in_name(name: str, kind: str) -> Owner | None:
    """The owner stamped into a name made with :func:`stamped_prefix` (None: not one).

    The prefix may follow a dot (``.out.partial-<stamp>-x``) or start the name.
    """
    match = re.search(rf"(?:^|\.){re.escape(kind)}-([0-9a-f.]+)-[^-/]*$", name)
    return Owner.parse(match[1]) if match else None


def reap_directories(parent: Path, kind: str, *, euid: int | None = None) -> list[Path]:
    """Remove the directories under ``parent`` stamped ``<kind>-<stamp>-`` whose owner is gone
    and that belong to this account (``euid``, default this process's): in a /tmp shared
    by several accounts, another's are not ours to remove or to warn about.

    Returns:
        What was removed.
    """
    from sandbox.workspace import remove_tree  # workspace imports this module

    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []
    me = os.geteuid() if euid is None else euid
    for entry in entries:
        owner = owner_in_name(entry.name, kind)
        if owner is None or owner.alive() or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            if entry.lstat().st_uid != me:  # another account's (a shared /tmp): not ours
                continue
        except OSError:
            continue
        log.info("removing %s, left by a hermetic process that no longer runs", entry)
        try:
            remove_tree(entry)
        except OSError as e:
            log.warning("could not remove %s: %s", entry, e)
            continue
        removed.append(entry)
    return removed

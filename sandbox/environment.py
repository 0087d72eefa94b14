"""The build's normalized environment, as data: what every build sees unless a
``hermetic check`` variation changes one thing on purpose."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# A user's PATH: programs are found at the first or second try, which matters when
# every failed exec of a PATH search is a traced call.
BUILD_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
PER_LINUX = 0x0000000
ADDR_NO_RANDOMIZE = 0x0040000
UNAME26 = 0x0020000


class SourceOrder(StrEnum):
    """The order in which the staged source is created (and so listed by readdir)."""

    SORTED = "sorted"
    REVERSED = "reversed"


@dataclass(frozen=True, kw_only=True)
class BuildEnvironment:
    """Everything about a build's surroundings that must not change its output.

    The defaults are the normalized environment of every ``hermetic build``.
    """

    build_dir: str = "/build"
    hostname: str = "hermetic"
    user: str = "builder"
    uid: int = 1000
    gid: int = 1000
    home: str = "/home/builder"
    lang: str = "C.UTF-8"
    lc_all: str | None = None
    tz: str = "UTC"
    umask: str = "0022"
    extra_env: tuple[tuple[str, str], ...] = ()
    source_order: SourceOrder = SourceOrder.SORTED
    clock_offset: str | None = None  # libfaketime offset, e.g. "+373d"
    cpus: str | None = None  # taskset CPU list, None: every CPU
    aslr: bool = True
    uname26: bool = False  # report a 2.6 kernel release (personality UNAME26)

    @property
    def personality(self) -> int | None:
        """The personality the build runs under, None when it is the default."""
        if self.aslr and not self.uname26:
            return None
        return (0 if self.aslr else ADDR_NO_RANDOMIZE) | (UNAME26 if self.uname26 else 0)

    def variables(
        self, *, source_date_epoch: int, spec_env: tuple[tuple[str, str], ...]
    ) -> tuple[tuple[str, str], ...]:
        """The build's whole environment: fixed values, variations, then the spec's."""
        env = {
            "HOME": self.home,
            "LANG": self.lang,
            "LOGNAME": self.user,
            "PATH": BUILD_PATH,
            "SOURCE_DATE_EPOCH": str(source_date_epoch),
            "TZ": self.tz,
            "USER": self.user,
        }
        if self.lc_all is not None:
            env["LC_ALL"] = self.lc_all
        env.update(self.extra_env)
        env.update(spec_env)
        return tuple(sorted(env.items()))


NORMALIZED = BuildEnvironment()

"""What ``hermetic check`` varies between builds: one ordered registry of small pure
functions over the build environment, named as in reprotest.

Every random choice comes from a ``random.Random`` seeded with the check's seed and
the variation's name, so a variation takes the same value in every build of a check
(whatever else is varied with it), and ``--seed`` repeats a check exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from rebuilder.errors import UserError
from sandbox.environment import BuildEnvironment, SourceOrder


@dataclass(frozen=True, kw_only=True)
class VariationContext:
    """What the host and the image offer; some variations need it."""

    locales: tuple[str, ...] | None  # locales the image has; None when unknown
    cpus: int  # CPUs the build could use
    faketime: bool  # libfaketime is there to shift the clock


Vary = Callable[[BuildEnvironment, random.Random, VariationContext], BuildEnvironment]


@dataclass(frozen=True, kw_only=True)
class Variation:
    """One thing that must not change a build's output."""

    name: str
    description: str
    vary: Vary
    needs: Callable[[VariationContext], str | None] = lambda context: None  # why not here
    # Values this variation sets that a build may copy into its outputs (evidence).
    marks: Callable[[BuildEnvironment], tuple[str, ...]] = lambda environment: ()

    def apply(
        self, environment: BuildEnvironment, *, seed: int, context: VariationContext
    ) -> BuildEnvironment:
        rng = random.Random(f"{seed}:{self.name}")  # noqa: S311 - choices, not secrets
        return self.vary(environment, rng, context)


def _token(rng: random.Random) -> str:
    return f"{rng.getrandbits(24):06x}"


def _locale(context: VariationContext) -> str | None:
    candidates = [name for name in context.locales or () if not name.startswith("C.")]
    if context.locales is None:
        return "fr_CH.UTF-8"
    return sorted(candidates)[-1] if candidates else None


# Each function changes one thing; rng is the variation's own seeded generator.
def _environment(
    env: BuildEnvironment, rng: random.Random, ctx: VariationContext
) -> BuildEnvironment:
    name, value = f"HERMETIC_VARIATION_{_token(rng).upper()}", _token(rng)
    return replace(env, extra_env=(*env.extra_env, (name, value)))


def _build_path(
    env: BuildEnvironment, rng: random.Random, ctx: VariationContext
) -> BuildEnvironment:
    return replace(env, build_dir=f"/var/build-{_token(rng)}/src")


def _hostname(env: BuildEnvironment, rng: random.Random, ctx: VariationContext) -> BuildEnvironment:
    return replace(env, hostname=f"variation-{_token(rng)}")


def _user_group(
    env: BuildEnvironment, rng: random.Random, ctx: VariationContext
) -> BuildEnvironment:
    number = 2000 + rng.randrange(1000)
    return replace(env, uid=number, gid=number, user=str(number))


def _home(env: BuildEnvironment, rng: random.Random, ctx: VariationContext) -> BuildEnvironment:
    return replace(env, home=f"/home/variation-{_token(rng)}")


def _locales(env: BuildEnvironment, rng: random.Random, ctx: VariationContext) -> BuildEnvironment:
    name = _locale(ctx) or env.lang
    return replace(env, lang=name, lc_all=name)


def _timezone(env: BuildEnvironment, rng: random.Random, ctx: VariationContext) -> BuildEnvironment:
    return replace(env, tz="<+14>-14")  # POSIX form: works without tzdata


def _umask(env: BuildEnvironment, rng: random.Random, ctx: VariationContext) -> BuildEnvironment:
    return replace(env, umask="0002")


def _fileordering(
    env: BuildEnvironment, rng: random.Random, ctx: VariationContext
) -> BuildEnvironment:
    return replace(env, source_order=SourceOrder.REVERSED)


def _time(env: BuildEnvironment, rng: random.Random, ctx: VariationContext) -> BuildEnvironment:
    return replace(env, clock_offset="+373d")


def _num_cpus(env: BuildEnvironment, rng: random.Random, ctx: VariationContext) -> BuildEnvironment:
    return replace(env, cpus="0")


def _aslr(env: BuildEnvironment, rng: random.Random, ctx: VariationContext) -> BuildEnvironment:
    return replace(env, aslr=False)


def _kernel(env: BuildEnvironment, rng: random.Random, ctx: VariationContext) -> BuildEnvironment:
    return replace(env, uname26=True)


def _needs_locale(ctx: VariationContext) -> str | None:
    return None if _locale(ctx) else "the image has no locale but C.UTF-8"


def _needs_faketime(ctx: VariationContext) -> str | None:
    return None if ctx.faketime else "libfaketime is not installed (package libfaketime)"


def _needs_cpus(ctx: VariationContext) -> str | None:
    return None if ctx.cpus > 1 else "this machine has a single CPU"


VARIATIONS: tuple[Variation, ...] = (
    Variation(
        name="environment",
        description="an extra environment variable",
        vary=_environment,
        marks=lambda env: tuple(part for item in env.extra_env for part in item),
    ),
    Variation(
        name="build_path",
        description="another build directory",
        vary=_build_path,
        marks=lambda env: (env.build_dir,),
    ),
    Variation(
        name="hostname",
        description="another host name",
        vary=_hostname,
        marks=lambda env: (env.hostname,),
    ),
    Variation(
        name="user_group",
        description="another uid, gid and user name",
        vary=_user_group,
        marks=lambda env: (env.user,),
    ),
    Variation(name="home", description="another HOME", vary=_home, marks=lambda env: (env.home,)),
    Variation(
        name="locales",
        description="another locale (LANG, LC_ALL): collation changes",
        vary=_locales,
        needs=_needs_locale,
        marks=lambda env: (env.lang,),
    ),
    Variation(
        name="timezone",
        description="TZ 14 hours east of UTC",
        vary=_timezone,
        marks=lambda env: (env.tz,),
    ),
    Variation(name="umask", description="umask 0002 instead of 0022", vary=_umask),
    Variation(
        name="fileordering",
        description="the source's directory entries in reverse order",
        vary=_fileordering,
    ),
    Variation(
        name="time",
        description="a clock 373 days ahead (libfaketime; dynamic programs)",
        vary=_time,
        needs=_needs_faketime,
    ),
    Variation(
        name="num_cpus",
        description="one CPU visible to nproc",
        vary=_num_cpus,
        needs=_needs_cpus,
    ),
    Variation(name="aslr", description="address space randomization off", vary=_aslr),
    Variation(name="kernel", description="uname reports a 2.6 kernel", vary=_kernel),
)
BY_NAME = {variation.name: variation for variation in VARIATIONS}
NAMES = tuple(BY_NAME)


def parse_vary(text: str | None) -> tuple[str, ...]:
    """The variations a ``--vary`` value selects, in registry order.

    ``-name`` removes one from the default set (every variation) and keeps the rest;
    ``+name`` adds one; ``a,b`` without signs sets them exactly. Signed and unsigned
    names cannot be mixed.

    Raises:
        Error: an unknown name, a mix, or an empty selection.
    """
    if text is None or not text.strip():
        return NAMES
    items = [item.strip() for item in text.split(",") if item.strip()]
    signed = [item[0] in "+-" for item in items]
    if any(signed) and not all(signed):
        raise UserError(
            f"--vary={text}: use either +name/-name to change the default set, "
            "or a plain list to set it exactly, not both"
        )
    names = [item.lstrip("+-") for item in items]
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise UserError(
            f"--vary: unknown variation {', '.join(unknown)}; known: {', '.join(NAMES)}"
        )
    if all(signed):
        chosen = set(NAMES)
        for item in items:
            (chosen.discard if item[0] == "-" else chosen.add)(item[1:])
    else:
        chosen = set(names)
    if not chosen:
        raise UserError(f"--vary={text} leaves nothing to vary")
    return tuple(name for name in NAMES if name in chosen)


def vary(
    names: tuple[str, ...],
    *,
    seed: int,
    context: VariationContext,
    base: BuildEnvironment,
) -> BuildEnvironment:
    """The environment with every named variation applied, in registry order (pure)."""
    environment = base
    for name in names:
        environment = BY_NAME[name].apply(environment, seed=seed, context=context)
    return environment


def unavailable(names: tuple[str, ...], context: VariationContext) -> dict[str, str]:
    """Variations that cannot apply here, with the reason."""
    reasons = {}
    for name in names:
        reason = BY_NAME[name].needs(context)
        if reason is not None:
            reasons[name] = reason
    return reasons

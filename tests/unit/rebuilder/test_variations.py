"""Variations: --vary parsing, purity, seeding, and what each one changes."""

from __future__ import annotations

import dataclasses

import pytest

from rebuilder.errors import Error
from rebuilder.variations import BY_NAME, NAMES, VariationContext, parse_vary, unavailable, vary
from sandbox.environment import NORMALIZED, SourceOrder
from tests.unit.rebuilder.conftest import CONTEXT

REPROTEST_NAMES = [
    "environment",
    "build_path",
    "hostname",
    "user_group",
    "home",
    "locales",
    "timezone",
    "umask",
    "fileordering",
    "time",
    "num_cpus",
    "aslr",
    "kernel",
]


def test_the_registry_has_reprotests_names_in_its_order() -> None:
    assert list(NAMES) == REPROTEST_NAMES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, NAMES),
        ("", NAMES),
        ("-build_path", tuple(n for n in NAMES if n != "build_path")),
        ("-build_path,-time", tuple(n for n in NAMES if n not in ("build_path", "time"))),
        ("+time", NAMES),
        ("-time,+time", NAMES),
        ("hostname", ("hostname",)),
        ("umask, hostname", ("hostname", "umask")),  # registry order, spaces allowed
        ("hostname,hostname", ("hostname",)),
    ],
)
def test_parse_vary(text: str | None, expected: tuple[str, ...]) -> None:
    assert parse_vary(text) == expected


def test_minus_keeps_every_other_variation() -> None:
    # reprotest's footgun: there, a leading minus reset the set to the removal alone
    chosen = parse_vary("-build_path")
    assert "build_path" not in chosen
    assert len(chosen) == len(NAMES) - 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hostnme", "unknown variation hostnme"),
        ("-hostname,umask", "not both"),
        (",".join(f"-{n}" for n in NAMES), "leaves nothing to vary"),
    ],
)
def test_parse_vary_refuses(text: str, message: str) -> None:
    with pytest.raises(Error, match=message):
        parse_vary(text)


@pytest.mark.parametrize("name", NAMES)
def test_each_variation_changes_the_environment_and_nothing_else(name: str) -> None:
    varied = BY_NAME[name].apply(NORMALIZED, seed=7, context=CONTEXT)
    assert varied != NORMALIZED
    changed = {
        field.name
        for field in dataclasses.fields(NORMALIZED)
        if getattr(varied, field.name) != getattr(NORMALIZED, field.name)
    }
    expected = {
        "environment": {"extra_env"},
        "build_path": {"build_dir"},
        "hostname": {"hostname"},
        "user_group": {"uid", "gid", "user"},
        "home": {"home"},
        "locales": {"lang", "lc_all"},
        "timezone": {"tz"},
        "umask": {"umask"},
        "fileordering": {"source_order"},
        "time": {"clock_offset"},
        "num_cpus": {"cpus"},
        "aslr": {"aslr"},
        "kernel": {"uname26"},
    }
    assert changed == expected[name]


def test_variations_are_pure_and_seeded() -> None:
    first = vary(NAMES, seed=42, context=CONTEXT, base=NORMALIZED)
    again = vary(NAMES, seed=42, context=CONTEXT, base=NORMALIZED)
    other = vary(NAMES, seed=43, context=CONTEXT, base=NORMALIZED)
    assert first == again
    assert first.build_dir != other.build_dir and first.hostname != other.hostname
    assert NORMALIZED.build_dir == "/build"  # the base is untouched


def test_a_variation_takes_the_same_value_alone_and_in_company() -> None:
    # the culprit search relies on it: a half varies exactly what the experiment did
    alone = vary(("build_path",), seed=5, context=CONTEXT, base=NORMALIZED)
    together = vary(NAMES, seed=5, context=CONTEXT, base=NORMALIZED)
    assert alone.build_dir == together.build_dir


def test_every_variation_applied() -> None:
    varied = vary(NAMES, seed=1, context=CONTEXT, base=NORMALIZED)
    assert varied.lang == varied.lc_all == "fr_CH.UTF-8"
    assert varied.source_order is SourceOrder.REVERSED
    assert varied.umask == "0002" and varied.cpus == "0" and varied.clock_offset == "+373d"
    assert varied.personality is not None
    assert varied.uid != NORMALIZED.uid and varied.build_dir.startswith("/var/build-")


@pytest.mark.parametrize(
    ("context", "missing"),
    [
        (CONTEXT, {}),
        (dataclasses.replace(CONTEXT, faketime=False), {"time": "libfaketime"}),
        (dataclasses.replace(CONTEXT, cpus=1), {"num_cpus": "single CPU"}),
        (dataclasses.replace(CONTEXT, locales=("C.UTF-8",)), {"locales": "no locale"}),
    ],
)
def test_unavailable_says_why(context: VariationContext, missing: dict[str, str]) -> None:
    reasons = unavailable(NAMES, context)
    assert set(reasons) == set(missing)
    for name, fragment in missing.items():
        assert fragment in reasons[name]

"""Group testing for culprits against an oracle that knows the truth."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from rebuilder.culprits import find_culprits
from rebuilder.variations import NAMES


class Oracle:
    """A build that differs when any culprit set is wholly varied; counts builds."""

    def __init__(self, culprits: Sequence[tuple[str, ...]]) -> None:
        self.culprits = [set(group) for group in culprits]
        self.builds = 0
        self.batches = 0

    def __call__(self, sets: Sequence[tuple[str, ...]]) -> list[bool]:
        self.builds += len(sets)
        self.batches += 1
        return [any(group <= set(s) for group in self.culprits) for s in sets]


@pytest.mark.parametrize("culprit", NAMES)
def test_one_culprit_in_fewer_builds_than_one_per_variation(culprit: str) -> None:
    oracle = Oracle([(culprit,)])
    assert find_culprits(NAMES, oracle) == [culprit]
    assert oracle.builds < len(NAMES)


@pytest.mark.parametrize("pair", list(itertools.combinations(NAMES, 2)))
def test_two_culprits(pair: tuple[str, str]) -> None:
    oracle = Oracle([(pair[0],), (pair[1],)])
    assert find_culprits(NAMES, oracle) == list(pair)


@pytest.mark.parametrize(
    "together",
    [
        ("build_path", "timezone"),  # different halves at the first split
        ("environment", "build_path"),  # the same half, split later
        ("hostname", "umask", "kernel"),
    ],
)
def test_an_interaction_is_narrowed_to_its_members(together: tuple[str, ...]) -> None:
    oracle = Oracle([together])
    assert find_culprits(NAMES, oracle) == ["+".join(together)]


def test_an_interaction_beside_a_single_culprit() -> None:
    oracle = Oracle([("hostname", "aslr"), ("umask",)])
    assert find_culprits(NAMES, oracle) == ["hostname+aslr", "umask"]


def test_levels_are_batched() -> None:
    oracle = Oracle([("umask",)])
    find_culprits(NAMES, oracle)
    # ceil(log2(13)) levels, each one batch built side by side, then the confirmation
    assert oracle.batches == 5


def test_a_culprit_search_ends_with_the_rest_reproducing() -> None:
    oracle = Oracle([("umask",)])
    sets: list[tuple[str, ...]] = []

    def recording(batch: Sequence[tuple[str, ...]]) -> list[bool]:
        sets.extend(batch)
        return oracle(batch)

    find_culprits(NAMES, recording)
    assert sets[-1] == tuple(n for n in NAMES if n != "umask")


def test_known_reproducing_sets_are_not_built_again() -> None:
    rest = tuple(n for n in NAMES[:4] if n != "hostname")
    oracle = Oracle([("hostname",)])
    find_culprits(NAMES[:4], oracle, reproducing=[rest])
    assert oracle.builds == 4  # two levels of two halves, no confirmation


def test_a_single_variation_needs_no_build() -> None:
    oracle = Oracle([("umask",)])
    assert find_culprits(("umask",), oracle) == ["umask"]
    assert oracle.builds == 0


@pytest.mark.parametrize(
    ("truth", "suspects", "expected", "batches"),
    [
        # both suspects guilty, the rest reproduces: one batch, no confirmation
        ([("build_path",), ("umask",)], ("build_path", "umask"), ["build_path", "umask"], 1),
        # a suspect is innocent: the rest is searched as usual
        ([("hostname",)], ("build_path",), ["hostname"], 6),  # 4 levels + confirmation
        # a guilty suspect and a culprit in the rest
        ([("build_path",), ("kernel",)], ("build_path",), ["build_path", "kernel"], 6),
        # no suspect alone and not the rest: an interaction
        ([("build_path", "umask")], ("build_path",), ["build_path+umask"], 8),
    ],
)
def test_suspects_first(
    truth: list[tuple[str, ...]], suspects: tuple[str, ...], expected: list[str], batches: int
) -> None:
    oracle = Oracle(truth)
    assert find_culprits(NAMES, oracle, suspects=suspects) == expected
    assert oracle.batches == batches

"""Finding which variations break reproducibility, in fewer builds than one each.

Group testing by halves, level by level: every set of variations known to make a
build differ is split in two, and both halves are built side by side. A half that
still differs is split again; a set whose halves both reproduce needs its members
together (an interaction) and is reported as one culprit ``a+b``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Differs = Callable[[Sequence[tuple[str, ...]]], list[bool]]
"""Builds each set of variations (side by side) and says which differ from the control."""


def find_culprits(varied: tuple[str, ...], differs: Differs) -> list[str]:
    """Culprits among ``varied``, a set known to make the build differ.

    Args:
        varied: the variations of the differing experiment.
        differs: builds batches of variation sets.

    Returns:
        Culprit names (``a+b`` for variations that only break together), in order.
    """
    frontier = [varied]
    found: list[tuple[str, ...]] = []
    while frontier:
        splittable = [group for group in frontier if len(group) > 1]
        found.extend(group for group in frontier if len(group) == 1)
        if not splittable:
            break
        halves = [part for group in splittable for part in _halves(group)]
        results = differs(halves)
        frontier = []
        for index, group in enumerate(splittable):
            first, second = results[2 * index], results[2 * index + 1]
            if not first and not second:
                found.append(group)  # only together
            if first:
                frontier.append(halves[2 * index])
            if second:
                frontier.append(halves[2 * index + 1])
    order = {name: index for index, name in enumerate(varied)}
    return ["+".join(group) for group in sorted(found, key=lambda g: order[g[0]])]


def _halves(group: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    middle = len(group) // 2
    return group[:middle], group[middle:]

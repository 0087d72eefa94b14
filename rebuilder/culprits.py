"""Finding which variations break reproducibility, in fewer builds than one each.

Group testing by halves, level by level: every set of variations known to make a
build differ is split in two, and both halves are built side by side. A half that
still differs is split again; a set whose halves both reproduce needs members of
both together (an interaction): it is narrowed to a minimal such set, reported as
one culprit ``a+b``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

Differs = Callable[[Sequence[tuple[str, ...]]], list[bool]]
"""Builds each set of variations (side by side) and says which differ from the control."""


def find_culprits(
    varied: tuple[str, ...],
    differs: Differs,
    *,
    suspects: tuple[str, ...] = (),
    reproducing: Iterable[tuple[str, ...]] = (),
) -> list[str]:
    """Culprits among ``varied``, a set known to make the build differ.

    When the search ends, everything varied but the culprits is built once more
    (unless already known to reproduce): a culprit hidden behind another, or an
    interaction across halves that a single culprit masked, is found that way.

    Args:
        varied: the variations of the differing experiment.
        differs: builds batches of variation sets.
        suspects: variations the evidence points at: the first batch builds each
            alone, beside everything else together, and the search goes on there.
        reproducing: sets already built that reproduced the control.

    Returns:
        Culprit names (``a+b`` for variations that only break together), in order.
    """
    found = _search(varied, differs, set(reproducing), suspects)
    return [culprit_name(group) for group in _order_groups(varied, found)]


def culprit_name(group: tuple[str, ...]) -> str:
    return "+".join(group)


def _order_groups(
    varied: tuple[str, ...], groups: Iterable[tuple[str, ...]]
) -> list[tuple[str, ...]]:
    order = {name: index for index, name in enumerate(varied)}
    return sorted(groups, key=lambda group: order[group[0]])


def _search(
    varied: tuple[str, ...],
    differs: Differs,
    reproducing: set[tuple[str, ...]],
    suspects: tuple[str, ...] = (),
) -> list[tuple[str, ...]]:
    frontier = [varied]
    found: list[tuple[str, ...]] = []
    if suspects:
        rest = tuple(name for name in varied if name not in suspects)
        groups = [(name,) for name in suspects] + ([rest] if rest else [])
        results = differs(groups)
        reproducing.update(group for group, d in zip(groups, results, strict=True) if not d)
        found = [group for group, d in zip(groups[: len(suspects)], results, strict=False) if d]
        frontier = [rest] if rest and results[-1] else []
        if not found and not frontier:  # nothing alone: members only break together
            found.append(_interaction(varied, differs))
    while frontier:
        splittable = [group for group in frontier if len(group) > 1]
        found.extend(group for group in frontier if len(group) == 1)
        if not splittable:
            break
        halves = [part for group in splittable for part in _halves(group)]
        results = differs(halves)
        reproducing.update(half for half, d in zip(halves, results, strict=True) if not d)
        frontier = []
        for index, group in enumerate(splittable):
            first, second = results[2 * index], results[2 * index + 1]
            if not first and not second:
                found.append(_interaction(group, differs))
            if first:
                frontier.append(halves[2 * index])
            if second:
                frontier.append(halves[2 * index + 1])
    members = {name for group in found for name in group}
    rest = tuple(name for name in varied if name not in members)
    if rest and rest not in reproducing:
        if differs([rest])[0]:
            found.extend(_search(rest, differs, reproducing))
        else:
            reproducing.add(rest)
    return found


def _interaction(group: tuple[str, ...], differs: Differs) -> tuple[str, ...]:
    """A minimal subset of ``group`` that still differs, when no half does alone."""
    first, second = _halves(group)
    needed = _needed(first, second, differs)
    return _order(group, needed + _needed(second, needed, differs))


def _needed(part: tuple[str, ...], company: tuple[str, ...], differs: Differs) -> tuple[str, ...]:
    """A minimal subset of ``part`` that differs together with ``company``."""
    if len(part) == 1:
        return part
    first, second = _halves(part)
    with_first, with_second = differs([first + company, second + company])
    if with_first:
        return _needed(first, company, differs)
    if with_second:
        return _needed(second, company, differs)
    needed = _needed(first, second + company, differs)
    return needed + _needed(second, needed + company, differs)


def _order(group: tuple[str, ...], names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in group if name in names)


def _halves(group: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    middle = len(group) // 2
    return group[:middle], group[middle:]

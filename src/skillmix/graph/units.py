"""Graph units: the short training runs a learned graph needs, named by skill slugs.

``slug_i`` trains on skill i alone, ``slug_i__slug_j`` (i before j in skill order) on an equal
mix of i and j. Dependency-free: the Snakefile builds the graph DAG from this module at parse time.
"""

from __future__ import annotations

import re

from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.slugs import SLUG_PATTERN

METHODS = ("brute_force", "linear", "gradient", "given")
LEARNED_FROM_RUNS = ("brute_force", "linear")
PAIR_SEPARATOR = "__"
UNIT_PATTERN = rf"{SLUG_PATTERN}(?:{PAIR_SEPARATOR}{SLUG_PATTERN})?"
"""Regex for a unit name: ``SLUG`` or ``SLUG__SLUG`` (no capturing groups; for wildcard_constraints)."""

_SLUG_RE = re.compile(SLUG_PATTERN)
_UNIT_RE = re.compile(UNIT_PATTERN)
_MAX_NAMED = 8  # names listed in an error message


def named(values: list[str]) -> str:
    """Up to eight values for an error message, and how many more there are."""
    shown = ", ".join(repr(v) for v in values[:_MAX_NAMED])
    more = len(values) - _MAX_NAMED
    return f"{shown} (and {more} more)" if more > 0 else shown


def check_method(method: str) -> None:
    """Refuse an unknown graph method, naming the key."""
    if method not in METHODS:
        raise SkillmixInputError(f"graph.method: got {method!r}, expected one of {', '.join(METHODS)}")


def check_slugs(slugs: list[str]) -> None:
    """Refuse slugs that are not slugs, contain the pair separator, or repeat."""
    for slug in slugs:
        if not isinstance(slug, str) or not _SLUG_RE.fullmatch(slug) or PAIR_SEPARATOR in slug:
            raise SkillmixInputError(
                f"skill slug {slug!r}: expected a string matching {SLUG_PATTERN} without '__'"
            )
    seen: set[str] = set()
    duplicates = sorted({slug for slug in slugs if slug in seen or seen.add(slug)})
    if duplicates:
        raise SkillmixInputError(f"skill slugs: {named(duplicates)} appear more than once")


def graph_units(method: str, slugs: list[str]) -> list[str]:
    """Return the training units a graph method needs, in a fixed order.

    ``brute_force``: the k single units (``slug``) then the k(k-1)/2 pair units
    (``slug_i__slug_j``, i < j in the given order); ``linear``: the k single units; ``gradient``
    and ``given``: none.
    """
    check_method(method)
    slugs = list(slugs)
    check_slugs(slugs)
    if method not in LEARNED_FROM_RUNS:
        return []
    units = list(slugs)
    if method == "brute_force":
        units += [
            f"{slugs[i]}{PAIR_SEPARATOR}{slugs[j]}"
            for i in range(len(slugs))
            for j in range(i + 1, len(slugs))
        ]
    return units


def pair_unit(slug_i: str, slug_j: str) -> str:
    """Return the name of the pair unit of two skills, ``slug_i`` first (i before j in skill order)."""
    return f"{slug_i}{PAIR_SEPARATOR}{slug_j}"


def unit_slugs(unit: str) -> list[str]:
    """Return the skill slugs a unit trains on: ``["a"]`` for ``"a"``, ``["a", "b"]`` for ``"a__b"``."""
    if not isinstance(unit, str) or not _UNIT_RE.fullmatch(unit):
        raise SkillmixInputError(f"graph unit {unit!r}: expected SLUG or SLUG__SLUG matching {UNIT_PATTERN}")
    parts = unit.split(PAIR_SEPARATOR)
    if len(parts) == 2 and parts[0] == parts[1]:
        raise SkillmixInputError(f"graph unit {unit!r}: a pair unit needs two different skills")
    return parts


# --------------------------------------------------------------------------------------------
# Options

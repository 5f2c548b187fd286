"""Tests of graph units: the short training runs a learned graph needs, named by skill slugs."""

from __future__ import annotations

import re

import pytest

from skillmix.graph.units import METHODS, UNIT_PATTERN, graph_units, unit_slugs
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.slugs import skill_slug

# Three skills with awkward names.
SKILLS = ["skill A", "b/c", "ü"]
SLUGS = [skill_slug(name) for name in SKILLS]
a, b, c = SLUGS


@pytest.mark.parametrize("k", range(1, 7))
def test_graph_units_counts_and_pattern(k: int) -> None:
    slugs = [f"s{i}" if i % 2 else f"skill_{i}-x" for i in range(k)]
    brute = graph_units("brute_force", slugs)
    linear = graph_units("linear", slugs)
    assert len(brute) == k + k * (k - 1) // 2 == len(set(brute))
    assert linear == slugs
    assert brute[:k] == slugs
    assert graph_units("given", slugs) == []
    for unit in brute:
        assert re.fullmatch(UNIT_PATTERN, unit)
        parts = unit_slugs(unit)
        assert "__".join(parts) == unit
        assert all(part in slugs for part in parts)
    pairs = [unit_slugs(unit) for unit in brute[k:]]
    assert all(slugs.index(x) < slugs.index(y) for x, y in pairs)  # i before j in skill order


def test_graph_units_real_slugs_and_pair_naming() -> None:
    units = graph_units("brute_force", SLUGS)
    assert units == [a, b, c, f"{a}__{b}", f"{a}__{c}", f"{b}__{c}"]
    assert all(re.fullmatch(UNIT_PATTERN, u) for u in units)
    reordered = graph_units("brute_force", [c, a, b])
    assert f"{c}__{a}" in reordered and f"{a}__{c}" not in reordered  # only one name per pair
    assert unit_slugs(a) == [a]
    assert unit_slugs(f"{a}__{b}") == [a, b]


def test_unit_pattern_rejects_bad_units() -> None:
    for bad in ["a__b__c", "a___b", "A", "a b", "", "a__", "__a", "-a"]:
        assert not re.fullmatch(UNIT_PATTERN, bad), bad
        with pytest.raises(SkillmixInputError):
            unit_slugs(bad)
    with pytest.raises(SkillmixInputError, match="two different"):
        unit_slugs("a__a")


def test_graph_units_errors() -> None:
    with pytest.raises(SkillmixInputError, match=r"graph\.method.*brute_force, linear, gradient, given"):
        graph_units("pairwise", ["a"])
    with pytest.raises(SkillmixInputError, match="more than once"):
        graph_units("linear", ["a", "a"])
    with pytest.raises(SkillmixInputError, match="slug"):
        graph_units("linear", ["Not A Slug"])
    assert METHODS == ("brute_force", "linear", "gradient", "given")
    assert graph_units("gradient", ["a", "b"]) == []  # no training runs

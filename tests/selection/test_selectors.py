"""The selector contract: every registered selection method is a Selector built from the `select`
block, and LESS and random through the registry select what their functions select."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest

from skillmix.data.sources import COLUMNS
from skillmix.data.sources.lego import generate_lego
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.registry import SELECTIONS
from skillmix.selection.less import select_examples
from skillmix.selection.random import random_examples
from skillmix.selection.selector import Selector, selection_size


def settings(**selection) -> dict:
    return complete("select", {"selection": selection})


def pool_and_scores(n_vars: int = 3, per_skill: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    pool = generate_lego(n_vars, per_skill, 0).examples[COLUMNS]
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"id": pool["id"], "score": rng.standard_normal(len(pool)).astype(np.float32)})
    for skill in dict.fromkeys(pool["skill"]):
        scores[f"score_{skill}"] = rng.standard_normal(len(pool)).astype(np.float32)
    scores.loc[3, "score"] = -np.inf  # never taken
    return pool, scores


@pytest.mark.parametrize("name", list(SELECTIONS))
def test_every_registered_selection_is_a_selector(name) -> None:
    cls = SELECTIONS[name].load()
    assert issubclass(cls, Selector) and not inspect.isabstract(cls)
    assert cls.name == name and cls.__module__ == SELECTIONS[name].module
    params = list(inspect.signature(cls.select).parameters)
    assert params == ["self", "pool", "size", "scores", "target"]
    selector = cls(settings())
    assert selector.needs == SELECTIONS[name].needs
    assert selector.size(1000) == selection_size(1000, None, 0.05) == 50
    assert cls(settings(k=7)).size(1000) == 7


@pytest.mark.parametrize("balance", ["none", "answer", "skill"])
@pytest.mark.parametrize("k", [None, 4, 40])
def test_less_through_the_registry_is_select_examples(balance, k) -> None:
    pool, scores = pool_and_scores()
    target = pool.iloc[:5]
    less = SELECTIONS["less"].load()(settings(k=k, fraction=0.1, balance=balance))
    size = less.size(len(pool))
    assert size == (3 if k is None else min(k, len(pool)))
    chosen = less.select(pool, size, scores=scores, target=target)
    expected = select_examples(pool, scores, size, balance=balance, target=target)
    pd.testing.assert_frame_equal(chosen, expected, check_exact=True)
    assert list(chosen.columns[:2]) == ["rank", "score"] and chosen["rank"].tolist() == list(
        range(1, len(chosen) + 1)
    )
    if balance == "none":  # the top scores, best first, the -inf row never
        top = scores["score"].to_numpy()
        assert (
            chosen["id"].tolist()
            == scores["id"].iloc[np.argsort(-top, kind="stable")[: len(chosen)]].tolist()
        )
        assert pool["id"].iloc[3] not in set(chosen["id"])


def test_less_needs_the_scores() -> None:
    pool, _ = pool_and_scores()
    less = SELECTIONS["less"].load()(settings())
    with pytest.raises(SkillmixInputError, match="less: needs the candidates' scores"):
        less.select(pool, 3)


@pytest.mark.parametrize("seed", [0, 3])
def test_random_through_the_registry_is_random_examples(seed) -> None:
    pool, scores = pool_and_scores()
    random = SELECTIONS["random"].load()(settings(fraction=0.2, seed=seed))
    size = random.size(len(pool))
    chosen = random.select(pool, size)
    pd.testing.assert_frame_equal(chosen, random_examples(pool, size, seed), check_exact=True)
    # the same draw as ever: one choice without replacement from the generator seeded [seed, 5]
    picked = np.sort(np.random.default_rng([seed, 5]).choice(len(pool), size=size, replace=False))
    assert chosen["id"].tolist() == pool["id"].iloc[picked].tolist()
    assert list(chosen.columns) == ["rank", *pool.columns]
    # scores and a target change nothing: random needs neither
    with_all = random.select(pool, size, scores=scores, target=pool.iloc[:2])
    pd.testing.assert_frame_equal(with_all, chosen, check_exact=True)

"""What every selection method is: a :class:`Selector` that takes a number of examples from the
candidate pool, and the size of a selection.

A method is one module with a `Selector` subclass, registered in
:data:`skillmix.infra.registry.SELECTIONS` (its name, module, class and its `needs`). A job gets
the class with ``SELECTIONS[name].load()``, constructs it from the completed `select` config
block and calls :meth:`Selector.select` with the pool, the size (:meth:`Selector.size`) and what
the method's `needs` bring from the DAG:

- ``scores``: a frame with one row per pool example (column ``id`` in pool order) and the
  method's score columns, made by the method's own scoring stage before selection: LESS's
  influence scores from the gradient datastore (``datastore``); a method that compares hidden
  states (``hidden_states``) its similarities. Methods with neither need no scores.
- ``target``: the target examples (``targets``), for methods that balance over them.

The result is the selected pool rows, in the order they were taken, with column ``rank``
(1, 2, …) first, then the method's ``score`` if it has one, then the pool's columns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import pandas as pd

from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.registry import SELECTIONS

SCORED_BY = frozenset({"datastore", "hidden_states"})
"""The needs that give a method per-candidate scores, made before it selects."""


def selection_size(n: int, k: int | None, fraction: float | None) -> int:
    """The number of examples a selection takes from n candidates: k, or max(1, int(fraction·n))."""
    if k is not None:
        if int(k) < 1:
            raise SkillmixInputError(f"select.selection.k must be >= 1, got {k}")
        return min(int(k), n)
    if fraction is None or not 0 < fraction <= 1:
        raise SkillmixInputError(f"select.selection.fraction must be in (0, 1], got {fraction}")
    return max(1, int(fraction * n))


class Selector(ABC):
    """A selection method, constructed from the completed `select` config block.

    Subclasses set `name` (their registry name) and implement :meth:`choose`; callers call
    :meth:`select`, which refuses a call without what the registry entry's `needs` bring (see the
    module doc) and then chooses.
    """

    name: ClassVar[str]

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings

    @property
    def needs(self) -> frozenset[str]:
        """What the method needs from the DAG (its registry entry's `needs`)."""
        return SELECTIONS[self.name].needs

    def size(self, n: int) -> int:
        """The number of examples selected from a pool of n (`select.selection` k or fraction)."""
        s = self.settings["selection"]
        return selection_size(n, s["k"], s["fraction"])

    def select(
        self,
        pool: pd.DataFrame,
        size: int,
        scores: pd.DataFrame | None = None,
        target: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """`size` rows of `pool` (see the module doc for the columns and what each argument is)."""
        if self.needs & SCORED_BY and scores is None:
            raise SkillmixInputError(f"selection {self.name}: needs the candidates' scores")
        return self.choose(pool, size, scores, target)

    @abstractmethod
    def choose(
        self, pool: pd.DataFrame, size: int, scores: pd.DataFrame | None, target: pd.DataFrame | None
    ) -> pd.DataFrame:
        """The method's own selection (:meth:`select` has checked that what it needs is given)."""

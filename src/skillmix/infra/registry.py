"""The registry of methods: every mixture strategy and every selection method, named once.

An entry says what a method is called, where its code lives (a dotted module and the class in it
that does the work), which config block holds its settings (the schema writes that block and its
defaults), and what it needs from the workflow's DAG. Everything else reads the names from here:
the schema's enums (:func:`skillmix.infra.config.schema`), the rules' wildcard constraints,
preflight checks, the report and the plots. Entries name their modules as strings, so reading the
registry imports no stage; :func:`load` imports a method's module when a job needs it, and
:func:`method_modules` tells the workflow which module's code version a method's jobs carry.

Adding a method: write its module (the class named here), add its entry below, its settings block
to the schema, and its tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from skillmix.infra.errors import SkillmixInputError

NEEDS: dict[str, str] = {
    "graph": "a skills graph (the graph stage's adjacency)",
    "targets": "train.target_skills",
    "example_losses": "the initial model's loss of every training example",
    "val_losses": "per-skill validation losses during training (observe)",
    "batch_losses": "per-skill training losses of every step's batch (observe_batch)",
    "reference": "a reference model's per-token losses on every batch",
    "mixture_file": "a mixture written by a stage of its own (a DAG job before training)",
    "pool": "a fixed pool of examples (cannot use train.data: fresh)",
    "warmup": "a LoRA warm-up run on a fraction of the candidate pool",
    "datastore": "the gradient datastore of the candidates and the targets",
    "hidden_states": "the model's hidden states of candidates and targets",
}
"""What a method may need from the DAG or from the engine, and what each need means."""


@dataclass(frozen=True)
class Method:
    """One registered method.

    `stage` is ``mixing`` (a training strategy: a skill sampler) or ``selection`` (a selector of
    examples). `worker` names the class in `module` that does the work; `settings` the top-level
    config block with its settings (None: it has none); `needs` keys of :data:`NEEDS`.
    """

    name: str
    stage: Literal["mixing", "selection"]
    module: str
    worker: str
    summary: str
    settings: str | None = None
    needs: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"method {self.name}: unknown needs {sorted(unknown)}")

    def load(self) -> Any:
        """The class that does the work (imports its module)."""
        return getattr(importlib.import_module(self.module), self.worker)


_M = "skillmix.mixing."
_S = "skillmix.selection."

STRATEGIES: dict[str, Method] = {
    m.name: m
    for m in (
        Method("random", "mixing", _M + "baselines", "RandomSampler", "skills in proportion to their data"),
        Method("stratified", "mixing", _M + "baselines", "StratifiedSampler", "every skill equally often"),
        Method(
            "target_only",
            "mixing",
            _M + "baselines",
            "TargetOnlySampler",
            "only train.target_skills, uniformly",
            needs=frozenset({"targets"}),
        ),
        Method(
            "skillit",
            "mixing",
            _M + "skillit",
            "SkillItSampler",
            "Skill-It's online mixture from the skills graph and the validation losses",
            settings="skillit",
            needs=frozenset({"graph", "val_losses"}),
        ),
        Method(
            "curriculum",
            "mixing",
            _M + "curricula",
            "CurriculumSampler",
            "examples ordered by the initial model's loss, easy first",
            settings="curriculum",
            needs=frozenset({"example_losses", "pool"}),
        ),
        Method(
            "anticurriculum",
            "mixing",
            _M + "curricula",
            "AntiCurriculumSampler",
            "examples ordered by the initial model's loss, hard first",
            settings="curriculum",
            needs=frozenset({"example_losses", "pool"}),
        ),
        Method(
            "skill_curriculum",
            "mixing",
            _M + "curricula",
            "SkillCurriculumSampler",
            "skills in order of their initial loss, in stages",
            settings="curriculum",
            needs=frozenset({"example_losses"}),
        ),
    )
}
"""The training strategies, in the order the report lists them."""

SELECTIONS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "less",
            "selection",
            _S + "less",
            "LessSelector",
            "LESS: top influence of LoRA gradient features against the target",
            settings="select",
            needs=frozenset({"warmup", "datastore", "targets"}),
        ),
        Method(
            "random",
            "selection",
            _S + "random",
            "RandomSelector",
            "the same number of candidates uniformly at random",
            settings="select",
        ),
    )
}
"""The selection methods."""

_KINDS: dict[str, dict[str, Method]] = {"strategy": STRATEGIES, "selection": SELECTIONS}


def names(kind: str) -> list[str]:
    """The registered names of a kind (``strategy`` or ``selection``), in registry order."""
    return list(_KINDS[kind])


def lookup(kind: str, name: str, key: str) -> Method:
    """The method `name` of `kind`; an unknown name is an error naming the config `key`."""
    methods = _KINDS[kind]
    if name not in methods:
        raise SkillmixInputError(f"{key}: unknown {kind} {name!r}; expected one of {list(methods)}")
    return methods[name]


def pattern(kind: str) -> str:
    """A regular expression matching exactly the registered names (for wildcard constraints)."""
    return "|".join(sorted(_KINDS[kind], key=len, reverse=True))


def with_need(kind: str, need: str, chosen: Iterable[str] | None = None) -> list[str]:
    """The methods of `kind` (of `chosen`, when given) that have `need`."""
    pool = list(_KINDS[kind]) if chosen is None else list(chosen)
    return [n for n in pool if need in _KINDS[kind][n].needs]


def method_modules(kind: str, name: str) -> list[str]:
    """The module that implements a method (its jobs' code version follows it)."""
    return [_KINDS[kind][name].module]

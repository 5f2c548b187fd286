"""The registry of methods: every mixture strategy and every selection method, named once.

A method registers in its own module: a module-level ``REGISTER`` list, one literal entry per
method it implements, e.g. in ``skillmix/mixing/skillit.py``::

    REGISTER = [{"name": "skillit", "worker": "SkillItSampler", "summary": "...",
                 "settings": "skillit", "needs": ["graph", "val_losses"]}]

`worker` names the class that does the work, `settings` the top-level config block with its
settings (the schema writes that block and its defaults; none when absent), `needs` what it needs
from the workflow's DAG or the engine (keys of :data:`NEEDS`). Strategies live in
``skillmix/mixing/``, selection methods in ``skillmix/selection/``. The registry reads those
declarations from the modules' source without importing them, so reading it imports no stage; the
schema's enums (:func:`skillmix.infra.config.schema`), the rules' wildcard constraints, preflight,
the code versions and the plots read the names from here. :meth:`Method.load` imports a method's
module when a job needs it; :func:`method_modules` tells the workflow which module's code version
a method's jobs carry.

Adding a method: its module (with its ``REGISTER`` entry), its settings block in the schema, and its
tests.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
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
    "pool": "draws each example of the fixed pool once (a pool at least the budget, no fresh data)",
    "warmup": "a LoRA warm-up run on a fraction of the candidate pool",
    "datastore": "the gradient datastore of the candidates and the targets",
    "hidden_states": "the model's hidden states of candidates and targets",
}
"""What a method may need from the DAG or from the engine, and what each need means."""

PACKAGES: dict[str, str] = {"strategy": "mixing", "selection": "selection"}
"""Where each kind of method lives: the subpackage of skillmix whose modules declare them."""


@dataclass(frozen=True)
class Method:
    """One registered method: a training strategy (a skill sampler, in ``skillmix.mixing``) or a
    selection method (a selector, in ``skillmix.selection``)."""

    name: str
    kind: Literal["strategy", "selection"]
    module: str
    worker: str
    summary: str
    settings: str | None = None
    needs: frozenset[str] = field(default_factory=frozenset)

    def load(self) -> Any:
        """The class that does the work (imports its module)."""
        return getattr(importlib.import_module(self.module), self.worker)


def _declarations(source: str, origin: str) -> list[dict[str, Any]]:
    """The literal ``REGISTER`` list of a module's source (empty when it has none)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "REGISTER" for t in node.targets
        ):
            try:
                entries = ast.literal_eval(node.value)
            except ValueError as exc:
                raise ValueError(f"{origin}: REGISTER must be a literal list of dicts ({exc})") from exc
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise ValueError(f"{origin}: REGISTER must be a list of dicts")
            return entries
    return []


def _method(kind: str, module: str, entry: dict[str, Any]) -> Method:
    """One declared entry, checked."""
    known = {"name", "worker", "summary", "settings", "needs"}
    if set(entry) - known or not {"name", "worker", "summary"} <= set(entry):
        raise ValueError(f"{module}: a REGISTER entry has keys {sorted(entry)}; expected {sorted(known)}")
    needs = frozenset(entry.get("needs", ()))
    if needs - set(NEEDS):
        raise ValueError(f"{module}: method {entry['name']}: unknown needs {sorted(needs - set(NEEDS))}")
    return Method(
        entry["name"], kind, module, entry["worker"], entry["summary"], entry.get("settings"), needs
    )


CACHE = Path(__file__).resolve().parent / "__pycache__"
"""Where the declarations read from a package's sources are kept, one file per kind keyed by the
sources' hash (parsing them is most of the registry's cost in every job); unwritable means unkept."""


def _sources(kind: str) -> list[tuple[str, str]]:
    """(module, source) of the modules of `kind`'s package that may declare methods, by name."""
    package = f"skillmix.{PACKAGES[kind]}"
    # the folder through the top package: the stage's own package is not imported
    folder = resources.files("skillmix").joinpath(PACKAGES[kind])
    return [
        (f"{package}.{entry.name.removesuffix('.py')}", entry.read_text(encoding="utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".py") and not entry.name.startswith("_")
    ]


def _all_declarations(kind: str, sources: list[tuple[str, str]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Each module's ``REGISTER`` entries (:func:`_declarations`), from the cache when the sources
    are those it was made from; else parsed, and cached when JSON keeps them as they are."""
    key = hashlib.sha256(json.dumps(sources).encode()).hexdigest()
    path = CACHE / f"registry.{kind}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached["key"] == key:
            return [(module, entries) for module, entries in cached["declarations"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    declared = [(module, _declarations(source, module)) for module, source in sources]
    text = json.dumps({"key": key, "declarations": declared})
    if json.loads(text)["declarations"] == [list(pair) for pair in declared]:
        _write_atomically(path, text)
    return declared


def _write_atomically(path: Path, text: str) -> None:
    """Write `path` whole or not at all (jobs start side by side); an unwritable place is no error."""
    written = None
    try:
        path.parent.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
            written = Path(tmp.name)
            tmp.write(text)
        os.replace(written, path)
    except OSError:
        if written is not None:
            written.unlink(missing_ok=True)


def discover(kind: str) -> dict[str, Method]:
    """The methods of `kind` declared by the modules of its package, in module-name order."""
    methods: dict[str, Method] = {}
    for module, entries in _all_declarations(kind, _sources(kind)):
        for declared in entries:
            method = _method(kind, module, declared)
            if method.name in methods:
                raise ValueError(
                    f"{kind} {method.name!r} is registered twice: {methods[method.name].module}, {module}"
                )
            methods[method.name] = method
    return methods


STRATEGIES: dict[str, Method] = discover("strategy")
"""The training strategies."""
SELECTIONS: dict[str, Method] = discover("selection")
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
    if need not in NEEDS:
        raise KeyError(f"unknown need {need!r}")
    pool = list(_KINDS[kind]) if chosen is None else list(chosen)
    return [n for n in pool if need in _KINDS[kind][n].needs]


def method_modules(kind: str, name: str) -> list[str]:
    """The module that implements a method (its jobs' code version follows it)."""
    return [_KINDS[kind][name].module]

"""Scale guards: what a config plans, checked against limits before Snakemake plans it.

A brute-force skills graph trains on every skill and every pair of skills, one DAG job each: 10,000
skills would be some 50 million jobs, and Snakemake would run out of memory planning them with a
bare ``MemoryError``. The job count is known from the config and the number of skills (from the
config itself for a synthetic source, from the slice manifest otherwise), so it is checked here
first, naming what to choose instead. The tiny model's size is checked the same way (it is built
from the config alone). Nothing heavy is imported: this runs when the workflow is parsed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skillmix.infra import registry
from skillmix.infra.errors import SkillmixInputError

MAX_PLANNED_JOBS = 100_000
"""The most DAG jobs a config may plan (graph runs and RegMix proxies, the stages whose job count
grows with the data or a count in the config); far below what exhausts Snakemake's memory."""

MAX_TINY_PARAMETERS = 1_000_000_000
"""The largest tiny model (built from scratch from model.tiny); a larger one is a pretrained model's
business, or a typo."""

BYTE_VOCABULARY = 384
"""About the byte tokenizer's vocabulary (bytes and special tokens), for the tiny model's size."""


def synthetic_skills(source: Mapping[str, Any]) -> int | None:
    """The number of skills of a synthetic source, from its settings alone; None for a source whose
    skills are known only from its data (table, natural_instructions)."""
    kind = source.get("kind")
    settings = source.get(kind) or {}
    if kind == "xor":
        return len(settings.get("maps") or ()) + len(settings.get("composites") or ())
    if kind == "lego":
        return int(settings.get("n_vars") or 0)
    if kind == "addition":
        return int(settings.get("n_digits") or 0)
    return None


def graph_jobs(method: str, skills: int) -> int:
    """The graph runs (one DAG job each) of a graph method over `skills` skills: brute_force one per
    skill and one per pair, linear one per skill, gradient and given none."""
    if method == "brute_force":
        return skills + skills * (skills - 1) // 2
    return skills if method == "linear" else 0


def _largest_brute_force(limit: int) -> int:
    """The most skills whose brute-force graph stays within `limit` jobs."""
    k = 1
    while graph_jobs("brute_force", k + 1) <= limit:
        k += 1
    return k


def check_planned_jobs(config: Mapping[str, Any], skills: int, where: str = "the data") -> None:
    """Refuse a config whose DAG would hold more than :data:`MAX_PLANNED_JOBS` jobs of the stages
    whose count grows: graph runs (when a training strategy uses the graph) and RegMix proxy runs.
    `skills` is the number of skills (of `where`: the data, or the synthetic source's settings).
    """
    strategies = config["train"]["strategies"]
    graph = config["graph"]
    method = graph["method"]
    runs = graph_jobs(method, skills) if registry.with_need("strategy", "graph", strategies) else 0
    regmix = config["regmix"]
    proxies = regmix["runs"] if "regmix" in strategies and not regmix["proxy_runs"] else 0
    if runs + proxies <= MAX_PLANNED_JOBS:
        return
    if runs >= proxies:
        repeats = graph["runs"]["repeats"]
        pairs = f" and {runs - skills:,} pairs" if method == "brute_force" else ""
        raise SkillmixInputError(
            f"config graph.method: {method} over the {skills:,} skills of {where} plans {runs:,} graph "
            f"runs ({skills:,} single skills{pairs}; each job {repeats} training run(s), "
            f"graph.runs.repeats), above the limit of {MAX_PLANNED_JOBS:,} jobs Snakemake can plan: "
            f"choose graph.method linear ({skills:,} runs), gradient (no runs: gradients at "
            f"checkpoints) or given (a graph file), or fewer skills (brute_force fits at most "
            f"{_largest_brute_force(MAX_PLANNED_JOBS)} skills)"
        )
    raise SkillmixInputError(
        f"config regmix.runs: {proxies:,} RegMix proxy runs (one DAG job each) and {runs:,} graph runs "
        f"exceed the limit of {MAX_PLANNED_JOBS:,} jobs Snakemake can plan: fewer regmix.runs, or "
        "proxy runs made elsewhere (regmix.proxy_runs)"
    )


def tiny_parameters(model: Mapping[str, Any]) -> int:
    """About the parameter count of the tiny model of `model` (its embeddings and decoder layers)."""
    tiny = model["tiny"]
    hidden, inner, layers = tiny["hidden_size"], tiny["intermediate_size"], tiny["num_layers"]
    vocabulary = len(tiny.get("vocabulary") or ()) or BYTE_VOCABULARY
    per_layer = 4 * hidden * hidden + 3 * hidden * inner
    return layers * per_layer + (vocabulary + tiny["max_positions"]) * hidden


def check_tiny_model(model: Mapping[str, Any]) -> None:
    """Refuse a tiny model (model.kind tiny) above :data:`MAX_TINY_PARAMETERS`, naming its sizes."""
    if model["kind"] != "tiny":
        return
    count = tiny_parameters(model)
    if count <= MAX_TINY_PARAMETERS:
        return
    tiny = model["tiny"]
    sizes = ", ".join(f"{k} {tiny[k]}" for k in ("hidden_size", "intermediate_size", "num_layers"))
    raise SkillmixInputError(
        f"config model.tiny: {sizes} make a model of about {count:.2g} parameters "
        f"({count * 4 / 1e9:.3g} GB of float32 weights, several times that to train), above the tiny "
        f"model's limit of {MAX_TINY_PARAMETERS:.0e}: choose smaller sizes, or a pretrained model "
        "(model.kind pretrained)"
    )


def check_config_scale(config: Mapping[str, Any]) -> None:
    """The scale checks the config alone decides (a complete config, defaults filled): the tiny
    model's size, and the planned jobs of a synthetic source, whose skills the config names."""
    check_tiny_model(config["model"])
    skills = synthetic_skills(config["source"])
    if skills is not None:
        check_planned_jobs(config, skills, f"source.{config['source']['kind']}")

"""Checks of the whole config against the sliced skills: everything that needs only the config and
the skill list, run in the `slice` job (before anything is written) and again whenever Snakemake
builds the DAG on existing slices, so that a wrong name or count stops the run in seconds, naming
its key, instead of failing a job after an hour of others.

The model's own configuration (positions, heads) is checked here too, from its config alone
(:func:`skillmix.engine.model_config.check_model_config`), and so is the share of answers that
``model.max_length`` cuts (:func:`count_cut_answers`, in the `slice` job, where the examples are).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from skillmix.infra import registry
from skillmix.infra.errors import SkillmixInputError

log = logging.getLogger("skillmix")

_MAX_NAMED = 5


def _unknown(names: Sequence[str] | None, skills: Sequence[str], key: str) -> None:
    """Raise naming `key` when one of `names` is not a skill, with the closest skill names."""
    unknown = [name for name in names or () if name not in skills]
    if not unknown:
        return
    hints = []
    for name in unknown[:_MAX_NAMED]:
        close = difflib.get_close_matches(name, list(skills), n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise SkillmixInputError(
        f"config {key}: {', '.join(hints)} {'is not a skill' if len(unknown) == 1 else 'are not skills'} "
        f"of the data; its skills are {list(skills)[:20]}{' …' if len(skills) > 20 else ''}"
    )


def training_skills(config: Mapping[str, Any], skills: Sequence[str]) -> list[str]:
    """The skills the training runs train on: `train.skills`, or all."""
    chosen = config["train"].get("skills")
    return [s for s in skills if s in chosen] if chosen else list(skills)


def pool_size(config: Mapping[str, Any], manifest: Mapping[str, Any]) -> int:
    """The number of LESS candidates: the training examples of `select.pool.skills` (or all)."""
    wanted = config["select"]["pool"]["skills"]
    return sum(
        int(entry["counts"]["train"]) for entry in manifest["skills"] if not wanted or entry["name"] in wanted
    )


def check_against_skills(config: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
    """Check every config key that names skills or sizes against the sliced skills of `manifest`
    (the whole config, defaults filled, as the workflow has it).

    Skill names in `train.skills`, `train.target_skills`, `select.pool.skills`,
    `select.target.skills` and `kernel.skills`; target_only's targets among the training skills;
    the length of `skillit.prior` (one weight per training skill); a curriculum's budget within
    the training pool; fresh examples from a synthetic source only; a given skills graph against
    the skills; `select.selection.k` smaller than the candidate pool.
    """
    skills = [entry["name"] for entry in manifest["skills"]]
    train = config["train"]
    _unknown(train["skills"], skills, "train.skills")
    _unknown(train["target_skills"], skills, "train.target_skills")
    strategies, trained = train["strategies"], training_skills(config, skills)
    _check_strategies(config, manifest, strategies, trained)
    _build_samplers(config, manifest, strategies, trained)
    select = config["select"]
    if select["enabled"]:
        _unknown(select["pool"]["skills"], skills, "select.pool.skills")
        if not select["target"]["files"]:
            _unknown(select["target"]["skills"], skills, "select.target.skills")
        k = select["selection"]["k"]
        size = pool_size(config, manifest)
        if k is not None and k >= size:
            raise SkillmixInputError(
                f"config select.selection.k: {k} is not smaller than the candidate pool ({size} training "
                "examples): LESS and the random baseline would both select the whole pool; choose a "
                "smaller k (or select.selection.fraction)"
            )
    if config["kernel"]["enabled"]:
        _unknown(config["kernel"]["skills"], skills, "kernel.skills")


def _check_strategies(
    config: Mapping[str, Any], manifest: Mapping[str, Any], strategies: Sequence[str], trained: list[str]
) -> None:
    """The checks of the training strategies' settings against the skills (see check_against_skills)."""
    from skillmix.data.sources import SYNTHETIC_KINDS

    train = config["train"]
    for strategy in registry.with_need("strategy", "targets", strategies):
        outside = [s for s in train["target_skills"] or () if s not in trained]
        if outside:
            raise SkillmixInputError(
                f"config train.target_skills: {strategy} trains on them, but {outside} are not training "
                f"skills (train.skills: {trained})"
            )
    prior = config["skillit"]["prior"]
    if "skillit" in strategies and prior is not None and len(prior) != len(trained):
        raise SkillmixInputError(
            f"config skillit.prior: {len(prior)} weights, but there are {len(trained)} training "
            f"skills (one weight each, in this order): {trained}"
        )
    counts = {entry["name"]: int(entry["counts"]["train"]) for entry in manifest["skills"]}
    pool, budget = sum(counts[s] for s in trained), train["steps"] * train["batch_size"]
    ordered = registry.with_need("strategy", "pool", strategies)
    if ordered and train["data"] == "pool" and pool < budget:
        raise SkillmixInputError(
            f"config train.steps: {ordered} draw each training example once, but train.steps × "
            f"train.batch_size = {budget} exceeds the {pool} training examples; fewer steps, or more "
            "examples per skill"
        )
    if train["data"] == "fresh" and config["source"]["kind"] not in SYNTHETIC_KINDS:
        raise SkillmixInputError(
            f"config train.data: fresh needs a synthetic source (source.kind one of "
            f"{list(SYNTHETIC_KINDS)}), not {config['source']['kind']!r}: use train.data: pool"
        )
    _check_regmix(config, strategies)
    graph = config["graph"]
    uses_graph = registry.with_need("strategy", "graph", strategies)
    if uses_graph and graph["method"] == "given" and graph["given"]["adjacency"]:
        from skillmix.graph.given import load_given

        given = graph["given"]
        load_given(
            given["adjacency"],
            given["skills"],
            [e["name"] for e in manifest["skills"]],
            given["rows"],
            given["columns"],
        )


def _check_regmix(config: Mapping[str, Any], strategies: Sequence[str]) -> None:
    """RegMix's fit on the proxy runs it will make: LightGBM needs enough runs to split a tree."""
    from skillmix.mixing.regmix_fit import LIGHTGBM_MIN_LEAF

    regmix = config.get("regmix") or {}
    if "regmix" not in strategies or regmix.get("proxy_runs") or regmix.get("regressor") != "lightgbm":
        return
    if regmix["runs"] < 2 * LIGHTGBM_MIN_LEAF:
        raise SkillmixInputError(
            f"config regmix.runs: {regmix['runs']} proxy runs with regmix.regressor lightgbm; a LightGBM "
            f"tree keeps at least {LIGHTGBM_MIN_LEAF} runs in a leaf, so on fewer than "
            f"{2 * LIGHTGBM_MIN_LEAF} runs it predicts the same loss for every mixture: raise "
            "regmix.runs, or set regmix.regressor: linear"
        )


BUILT_AHEAD = {"targets", "val_losses", "batch_losses", "pool"}
"""Needs that the config and the skills alone satisfy: strategies with no other need are built
here, so that their setup checks (e.g. Aioli's round against its parameter learning) stop the run
before any job; the others (a graph, losses, a mixture file) are built in their train job."""


def _build_samplers(
    config: Mapping[str, Any], manifest: Mapping[str, Any], strategies: Sequence[str], trained: list[str]
) -> None:
    """Build the sampler of every configured strategy that needs nothing but the config and the
    skills, as its train job will (its settings and the run's budget), and discard it."""
    from skillmix.engine.sampling import MixingInputs
    from skillmix.mixing.strategies import build_sampler, strategy_settings

    train = config["train"]
    counts = {entry["name"]: int(entry["counts"]["train"]) for entry in manifest["skills"]}
    targets = [s for s in train["target_skills"] or ()]
    for strategy in strategies:
        method = registry.lookup("strategy", strategy, "train.strategies")
        if method.needs - BUILT_AHEAD:
            continue
        inputs = MixingInputs(
            skills=trained,
            sizes=[counts[s] for s in trained],
            seed=train["seed"],
            update_steps=train["update_steps"],
            eval_skills=targets or trained,
            targets=targets,
            steps=train["steps"],
            batch_size=train["batch_size"],
            eval_every=train["eval_every"],
        )
        settings = strategy_settings(strategy, config.get(method.settings) if method.settings else None)
        build_sampler(strategy, inputs, settings)


def count_cut_answers(
    tokenizer: Any, splits: Mapping[str, Any], skills: Sequence[str], max_length: int
) -> dict[str, dict[str, int]]:
    """Per skill, how many examples (of all splits) have an answer that `max_length` cuts, and how
    many examples there are: ``{skill: {"cut": n, "examples": m}}``.

    An answer is cut when some of its tokens do not fit (a prompt/answer row whose answer alone
    leaves no room, a plain text or a chat longer than `max_length`); such an example can never be
    scored as correct. `splits` maps split names to examples frames.
    """
    from skillmix.engine.encoding import encode_frame

    counts = {skill: {"cut": 0, "examples": 0} for skill in skills}
    for frame in splits.values():
        for skill, part in frame.groupby("skill", sort=False):
            encoded = encode_frame(tokenizer, part, str(skill), max_length)
            counts[str(skill)]["cut"] += encoded.answers_cut
            counts[str(skill)]["examples"] += len(part)
    return counts


def check_cut_answers(counts: Mapping[str, Mapping[str, int]], max_length: int, max_share: float) -> None:
    """Warn (in the log) about answers `max_length` cuts; raise when their share of all examples
    exceeds `max_share` (`model.max_cut_share`), naming the worst skills."""
    cut = sum(c["cut"] for c in counts.values())
    total = sum(c["examples"] for c in counts.values())
    if not cut:
        return
    worst = sorted(counts.items(), key=lambda item: -item[1]["cut"] / max(1, item[1]["examples"]))
    named = ", ".join(f"{skill!r} {c['cut']}/{c['examples']}" for skill, c in worst[:_MAX_NAMED] if c["cut"])
    share = cut / max(1, total)
    message = (
        f"model.max_length {max_length} cuts the answer of {cut} of {total} examples ({share:.1%}); "
        f"they can never be scored as correct. Most cut: {named}"
    )
    if share > max_share:
        raise SkillmixInputError(
            f"config model.max_length: {message}. This is above model.max_cut_share ({max_share:.1%}): "
            "raise model.max_length, shorten the data, or raise model.max_cut_share"
        )
    log.warning("%s", message)


def config_tokenizer(model_cfg: Mapping[str, Any]) -> Any:
    """The tokenizer of the configured model, loaded without its weights."""
    from skillmix.engine.model_config import hub_note, model_source
    from skillmix.engine.tokenizers import tiny_tokenizer
    from skillmix.infra.config import complete

    model_cfg = complete("model", dict(model_cfg))
    if model_cfg["kind"] == "tiny":
        return tiny_tokenizer(model_cfg["tiny"])
    from transformers import AutoTokenizer

    gguf_file = model_cfg["gguf_file"] if model_cfg["kind"] == "gguf" else None
    name_or_path, kwargs = model_source(
        model_cfg["name_or_path"], gguf_file, model_cfg["trust_remote_code"], model_cfg["revision"]
    )
    try:
        return AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except OSError as err:
        raise SkillmixInputError(
            f"config model.name_or_path: could not load the tokenizer of {model_cfg['name_or_path']!r} "
            f"from local files{hub_note()}: {err}"
        ) from err


def slice_checks(config: Mapping[str, Any]) -> Callable[[list[str], dict[str, Any]], dict[str, Any]]:
    """The checks the `slice` job runs on the sliced skills before it writes anything: the config
    against the skills (:func:`check_against_skills`), the model's configuration, and the answers
    `model.max_length` cuts (warned about, an error above `model.max_cut_share`). The check returns
    the manifest entry ``answers_cut`` ({max_length, per-skill counts})."""

    def check(skills: list[str], splits: dict[str, Any]) -> dict[str, Any]:
        from skillmix.data.slicing import skill_counts
        from skillmix.engine.model_config import check_model_config

        check_against_skills(config, {"skills": skill_counts(splits, skills)})
        model_cfg = config["model"]
        check_model_config(model_cfg)
        max_length = model_cfg["max_length"]
        cut = count_cut_answers(config_tokenizer(model_cfg), splits, skills, max_length)
        check_cut_answers(cut, max_length, model_cfg["max_cut_share"])
        return {"answers_cut": {"max_length": max_length, "skills": cut}}

    return check

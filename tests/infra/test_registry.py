"""The method registry: every name in one place, read by the schema, the rules and the jobs."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from skillmix.engine.sampling import MixingInputs, SkillSampler
from skillmix.infra import registry
from skillmix.infra.config import _subschema, complete, schema, validate_config
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.strategies import build_sampler, strategy_settings


def test_every_strategy_is_a_sampler_built_from_its_inputs() -> None:
    for name, method in registry.STRATEGIES.items():
        worker = method.load()
        assert issubclass(worker, SkillSampler), name
        assert worker.from_inputs.__func__ is not SkillSampler.from_inputs.__func__, name
        assert worker.name == name  # the state it saves names the strategy
        if method.settings:
            assert method.settings in schema()["properties"], name


def test_every_selection_method_loads() -> None:
    for name, method in registry.SELECTIONS.items():
        worker = method.load()
        assert isinstance(worker, type), name
        assert method.settings is None or method.settings in schema()["properties"]


def test_schema_enums_are_the_registered_names() -> None:
    assert _subschema("train.strategies")["items"]["enum"] == registry.names("strategy")
    base = _subschema("select.base_run")["oneOf"][1]["enum"]
    assert base == registry.names("strategy")
    checkpoints = _subschema("graph.gradient.checkpoints")["items"]["enum"]
    graph_users = registry.with_need("strategy", "graph")
    assert checkpoints == ["initial"] + [n for n in registry.names("strategy") if n not in graph_users]
    assert "skillit" in graph_users and "skillit" not in checkpoints


def test_an_unknown_strategy_is_refused_naming_its_key() -> None:
    with pytest.raises(SkillmixInputError, match=r"config train\.strategies\.1: 'magic' is not one of"):
        validate_config({"train": {"strategies": ["random", "magic"]}})
    with pytest.raises(SkillmixInputError, match=r"train\.strategies: unknown strategy 'magic'"):
        registry.lookup("strategy", "magic", "train.strategies")


def test_validate_config_fills_defaults() -> None:
    config: dict = {"train": {"strategies": ["random"]}}
    validate_config(config)
    assert config["skillit"] == complete("skillit", None)
    assert config["train"]["steps"] == complete("train", None)["steps"]


def test_wildcard_pattern_matches_exactly_the_names() -> None:
    pattern = re.compile(f"^(?:{registry.pattern('strategy')})$")
    for name in registry.names("strategy"):
        assert pattern.match(name)
    for other in ("skill", "skillit2", "curricula", "random_", ""):
        assert not pattern.match(other)


def test_a_strategy_gets_what_its_entry_needs() -> None:
    inputs = MixingInputs(
        skills=["a", "b"], sizes=[4, 6], seed=0, update_steps=2, eval_skills=["a", "b"], targets=["b"]
    )
    assert build_sampler("random", inputs, {}).mixture() == pytest.approx([0.4, 0.6])
    assert build_sampler("target_only", inputs, {}).mixture() == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError, match="skills graph"):
        build_sampler("skillit", inputs, strategy_settings("skillit", None))
    inputs.graph = np.array([[1.0, 0.0], [0.0, 0.0]])
    sampler = build_sampler("skillit", inputs, strategy_settings("skillit", {"eta": 1.0}))
    assert sampler.mixture()[0] > sampler.mixture()[1]
    assert strategy_settings("random", None) == {}
    assert strategy_settings("curriculum", None) == complete("curriculum", None)


def test_a_method_registers_in_its_own_module(tmp_path) -> None:
    from skillmix.infra.registry import _declarations, _method

    source = (
        "import numpy\n"
        "REGISTER = [{'name': 'flat', 'worker': 'FlatSampler', 'summary': 's', 'needs': ['graph']}]\n"
    )
    (entry,) = _declarations(source, "skillmix.mixing.flat")
    method = _method("strategy", "skillmix.mixing.flat", entry)
    assert (method.name, method.worker, method.needs) == ("flat", "FlatSampler", frozenset({"graph"}))
    assert _declarations("X = 1\n", "m") == []
    with pytest.raises(ValueError, match="literal list"):
        _declarations("REGISTER = [make()]\n", "skillmix.mixing.bad")
    with pytest.raises(ValueError, match="unknown needs"):
        _method("strategy", "m", {"name": "x", "worker": "X", "summary": "s", "needs": ["gpu"]})
    with pytest.raises(ValueError, match="keys"):
        _method("strategy", "m", {"name": "x", "worker": "X"})


def test_every_registered_module_declares_what_the_registry_holds() -> None:
    for kind, methods in (("strategy", registry.STRATEGIES), ("selection", registry.SELECTIONS)):
        for name, method in methods.items():
            assert method.module.startswith(f"skillmix.{registry.PACKAGES[kind]}."), name
            assert registry.lookup(kind, name, "key") is method


def test_reading_the_registry_imports_no_stage() -> None:
    program = (
        "import sys\n"
        "from skillmix.infra import registry, config\n"
        "config.schema()\n"
        "print(sorted(m for m in sys.modules if m.startswith('skillmix.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    loaded = eval(done.stdout)  # a printed list of names
    assert loaded and all(m.startswith("skillmix.infra") for m in loaded), loaded


def test_the_declarations_are_cached_by_the_sources_hash(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(registry, "CACHE", tmp_path / "cache")
    sources = registry._sources("strategy")
    parsed = [(module, registry._declarations(source, module)) for module, source in sources]
    assert registry._all_declarations("strategy", sources) == parsed  # parsed, then kept
    kept = tmp_path / "cache" / "registry.strategy.json"
    assert kept.exists() and [tuple(p) for p in registry._all_declarations("strategy", sources)] == parsed
    assert registry.discover("strategy") == registry.STRATEGIES
    # other sources are parsed anew (a broken one fails as it would without the cache)
    module, source = sources[0]
    changed = [
        *sources,
        ("skillmix.mixing.extra", "REGISTER = [{'name': 'extra', 'worker': 'W', 'summary': 's'}]"),
    ]
    assert registry._all_declarations("strategy", changed)[-1] == (
        "skillmix.mixing.extra",
        [{"name": "extra", "worker": "W", "summary": "s"}],
    )
    with pytest.raises(SyntaxError):
        registry._all_declarations("strategy", [(module, source + "\ndef (\n")])
    # a corrupt cache is parsed over; an unwritable place keeps nothing and is no error
    kept.write_text("{not json")
    assert registry._all_declarations("strategy", sources) == parsed
    monkeypatch.setattr(registry, "CACHE", tmp_path / "missing" / "deeper")
    assert registry._all_declarations("strategy", sources) == parsed
    assert not (tmp_path / "missing").exists()

"""The schema is the one place a default is written: settings objects agree with it."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import yaml

from skillmix.engine.training import TrainSettings
from skillmix.graph.options import GraphOptions
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.baselines import RandomSampler, StratifiedSampler
from skillmix.mixing.strategies import make_sampler

SCHEMA = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml").read_text()
)["properties"]


def _defaults(block: dict) -> dict:
    return {key: spec["default"] for key, spec in block["properties"].items() if "default" in spec}


def test_train_settings_defaults_are_the_schemas() -> None:
    schema = _defaults(SCHEMA["train"]) | {
        "eval_score": _defaults(SCHEMA["eval"])["score"],
        "parallel": _defaults(SCHEMA["model"])["parallel"],
    }
    internal = {"eval_accuracy"}  # not a config key: the graph runs switch generation off
    for field in dataclasses.fields(TrainSettings):
        if field.name in internal:
            continue
        assert field.name in schema, f"TrainSettings.{field.name} has no schema default"
        want = tuple(schema[field.name]) if field.name == "betas" else schema[field.name]
        assert field.default == want, (field.name, field.default, want)


def test_graph_options_defaults_are_the_schemas() -> None:
    schema = _defaults(SCHEMA["graph"]["properties"]["assemble"])
    for field in dataclasses.fields(GraphOptions):
        assert schema[field.name] == field.default, (field.name, field.default, schema[field.name])


def _schema_keys(node: dict) -> set[str]:
    keys = set()
    for key, spec in node.get("properties", {}).items():
        keys.add(key)
        keys |= _schema_keys(spec)
        if isinstance(spec.get("items"), dict):
            keys |= _schema_keys(spec["items"])
    return keys


def test_the_library_writes_no_default_of_a_config_key() -> None:
    """`block.get("key", value)` on a config key would be a second default beside the schema's;
    the library completes blocks with skillmix.infra.config.complete and indexes them instead."""
    keys = _schema_keys({"properties": SCHEMA})
    found = []
    for path in sorted((Path(__file__).resolve().parents[2] / "src/skillmix").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and len(node.args) == 2
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in keys
                and not (isinstance(node.args[1], ast.Constant) and node.args[1].value is None)
            ):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert not found, found


def test_complete_fills_the_schemas_defaults_and_names_bad_keys() -> None:
    model = complete("model", {"kind": "tiny", "tiny": {"hidden_size": 32}})
    assert model["tiny"] == {**_defaults(SCHEMA["model"]["properties"]["tiny"]), "hidden_size": 32}
    assert (
        model["lora"]["enabled"] is False
        and model["max_length"] == SCHEMA["model"]["properties"]["max_length"]["default"]
    )
    assert complete("source.xor", None)["maps"] == ["f", "g", "h"]
    with pytest.raises(SkillmixInputError, match=r"config model\.tiny: unknown key\(s\) \['hidden'\]"):
        complete("model", {"tiny": {"hidden": 3}})
    with pytest.raises(SkillmixInputError, match=r"config graph\.runs\.steps: 0 is less than the minimum"):
        complete("graph.runs", {"steps": 0})
    block = {"steps": 5}
    complete("graph.runs", block)
    assert block == {"steps": 5}  # the caller's block is left as it was


def test_sampler_update_steps_default_is_the_schemas() -> None:
    want = _defaults(SCHEMA["train"])["update_steps"]
    for cls in (RandomSampler, StratifiedSampler):
        assert inspect.signature(cls).parameters["update_steps"].default == want, cls
    assert inspect.signature(make_sampler).parameters["update_steps"].default == want


def test_every_rule_takes_threads_and_resources_from_config() -> None:
    """No rule writes a literal thread count or resource; every `resources` block is used by a rule
    for all four of its keys (no validated key that nothing reads)."""
    rules_dir = Path(__file__).resolve().parents[2] / "rules"
    used: dict[str, set[str]] = {}
    for path in sorted(rules_dir.glob("*.smk")):
        text = path.read_text()
        for match in re.finditer(
            r"^(?:rule|checkpoint) (\w+):(.*?)(?=^(?:rule|checkpoint) |\Z)", text, re.S | re.M
        ):
            name, body = match.groups()
            threads = re.search(r"^    threads: (.*)$", body, re.M)
            resources = re.search(r"^    resources:\n((?:        .*\n)+)", body, re.M)
            assert threads and resources, f"rule {name} ({path.name}) lacks threads or resources"
            values = [threads.group(1)] + [
                line.split("=", 1)[1].rstrip(",") for line in resources.group(1).split("\n") if line.strip()
            ]
            for value in values:
                found = re.fullmatch(r'res\("(\w+)", "(\w+)"\)', value.strip())
                assert found, f"rule {name} ({path.name}): {value.strip()} is not read from config resources"
                used.setdefault(found.group(1), set()).add(found.group(2))
    blocks = SCHEMA["resources"]["properties"]
    assert set(used) == set(blocks), (sorted(used), sorted(blocks))
    for block, keys in used.items():
        assert keys == set(blocks[block]["properties"]), (block, keys)


def test_skillit_sampler_takes_every_key_of_the_skillit_block() -> None:
    from skillmix.mixing.skillit import SkillItSampler

    options = list(SCHEMA["skillit"]["properties"])
    parameters = inspect.signature(SkillItSampler).parameters
    assert set(options) <= set(parameters)
    schema = _defaults(SCHEMA["skillit"])
    for key in options:
        default = parameters[key].default
        if default is inspect.Parameter.empty or schema[key] == "auto":  # auto is resolved before
            continue
        assert default == schema[key], (key, default, schema[key])

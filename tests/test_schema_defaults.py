"""The schema is the one place a default is written: settings objects agree with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from skillmix.graph.learned import GraphOptions
from skillmix.training import TrainSettings

SCHEMA = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text()
)["properties"]


def _defaults(block: dict) -> dict:
    return {key: spec["default"] for key, spec in block["properties"].items() if "default" in spec}


def test_train_settings_defaults_are_the_schemas() -> None:
    schema = _defaults(SCHEMA["train"]) | {"eval_score": _defaults(SCHEMA["eval"])["score"]}
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

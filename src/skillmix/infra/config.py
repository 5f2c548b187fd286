"""The workflow's config schema as the library's one source of defaults.

The Snakefile validates the whole config against ``workflow/schemas/config.schema.yaml`` and
fills its defaults; the library fills the same defaults into a block it is handed, so that a
function called outside the workflow (a test, a notebook) with part of a block behaves as the
workflow would. No default is written anywhere else.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

from skillmix.infra.errors import SkillmixInputError

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"


@functools.cache
def schema() -> dict[str, Any]:
    """The parsed config schema (read once per process)."""
    if not SCHEMA_PATH.is_file():
        raise SkillmixInputError(
            f"the config schema {SCHEMA_PATH} is missing: install skillmix from its repository "
            "(pip install -e .), which keeps the schema beside the package"
        )
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser when libyaml is there
    return yaml.load(SCHEMA_PATH.read_text(), Loader=loader)


def _subschema(where: str) -> dict[str, Any]:
    """The schema of a dotted block; a trailing ``[]`` on a key means one item of that list."""
    node = schema()
    for key in where.split("."):
        item = key.endswith("[]")
        key = key.removesuffix("[]")
        properties = node.get("properties", {})
        if key not in properties:
            raise KeyError(f"config schema has no block {where!r}")
        node = properties[key]
        if item:
            node = node["items"]
    return node


@functools.cache
def _validator():
    """A JSON-schema validator of the whole schema that also fills every property's default
    (jsonschema's recipe), built once per process."""
    from jsonschema import Draft202012Validator, validators

    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, node):
        if isinstance(instance, dict):
            for key, spec in properties.items():
                if "default" in spec and key not in instance:
                    instance[key] = copy.deepcopy(spec["default"])
        yield from check_properties(validator, properties, instance, node)

    filling = validators.extend(Draft202012Validator, {"properties": fill_defaults})
    return filling(schema())


def complete(where: str, block: dict[str, Any] | None, name: str | None = None) -> dict[str, Any]:
    """The config block at dotted path `where` (e.g. ``"source.xor"``, or ``"select.target.files[]"``
    for one item of a list) with the schema's defaults filled in, validated against the schema;
    `block` itself is left unchanged.

    Raises :class:`SkillmixInputError` naming the key of the first value the schema rejects
    (under `name`, e.g. ``"select.target.files[2]"``, when given).
    """
    node = _subschema(where)
    block = {} if block is None else block
    where = name or where
    result = copy.deepcopy(block)
    # the block's own schema, with references still resolved against the whole schema
    errors = sorted(_validator().evolve(schema=node).iter_errors(result), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        path = ".".join([where, *(str(p) for p in error.absolute_path)])
        message = error.message
        if error.validator == "additionalProperties":
            known = error.schema.get("properties", {})
            unknown = sorted(set(error.instance) - set(known))
            message = f"unknown key(s) {unknown}; expected keys from {sorted(known)}"
        raise SkillmixInputError(f"config {path}: {message}")
    return result


def check_yaml_file(path: str | Path) -> None:
    """Require a config file, if it exists, to be valid YAML; raise naming its line and column.

    (Snakemake reads config files itself and reports a syntax error without the place.)"""
    path = Path(path)
    if not path.is_file():
        return
    try:
        yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SkillmixInputError(f"{path}: not UTF-8 text ({exc})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        raise SkillmixInputError(
            f"{path}: not valid YAML{where}: {problem}" + (f" ({context})" if context else "")
        ) from exc

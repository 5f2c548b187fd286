"""The workflow's config schema as the library's one source of defaults.

The workflow validates the whole config against the schema (package data,
``skillmix/infra/config.schema.yaml``, linked from ``workflow/schemas/``) and fills its defaults;
the library fills the same defaults into a block it is handed, so that a function called
outside the workflow (a test, a notebook) with part of a block behaves as the workflow would.
No default is written anywhere else.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from skillmix.infra import registry
from skillmix.infra.errors import SkillmixInputError

SCHEMA_FILE = "config.schema.yaml"
"""The schema, package data of :mod:`skillmix.infra` (``workflow/schemas/`` links to it)."""


def _fill_registry_enums(node: Any) -> None:
    """Replace every ``x-registry`` marker by the enum of the registered names it asks for:
    ``{kind, also: [extra names], without_need: need}`` (:mod:`skillmix.infra.registry`)."""
    if isinstance(node, dict):
        marker = node.pop("x-registry", None)
        if marker is not None:
            chosen = registry.names(marker["kind"])
            if "without_need" in marker:
                excluded = set(registry.with_need(marker["kind"], marker["without_need"]))
                chosen = [n for n in chosen if n not in excluded]
            node["enum"] = [*marker.get("also", []), *chosen]
        for value in node.values():
            _fill_registry_enums(value)
    elif isinstance(node, list):
        for value in node:
            _fill_registry_enums(value)


@functools.cache
def schema() -> dict[str, Any]:
    """The parsed config schema with the registered method names as enums (read once per process)."""
    text = resources.files("skillmix.infra").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser when libyaml is there
    parsed = yaml.load(text, Loader=loader)
    _fill_registry_enums(parsed)
    return parsed


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


def _first_error(validator: Any, instance: Any, where: str) -> SkillmixInputError | None:
    """The first value the schema rejects, as an error naming its key (unknown keys by name only)."""
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    error = errors[0]
    path = ".".join([p for p in [where, *(str(p) for p in error.absolute_path)] if p])
    message = error.message
    if error.validator == "additionalProperties":
        known = error.schema.get("properties", {})
        unknown = sorted(set(error.instance) - set(known))
        message = f"unknown key(s) {unknown}; expected keys from {sorted(known)}"
    return SkillmixInputError(f"config {path or '(top level)'}: {message}")


class Completed(dict):
    """A settings block the schema has completed: defaults filled and validated, for the block at
    dotted path `where`. :func:`complete` hands such a block back as it is, so a block completed
    at a job's boundary is passed down complete and never completed again; editing a copy
    (``{**block, ...}``) gives a plain dict, which is completed anew where it is used."""

    def __init__(self, where: str, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.where = where

    def __reduce__(self):  # pickled (to a job's processes) with its `where`
        return (Completed, (self.where, dict(self)))

    def __deepcopy__(self, memo: dict[int, Any]) -> Completed:
        return Completed(self.where, copy.deepcopy(dict(self), memo))


def complete(where: str, block: dict[str, Any] | None, name: str | None = None) -> dict[str, Any]:
    """The config block at dotted path `where` (e.g. ``"source.xor"``, or ``"select.target.files[]"``
    for one item of a list) with the schema's defaults filled in, validated against the schema, as
    a :class:`Completed` block; `block` itself is left unchanged. A block that is already the
    completed block of `where` is returned as it is.

    Raises :class:`SkillmixInputError` naming the key of the first value the schema rejects
    (under `name`, e.g. ``"select.target.files[2]"``, when given).
    """
    if isinstance(block, Completed) and block.where == where:
        return block
    node = _subschema(where)
    result = copy.deepcopy(dict(block or {}))
    # the block's own schema, with references still resolved against the whole schema
    error = _first_error(_validator().evolve(schema=node), result, name or where)
    if error is not None:
        raise error
    return Completed(where, result)


def validate_config(config: dict[str, Any]) -> None:
    """Validate a whole workflow config against the schema and fill its defaults in place.

    Raises :class:`SkillmixInputError` naming the key of the first value the schema rejects."""
    error = _first_error(_validator(), config, "")
    if error is not None:
        raise error


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

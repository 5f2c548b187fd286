"""The workflow's config schema as the library's one source of defaults.

The workflow validates the whole config against the schema (package data,
``skillmix/infra/config.schema.yaml``, linked from ``workflow/schemas/``) and fills its defaults;
the library fills the same defaults into a block it is handed, so that a function called
outside the workflow (a test, a notebook) with part of a block behaves as the workflow would.
No default is written anywhere else.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import unicodedata
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from skillmix.infra import registry
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.scale import check_config_scale

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


_MAX_MESSAGE = 600
"""Characters of a schema message kept (a value's repr can be a whole block)."""

_LOOKALIKES = str.maketrans(
    "аеорсухіјѕԁһԛԝӏАВЕКМНОРСТХΑΒΕΖΗΙΚΜΝΟΡΤΥΧοινκρτυχ",
    "aeopcyxijsdhqwlABEKMHOPCTXABEZHIKMNOPTYXoivkptux",
)
"""Cyrillic and Greek letters drawn like ASCII ones (Unicode's confusables, the common ones)."""


def _non_finite(value: Any, path: str) -> tuple[str, float] | None:
    """The dotted path and value of the first NaN or infinity in a config (JSON-schema minimum and
    maximum never reject them: every comparison with NaN is false)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def _check_finite(config: Any, where: str) -> None:
    found = _non_finite(config, where)
    if found:
        path, value = found
        raise SkillmixInputError(
            f"config {path}: {value} (YAML .nan or .inf) is not a finite number; expected a finite "
            "number in the key's range"
        )


def ascii_lookalike(name: str) -> str | None:
    """`name` with its look-alike letters (Cyrillic а, Greek ο, fullwidth or accented letters) as
    the ASCII letters they are drawn like and invisible format characters dropped; None when
    something else non-ASCII is left."""
    folded = unicodedata.normalize("NFKD", name.translate(_LOOKALIKES))
    kept = "".join(c for c in folded if unicodedata.category(c) not in ("Mn", "Cf"))
    return kept if kept.isascii() else None


def shown_name(name: Any) -> str:
    """A name for a message: its repr, and for a non-ASCII one its escaped form and the Unicode
    names of its non-ASCII characters (so that a homoglyph is seen)."""
    if not isinstance(name, str) or name.isascii():
        return repr(name)
    odd = dict.fromkeys(c for c in name if not c.isascii())
    names = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}" for c in odd)
    return f"{ascii(name)} (non-ASCII: {names})"


def close_names(name: Any, allowed: list[str]) -> list[str]:
    """The allowed names an unknown `name` may mean: the ASCII name it looks like (a homoglyph),
    else the close ones (difflib); empty when none is close."""
    plain = ascii_lookalike(name) if isinstance(name, str) else None
    if plain is not None and plain != name and plain in allowed:
        return [plain]
    return difflib.get_close_matches(plain or str(name), allowed, n=3, cutoff=0.6)


def suggest(name: Any, allowed: list[str]) -> str:
    """What to write instead of an unknown `name`: the close allowed names, else all of them."""
    close = close_names(name, allowed)
    if not close:
        return f"expected one of {sorted(allowed)}"
    ascii_note = " (in ASCII letters)" if isinstance(name, str) and not name.isascii() else ""
    return f"did you mean {' or '.join(map(repr, close))}{ascii_note}?"


def _unknown_keys(error: Any) -> str:
    """An unknown-key error in one line: the unknown keys, shown escaped, and the close allowed
    keys of their block (all of the block's keys when none is close)."""
    known = list(error.schema.get("properties", {}))
    unknown = [key for key in error.instance if key not in known][:5]
    shown = ", ".join(shown_name(key) for key in unknown)
    if not all(close_names(key, known) for key in unknown):
        return f"unknown key(s) [{shown}]; expected keys from {sorted(known)}"
    hints = [suggest(key, known) for key in unknown]
    if len(unknown) > 1:
        hints = [f"for {shown_name(key)}, {hint}" for key, hint in zip(unknown, hints, strict=True)]
    return f"unknown key(s) [{shown}]; expected keys from this block: {'; '.join(hints)}"


def _branches(error: Any) -> str:
    """Why a value fits none of a oneOf/anyOf's choices: the deepest complaint of each choice."""
    by_branch: dict[Any, list[Any]] = {}
    for sub in error.context or ():
        by_branch.setdefault(sub.schema_path[0], []).append(sub)
    parts = []
    for subs in by_branch.values():
        sub = max(subs, key=lambda e: len(e.path))
        at = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in sub.path)
        parts.append(f"{at}: {sub.message}" if at else sub.message)
    return f"{error.message} ({'; or '.join(parts)})" if parts else error.message


def _message(error: Any) -> str:
    """A schema error's message, one short line naming what is wrong and what is expected."""
    if error.validator == "additionalProperties":
        message = _unknown_keys(error)
    elif error.validator in ("oneOf", "anyOf"):
        message = _branches(error)
    else:
        message = error.message
        value = error.instance
        if isinstance(value, str) and not value.isascii():
            allowed = [v for v in error.schema.get("enum", []) if isinstance(v, str)]
            message = message.replace(repr(value), shown_name(value), 1)
            message += f"; {suggest(value, allowed)}" if allowed else ""
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 40] + " … " + message[-37:]
    return message


def _first_error(validator: Any, instance: Any, where: str) -> SkillmixInputError | None:
    """The first value the schema rejects, as an error naming its key (unknown keys by name only)."""
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return None
    error = errors[0]
    path = ".".join([p for p in [where, *(str(p) for p in error.absolute_path)] if p])
    return SkillmixInputError(f"config {path or '(top level)'}: {_message(error)}")


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
    _check_finite(result, name or where)
    # the block's own schema, with references still resolved against the whole schema
    error = _first_error(_validator().evolve(schema=node), result, name or where)
    if error is not None:
        raise error
    return Completed(where, result)


def validate_config(config: dict[str, Any]) -> None:
    """Validate a whole workflow config against the schema and fill its defaults in place.

    Raises :class:`SkillmixInputError` naming the key of the first value the schema rejects (NaN
    and infinity everywhere: the schema's bounds let them through), then checks what the config
    alone decides about the run's scale (:mod:`skillmix.infra.scale`)."""
    _check_finite(config, "")
    error = _first_error(_validator(), config, "")
    if error is not None:
        raise error
    check_config_scale(config)


YTE_KEY = "__use_yte__"
"""The top-level key that makes Snakemake render a config file with YTE, running its expressions."""


def _duplicate_keys(node: Any, path: str, file: Path) -> None:
    """Raise at the first key given twice in one mapping of a composed YAML document (YAML keeps
    the last and drops the first without a word)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            where = f"{path}.{key}" if path else str(key)
            if key in seen:
                raise SkillmixInputError(
                    f"{file}: key {where} is given twice (line {seen[key].line + 1} and line "
                    f"{key_node.start_mark.line + 1}); YAML would keep the second and silently drop "
                    "the first: write it once, with all its settings"
                )
            seen[key] = key_node.start_mark
            _duplicate_keys(value_node, where, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _duplicate_keys(item, f"{path}.{index}", file)


def _refuse_yte(root: Any, file: Path) -> None:
    """Raise when a config file sets Snakemake's ``__use_yte__`` (its expressions are code)."""
    if not isinstance(root, yaml.MappingNode):
        return
    for key_node, _ in root.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == YTE_KEY:
            raise SkillmixInputError(
                f"{file}: line {key_node.start_mark.line + 1} sets {YTE_KEY}, which makes Snakemake "
                "render the file as a YTE template and run its Python expressions (a file given with "
                "--configfile is rendered before the workflow can check it): skillmix config files "
                f"must be plain YAML; remove {YTE_KEY} and write the values out"
            )


def check_yaml_file(path: str | Path) -> None:
    """Require a config file, if it exists, to be plain, valid YAML; raise naming the place: a syntax
    error by its line and column, a key given twice in one mapping by both lines, a
    ``__use_yte__`` key (Snakemake's templating, which runs the file's Python expressions).

    (Snakemake reads config files itself: it reports a syntax error without the place, keeps the
    last of two equal keys, and renders a file that sets ``__use_yte__``.)"""
    path = Path(path)
    if not path.is_file():
        return
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)  # the pure-Python parser names the problem
        yaml.safe_load(text)
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
    _refuse_yte(root, path)
    _duplicate_keys(root, "", path)


def check_config_files(paths: list[str | Path]) -> None:
    """:func:`check_yaml_file` for every config file of a run (``workflow.configfiles``: the
    workflow's own and those given with ``--configfile``)."""
    for path in dict.fromkeys(str(p) for p in paths):
        check_yaml_file(path)

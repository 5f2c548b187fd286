"""Example sources: the common data model and the dispatcher over source kinds.

Every source yields a :class:`SourceData` whose ``examples`` frame has exactly the columns
:data:`COLUMNS`. Prompt/answer data has ``text = prompt + " " + answer``; plain-text data has
empty ``prompt`` and ``answer`` and carries everything in ``text``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError

if TYPE_CHECKING:
    import pandas as pd

COLUMNS: list[str] = ["id", "skill", "prompt", "answer", "text", "messages"]
KINDS: tuple[str, ...] = ("xor", "lego", "addition", "table", "natural_instructions")
SYNTHETIC_KINDS: tuple[str, ...] = ("xor", "lego", "addition")


@dataclass
class SourceData:
    """Examples of one source, the canonical skill order, and where they came from.

    `repeats` marks a source that draws examples with replacement on purpose (XOR): its repeated
    examples are split independently, like any others. Elsewhere a repeated example stays on one
    side of the split (:func:`skillmix.data.splitting.split_by_skill`).
    """

    examples: pd.DataFrame
    skills: list[str]
    origin: str
    repeats: bool = False


def examples_frame(records: dict[str, list[str]]) -> pd.DataFrame:
    """Build an examples frame with exactly :data:`COLUMNS` (in that order) from column lists; rows
    without `messages` (JSON text of a chat) get "" there."""
    import pandas as pd  # here, not at the top: the Snakefile imports this package at parse time

    if not records.get("messages"):
        records = {**records, "messages": [""] * len(records["id"])}
    return pd.DataFrame({column: pd.Series(records[column], dtype=str) for column in COLUMNS})


def stable_seed(*parts: str | int) -> int:
    """Return a 63-bit integer hash of ``parts`` that is stable across processes and machines."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def require_int(value: Any, key: str, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int in ``[minimum, maximum]``; raise naming config ``key``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SkillmixInputError(f"config {key}: expected an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise SkillmixInputError(f"config {key}: expected an integer >= {minimum}{upper}, got {value}")
    return value


def per_skill_counts(
    value: Any, n_skills: int, key: str, minimum: int = 1, distinct: tuple[int, str] | None = None
) -> list[int]:
    """Per-skill example counts from one integer (the same for every skill) or a list of them.

    A list must have one integer >= `minimum` per skill, in skill order. With `distinct` =
    (how many distinct examples a skill has, what they are), no count may exceed that number.
    """
    if isinstance(value, list):
        if len(value) != n_skills:
            raise SkillmixInputError(
                f"config {key}: expected {n_skills} counts (one per skill), got {len(value)}"
            )
        counts = [require_int(v, key, minimum) for v in value]
    else:
        counts = [require_int(value, key, minimum)] * n_skills
    if distinct is not None and counts and max(counts) > distinct[0]:
        raise SkillmixInputError(
            f"config {key}: {max(counts)} exceeds the {distinct[0]} distinct {distinct[1]} that exist"
        )
    return counts


def resolve_path(value: Any, key: str, base_dir: str | Path | None) -> Path:
    """Return config path ``value`` made absolute (relative to ``base_dir``, default cwd).

    Raises when the path is not set. ``..`` parts are normalised, symlinks are kept.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise SkillmixInputError(f"config {key}: a path is required, got {value!r}")
    if not isinstance(value, (str, Path)):
        raise SkillmixInputError(f"config {key}: expected a path string, got {value!r}")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(base_dir if base_dir is not None else Path.cwd()) / path
    return Path(os.path.abspath(path))


def _generate(cfg: dict[str, Any], counts: int | list[int] | None, stream: tuple[int, ...]) -> SourceData:
    """Examples of a synthetic source: the configured counts, or `counts` drawn from `stream`."""
    seed = require_int(cfg["seed"], "source.seed", 0)
    kind = cfg["kind"]
    if kind == "xor":
        from skillmix.data.sources.xor import generate_xor

        block = cfg["xor"]
        wanted = block["examples_per_skill"] if counts is None else counts
        return generate_xor(block["n_symbols"], block["maps"], block["composites"], wanted, seed, stream)
    if kind == "lego":
        from skillmix.data.sources.lego import generate_lego

        block = cfg["lego"]
        wanted = block["examples_per_skill"] if counts is None else counts
        return generate_lego(block["n_vars"], wanted, seed, stream)
    from skillmix.data.sources.addition import generate_addition

    block = cfg["addition"]
    wanted = block["examples_per_skill"] if counts is None else counts
    return generate_addition(block["n_digits"], wanted, seed, stream)


def generate_fresh(cfg: dict[str, Any], counts: dict[str, int], stream: tuple[int, ...]) -> SourceData:
    """New examples of a synthetic source: ``counts[skill]`` of each named skill, none of the others.

    The source's own settings (maps, chain length, digits, ``source.seed``) are kept; the
    examples come from generators seeded by ``(source.seed, skill, *stream)``, so a non-empty
    ``stream`` (e.g. training seed and round) gives examples independent of the source's pool
    and of every other stream, and the same ones every time. Within a skill, LEGO and Addition
    examples are distinct; XOR draws with replacement (a map skill has only ``n_symbols``
    distinct prompts).
    """
    cfg = complete("source", cfg)
    if cfg["kind"] not in SYNTHETIC_KINDS:
        raise SkillmixInputError(
            f"config source.kind: fresh examples need a synthetic source {list(SYNTHETIC_KINDS)}, "
            f"got {cfg['kind']!r}"
        )
    if not stream:
        raise ValueError("generate_fresh needs a non-empty stream (the pool uses the empty one)")
    skills = _generate(cfg, 0, (0,)).skills  # the generator's own skill order, no examples drawn
    unknown = sorted(set(counts) - set(skills))
    if unknown:
        raise SkillmixInputError(f"fresh examples asked for skills {unknown}; the source has {skills}")
    return _generate(cfg, [int(counts.get(s, 0)) for s in skills], tuple(int(x) for x in stream))


def load_source(cfg: dict[str, Any], base_dir: str | Path | None = None) -> SourceData:
    """Load the examples described by the ``source`` config block, dispatching on ``kind``.

    Relative paths in the block resolve against ``base_dir`` (default: the current directory).
    """
    cfg = complete("source", cfg)
    kind = cfg["kind"]
    if kind not in KINDS:
        raise SkillmixInputError(f"config source.kind: expected one of {list(KINDS)}, got {kind!r}")
    seed = require_int(cfg["seed"], "source.seed", 0)
    if kind in SYNTHETIC_KINDS:
        return _generate(cfg, None, ())
    if kind == "table":
        from skillmix.data.sources.tables import load_table

        return load_table(cfg["table"], base_dir)
    from skillmix.data.sources.natural_instructions import load_natural_instructions

    return load_natural_instructions(cfg["natural_instructions"], base_dir, seed=seed)


def source_vocabulary(cfg: dict[str, Any]) -> list[str] | None:
    """Every word the examples of a synthetic source can contain; None for other kinds.

    It depends on the config alone (no examples are generated), so a word-level tokenizer
    built from it is the same in every job.
    """
    cfg = complete("source", cfg)
    kind = cfg["kind"]
    if kind == "xor":
        from skillmix.data.sources.xor import xor_vocabulary

        return xor_vocabulary(cfg["xor"]["maps"], cfg["xor"]["n_symbols"])
    if kind == "lego":
        from skillmix.data.sources.lego import lego_vocabulary

        return lego_vocabulary()
    if kind == "addition":
        from skillmix.data.sources.addition import addition_vocabulary

        return addition_vocabulary()
    return None


def resolve_tiny_tokenizer(model_cfg: dict[str, Any], source_cfg: dict[str, Any]) -> dict[str, Any]:
    """The `model.tiny` block with its tokenizer resolved: `word` with a vocabulary, or `byte`.

    `auto` is `word` when `model.tiny.vocabulary` is given or the source has a fixed vocabulary
    (:func:`source_vocabulary`), else `byte`; `word` without either is an error. Other model
    kinds keep the block as it is.
    """
    model_cfg = complete("model", model_cfg)
    tiny = dict(model_cfg.get("tiny") or {})
    kind = tiny["tokenizer"]
    if model_cfg["kind"] != "tiny" or kind == "byte":
        return tiny
    words = tiny.get("vocabulary") or source_vocabulary(source_cfg)
    if words is None and kind == "word":
        raise SkillmixInputError(
            f"model.tiny.tokenizer is word, but source.kind {source_cfg.get('kind')!r} has no fixed "
            "vocabulary: list the words in model.tiny.vocabulary, or use model.tiny.tokenizer: byte"
        )
    return {**tiny, "tokenizer": "byte" if words is None else "word", "vocabulary": words}


__all__ = [
    "COLUMNS",
    "KINDS",
    "SYNTHETIC_KINDS",
    "SourceData",
    "examples_frame",
    "generate_fresh",
    "load_source",
    "per_skill_counts",
    "require_int",
    "resolve_path",
    "resolve_tiny_tokenizer",
    "source_vocabulary",
    "stable_seed",
]

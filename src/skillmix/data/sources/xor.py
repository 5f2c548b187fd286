"""XOR skills: a synthetic task with a known skills graph that a tiny model learns in minutes.

There are a few secret bit maps (``f``, ``g``, ``h``); each has its own symbols (``f0`` …
``f255``) and sends half of them to 0 and half to 1. Two kinds of skill:

- a *map skill* ``map-f`` asks for one symbol's bit: prompt ``"f3 ="``, answer ``f(3)``;
- a *composite skill* ``xor-f`` asks for the XOR of the bits of its maps' symbols and of a bit
  written in the prompt: prompt ``"f3 ^ 1 ="``, answer ``f(3) xor 1`` (``xor-f-g``: ``"f3 g7 ^ 0 ="``).

Why the graph is known (measured, see docs/benchmarks.md): a composite's answer is uncorrelated
with each of its inputs (the maps are balanced and the written bit is uniform), so a model
trained on a composite alone gets no first-order signal and stays at chance for a thousand steps
and more. Trained beside the map skill of its own map, it learns the composite within a few
hundred steps: the map skill teaches the bits, which the composite then XORs with the written
one. Another map's skill does not help within that time (its symbols are others; with few
symbols per map it does help, by teaching the model how to read out a bit), composites help
neither maps nor each other, and a map skill, learned alone in a few hundred steps, needs no
help. So the map skill of each of a composite's maps is a prerequisite of that composite and
there are no other edges; a map that no composite uses (``h`` by default) is a distractor.
:func:`xor_ground_truth` writes this graph (rows = training skill, columns = evaluated skill).

The inputs are few (``n_symbols`` per map, twice as many per one-map composite), so examples
are drawn with replacement and validation/test prompts also occur in training: accuracy says
whether a skill's function is learned, not whether it generalises to unseen inputs.
"""

from __future__ import annotations

import re

import numpy as np

from skillmix.data.sources import SourceData, examples_frame, per_skill_counts, require_int
from skillmix.infra.errors import SkillmixInputError


def _check_spec(maps: list[str], composites: list[list[str]]) -> None:
    if not isinstance(maps, list) or not maps:
        raise SkillmixInputError(f"config source.xor.maps: expected a non-empty list of names, got {maps!r}")
    for name in maps:
        if not isinstance(name, str) or not name.isalpha() or not name.islower():
            raise SkillmixInputError(
                f"config source.xor.maps: map names must be lower-case letters, got {name!r}"
            )
    if len(set(maps)) != len(maps):
        raise SkillmixInputError(f"config source.xor.maps: names must be distinct, got {maps}")
    if not isinstance(composites, list):
        raise SkillmixInputError(
            f"config source.xor.composites: expected a list of map lists, got {composites!r}"
        )
    for combo in composites:
        if not isinstance(combo, list) or not combo or len(set(combo)) != len(combo):
            raise SkillmixInputError(
                f"config source.xor.composites: each composite lists >= 1 distinct maps, got {combo!r}"
            )
        unknown = [m for m in combo if m not in maps]
        if unknown:
            raise SkillmixInputError(
                f"config source.xor.composites: {combo} uses map(s) {unknown} not in source.xor.maps {maps}"
            )
    names = [tuple(c) for c in composites]
    if len(set(names)) != len(names):
        raise SkillmixInputError(f"config source.xor.composites: a composite is listed twice: {composites}")


def xor_skill_names(maps: list[str], composites: list[list[str]]) -> list[str]:
    """Skill names in canonical order: ``map-<m>`` for every map, then ``xor-<m1>[-<m2>…]``."""
    _check_spec(maps, composites)
    return [f"map-{m}" for m in maps] + ["xor-" + "-".join(c) for c in composites]


def xor_symbols(name: str, n_symbols: int) -> list[str]:
    """The input symbols of map ``name``: ``<name>0`` … ``<name>{n-1}``."""
    return [f"{name}{i}" for i in range(n_symbols)]


def xor_vocabulary(maps: list[str], n_symbols: int) -> list[str]:
    """Every word an XOR-skills example can contain."""
    return ["=", "^", "0", "1", *[w for m in maps for w in xor_symbols(m, n_symbols)]]


def xor_bit_maps(maps: list[str], n_symbols: int, seed: int) -> dict[str, np.ndarray]:
    """The secret balanced bit map of every map name (a pure function of the arguments)."""
    require_int(n_symbols, "source.xor.n_symbols", 2)
    if n_symbols % 2:
        raise SkillmixInputError(
            f"config source.xor.n_symbols: expected an even number (balanced maps), got {n_symbols}"
        )
    out = {}
    for k, name in enumerate(maps):
        rng = np.random.default_rng([seed, 77, k])
        out[name] = (rng.permutation(n_symbols) % 2).astype(np.int64)
    return out


_SYMBOL_RE = re.compile(r"([a-z]+)(\d+)")


def xor_answer(prompt: str, bit_maps: dict[str, np.ndarray]) -> int:
    """The answer bit of an XOR-skills ``prompt`` (``"f3 ="`` or ``"f3 [g7 …] ^ <bit> ="``)."""
    words = prompt.split()
    if len(words) < 2 or words[-1] != "=":
        raise SkillmixInputError(f"XOR prompt {prompt!r}: expected '<symbol> [<symbol> …] [^ <bit>] ='")
    symbols = words[:-1]
    value = 0
    if len(symbols) >= 2 and symbols[-2] == "^":
        if symbols[-1] not in ("0", "1"):
            raise SkillmixInputError(f"XOR prompt {prompt!r}: the written bit {symbols[-1]!r} is not 0 or 1")
        value, symbols = int(symbols[-1]), symbols[:-2]
    for symbol in symbols:
        match = _SYMBOL_RE.fullmatch(symbol)
        if (
            match is None
            or match.group(1) not in bit_maps
            or int(match.group(2)) >= len(bit_maps[match.group(1)])
        ):
            raise SkillmixInputError(
                f"XOR prompt {prompt!r}: {symbol!r} is no symbol of the maps {sorted(bit_maps)}"
            )
        value ^= int(bit_maps[match.group(1)][int(match.group(2))])
    return value


def xor_ground_truth(maps: list[str], composites: list[list[str]]) -> np.ndarray:
    """The known skills graph: 1 on the diagonal and from each map skill to the composites using it.

    Rows are training skills, columns evaluated skills, both in :func:`xor_skill_names` order.
    """
    names = xor_skill_names(maps, composites)
    graph = np.eye(len(names))
    for c, combo in enumerate(composites):
        for m in combo:
            graph[maps.index(m), len(maps) + c] = 1.0
    return graph


def generate_xor(
    n_symbols: int,
    maps: list[str],
    composites: list[list[str]],
    examples_per_skill: int | list[int],
    seed: int,
    stream: tuple[int, ...] = (),
) -> SourceData:
    """Draw XOR-skills examples (with replacement) for every map and composite skill.

    ``examples_per_skill`` is one count or one per skill (maps first, then composites). Skill
    i draws from a generator seeded by ``(seed, i, *stream)``; the maps come from ``seed``
    alone. A non-empty ``stream`` (fresh examples) allows counts of 0. Ids are
    ``<skill>-{j:06d}``.
    """
    skills = xor_skill_names(maps, composites)
    counts = per_skill_counts(
        examples_per_skill, len(skills), "source.xor.examples_per_skill", 0 if stream else 1
    )
    require_int(seed, "source.seed", 0)
    bit_maps = xor_bit_maps(maps, n_symbols, seed)
    records: dict[str, list[str]] = {"id": [], "skill": [], "prompt": [], "answer": [], "text": []}
    uses = [[m] for m in maps] + [list(c) for c in composites]
    for i, (skill, used, wanted) in enumerate(zip(skills, uses, counts, strict=True)):
        rng = np.random.default_rng([seed, i, *stream])
        drawn = rng.integers(0, n_symbols, size=(wanted, len(used)))
        bits = np.zeros(wanted, dtype=np.int64)
        for k, name in enumerate(used):
            bits ^= bit_maps[name][drawn[:, k]]
        composite = i >= len(maps)
        written = rng.integers(0, 2, size=wanted) if composite else np.zeros(wanted, dtype=np.int64)
        bits ^= written
        for j, (row, bit, extra) in enumerate(
            zip(drawn.tolist(), bits.tolist(), written.tolist(), strict=True)
        ):
            words = [f"{name}{x}" for name, x in zip(used, row, strict=True)]
            if composite:
                words += ["^", str(extra)]
            prompt = " ".join(words) + " ="
            records["id"].append(f"{skill}-{j:06d}")
            records["skill"].append(skill)
            records["prompt"].append(prompt)
            records["answer"].append(str(bit))
            records["text"].append(f"{prompt} {bit}")
    return SourceData(examples=examples_frame(records), skills=skills, origin="xor generator", repeats=True)

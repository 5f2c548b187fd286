"""LEGO synthetic task (Skill-It section 7): resolve a variable of a shuffled boolean chain.

A chain of ``n_vars`` variables x_0 -> x_1 -> ... with independent random bits b_i; variable i
has value b_i. The root clause is ``"{x0} = val {b0}"``; every other clause is
``"{xi} = val {x(i-1)}"`` when b_i == b_(i-1), else ``"{xi} = not {x(i-1)}"``. Skill ``lego-i``
asks for the value of chain position i (1-indexed). The text is the original's, character for
character: the clauses are shuffled and joined as ``"Input: "`` + ``"{x0} = val {b0} , "`` /
``" {xi} = val|not {x(i-1)} , "`` with the last 3 characters cut, then ``". Output: {x} = val "``
and the bit. The prompt names the queried variable and the answer is the bit alone::

    prompt: "Input:  q = not d , x = val 1 ,  d = val x. Output: q = val"
    answer: "0"

(The original follows the bit with ``", "``; skillmix's answer is the bit, which is what the
original scores.)
"""

from __future__ import annotations

import math
import re
import string

import numpy as np

from skillmix.data.sources import SourceData, examples_frame, per_skill_counts, require_int
from skillmix.infra.errors import SkillmixInputError

_PROMPT_RE = re.compile(r"Input: (.+)\. Output: ([a-z]) = val")
_CLAUSE_RE = re.compile(r"([a-z]) = (val|not) ([a-z]|[01])")
_LETTERS = list(string.ascii_lowercase)


def lego_skill_names(n_vars: int) -> list[str]:
    """Return the LEGO skill names in canonical order: ``lego-1`` .. ``lego-{n_vars}``."""
    return [f"lego-{i}" for i in range(1, n_vars + 1)]


def lego_vocabulary() -> list[str]:
    """Every whitespace-separated word a LEGO text can contain (for a word-level tokenizer)."""
    return ["Input:", "Output:", "=", "val", "not", ",", "0", "1", "0.", "1.", *_LETTERS] + [
        f"{x}." for x in _LETTERS
    ]


def _lego_prompt(names: list[str], bits: list[int], order: list[int], query: int) -> str:
    """The prompt for one chain, its clauses listed in ``order``, asking for variable ``query``."""
    clauses = [f"{names[0]} = val {bits[0]} , "]
    for k in range(1, len(names)):
        op = "val" if bits[k] == bits[k - 1] else "not"
        clauses.append(f" {names[k]} = {op} {names[k - 1]} , ")
    body = ("Input: " + "".join(clauses[o] for o in order))[:-3]
    return f"{body}. Output: {names[query]} = val"


def generate_lego(
    n_vars: int, examples_per_skill: int | list[int], seed: int, stream: tuple[int, ...] = ()
) -> SourceData:
    """Generate distinct LEGO examples for each of the ``n_vars`` skills.

    ``examples_per_skill`` is one count for every skill or a list with one count per skill
    (Skill-It's LEGO data is unbalanced, 1:1:1:3:5, so that its natural mixture differs from
    the uniform one).

    Skill i draws from its own generator seeded by ``(seed, i, *stream)``, so the output is a
    pure function of the arguments (a non-empty ``stream``, for fresh examples, allows counts
    of 0). Ids are ``lego-{i}-{j:06d}``.
    """
    require_int(n_vars, "source.lego.n_vars", 1, len(_LETTERS))
    capacity = math.perm(len(_LETTERS), n_vars) * 2**n_vars * math.factorial(n_vars)
    counts = per_skill_counts(
        examples_per_skill,
        n_vars,
        "source.lego.examples_per_skill",
        0 if stream else 1,
        distinct=(capacity, f"LEGO examples for n_vars={n_vars}"),
    )
    require_int(seed, "source.seed", 0)
    skills = lego_skill_names(n_vars)
    records: dict[str, list[str]] = {"id": [], "skill": [], "prompt": [], "answer": [], "text": []}
    for i, (skill, wanted) in enumerate(zip(skills, counts, strict=True), start=1):
        rng = np.random.default_rng([seed, i, *stream])
        seen: set[str] = set()
        while len(seen) < wanted:
            batch = wanted - len(seen)
            names = rng.permuted(np.tile(np.arange(len(_LETTERS)), (batch, 1)), axis=1)[:, :n_vars]
            bits = rng.integers(0, 2, size=(batch, n_vars))
            orders = rng.permuted(np.tile(np.arange(n_vars), (batch, 1)), axis=1)
            for row_names, row_bits, order in zip(
                names.tolist(), bits.tolist(), orders.tolist(), strict=True
            ):
                letters = [_LETTERS[n] for n in row_names]
                prompt = _lego_prompt(letters, row_bits, order, i - 1)
                answer = str(row_bits[i - 1])
                text = f"{prompt} {answer}"
                if text in seen:
                    continue
                seen.add(text)
                records["id"].append(f"{skill}-{len(seen) - 1:06d}")
                records["skill"].append(skill)
                records["prompt"].append(prompt)
                records["answer"].append(answer)
                records["text"].append(text)
    return SourceData(examples=examples_frame(records), skills=skills, origin="lego generator")


def resolve_lego(prompt: str, name: str | None = None) -> int:
    """Parse the clauses of a LEGO ``prompt`` and return the value (0 or 1) of variable ``name``.

    ``name`` defaults to the variable the prompt asks for (``… Output: <x> = val``).
    """
    match = _PROMPT_RE.fullmatch(prompt)
    if match is None:
        raise SkillmixInputError(f"LEGO prompt {prompt!r}: expected 'Input: <clauses>. Output: <x> = val'")
    if name is None:
        name = match.group(2)
    definitions: dict[str, tuple[str, str]] = {}
    for clause in match.group(1).split(","):
        parts = _CLAUSE_RE.fullmatch(clause.strip())
        if parts is None:
            raise SkillmixInputError(
                f"LEGO prompt {prompt!r}: clause {clause!r} is not '<x> = val|not <y|0|1>'"
            )
        var, op, arg = parts.groups()
        if var in definitions:
            raise SkillmixInputError(f"LEGO prompt {prompt!r}: variable {var!r} is defined twice")
        definitions[var] = (op, arg)
    chain: list[str] = []
    current = name
    while current not in ("0", "1"):
        if current not in definitions:
            raise SkillmixInputError(f"LEGO prompt {prompt!r}: variable {current!r} is not defined")
        if current in chain:
            raise SkillmixInputError(f"LEGO prompt {prompt!r}: variable {current!r} is cyclic")
        chain.append(current)
        current = definitions[current][1]
    value = int(current)
    for var in chain:
        if definitions[var][0] == "not":
            value = 1 - value
    return value

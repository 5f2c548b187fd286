"""Addition synthetic task (Skill-It section 7): one digit of the sum of two n-digit numbers.

Skill ``digit-d`` asks for digit d of the sum (d = 0 is the ones digit; the carry-out digit is
never asked). Operands are zero-padded and written digit by digit::

    prompt: "Input: A = 1 0 6 + 0 7 1 , A 0 = ? Output:"
    answer: "7"
"""

from __future__ import annotations

import numpy as np

from skillmix.data.sources import SourceData, examples_frame, per_skill_counts, require_int

MAX_DIGITS = 18  # operands and their sum stay within int64


def addition_skill_names(n_digits: int) -> list[str]:
    """Return the Addition skill names in canonical order: ``digit-0`` .. ``digit-{n_digits-1}``."""
    return [f"digit-{d}" for d in range(n_digits)]


def addition_vocabulary() -> list[str]:
    """Every whitespace-separated word an Addition text can contain (for a word-level tokenizer)."""
    return ["Input:", "A", "=", "+", ",", "?", "Output:", *[str(d) for d in range(10)]]


def spaced_digits(value: int, n_digits: int) -> str:
    """Return ``value`` zero-padded to ``n_digits`` with its digits separated by spaces."""
    return " ".join(f"{value:0{n_digits}d}")


def generate_addition(
    n_digits: int, examples_per_skill: int | list[int], seed: int, stream: tuple[int, ...] = ()
) -> SourceData:
    """Generate distinct Addition examples for each of ``n_digits`` skills.

    ``examples_per_skill`` is one count for every skill or a list with one count per skill.

    Operands are uniform on ``[0, 10**n_digits - 1]``. Skill d draws from its own generator
    seeded by ``(seed, d, *stream)`` (a non-empty ``stream``, for fresh examples, allows
    counts of 0). Ids are ``digit-{d}-{j:06d}``.
    """
    require_int(n_digits, "source.addition.n_digits", 1, MAX_DIGITS)
    counts = per_skill_counts(
        examples_per_skill,
        n_digits,
        "source.addition.examples_per_skill",
        0 if stream else 1,
        distinct=(10 ** (2 * n_digits), f"operand pairs for n_digits={n_digits}"),
    )
    require_int(seed, "source.seed", 0)
    skills = addition_skill_names(n_digits)
    records: dict[str, list[str]] = {"id": [], "skill": [], "prompt": [], "answer": [], "text": []}
    for d, (skill, wanted) in enumerate(zip(skills, counts, strict=True)):
        rng = np.random.default_rng([seed, d, *stream])
        seen: set[tuple[int, int]] = set()
        while len(seen) < wanted:
            operands = rng.integers(0, 10**n_digits, size=(wanted - len(seen), 2))
            for a1, a2 in operands.tolist():
                if (a1, a2) in seen:
                    continue
                seen.add((a1, a2))
                prompt = (
                    f"Input: A = {spaced_digits(a1, n_digits)} + {spaced_digits(a2, n_digits)} , "
                    f"A {d} = ? Output:"
                )
                answer = str((a1 + a2) // 10**d % 10)
                records["id"].append(f"{skill}-{len(seen) - 1:06d}")
                records["skill"].append(skill)
                records["prompt"].append(prompt)
                records["answer"].append(answer)
                records["text"].append(f"{prompt} {answer}")
    return SourceData(examples=examples_frame(records), skills=skills, origin="addition generator")

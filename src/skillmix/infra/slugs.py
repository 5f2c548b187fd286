"""Skill slugs: the file-name-safe name of a skill in every path (slices, graph units, runs).

Dependency-free, so the Snakefile can build wildcard patterns from it at parse time.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from skillmix.infra.errors import SkillmixInputError

SLUG_PATTERN = r"[a-z0-9]+(?:[_-][a-z0-9]+)*"
"""Regex of a slug (no capturing groups; for wildcard_constraints)."""

_SLUG_RE = re.compile(SLUG_PATTERN)
_MAX_SAFE_LEN = 60
_MAX_FOLDED_LEN = 40


def skill_slug(name: str) -> str:
    """Return a filename-safe slug for skill ``name`` that depends only on the name.

    A name that already matches :data:`SLUG_PATTERN` (and has at most 60 characters) is its own
    slug. Otherwise the name is NFKD-normalised, ASCII-folded and lowercased, runs of other
    characters become ``-``, the result is cut to 40 characters, and ``-`` plus the first 8 hex
    digits of the name's SHA-1 is appended (``skill-<hash>`` when nothing survives folding).
    A slug never contains ``__``.
    """
    if not isinstance(name, str):
        raise SkillmixInputError(f"skill name {name!r}: expected a string")
    if len(name) <= _MAX_SAFE_LEN and _SLUG_RE.fullmatch(name):
        return name
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    folded = re.sub(r"[^a-z0-9]+", lambda m: m.group() if m.group() in ("-", "_") else "-", folded)
    folded = folded.strip("-_")[:_MAX_FOLDED_LEN].rstrip("-_")
    return f"{folded}-{digest}" if folded else f"skill-{digest}"

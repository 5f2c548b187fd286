"""skillmix: choose what a language model should train on (Skill-It, LESS, eNTK)."""

from __future__ import annotations

__version__ = "0.1.0"

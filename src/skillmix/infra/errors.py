"""Errors raised on bad user input, before expensive work starts."""

from __future__ import annotations


class SkillmixInputError(ValueError):
    """Bad input data or configuration.

    The message always names the offending file, column, key or skill and says what was
    expected, so that a user can fix the input without reading the code.
    """

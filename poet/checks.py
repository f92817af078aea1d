"""Checks of values read from files (configs, checkpoints' args, model info), as one-line messages. Stdlib only,
so the torch-free runtime's model info and the model library's config share them."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(value: Any) -> str:
    """A value as messages show it: its repr and, where that does not say it, its type."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    if isinstance(value, bool):
        return f"{text} (a boolean)"
    if value is None or isinstance(value, (int, float)):
        return text
    return f"{text} (a {'string' if isinstance(value, str) else type(value).__name__})"


def check_value(name: str, value: Any, kind: Any) -> Any:
    """``value`` if it is of the simple type ``kind`` (bool, int, float or str), else ValueError naming ``name``.

    Booleans are not numbers here, whole-number floats are not ints, and floats must be finite: what a
    hand-edited file or a damaged checkpoint gets wrong.
    """
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {describe(value)}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be a whole number, got {describe(value)}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {describe(value)}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {describe(value)}")
        return value
    raise TypeError(f"no check for {kind!r}")  # pragma: no cover - a field of a new type

"""Input checks shared by modules that must stay light (no torch, no LlamaIndex at import)."""

from __future__ import annotations

from typing import Any

from heal_rag.errors import InvalidValueError


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` if it is an int >= 1 (not a bool); else raise a ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidValueError(f"The {name!r} parameter must be a positive integer. Got {value!r} instead.")
    return value

"""Input checks shared by modules that must stay light (no torch, no LlamaIndex at import)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from heal_rag.errors import InvalidValueError


def preview_ids(ids: Iterable[Any], limit: int = 5) -> str:
    """Return the first ``limit`` ids (repr, comma-separated) and how many more, for an error message.

    Example:
        >>> preview_ids(["a", "b", "c"], limit=2)
        "'a', 'b' ... and 1 more"

    """
    ids = list(ids)
    more = len(ids) - limit
    return ", ".join(repr(i) for i in ids[:limit]) + (f" ... and {more} more" if more > 0 else "")


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` if it is an int >= 1 (not a bool); else raise a ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidValueError(f"The {name!r} parameter must be a positive integer. Got {value!r} instead.")
    return value


#: Fewer tokens than this leave no passage worth answering from.
MIN_PASSAGE_TOKENS = 16


def check_passage_max_tokens(value: Any, where: str = "") -> None:
    """Refuse a passage token limit that is not None or an integer >= :data:`MIN_PASSAGE_TOKENS`."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_PASSAGE_TOKENS:
        raise InvalidValueError(
            f"{where}passage_max_tokens must be an integer >= {MIN_PASSAGE_TOKENS} (tokens kept of each "
            f"passage the generator sees) or None (whole passages); got {value!r}."
        )

"""Whether progress bars show: one rule for the whole package.

Every function and class with a ``show_progress`` parameter resolves it here:

- ``True`` or ``False`` given explicitly decides (except that ``TQDM_DISABLE=1``, tqdm's own switch, always
  hides bars);
- ``None`` (the default) follows the ``heal_rag`` logger, as sentence-transformers does with its own
  logger: bars show when its effective level is INFO or lower. The ``heal-rag`` command line sets that
  level (``-q`` raises it to WARNING, which hides the bars); in Python, ``logging.basicConfig(level="INFO")``
  or ``logging.getLogger("heal_rag").setLevel("INFO")`` turns them on.
"""

from __future__ import annotations

import logging
import os

__all__ = ["PACKAGE_LOGGER", "show_progress"]

PACKAGE_LOGGER = "heal_rag"
_TRUE = {"1", "true", "yes", "on"}


def tqdm_disabled() -> bool:
    """Whether the environment switches tqdm bars off (``TQDM_DISABLE=1``)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in _TRUE


def show_progress(explicit: bool | None = None) -> bool:
    """Resolve a ``show_progress`` argument: show bars or not.

    Args:
        explicit: the caller's choice; ``None`` follows the ``heal_rag`` logger's effective level (bars at
            INFO and below).

    Returns:
        ``False`` when ``TQDM_DISABLE=1``; else ``explicit`` when given; else whether the ``heal_rag``
        logger is enabled for INFO.

    """
    if tqdm_disabled():
        return False
    if explicit is not None:
        return bool(explicit)
    return logging.getLogger(PACKAGE_LOGGER).isEnabledFor(logging.INFO)

"""The one way heal-rag tells users that a public name moved or was renamed."""

from __future__ import annotations

import warnings


def warn_deprecated(old: str, advice: str, *, stacklevel: int = 3) -> None:
    """Warn (``DeprecationWarning``) that ``old`` is deprecated, and say what to use instead.

    ``stacklevel=3`` points at the caller of the function that warns (a module ``__getattr__`` or a shim).

    Example:
        >>> warn_deprecated("heal_rag.Document", "it was renamed heal_rag.CorpusDocument")  # doctest: +SKIP

    """
    warnings.warn(f"{old} is deprecated: {advice}.", DeprecationWarning, stacklevel=stacklevel)

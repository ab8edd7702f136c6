"""Lazy imports of optional dependencies with errors that name the pip extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from heal_rag.errors import MissingDependencyError


def require(module: str, *, extra: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise an ImportError that says which ``heal-rag`` extra provides it.

    Example:
        >>> ragas = require("ragas", extra="eval", purpose="RAGAS metrics")  # doctest: +SKIP

    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        why = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"The optional dependency {module!r} is needed{why} but is not installed. "
            f'Install it with: pip install "heal-rag[{extra}]"'
        ) from error

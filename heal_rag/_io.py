"""Small file helpers: atomic writes, output checks and content fingerprints.

Every artefact heal-rag saves goes through :func:`atomic_write_bytes` (or its JSON/npz wrappers): data
is written to a temporary file in the target folder, flushed, then renamed over the target, so a crash
never leaves a half-written file behind. Saved files and folders get the modes the user's umask gives
(as ``open()`` and ``os.makedirs`` would), not the private 0600/0700 of :mod:`tempfile`.

:func:`check_writable` is the one check of an output location before work starts: it creates and removes a
probe file where the output will go, and raises :class:`OutputLocationError` (an ``OSError`` naming the
path) when that fails.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import heal_rag.errors as _errors
from heal_rag.errors import InvalidTypeError, InvalidValueError

logger = logging.getLogger(__name__)


# An output location cannot be written (read-only, a file in the way, no permission). Its message is one
# line that names the path and says what to do; the CLI prints it without a traceback. Defined in errors.
OutputLocationError = _errors.OutputLocationError


def current_umask() -> int:
    """Return the process umask (read without changing it where the platform allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it elsewhere
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str], *, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open()``/``mkdir()`` would have (0666/0777 less the umask)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def make_temp_dir(target: Path, *, tag: str = "tmp") -> Path:
    """Create the hidden sibling ``.NAME.TAG-XXXXXXXX`` of ``target`` to build it in (umask mode).

    Temporaries of the same target left by a killed save (older than a minute) are removed first, with a
    log line, so interrupted saves do not pile up hidden copies of models or indexes.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-", dir=target.parent))
    apply_umask(path, directory=True)
    return path


# Temporaries older than this are leftovers of a killed save, not the work of a save still running.
_STALE_AFTER_S = 60.0


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove ``.NAME.tmp-*`` / ``.NAME.old-*`` siblings of ``target`` that a killed save left behind."""
    removed: list[Path] = []
    parent = target.parent
    if not parent.is_dir():
        return removed
    now = time.time()
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for path in parent.glob(pattern):
            try:
                if now - path.stat().st_mtime < _STALE_AFTER_S:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError as error:
                logger.warning("could not remove the stale temporary %s (%s)", path, error)
                continue
            removed.append(path)
    if removed:
        logger.warning(
            "removed %d temporary folder(s) left by an interrupted save of %s: %s",
            len(removed),
            target,
            ", ".join(p.name for p in removed),
        )
    return removed


def check_writable(path: str | os.PathLike[str], *, what: str = "output", is_file: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written: create and remove a probe file there.

    Args:
        path: an output folder (created later if missing) or, with ``is_file=True``, an output file.
        what: how the message names the location (e.g. ``"--out"``).
        is_file: ``path`` is a file; its folder is probed.

    Returns:
        ``path`` as a Path.

    Raises:
        OutputLocationError: the location (or the nearest folder above it) is a file, read-only or not
            writable by this user.

    """
    path = Path(path)
    if is_file and path.is_dir():
        raise OutputLocationError(f"{what} {path} is a folder; give a file path such as {path / 'out.json'}.")
    if not is_file and path.exists() and not path.is_dir():
        raise OutputLocationError(f"{what} {path} is a file; give a folder.")
    folder = path.parent if is_file else path
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputLocationError(
            f"{what} {path} cannot be created: {existing} is a file, not a folder. Choose another location."
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".heal-rag-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise OutputLocationError(
            f"{what} {path} is not writable ({reason} in {existing}); choose a location you can write to."
        ) from None
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give what open() would
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
            raise InvalidTypeError(
                f"Array {name!r} has dtype object; only numeric arrays can be saved without pickle."
            )
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_npz(
    path: str | os.PathLike[str],
    expected: dict[str, tuple[tuple[int, ...], str]] | None = None,
    *,
    optional: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Load an ``.npz`` written by :func:`atomic_write_npz` without ever unpickling.

    Args:
        path: the file.
        expected: the arrays the format declares, ``name -> (shape, dtype kind)`` (kind ``"f"`` float,
            ``"i"`` integer). When given, every array's shape and dtype are read from its header and checked
            *before* its data is decompressed; an array that is not declared, or declared with another shape
            or dtype, is refused, so a small file cannot make the reader inflate gigabytes.
        optional: declared names that may be absent.

    Raises:
        ValueError: an undeclared, missing or mis-shaped array, or a damaged file.

    """
    import zipfile

    if expected is None:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: info for info in archive.infolist()}
        names = {name[: -len(".npy")]: name for name in members if name.endswith(".npy")}
        undeclared = sorted(set(names) - set(expected)) + sorted(n for n in members if not n.endswith(".npy"))
        if undeclared:
            raise InvalidValueError(
                f"it holds arrays its format does not declare: {', '.join(undeclared)[:200]}"
            )
        missing = sorted(set(expected) - set(names) - set(optional))
        if missing:
            raise InvalidValueError(f"the arrays {', '.join(missing)} are missing")
        for name, member in names.items():
            shape, kind = expected[name]
            info = members[member]
            with archive.open(info) as handle:
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    found_shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
                else:
                    found_shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
                if dtype.kind != kind or dtype.hasobject or tuple(found_shape) != tuple(shape):
                    raise InvalidValueError(
                        f"array {name!r} is {dtype} of shape {tuple(found_shape)}; the format expects "
                        f"{'float' if kind == 'f' else 'integer'} of shape {tuple(shape)}"
                    )
                n_bytes = int(np.prod(found_shape, dtype=np.int64)) * dtype.itemsize
                if info.file_size > n_bytes + 4096:  # the header is at most a few hundred bytes
                    raise InvalidValueError(
                        f"array {name!r} inflates to {info.file_size} bytes, not {n_bytes}"
                    )
                data = handle.read(n_bytes)
            if len(data) != n_bytes:
                raise InvalidValueError(f"array {name!r} is truncated")
            array = np.frombuffer(data, dtype=dtype).reshape(found_shape, order="F" if fortran else "C")
            arrays[name] = array.copy()
    return arrays


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` that reports a too deeply nested document as a ``json.JSONDecodeError``.

    Python's parser raises ``RecursionError`` on deep nesting (``[[[[...``); every reader of user files
    already turns ``JSONDecodeError`` into a one-line message naming the file, so this makes them all
    cover that case too.
    """
    try:
        return json.loads(text)
    except RecursionError:
        doc = text if isinstance(text, str) else text[:64].decode("utf-8", "replace")
        raise json.JSONDecodeError("nested too deeply", doc, 0) from None


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

"""Argument helpers shared by the ``heal-rag`` command modules (argparse types and input checks)."""

from __future__ import annotations

import argparse
from pathlib import Path

from heal_rag.errors import InputNotFoundError

# what a BEIR folder holds, for the messages of commands that read one
BEIR_LAYOUT = "corpus.jsonl, queries.jsonl, qrels/"


def positive_int(text: str) -> int:
    """Parse an integer >= 1 (an argparse ``type``: a usage error naming the bad value otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def passage_tokens(text: str) -> int | None:
    """Parse a passage token limit: an integer >= 16, or ``all`` (whole passages: None)."""
    from heal_rag._checks import MIN_PASSAGE_TOKENS

    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= {MIN_PASSAGE_TOKENS} or 'all', got {text!r}"
        ) from None
    if value < MIN_PASSAGE_TOKENS:
        raise argparse.ArgumentTypeError(f"expected an integer >= {MIN_PASSAGE_TOKENS} or 'all', got {value}")
    return value


PASSAGE_TOKENS_HELP = "tokens kept of each passage the generator sees, or all"


def seed_int(text: str) -> int:
    """Parse a random seed: an integer in [0, 2**32 - 1] (what numpy and torch accept)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected a seed between 0 and {2**32 - 1}, got {value}")
    return value


def check_outputs(*outputs: tuple[str | None, str, bool]) -> None:
    """Probe each ``(path, option, is_file)`` output before any work (:func:`heal_rag._io.check_writable`).

    ``None`` paths (options not given) are skipped.
    """
    from heal_rag._io import check_writable

    for path, option, is_file in outputs:
        if path is not None:
            check_writable(path, what=option, is_file=is_file)


def check_models(names: list[str | None], option: str) -> None:
    """Check model names/paths before any work: a file, an empty folder or an offline hub name is an error."""
    from heal_rag._models import check_model_reference

    for name in names:
        check_model_reference(name, what=option)


def require_corpus_folder(
    text: str, *, layout: str = BEIR_LAYOUT, error: type[Exception] = InputNotFoundError
) -> Path:
    """Return the positional ``CORPUS`` as a :class:`Path`; raise ``error`` when it is not a folder.

    Args:
        text: the CORPUS argument.
        layout: the files the command reads from the folder, named in the message.
        error: the exception class to raise (a user-facing one: see :func:`heal_rag.cli.main`).

    """
    folder = Path(text)
    if not folder.is_dir():
        raise error(f"CORPUS {folder} is not a folder; give a BEIR folder ({layout}).")
    return folder

"""Argument helpers shared by the ``heal-rag`` command modules (argparse types and input checks)."""

from __future__ import annotations

import argparse
from pathlib import Path

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


def require_corpus_folder(
    text: str, *, layout: str = BEIR_LAYOUT, error: type[Exception] = FileNotFoundError
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

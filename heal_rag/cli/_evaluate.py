"""``heal-rag evaluate``: the command group; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib

_SUBCOMMAND_MODULES = (
    "heal_rag.cli._evaluate_retrieval",  # heal-rag evaluate retrieval
    "heal_rag.cli._evaluate_rag",  # heal-rag evaluate rag
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` and its subcommands to the top-level parser."""
    parser = subparsers.add_parser(
        "evaluate",
        help="measure retrieval and RAG quality of one or more models side by side",
        description="Measure retrieval (IR metrics) and RAG quality (RAGAS) of models side by side.",
    )
    commands = parser.add_subparsers(dest="evaluate_command", metavar="WHAT", required=True)
    for module_name in _SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(commands)

"""The ``heal-rag`` command line. Each command group lives in its own module with a ``register`` function.

The CLI mirrors the Python API: the same names, defaults and files.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from heal_rag._version import __version__
from heal_rag.errors import HealRagUserError

# modules that each define ``register(subparsers)``; order = order in --help
_COMMAND_MODULES = (
    "heal_rag.cli._demo",
    "heal_rag.cli._hierarchy",
    "heal_rag.cli._finetune",
    "heal_rag.cli._export",
    "heal_rag.cli._evaluate",
)


class CLIError(HealRagUserError):
    """A user-facing error of the command line itself: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="heal-rag",
        description="HEAL: hierarchy-aware embedding fine-tuning for retrieval-augmented generation.",
    )
    parser.add_argument("--version", action="version", version=f"heal-rag {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``heal-rag`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    # heal-rag's own progress at INFO; other libraries (faiss, sentence-transformers, ...) only say
    # warnings unless -vv asks for everything.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("heal_rag").setLevel(level)
    # bm25s sets its own logger to DEBUG when imported; the console shows DEBUG lines only with -vv
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # the console handler basicConfig made, nobody else's
            handler.setLevel(logging.DEBUG if args.verbose > 1 else logging.INFO)
    # per-step training losses (heal_rag.training.engine.LOSS_LOGGER) only with -v
    logging.getLogger("heal_rag.training.engine.losses").setLevel(
        logging.INFO if args.verbose >= 1 and not args.quiet else logging.WARNING
    )
    import os

    if args.verbose < 2:
        # transformers' and huggingface_hub's own bars (loading weights, writing shards) are noise next to
        # heal-rag's one bar per stage; -vv shows them. Read when transformers is imported, so set it now.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # heal-rag's own bars follow the heal_rag logger level set above (heal_rag._progress.show_progress):
    # -q hides them without touching the environment of the rest of the process.
    try:
        return int(args.handler(args) or 0)
    except HealRagUserError as error:
        # heal-rag's own input checks (heal_rag.errors: InvalidValueError, InputNotFoundError,
        # MissingDependencyError, ...) and CLIError: messages written for users, shown without a traceback.
        # Any other exception, a plain ValueError from a library included, is a bug: it keeps its traceback.
        print(f"heal-rag {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # The file system refused a read or a write (read-only mount, disk full, no permission): one line
        # naming the path. An OSError that names no path is not the user's environment: keep its traceback.
        if error.filename is None:
            raise
        reason = error.strerror or type(error).__name__
        print(
            f"heal-rag {args.command}: error: cannot write or read {error.filename}: {reason}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

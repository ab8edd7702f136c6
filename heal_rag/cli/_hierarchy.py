"""``heal-rag hierarchy build`` and ``heal-rag hierarchy show``: the HNMFk topic tree of a corpus."""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heal_rag.cli._common import check_outputs, positive_int, seed_int
from heal_rag.errors import InputNotFoundError, InvalidValueError, OutputExistsError

if TYPE_CHECKING:  # pragma: no cover
    from heal_rag.datasets import CorpusDocument
    from heal_rag.hierarchy import Hierarchy

logger = logging.getLogger(__name__)

# the file Hierarchy.save writes last: its presence marks a folder as a saved hierarchy
HIERARCHY_MARKER = "hierarchy.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hierarchy build`` and ``hierarchy show`` to the top-level parser."""
    parser = subparsers.add_parser(
        "hierarchy",
        help="build or show the HNMFk topic hierarchy of a corpus",
        description="Build the HNMFk topic hierarchy of a corpus, or print a saved one.",
    )
    commands = parser.add_subparsers(dest="hierarchy_command", metavar="WHAT", required=True)

    build = commands.add_parser(
        "build",
        help="build the topic hierarchy of a corpus and save it",
        description=(
            "Build the HNMFk topic hierarchy of CORPUS (TF-IDF of title + text, NMF with the number of "
            "topics chosen by stability at every node) and save it to DIR (JSON + .npz)."
        ),
    )
    build.add_argument(
        "corpus",
        metavar="CORPUS",
        help="a BEIR folder (corpus.jsonl), a .jsonl(.gz) file (_id/id, title, text) or a .txt file (one "
        "document per line)",
    )
    build.add_argument("--out", required=True, metavar="DIR", help="folder to save the hierarchy to")
    add_hnmfk_arguments(build)
    build.add_argument(
        "--overwrite",
        action="store_true",
        help="write into DIR even when it holds files that are not a saved hierarchy",
    )
    build.add_argument(
        "--terms", type=positive_int, default=6, metavar="N", help="top terms to print per topic"
    )
    build.set_defaults(handler=run_build)

    show = commands.add_parser(
        "show",
        help="print a saved topic hierarchy",
        description="Print a hierarchy saved by 'heal-rag hierarchy build' as a tree with top terms.",
    )
    show.add_argument("directory", metavar="DIR", help="folder written by 'heal-rag hierarchy build'")
    show.add_argument(
        "--terms", type=positive_int, default=6, metavar="N", help="top terms to print per topic"
    )
    show.add_argument("--max-depth", type=positive_int, default=None, metavar="N", help="print only N levels")
    show.set_defaults(handler=run_show)


def add_hnmfk_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the HNMFk options shared by ``hierarchy build`` and ``demo`` (defaults: :class:`HNMFk`'s)."""
    group = parser.add_argument_group("hierarchy options (defaults: those of heal_rag.HNMFk)")
    group.add_argument("--depth", type=positive_int, default=None, metavar="N", help="number of levels")
    group.add_argument(
        "--k-min", type=positive_int, default=None, metavar="K", help="fewest topics per split"
    )
    group.add_argument("--k-max", type=positive_int, default=None, metavar="K", help="most topics per split")
    group.add_argument(
        "--min-topic-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="smallest topic (in documents) that is split further / kept as a child",
    )
    group.add_argument(
        "--max-features", type=positive_int, default=None, metavar="N", help="TF-IDF vocabulary size"
    )
    group.add_argument(
        "--fit-sample",
        type=positive_int,
        default=None,
        metavar="N",
        help="build the tree on a seeded sample of N documents, then place every document in it "
        "(large corpora; default: fit on all)",
    )
    group.add_argument("--seed", type=seed_int, default=0, help="random seed, 0 to 2**32-1 (default: 0)")


def hnmfk_params(args: argparse.Namespace) -> dict[str, Any]:
    """Translate the parsed options into keyword arguments of :class:`heal_rag.HNMFk`."""
    from heal_rag.hierarchy import HNMFk

    defaults = HNMFk().get_params()
    params: dict[str, Any] = {"random_state": args.seed}
    if args.depth is not None:
        params["depth"] = args.depth
    if args.k_min is not None or args.k_max is not None:
        k_min, k_max = defaults["k_range"]
        k_min = args.k_min if args.k_min is not None else k_min
        k_max = args.k_max if args.k_max is not None else k_max
        if k_min > k_max:
            raise InvalidValueError(f"--k-min ({k_min}) must not be larger than --k-max ({k_max}).")
        params["k_range"] = (k_min, k_max)
    if args.min_topic_size is not None:
        params["min_topic_size"] = args.min_topic_size
    if args.max_features is not None:
        params["max_features"] = args.max_features
    if getattr(args, "fit_sample", None) is not None:
        params["fit_sample"] = args.fit_sample
    return params


def check_output_dir(directory: Path, *, overwrite: bool) -> None:
    """Refuse to write into a non-empty folder that is not a saved hierarchy (unless ``overwrite``)."""
    if directory.exists() and not directory.is_dir():
        raise InvalidValueError(f"--out {directory} exists and is not a folder.")
    if not directory.is_dir() or overwrite:
        return
    entries = [p for p in directory.iterdir() if not p.name.startswith(".")]
    if entries and not (directory / HIERARCHY_MARKER).is_file():
        names = ", ".join(sorted(p.name for p in entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise OutputExistsError(
            f"{directory} is not empty ({names}) and holds no saved hierarchy; "
            "choose another --out folder or pass --overwrite."
        )


def build_hierarchy(documents: list[CorpusDocument], params: dict[str, Any]) -> Hierarchy:
    """Fit :class:`HNMFk` on the documents' ``full_text`` (title + text) and return the hierarchy."""
    from heal_rag.hierarchy import HNMFk

    texts = [doc.full_text for doc in documents]
    doc_ids = [doc.id for doc in documents]
    logger.info("building a topic hierarchy of %d documents (%s)", len(texts), _describe(params))
    start = time.perf_counter()
    # show the estimator's warnings (e.g. "did not split") as one log line, not with a source-code excerpt
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator = HNMFk(**params).fit(texts, doc_ids=doc_ids)
    for warning in caught:
        logger.warning("%s", warning.message)
    logger.info("built in %.1f s", time.perf_counter() - start)
    return estimator.hierarchy_


def _describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in params.items())


def run_build(args: argparse.Namespace) -> int:
    """Run ``heal-rag hierarchy build``."""
    from heal_rag.datasets import load_corpus

    out = Path(args.out)
    check_output_dir(out, overwrite=args.overwrite)
    check_outputs((args.out, "--out", False))
    params = hnmfk_params(args)
    documents = load_corpus(args.corpus)
    hierarchy = build_hierarchy(documents, params)
    hierarchy.save(out)
    print(hierarchy.format_tree(n_terms=args.terms))
    print(f"\nSaved the hierarchy of {hierarchy.n_documents} documents to {out}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Run ``heal-rag hierarchy show``."""
    from heal_rag.hierarchy import Hierarchy

    directory = Path(args.directory)
    if not directory.is_dir():
        raise InputNotFoundError(f"{directory} does not exist or is not a folder.")
    hierarchy = Hierarchy.load(directory)
    print(hierarchy.format_tree(n_terms=args.terms, max_depth=args.max_depth))
    return 0

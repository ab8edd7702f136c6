"""``heal-rag evaluate retrieval``: IR metrics of embedding models and BM25 on a BEIR folder, side by side."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from heal_rag._fusion_options import DEFAULT_FUSION, FUSION_METHODS
from heal_rag.backends import BACKENDS
from heal_rag.cli._common import check_models, check_outputs, positive_int, require_corpus_folder
from heal_rag.evaluation.metrics import DEFAULT_METRICS

logger = logging.getLogger(__name__)

_COLUMN_TITLES = {"ndcg@10": "nDCG@10", "recall@100": "Recall@100", "mrr@10": "MRR@10"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``retrieval`` to the ``evaluate`` command group."""
    parser = subparsers.add_parser(
        "retrieval",
        help="nDCG@10, Recall@100 and MRR@10 of models (and BM25) on a BEIR folder",
        description=(
            "Exact dense retrieval (cosine over the whole corpus) with each --model, and optionally BM25 "
            "and each model fused with BM25 (--hybrid), on the queries of one split of a BEIR folder. "
            "Prints a table and writes "
            '{model: {"ndcg@10": x, "recall@100": y, "mrr@10": z}} to --json.'
        ),
    )
    parser.add_argument("corpus", metavar="CORPUS", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--split", default="test", help="qrels split to evaluate on (default: test)")
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="DIR_OR_NAME",
        help="model folder (e.g. a heal-rag finetune --out DIR), model name, or 'default'; repeat to compare",
    )
    parser.add_argument(
        "--json", dest="json_out", metavar="OUT", help="write the metrics as JSON to this file"
    )
    parser.add_argument("--bm25", action="store_true", help='add the BM25 baseline (bm25s) under "bm25"')
    parser.add_argument(
        "--hybrid",
        action="store_true",
        help='also fuse each --model with BM25 (LlamaIndex fusion), under "<model>+bm25"',
    )
    parser.add_argument(
        "--fusion",
        choices=sorted(FUSION_METHODS),
        default=DEFAULT_FUSION,
        help=f"fusion of the --hybrid runs (default {DEFAULT_FUSION}, chosen on a SciFact train-dev split)",
    )
    parser.add_argument(
        "--dense-weight",
        type=float,
        default=None,
        metavar="W",
        help="dense weight in (0, 1) for --fusion relative_score / dist_based_score (default: equal)",
    )
    parser.add_argument(
        "--cache-dir", metavar="D", help="cache corpus embeddings here; unchanged models are not re-encoded"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, metavar="N", help="encoding batch size"
    )
    parser.add_argument(
        "--max-seq-length", type=positive_int, default=None, metavar="N", help="truncate texts to N tokens"
    )
    parser.add_argument(
        "--k",
        type=positive_int,
        default=100,
        metavar="N",
        help="documents retrieved per query (default 100)",
    )
    parser.add_argument(
        "--device", default=None, help="torch device for encoding (default: cuda if available)"
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="encoder: torch, or onnx for each model's ONNX export (heal-rag export; int8 when present)",
    )
    parser.set_defaults(handler=run)


def format_table(results: dict[str, dict[str, float]], n_queries: int | None = None) -> str:
    """Format ``results`` as a fixed-width text table: one row per system, one column per metric."""
    metrics = list(next(iter(results.values())).keys()) if results else list(DEFAULT_METRICS)
    titles = [_COLUMN_TITLES.get(m, m) for m in metrics]
    name_width = max([len("model"), *(len(name) for name in results)])
    widths = [max(len(t), 6) for t in titles]
    lines = [
        "  ".join(["model".ljust(name_width), *(t.rjust(w) for t, w in zip(titles, widths, strict=True))])
    ]
    lines.append("-" * len(lines[0]))
    for name, values in results.items():
        cells = [f"{values[m]:.4f}".rjust(w) for m, w in zip(metrics, widths, strict=True)]
        lines.append("  ".join([name.ljust(name_width), *cells]))
    if n_queries is not None:
        lines.append(f"({n_queries} queries)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``heal-rag evaluate retrieval`` with parsed ``args``; return the exit status."""
    from heal_rag._io import atomic_write_json
    from heal_rag.cli import CLIError
    from heal_rag.evaluation.retrieval import evaluate_models

    if not args.models and not args.bm25:
        raise CLIError("nothing to evaluate: give at least one --model DIR_OR_NAME, or --bm25.")
    if args.hybrid and not args.models:
        raise CLIError("--hybrid fuses each --model with BM25: give at least one --model DIR_OR_NAME.")
    corpus = require_corpus_folder(args.corpus, error=CLIError)
    if args.json_out is not None and Path(args.json_out).is_dir():
        raise CLIError(
            f"--json {args.json_out} is a folder; give a file path such as {args.json_out}/metrics.json."
        )
    check_outputs((args.json_out, "--json", True), (args.cache_dir, "--cache-dir", False))
    check_models(list(args.models), "--model")
    results = evaluate_models(
        corpus,
        args.models,
        split=args.split,
        k=args.k,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        cache_dir=args.cache_dir,
        include_bm25=args.bm25,
        include_hybrid=args.hybrid,
        fusion=args.fusion,
        dense_weight=args.dense_weight,
        show_progress=None,  # None: follow the heal_rag log level main() set (-q hides bars)
        device=args.device,
        backend=args.backend,
    )
    metrics = {name: dict(values) for name, values in results.items()}
    n_queries = len(next(iter(results.per_query.values()))[DEFAULT_METRICS[0]]) if results.per_query else None
    print(f"{results.dataset} ({results.split}):")
    print(format_table(metrics, n_queries))
    if args.json_out is not None:
        atomic_write_json(args.json_out, metrics)
        print(f"wrote {args.json_out}")
    return 0

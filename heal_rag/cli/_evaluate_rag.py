"""``heal-rag evaluate rag``: RAG evaluation of models side by side, with HTML/Markdown/JSON reports."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from heal_rag.cli._common import (
    PASSAGE_TOKENS_HELP,
    check_models,
    check_outputs,
    passage_tokens,
    positive_int,
    require_corpus_folder,
    seed_int,
)
from heal_rag.errors import InvalidValueError, OutputExistsError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``rag`` to the ``evaluate`` command group."""
    parser = subparsers.add_parser(
        "rag",
        help="retrieval metrics, hallucination signals and an optional LLM judge for models side by side",
        description=(
            "Index CORPUS with each --model (FAISS, as `heal-rag demo` does), retrieve (and optionally "
            "answer) every question of --split, and write DIR/report.md, DIR/report.html and "
            "DIR/report.json. Retrieval metrics and the judge-free signals need no LLM; RAGAS judge metrics "
            "are opt-in with --judge."
        ),
    )
    parser.add_argument(
        "corpus", metavar="CORPUS", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)"
    )
    parser.add_argument("--split", default="test", help="qrels split (default: test)")
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        help="embedding model: HEAL model folder, sentence-transformers folder/hub name or 'default'; repeat",
    )
    parser.add_argument("--bm25", action="store_true", help='add the BM25 baseline under "bm25"')
    parser.add_argument(
        "--hybrid",
        action="store_true",
        help='also fuse each --model with BM25 (the pipeline\'s fusion), under "<model>+bm25"',
    )
    parser.add_argument(
        "--retriever",
        choices=("flat", "rescore", "route"),
        default="flat",
        help="retriever for models that carry a topic hierarchy (others are flat); default flat",
    )
    parser.add_argument(
        "--llm",
        default="none",
        help="generator: none (retrieval only), local, an OpenAI-compatible URL, or MODULE:NAME (a "
        "LlamaIndex LLM in an importable module)",
    )
    parser.add_argument("--llm-model", default="default", help="model name for an --llm URL")
    parser.add_argument(
        "--judge",
        default="none",
        help="RAGAS judge (opt-in): none, local, an OpenAI-compatible URL, or MODULE:NAME",
    )
    parser.add_argument("--judge-model", default="default", help="model name for a --judge URL")
    parser.add_argument(
        "--judge-timeout", type=float, default=120.0, help="seconds per judge metric and question"
    )
    parser.add_argument(
        "--top-k", type=positive_int, default=10, help="retrieved documents per question (default 10)"
    )
    parser.add_argument(
        "--generation-top-n",
        type=positive_int,
        default=3,
        help="retrieved documents the generator sees (default 3)",
    )
    parser.add_argument(
        "--passage-tokens",
        type=passage_tokens,
        default=None,
        metavar="N|all",
        help=f"{PASSAGE_TOKENS_HELP} (default all)",
    )
    parser.add_argument(
        "--max-questions", type=positive_int, default=None, help="a seeded sample of the questions"
    )
    parser.add_argument(
        "--max-docs",
        type=positive_int,
        default=None,
        help="index only the relevant documents plus a seeded sample of others, this many in all (faster)",
    )
    parser.add_argument(
        "--distractors",
        default=None,
        help="BEIR folder whose documents are mixed in as distractors (PubMedQA-style sets)",
    )
    parser.add_argument(
        "--n-distractors", type=positive_int, default=None, help="how many distractors (default all)"
    )
    parser.add_argument(
        "--seed", type=seed_int, default=0, help="seed of samples and statistics, 0 to 2**32-1 (default 0)"
    )
    parser.add_argument(
        "--resamples", type=positive_int, default=10_000, help="bootstrap/permutation resamples"
    )
    parser.add_argument(
        "--restart", action="store_true", help="ignore an existing checkpoint and start clean"
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder for the reports and checkpoint"
    )
    parser.set_defaults(handler=run)


# what an earlier `evaluate rag` leaves in --out: a folder holding one of these is a run to resume or update
RUN_MARKERS = ("checkpoints", "report.json")


def check_run_folder(out: Path) -> None:
    """Refuse an --out folder that holds files but no earlier run: its files would be mixed with ours."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file; give a folder for the reports.")
    if not out.is_dir() or any((out / marker).exists() for marker in RUN_MARKERS):
        return
    entries = [p for p in out.iterdir() if not p.name.startswith(".")]
    if entries:
        names = ", ".join(sorted(p.name for p in entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise OutputExistsError(
            f"--out {out} is not empty ({names}) and holds no earlier 'evaluate rag' run; its files are left "
            "alone. Choose a new or empty folder."
        )


def _has_decisions(folder: Path) -> bool:
    from heal_rag._io import loads_json

    queries = folder / "queries.jsonl"
    if not queries.is_file():
        return False
    with open(queries, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                try:
                    row = loads_json(line)
                except ValueError:
                    return False  # not a question set with decisions; load_beir names the bad line
                return isinstance(row, dict) and "final_decision" in row
    return False


def _load(args: argparse.Namespace) -> Any:
    """Return the questions to evaluate: a seeded sample of judged queries, over <= --max-docs documents."""
    from heal_rag.datasets import load_beir
    from heal_rag.evaluation.pubmedqa import load_pubmedqa

    folder = require_corpus_folder(args.corpus)
    if _has_decisions(folder):
        dataset = load_pubmedqa(
            folder, args.distractors, split=args.split, n_distractors=args.n_distractors, seed=args.seed
        )
    else:
        if args.distractors is not None:
            raise InvalidValueError(
                "--distractors is supported for question sets with gold decisions (PubMedQA layout)."
            )
        dataset = load_beir(folder, split=args.split)
    dataset = dataset.sample_queries(args.max_questions, seed=args.seed)
    if args.max_docs is not None:
        dataset = dataset.reduce_corpus(args.max_docs, seed=args.seed)
    return dataset


def _llm(spec: str, model: str, what: str, **endpoint: Any) -> Any:
    from heal_rag.llms import resolve_llm

    return resolve_llm(spec, model=model, what=f"--{what}", **endpoint)[0]


def _config_names(models: list[str]) -> list[str]:
    names: list[str] = []
    for model in models:
        base = (
            "base"
            if model in {"default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
            else None
        )
        name = base or Path(model.rstrip("/")).name or model
        candidate, i = name, 2
        while candidate in names:
            candidate, i = f"{name}-{i}", i + 1
        names.append(candidate)
    return names


def run(args: argparse.Namespace) -> int:
    """Run ``heal-rag evaluate rag``."""
    from heal_rag._models import resolve_model_name
    from heal_rag._progress import show_progress
    from heal_rag.evaluation.rag import evaluate_rag
    from heal_rag.evaluation.report import summary_table, write_report
    from heal_rag.integrations import HEALEmbedding
    from heal_rag.systems import bm25_candidates, bm25_system, dense_system

    if len(args.model) != len(set(args.model)):
        raise InvalidValueError(f"--model values must differ; got {args.model}.")
    out = Path(args.out)
    check_run_folder(out)
    check_outputs((args.out, "--out", False))
    check_models(list(args.model), "--model")
    generator = _llm(args.llm, args.llm_model, "llm")
    # a judge call RAGAS gives up on (--judge-timeout) must end at the server too, and RAGAS retries itself
    judge_llm = _llm(args.judge, args.judge_model, "judge", timeout=args.judge_timeout, max_retries=0)
    dataset = _load(args)
    logger.info("%s: %d questions, %d documents", dataset.name, len(dataset.queries), len(dataset.corpus))

    nodes = dataset.to_nodes()
    common = {
        "llm": generator,
        "generation_top_n": args.generation_top_n,
        "passage_max_tokens": args.passage_tokens,
    }
    configurations = [bm25_system(nodes, top_k=args.top_k, **common)] if args.bm25 else []
    candidates = bm25_candidates(nodes) if args.hybrid else None
    hybrids = []
    hierarchy = None
    judge_embeddings = None
    show = show_progress()  # follows the heal_rag log level main() set (-q hides bars)
    for name, model in zip(_config_names(args.model), args.model, strict=True):
        embed = HEALEmbedding.from_pretrained(resolve_model_name(model))
        if judge_embeddings is None:
            judge_embeddings = embed  # the judge's embedding metrics use the first (baseline) model, locally
        model_hierarchy = embed.hierarchy
        system = dense_system(
            name,
            embed,
            nodes,
            top_k=args.top_k,
            mode=args.retriever if model_hierarchy is not None else "flat",
            hierarchy=model_hierarchy,
            description={"model": str(model), "top_k": args.top_k},
            bm25_candidates=candidates,
            show_progress=show,
            **common,
        )
        configurations.append(system.configuration)
        if system.hybrid is not None:
            hybrids.append(system.hybrid)
        hierarchy = hierarchy or model_hierarchy
    configurations += hybrids
    extra = {
        "corpus": str(Path(args.corpus).resolve()),
        "split": args.split,
        "n_documents": len(dataset.corpus),
        "max_questions": args.max_questions,
        "max_docs": args.max_docs,
        "distractors": args.distractors,
        "index": "faiss",
        "llm": args.llm if not args.llm.startswith("http") else f"{args.llm} ({args.llm_model})",
        "judge_spec": args.judge
        if not args.judge.startswith("http")
        else f"{args.judge} ({args.judge_model})",
        "seed": args.seed,
    }
    result = evaluate_rag(
        configurations,
        dataset,
        judge=judge_llm,
        judge_embeddings=judge_embeddings if judge_llm is not None else None,
        judge_timeout=args.judge_timeout,
        k=args.top_k,
        out_dir=out,
        resume=not args.restart,
        n_resamples=args.resamples,
        seed=args.seed,
        extra_config=extra,
        show_progress=show,
    )
    paths = write_report(result, out, hierarchy=hierarchy)
    print(summary_table(result))
    for note in result.notes:
        print(f"note: {note}")
    print(f"report: {paths['html']}")
    return 0

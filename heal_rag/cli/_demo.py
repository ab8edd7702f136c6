"""``heal-rag demo``: the whole pipeline, offline, on the bundled SciFact subset (or the user's own corpus).

It runs :func:`heal_rag.pipeline.run_pipeline`: build the topic hierarchy (printed), fine-tune briefly with
HEAL and, with the same pairs and steps, without the hierarchy (flat), index with BM25 and the base, flat
and HEAL models, evaluate them and each dense model fused with BM25 side by side, print which configuration
won and by how much, and write ``DIR/report.md``, ``DIR/report.html`` and ``DIR/report.json``.

Defaults keep the demo within about 4 minutes on a 2-core laptop (measured: 202 s): 20 training steps of
batch 32 at 128 tokens per fine-tune, and no answer generation (``--llm none``). ``--llm local`` adds
answers by the offline SmolLM2-135M from three passages cut to 256 tokens (``--passage-tokens``; about 3 s
per answer on 2 cores, most of it reading the prompt) on a seeded sample of 10 questions
(``--max-questions`` changes it), with the share of answers given without the evidence and two reference
conditions of the same generator: ``gold`` (the judged passages alone) and ``no-context``. ``--llm URL`` uses
an OpenAI-compatible server.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from heal_rag.cli._common import PASSAGE_TOKENS_HELP, passage_tokens, positive_int
from heal_rag.cli._hierarchy import add_hnmfk_arguments, hnmfk_params

logger = logging.getLogger(__name__)

DEFAULT_OUT = "heal_rag_out"


def _questions(text: str) -> int | str | None:
    if text in {"auto", "all"}:
        return None if text == "all" else "auto"
    return positive_int(text)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the top-level parser."""
    from heal_rag.pipeline import DEMO_DEFAULTS

    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline offline on the bundled SciFact corpus (or your own) and write a report",
        description=(
            "Run heal-rag end to end: build the HNMFk topic hierarchy of the corpus (printed), fine-tune the "
            "embedding model briefly with HEAL and, with the same pairs and steps, without the hierarchy "
            "(flat), then compare bm25, base, flat, heal, base+bm25, flat+bm25 and heal+bm25 side by side "
            "with paired tests and write DIR/report.md, DIR/report.html and DIR/report.json. Default corpus: "
            "the bundled 800 SciFact abstracts with their claims (offline; about 4 minutes on a 2-core "
            "laptop). Re-running into the same DIR reuses the steps whose inputs did not change."
        ),
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: ./{DEFAULT_OUT})"
    )
    parser.add_argument(
        "--corpus",
        default=None,
        metavar="PATH",
        help="your corpus instead of the bundled one: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or "
        "a .jsonl(.gz)/.txt file (then held-out pseudo-queries are the questions)",
    )
    parser.add_argument("--split", default="test", help="qrels split of the evaluation questions (test)")
    parser.add_argument(
        "--train-split",
        default="train",
        help="qrels split to train on (train); 'none' or a missing split: offline pseudo-queries",
    )
    parser.add_argument(
        "--base-model",
        default=None,
        metavar="NAME_OR_PATH",
        help="sentence-transformers model (default: the bundled all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--llm",
        default="none",
        help="answer generator: none (default: retrieval metrics only), local (offline SmolLM2-135M, "
        "slow), the URL of an OpenAI-compatible server (http://host:port/v1), or MODULE:NAME (a LlamaIndex "
        "LLM in an importable module)",
    )
    parser.add_argument("--llm-model", default="default", help="model name for an --llm URL")
    training = parser.add_argument_group("fine-tuning options")
    training.add_argument(
        "--max-steps",
        type=positive_int,
        default=DEMO_DEFAULTS["max_steps"],
        metavar="N",
        help=f"training steps (default {DEMO_DEFAULTS['max_steps']}: a brief fine-tune)",
    )
    training.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEMO_DEFAULTS["batch_size"],
        metavar="N",
        help=f"batch size ({DEMO_DEFAULTS['batch_size']})",
    )
    training.add_argument(
        "--max-seq-length",
        type=positive_int,
        default=DEMO_DEFAULTS["max_seq_length"],
        metavar="N",
        help=f"token limit for training and indexing, both models ({DEMO_DEFAULTS['max_seq_length']})",
    )
    training.add_argument("--learning-rate", type=float, default=2e-5, metavar="LR", help="(2e-5)")
    training.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: automatic)")
    evaluation = parser.add_argument_group("evaluation options")
    evaluation.add_argument(
        "--retriever",
        choices=("flat", "rescore", "route"),
        default="flat",
        help="retriever of the HEAL model (the base model is always flat); default flat",
    )
    evaluation.add_argument(
        "--top-k", type=positive_int, default=10, metavar="K", help="documents per question (10)"
    )
    evaluation.add_argument(
        "--max-questions",
        type=_questions,
        default="auto",
        metavar="N|all|auto",
        help="a seeded sample of N questions; auto (default): all, or "
        f"{DEMO_DEFAULTS['local_llm_questions']} with --llm local",
    )
    evaluation.add_argument(
        "--passage-tokens",
        type=passage_tokens,
        default=DEMO_DEFAULTS["passage_max_tokens"],
        metavar="N|all",
        help=f"{PASSAGE_TOKENS_HELP} ({DEMO_DEFAULTS['passage_max_tokens']})",
    )
    evaluation.add_argument(
        "--resamples", type=positive_int, default=10_000, metavar="N", help="bootstrap/permutation resamples"
    )
    parser.add_argument(
        "--restart", action="store_true", help="redo every step instead of reusing an earlier run in DIR"
    )
    parser.add_argument(
        "--terms", type=positive_int, default=6, metavar="N", help="top terms per topic shown"
    )
    add_hnmfk_arguments(parser)  # --depth, --k-min, --k-max, --min-topic-size, --max-features, --seed
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Run ``heal-rag demo``."""
    from heal_rag.pipeline import run_pipeline

    params = hnmfk_params(args)
    seed = params.pop("random_state")
    train_split = None if str(args.train_split).lower() == "none" else args.train_split
    out = Path(args.out)
    if args.corpus is None:
        print("Corpus: 800 SciFact abstracts bundled with heal-rag (scifact_demo, CC BY 4.0 / ODC-By 1.0)")
    else:
        print(f"Corpus: {args.corpus}")

    def on_step(step: str, value: Any) -> None:
        if step == "hierarchy":
            print(f"\nTopic hierarchy (saved to {out / 'hierarchy'}):")
            print(value.format_tree(n_terms=args.terms))
        elif step == "finetune":
            print(f"\nHEAL model: {value}")
        elif step == "finetune_flat":
            print(f"flat model (same pairs and steps, no hierarchy): {value}")
        elif step == "index":
            print(f"Indexed the corpus with: {', '.join(value)}")

    result = run_pipeline(
        args.corpus,
        out_dir=out,
        split=args.split,
        train_split=train_split,
        base_model=args.base_model,
        llm=args.llm,
        llm_model=args.llm_model,
        hierarchy_params=params,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_seq_length=args.max_seq_length,
        retriever=args.retriever,
        top_k=args.top_k,
        passage_max_tokens=args.passage_tokens,
        max_questions=args.max_questions,
        n_resamples=args.resamples,
        seed=seed,
        device=args.device,
        restart=args.restart,
        show_progress=None,  # None: follow the heal_rag log level main() set (-q hides bars)
        on_step=on_step,
    )
    n_questions = len(result.evaluation.question_ids)
    print(f"\nEvaluation on {n_questions} questions (means; * = best):")
    print(result.summary_table())
    for note in result.notes:
        print(f"note: {note}")
    if result.reused:
        print(f"reused from the earlier run in {out}: {', '.join(result.reused)} (--restart to redo)")
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items() if k != "total")
    print(f"time: {result.timings['total']:.0f} s ({steps})")
    print(f"report: {result.reports['html']}")
    return 0

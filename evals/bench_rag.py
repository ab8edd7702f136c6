"""RAG evaluation benchmark: base vs HEAL model, flat vs hierarchy-rescored retrieval, side by side.

One HEAL model is fine-tuned on the bundled SciFact subset (its train claims; topic tree from HNMFk), then
three configurations are evaluated on the same questions with :func:`heal_rag.evaluation.rag.evaluate_rag`:

- ``base``: the base model (all-MiniLM-L6-v2), flat retrieval;
- ``heal``: the HEAL model, flat retrieval;
- ``heal-rescore``: the HEAL model, candidates rescored by topic-path agreement (HierarchicalRetriever).

Question sets:

1. ``scifact_demo``: the bundled corpus (800 abstracts) and its test claims (never trained on);
2. ``pubmedqa``: PubMedQA (PQA-L, test split) questions over their own passages mixed with full-SciFact
   abstracts as distractors (:func:`heal_rag.evaluation.pubmedqa.load_pubmedqa`): a domain-transfer test
   for the model trained on SciFact;
3. ``pubmedqa_generation``: a small seeded sample of (2) answered by the offline local LLM (SmolLM2-135M):
   the judge-free evidence exposure (answers_without_evidence) and yes/no/maybe accuracy.

Retrieval metrics (nDCG@10, MRR@10, Recall@10, RAGAS ID-based and non-LLM context precision/recall) come with
bootstrap CIs and paired permutation tests (Holm-adjusted per pair).

Usage:
    python evals/bench_rag.py              # the reduced configuration (~15 min on 2 busy cores)
    python evals/bench_rag.py --full       # the full configuration (hours on 2 CPU cores)

Results: evals/results/bench_rag.{json,md} and the HTML/Markdown/JSON reports of each question set under
evals/results/bench_rag/<set>/. Models and checkpoints are cached under evals/cache/bench_rag/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO_ROOT,
    SHARED_DATA_DIR,
    markdown_table,
    provenance,
    write_results,
)

logger = logging.getLogger("bench_rag")

CACHE_DIR = REPO_ROOT / "evals" / "cache" / "bench_rag"
REPORT_DIR = REPO_ROOT / "evals" / "results" / "bench_rag"
CONFIGS = ("base", "heal", "heal-rescore")
HEADLINE = ("ndcg@10", "mrr@10", "recall@10", "id_based_context_precision", "non_llm_context_recall")
GENERATION = ("answers_without_evidence", "decision_accuracy")

REDUCED = {
    "max_steps": 30,
    "batch_size": 32,
    "max_seq_length": 128,
    "scifact_questions": None,
    "pubmedqa_questions": 100,
    "n_distractors": 400,
    "generation_questions": 12,
    "llm_max_new_tokens": 48,
}
FULL = {
    "max_steps": None,  # one full epoch over the 809 train claims' pairs
    "batch_size": 32,
    "max_seq_length": 256,
    "scifact_questions": None,
    "pubmedqa_questions": None,
    "n_distractors": None,
    "generation_questions": 100,
    "llm_max_new_tokens": 96,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="the full configuration (hours on 2 cores)")
    parser.add_argument("--max-steps", type=int, default=None, help="training steps (reduced: 30)")
    parser.add_argument("--max-seq-length", type=int, default=None, help="tokens, training and indexing")
    parser.add_argument("--pubmedqa-questions", type=int, default=None, help="PubMedQA questions (100)")
    parser.add_argument("--n-distractors", type=int, default=None, help="SciFact distractors (400)")
    parser.add_argument("--generation-questions", type=int, default=None, help="questions answered (12)")
    parser.add_argument("--no-generation", action="store_true", help="skip the local-LLM part")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap/permutation resamples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = dict(FULL if args.full else REDUCED)
    for key in ("max_steps", "max_seq_length", "pubmedqa_questions", "n_distractors", "generation_questions"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    args.settings = settings
    return args


# ------------------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------------------


def train_heal_model(settings: dict[str, Any], seed: int) -> tuple[Path, dict[str, Any]]:
    """Fine-tune (or reuse the cached) HEAL model on the bundled corpus' train claims."""
    from heal_rag.datasets import load_demo_dataset
    from heal_rag.model_dir import is_heal_model_dir, load_model_dir
    from heal_rag.training.engine import HEALFinetuneEngine
    from heal_rag.training_args import HEALTrainingArguments

    # the training defaults are part of the key: a model cached under older defaults must not be reused
    defaults = json.dumps(HEALTrainingArguments().to_dict(), sort_keys=True, default=str)
    key = (
        f"steps{settings['max_steps']}-b{settings['batch_size']}-L{settings['max_seq_length']}-s{seed}"
        f"-{hashlib.sha256(defaults.encode()).hexdigest()[:12]}"
    )
    model_dir = CACHE_DIR / "models" / f"heal-{key}"
    if is_heal_model_dir(model_dir):
        logger.info("reusing the cached HEAL model %s", model_dir)
        return model_dir, dict(load_model_dir(model_dir).config.get("metrics", {}))
    train = load_demo_dataset(split="train")
    test = load_demo_dataset(split="test")
    engine = HEALFinetuneEngine(
        train.documents,
        queries=train,
        eval_queries=test.queries,
        output_dir=model_dir,
        hierarchy={"random_state": seed},
        max_steps=settings["max_steps"],
        batch_size=settings["batch_size"],
        max_seq_length=settings["max_seq_length"],
        seed=seed,
        overwrite=True,
    )
    engine.finetune()
    return model_dir, dict(engine.metrics_ or {})


# ------------------------------------------------------------------------------------------------------------
# question sets
# ------------------------------------------------------------------------------------------------------------


def scifact_demo_set(settings: dict[str, Any], seed: int) -> Any:
    from heal_rag.datasets import load_demo_dataset

    return load_demo_dataset(split="test").sample_queries(settings["scifact_questions"], seed=seed)


def pubmedqa_set(settings: dict[str, Any], seed: int, max_questions: int | None) -> Any:
    """PubMedQA test questions + their passages + SciFact distractors (reduced: only the selected questions'
    passages are indexed, beside the distractors)."""
    from heal_rag.evaluation.pubmedqa import load_pubmedqa

    dataset = load_pubmedqa(
        SHARED_DATA_DIR / "pubmedqa_pqal",
        SHARED_DATA_DIR / "scifact",
        split="test",
        n_distractors=settings["n_distractors"],
        seed=seed,
    ).sample_queries(max_questions, seed=seed)
    if max_questions is None:
        return dataset
    relevant = {d for q in dataset.queries for d in dataset.relevant(q)}
    return dataset.subset(doc_ids=[d for d in dataset.corpus if d in relevant or d.startswith("distractor:")])


# ------------------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------------------


def configurations(
    dataset: Any, embeds: dict[str, Any], hierarchy: Any, llm: Any = None, top_k: int = 10
) -> list[Any]:
    """The three configurations over FAISS indexes of ``dataset`` (one index per model)."""
    from heal_rag.evaluation.rag import RAGConfiguration
    from heal_rag.integrations import HierarchicalRetriever, build_faiss_index

    show = os.environ.get("TQDM_DISABLE") != "1"
    indexes = {
        name: build_faiss_index(dataset.to_nodes(), embed, show_progress=show)
        for name, embed in embeds.items()
    }
    return [
        RAGConfiguration(
            "base",
            retriever=indexes["base"].as_retriever(similarity_top_k=top_k),
            llm=llm,
            description={"model": "all-MiniLM-L6-v2", "weights": embeds["base"].weights_fingerprint},
        ),
        RAGConfiguration(
            "heal",
            retriever=indexes["heal"].as_retriever(similarity_top_k=top_k),
            llm=llm,
            description={"model": "HEAL", "weights": embeds["heal"].weights_fingerprint},
        ),
        RAGConfiguration(
            "heal-rescore",
            retriever=HierarchicalRetriever(
                indexes["heal"], hierarchy=hierarchy, mode="rescore", similarity_top_k=top_k
            ),
            llm=llm,
            description={
                "model": "HEAL",
                "weights": embeds["heal"].weights_fingerprint,
                "retriever": "rescore",
                "hierarchy": hierarchy.fingerprint,
            },
        ),
    ]


def evaluate_set(
    name: str,
    dataset: Any,
    embeds: dict[str, Any],
    hierarchy: Any,
    args: argparse.Namespace,
    llm: Any = None,
) -> dict[str, Any]:
    from heal_rag.evaluation.rag import evaluate_rag
    from heal_rag.evaluation.report import report_dict, summary_table, write_report

    start = time.perf_counter()
    configs = configurations(dataset, embeds, hierarchy, llm=llm)
    index_seconds = time.perf_counter() - start
    result = evaluate_rag(
        configs,
        dataset,
        out_dir=CACHE_DIR / name,
        n_resamples=args.resamples,
        seed=args.seed,
        extra_config={"benchmark": "bench_rag", "set": name, "n_documents": len(dataset.corpus)},
    )
    seconds = time.perf_counter() - start
    write_report(result, REPORT_DIR / name, hierarchy=hierarchy)
    print(f"\n== {name}: {len(dataset.queries)} questions, {len(dataset.corpus)} documents ==")
    print(summary_table(result))
    report = report_dict(result)
    return {
        "n_questions": len(dataset.queries),
        "n_documents": len(dataset.corpus),
        "summary": report["configurations"],
        "intervals": report["intervals"],
        "comparisons": report["comparisons"],
        "counts": report["counts"],
        "notes": report["notes"],
        "index_seconds": round(index_seconds, 1),
        "total_seconds": round(seconds, 1),
        "report": str((REPORT_DIR / name / "report.html").relative_to(REPO_ROOT)),
    }


# ------------------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------------------


def _cell(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("mean") is None:
        return "–"
    return f"{entry['mean']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def to_markdown(results: dict[str, Any]) -> str:
    settings = results["settings"]
    lines = [
        "# RAG evaluation benchmark (evals/bench_rag.py)",
        "",
        f"Command: `{results['provenance']['command']}`. "
        f"Configuration: **{'full' if results['full'] else 'reduced'}** "
        f"({', '.join(f'{k}={v}' for k, v in settings.items())}), seed {results['provenance']['seed']}, "
        f"commit `{results['provenance']['git_commit']}`.",
        f"Machine: {results['provenance']['machine']['cpu_count']} CPU cores, shared with other jobs "
        "(nice -n 10): timings are noisy. "
        f"Wall time {results['wall_seconds'] / 60:.1f} min.",
        "",
        "HEAL model: all-MiniLM-L6-v2 fine-tuned with the HEAL loss on the bundled SciFact subset's "
        "train claims "
        f"({results['training'].get('steps')} steps, {results['training'].get('n_pairs')} pairs, "
        f"{results['training'].get('training_wall_time_s')} s). Means with 95% bootstrap CIs; "
        "p: paired permutation test, Holm-adjusted over the metrics of each pair.",
    ]
    if not results["full"]:
        lines += [
            "",
            "**Reduced configuration** (meant for ~15 minutes on 2 shared cores; this run's wall time is "
            "above, most of it local-LLM generation): a brief fine-tune, 128-token inputs, a sample of "
            "PubMedQA questions whose own passages are indexed with a sample of SciFact distractors (the "
            "other PubMedQA passages, the hardest distractors, are left out, so retrieval is near "
            "saturated), and generation on a handful of questions only. `--full` runs the complete "
            "configuration.",
        ]
        generation = results["sets"].get("pubmedqa_generation")
        if generation:
            lines += [
                "",
                f"Generation with the local LLM took {generation['total_seconds'] / 60:.1f} min for "
                f"{generation['n_questions']} questions x {len(CONFIGS)} configurations.",
            ]
    for name, block in results["sets"].items():
        metrics = [m for m in (*HEADLINE, *GENERATION) if m in block["summary"].get("base", {})]
        rows = [
            {
                "metric": m,
                **{c: _cell(block["intervals"][c].get(m)) for c in CONFIGS if c in block["intervals"]},
            }
            for m in metrics
        ]
        lines += [
            "",
            f"## {name}: {block['n_questions']} questions, {block['n_documents']} documents",
            "",
            markdown_table(rows, [("metric", "metric"), *[(c, c) for c in CONFIGS]]),
            "",
        ]
        comp_rows = [
            {
                "pair": f"{c['b']} − {c['a']}",
                "metric": c["metric"],
                "diff": f"{c['diff']:+.3f}" if c["diff"] is not None else "–",
                "ci": f"[{c['low']:+.3f}, {c['high']:+.3f}]" if c["low"] is not None else "–",
                "p": _p(c["p_value"]),
                "p_holm": _p(c["p_holm"]),
                "n": c["n"],
            }
            for c in block["comparisons"]
            if c["metric"] in ("ndcg@10", "recall@10", *GENERATION)
        ]
        lines += [
            markdown_table(
                comp_rows,
                [
                    ("pair", "pair"),
                    ("metric", "metric"),
                    ("diff", "difference"),
                    ("ci", "95% CI"),
                    ("p", "p"),
                    ("p_holm", "p (Holm)"),
                    ("n", "n"),
                ],
            ),
            "",
            f"Report: `{block['report']}`; {block['total_seconds']:.0f} s "
            f"(indexing {block['index_seconds']:.0f} s).",
        ]
        if name.endswith("generation"):
            answered = {c: block["counts"][c].get("answered") for c in CONFIGS if c in block["counts"]}
            lines += [
                "",
                f"Answered (not abstained) per configuration: {answered}. The generator is SmolLM2-135M: it "
                "exercises the code path offline; its answers are not evidence of answer quality.",
            ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for variable, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("RAGAS_DO_NOT_TRACK", "true"),
    ):
        os.environ.setdefault(variable, value)
    for required in ("pubmedqa_pqal", "scifact"):
        if not (SHARED_DATA_DIR / required).is_dir():
            print(
                f"bench_rag: {SHARED_DATA_DIR / required} is missing (see docs on ../shared/data).",
                file=sys.stderr,
            )
            return 2
    settings = args.settings
    start = time.perf_counter()
    random.seed(args.seed)

    from heal_rag.integrations import HEALEmbedding

    model_dir, training = train_heal_model(settings, args.seed)
    embeds = {
        "base": HEALEmbedding.from_pretrained("default", max_length=settings["max_seq_length"]),
        "heal": HEALEmbedding.from_pretrained(model_dir, max_length=settings["max_seq_length"]),
    }
    hierarchy = embeds["heal"].hierarchy
    sets: dict[str, Any] = {}
    dataset = scifact_demo_set(settings, args.seed)
    sets["scifact_demo"] = evaluate_set("scifact_demo", dataset, embeds, hierarchy, args)
    dataset = pubmedqa_set(settings, args.seed, settings["pubmedqa_questions"])
    sets["pubmedqa"] = evaluate_set("pubmedqa", dataset, embeds, hierarchy, args)
    if not args.no_generation and settings["generation_questions"]:
        from heal_rag.llms import default_llm

        llm = default_llm(max_new_tokens=settings["llm_max_new_tokens"])
        dataset = pubmedqa_set(settings, args.seed, settings["generation_questions"])
        sets["pubmedqa_generation"] = evaluate_set(
            "pubmedqa_generation", dataset, embeds, hierarchy, args, llm=llm
        )
    results = {
        "full": bool(args.full),
        "settings": settings,
        "training": {k: v for k, v in training.items() if k != "loss_history"},
        "sets": sets,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "provenance": provenance(
            {"settings": settings, "configurations": list(CONFIGS), "resamples": args.resamples},
            seed=args.seed,
        ),
    }
    json_path, md_path = write_results("bench_rag", results, to_markdown(results))
    print(f"\nwrote {json_path} and {md_path}; HTML reports under {REPORT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does better retrieval make the generator's answers better? PubMedQA decisions, grounded by two references.

PubMedQA (PQA-L, test split) questions over their own abstracts mixed with SciFact abstracts as distractors
(:func:`heal_rag.evaluation.pubmedqa.load_pubmedqa`), answered by one generator from the top 3 passages of:

- ``bm25``, ``base`` (all-MiniLM-L6-v2), ``flat`` and ``heal`` (fine-tuned with ``heal-rag finetune``'s
  defaults on SciFact's train claims, flat = ``--no-hierarchy``), and ``heal+bm25``;
- two reference conditions of the same generator: ``gold`` (the question's own abstract alone, the upper
  bound) and ``no-context`` (no passage: the model's prior); see :mod:`heal_rag.evaluation.references`.

Measures, with bootstrap CIs and paired permutation tests (Holm-adjusted):

- **decision accuracy**: the answer's leading yes/no/maybe equals the gold label. It measures retrieval only
  when ``gold`` is clearly above ``no-context``; the report says whether it is, and draws no conclusion when
  it is not;
- **evidence exposure** (``answers_without_evidence``): the share of answered questions whose passages lack
  the question's abstract;
- with ``--judge URL`` (an OpenAI-compatible server), RAGAS faithfulness per configuration;
- seconds per answer (median over generated answers).

    python evals/bench_hallucination.py                         # 200 questions, the local SmolLM2-135M
    python evals/bench_hallucination.py --llm http://127.0.0.1:8080/v1 --judge http://127.0.0.1:8080/v1
    python evals/bench_hallucination.py --heal-model runs/heal --flat-model runs/flat --questions 300

Models, embeddings and checkpoints are cached under evals/cache/bench_hallucination/ (an interrupted run
resumes); results go to evals/results/bench_hallucination.{json,md} and the full report to
evals/results/bench_hallucination/report.{html,md,json}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO_ROOT, SHARED_DATA_DIR, markdown_table, provenance, write_results  # noqa: E402

CACHE_DIR = REPO_ROOT / "evals" / "cache" / "bench_hallucination"
REPORT_DIR = REPO_ROOT / "evals" / "results" / "bench_hallucination"
MINING_CACHE = REPO_ROOT / "evals" / "cache" / "study_heal" / "mining_cache"
RETRIEVAL_SYSTEMS = ("bm25", "base", "flat", "heal", "heal+bm25")
REFERENCES = ("gold", "no-context")
#: paired tests reported: (baseline, other), difference other - baseline
PAIRS = (
    ("no-context", "gold"),
    ("base", "heal"),
    ("flat", "heal"),
    ("base", "flat"),
    ("bm25", "heal+bm25"),
    ("heal", "heal+bm25"),
    ("heal+bm25", "gold"),
)
#: the context-sensitivity check: gold must beat no-context by this much, with p < 0.05
MIN_GOLD_GAP = 0.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=200, help="PubMedQA test questions (seeded sample)")
    parser.add_argument("--distractors", type=int, default=2000, help="SciFact abstracts mixed in")
    parser.add_argument("--llm", default="local", help="'local' (bundled SmolLM2-135M GGUF) or a server URL")
    parser.add_argument("--llm-model", default="default", help="model name at an --llm URL")
    parser.add_argument("--judge", default=None, help="OpenAI-compatible URL of a RAGAS judge (optional)")
    parser.add_argument("--judge-model", default="default")
    parser.add_argument(
        "--max-new-tokens", type=int, default=48, help="answer budget: a decision + a sentence"
    )
    parser.add_argument(
        "--passage-tokens",
        type=int,
        default=256,
        help="tokens kept of each passage the generator sees (what the 256-token retrievers read)",
    )
    parser.add_argument("--heal-model", type=Path, default=None, help="default: trained and cached here")
    parser.add_argument("--flat-model", type=Path, default=None, help="default: trained and cached here")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="cap the cached fine-tunes (default: none)"
    )
    parser.add_argument(
        "--mixed-precision",
        choices=["bf16", "fp16"],
        default=None,
        help="train the cached fine-tunes in bf16/fp16 (bf16 on CPU: 2x faster, same dev nDCG@10)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--name", default="bench_hallucination")
    return parser.parse_args(argv)


def trained_model(use_hierarchy: bool, max_steps: int | None, mixed_precision: str | None = None) -> Path:
    """A fine-tune with `heal-rag finetune`'s defaults on SciFact's train claims, trained once and cached."""
    from heal_rag import HEALFinetuneEngine, HEALTrainingArguments
    from heal_rag.datasets import load_beir

    settings = HEALTrainingArguments(
        use_hierarchy=use_hierarchy, max_steps=max_steps, mixed_precision=mixed_precision
    )
    key = hashlib.sha256(json.dumps(settings.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[
        :12
    ]
    folder = CACHE_DIR / "models" / f"{'heal' if use_hierarchy else 'flat'}-{key}"
    if (folder / "heal_config.json").is_file():
        return folder
    train = load_beir(SHARED_DATA_DIR / "scifact", split="train", name="scifact-train")
    test = load_beir(SHARED_DATA_DIR / "scifact", split="test")
    # the mined negatives' embeddings are shared with the study (same base model, same texts)
    mining = {"cache_folder": str(MINING_CACHE), "verbose": False}
    engine = HEALFinetuneEngine(
        train.documents,
        args=settings,
        hard_negative_kwargs=mining,
        queries=train,
        eval_queries=test.queries,
        output_dir=folder,
        overwrite=True,
    )
    engine.finetune()
    return folder


def question_set(args: argparse.Namespace) -> Any:
    """The sampled questions over their own abstracts plus the distractors."""
    from heal_rag.evaluation.pubmedqa import load_pubmedqa

    dataset = load_pubmedqa(
        SHARED_DATA_DIR / "pubmedqa_pqal",
        SHARED_DATA_DIR / "scifact",
        split="test",
        n_distractors=args.distractors,
        seed=args.seed,
    ).sample_queries(args.questions, seed=args.seed)
    relevant = {d for q in dataset.queries for d in dataset.relevant(q)}
    return dataset.subset(doc_ids=[d for d in dataset.corpus if d in relevant or d.startswith("distractor:")])


def configurations(dataset: Any, models: dict[str, Path], llm: Any, passage_tokens: int) -> list[Any]:
    from heal_rag import HEALEmbedding
    from heal_rag.systems import bm25_candidates, bm25_system, dense_system, reference_systems

    nodes = dataset.to_nodes()
    generation = {"llm": llm, "passage_max_tokens": passage_tokens}
    configs = [bm25_system(nodes, top_k=10, **generation)]
    candidates = bm25_candidates(nodes)
    for name in ("base", "flat", "heal"):
        embed = HEALEmbedding.from_pretrained(models[name]) if name != "base" else HEALEmbedding()
        system = dense_system(
            name,
            embed,
            nodes,
            top_k=10,
            description={"model": str(models.get(name, "all-MiniLM-L6-v2"))},
            bm25_candidates=candidates if name == "heal" else None,
            **generation,
        )
        configs.append(system.configuration)
        if system.hybrid is not None:
            configs.append(system.hybrid)
    return [*reference_systems(dataset, **generation), *configs]


def decision_shares(result: Any, dataset: Any) -> list[dict[str, Any]]:
    """Per configuration, the shares of answers deciding yes / no / maybe / nothing, and the gold labels'."""
    labels = ("yes", "no", "maybe", None)
    rows = []
    gold = [dataset.decisions[q] for q in result.question_ids]
    rows.append({"configuration": "(gold labels)", **{str(k): gold.count(k) / len(gold) for k in labels}})
    for name, records in result.records.items():
        decided = [r.get("decision") for r in records.values() if r.get("response") is not None]
        if decided:
            rows.append({"configuration": name, **{str(k): decided.count(k) / len(decided) for k in labels}})
    return rows


def context_sensitivity(result: Any, dataset: Any) -> dict[str, Any]:
    """Whether the generator's gold-context accuracy is clearly above its no-context accuracy and above the
    best constant answer (always "yes", say), the two ways a generator can score without reading."""
    test = next(
        c
        for c in result.comparisons
        if (c.a, c.b) == ("no-context", "gold") and c.metric == "decision_accuracy"
    )
    gold_labels = [dataset.decisions[q] for q in result.question_ids]
    constant_label = max(set(gold_labels), key=gold_labels.count)
    constant = gold_labels.count(constant_label) / len(gold_labels)
    above_prior = test.diff >= MIN_GOLD_GAP and test.p_holm < 0.05
    above_constant = test.mean_b >= constant + MIN_GOLD_GAP
    sensitive = above_prior and above_constant
    reading = (
        "the generator uses its context, so differences between retrievers can be read."
        if sensitive
        else "this generator barely uses its context, so its decision accuracy cannot tell the retrievers "
        "apart; no conclusion is drawn from it."
    )
    return {
        "gold": test.mean_b,
        "no_context": test.mean_a,
        "gap": test.diff,
        "gap_ci": [test.low, test.high],
        "p_holm": test.p_holm,
        "best_constant_answer": constant_label,
        "best_constant_accuracy": constant,
        "context_sensitive": bool(sensitive),
        "verdict": (
            f"gold - no-context decision accuracy {test.diff:+.3f} [{test.low:+.3f}, {test.high:+.3f}], "
            f"p(Holm) {test.p_holm:.3g} (needed: >= +{MIN_GOLD_GAP}, p < 0.05: "
            f"{'met' if above_prior else 'not met'}); gold {test.mean_b:.3f} against always answering "
            f"{constant_label!r} {constant:.3f} (needed: +{MIN_GOLD_GAP}: "
            f"{'met' if above_constant else 'not met'}). So {reading}"
        ),
    }


def seconds_per_answer(result: Any) -> dict[str, float]:
    out = {}
    for name, records in result.records.items():
        seconds = [r["seconds"] for r in records.values() if r.get("response") and "seconds" in r]
        if seconds:
            out[name] = statistics.median(seconds)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from heal_rag.evaluation.rag import evaluate_rag
    from heal_rag.evaluation.report import report_dict, summary_table, write_report
    from heal_rag.llms import resolve_llm

    models = {
        "heal": args.heal_model or trained_model(True, args.max_steps, args.mixed_precision),
        "flat": args.flat_model or trained_model(False, args.max_steps, args.mixed_precision),
    }
    llm = resolve_llm(args.llm, model=args.llm_model, what="--llm", max_new_tokens=args.max_new_tokens)[0]
    judge = None
    if args.judge:
        judge = resolve_llm(args.judge, model=args.judge_model, what="--judge")[0]
    dataset = question_set(args)
    start = time.perf_counter()
    configs = configurations(dataset, models, llm, args.passage_tokens)
    judge_embeddings = None
    if judge is not None:
        from heal_rag import HEALEmbedding

        judge_embeddings = HEALEmbedding()
    result = evaluate_rag(
        configs,
        dataset,
        judge=judge,
        judge_embeddings=judge_embeddings,
        out_dir=CACHE_DIR / "runs",
        n_resamples=args.resamples,
        seed=args.seed,
        pairs=[p for p in PAIRS if p[0] in {c.name for c in configs} and p[1] in {c.name for c in configs}],
        extra_config={"benchmark": "bench_hallucination", "max_new_tokens": args.max_new_tokens},
    )
    wall = time.perf_counter() - start
    write_report(result, REPORT_DIR)
    sensitivity = context_sensitivity(result, dataset)
    shares = decision_shares(result, dataset)
    speed = seconds_per_answer(result)
    report = report_dict(result)
    metrics = ["decision_accuracy", "answers_without_evidence", "ndcg@10"]
    if judge is not None:
        metrics.append("faithfulness")
    rows = []
    for name in result.configurations:
        row: dict[str, Any] = {"configuration": name, "s_per_answer": speed.get(name)}
        for metric in metrics:
            interval = result.intervals.get(name, {}).get(metric)
            if interval is not None:
                row[metric] = f"{interval.mean:.3f} [{interval.low:.3f}, {interval.high:.3f}]"
        rows.append(row)
    columns = [("configuration", "configuration"), *((m, m) for m in metrics), ("s_per_answer", "s/answer")]
    tests = [
        {
            "pair": f"{c.b} - {c.a}",
            "metric": c.metric,
            "diff": c.diff,
            "ci": f"[{c.low:+.3f}, {c.high:+.3f}]",
            "p_holm": c.p_holm,
        }
        for c in result.comparisons
        if c.metric in ("decision_accuracy", "answers_without_evidence")
    ]
    markdown = "\n\n".join(
        [
            f"# Hallucination on PubMedQA: {len(dataset.queries)} test questions, {len(dataset.corpus)} "
            f"passages ({args.distractors} SciFact distractors), generator {args.llm}, top 3 passages cut to "
            f"{args.passage_tokens} tokens, answers of at most {args.max_new_tokens} tokens",
            f"**Context sensitivity:** {sensitivity['verdict']}",
            markdown_table(rows, columns, formats={"s_per_answer": ".2f"}),
            "Decisions given (share of answers; None: no yes/no/maybe word):",
            markdown_table(
                shares,
                [("configuration", "configuration"), *((k, k) for k in ("yes", "no", "maybe", "None"))],
                formats={k: ".2f" for k in ("yes", "no", "maybe", "None")},
            ),
            "Paired tests (difference, 95 % CI, Holm-adjusted p):",
            markdown_table(
                tests,
                [
                    ("pair", "pair"),
                    ("metric", "metric"),
                    ("diff", "diff"),
                    ("ci", "CI"),
                    ("p_holm", "p (Holm)"),
                ],
                formats={"diff": "+.3f", "p_holm": ".3g"},
            ),
            f"Wall time {wall / 60:.1f} min. Full report: {REPORT_DIR.relative_to(REPO_ROOT)}/report.html",
        ]
    )
    payload = {
        "context_sensitivity": sensitivity,
        "seconds_per_answer": speed,
        "decision_shares": shares,
        "summary": report["configurations"],
        "intervals": report["intervals"],
        "comparisons": report["comparisons"],
        "counts": report["counts"],
        "notes": report["notes"],
        "models": {k: str(v) for k, v in models.items()},
        "n_questions": len(dataset.queries),
        "n_documents": len(dataset.corpus),
        "wall_s": round(wall, 1),
        "provenance": provenance(
            {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, seed=args.seed
        ),
    }
    json_path, _ = write_results(args.name, payload, markdown)
    print(summary_table(result))
    print(markdown)
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

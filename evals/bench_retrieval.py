"""Retrieval benchmark of issue 3: base model vs flat fine-tune vs HEAL vs BM25, side by side.

For each dataset (SciFact, MED) and regime (supervised: the dataset's train qrels; unsupervised: offline
pseudo-queries from the corpus alone), the same base model is fine-tuned twice with the same code, seed,
queries, batch size and number of steps: flat (document identity as the only label, i.e. an in-batch-negatives
loss) and HEAL (topic levels from HNMFk + document identity). Every model and BM25 are then evaluated
with exact retrieval on the test queries: nDCG@10, Recall@100, MRR@10 (ranx), with paired significance
tests of HEAL against the others, plus training wall time and samples per second.

MED has no training queries, so it runs in the unsupervised regime only.

Usage:
    python evals/bench_retrieval.py                         # the full benchmark (hours on 2 CPU cores)
    python evals/bench_retrieval.py --quick --datasets med  # a ~20-minute smoke run
    python evals/bench_retrieval.py --ablate lambda temperature levels doc-level

Results: evals/results/bench_retrieval.{json,md} (``--quick``: bench_retrieval.quick.{json,md}).
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO_ROOT,
    SHARED_DATA_DIR,
    markdown_table,
    median,
    median_timing,
    provenance,
    write_results,
)

from heal_rag._loss_options import CONTRAST_MODES, LEVEL_WEIGHT_PRESETS  # noqa: E402

logger = logging.getLogger("bench_retrieval")

DATASETS = {
    "scifact": SHARED_DATA_DIR / "scifact",
    "med": SHARED_DATA_DIR / "classic_ir" / "med",
    "demo": None,  # the bundled SciFact subset (heal_rag.datasets.demo_corpus_path())
}
REGIMES = ("supervised", "unsupervised")
METRICS = ("ndcg@10", "recall@100", "mrr@10")
ABLATIONS = ("lambda", "temperature", "levels", "doc-level", "contrast", "sampler")


@dataclass
class Variant:
    """One fine-tuned configuration: flat or HEAL with some settings."""

    name: str
    use_hierarchy: bool
    level_weights: str | list[float] = "document-heavy"
    temperature: float = 0.05
    contrast: str = "graded"
    depth: int = 2
    use_document_level: bool = True
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=["scifact", "med"])
    parser.add_argument("--regimes", nargs="+", choices=REGIMES, default=list(REGIMES))
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=("base", "flat", "heal", "bm25"),
        default=["base", "flat", "heal", "bm25"],
        help="which systems to run (default: all four)",
    )
    parser.add_argument("--base-model", default="default", help="sentence-transformers name or path")
    parser.add_argument("--seed", type=int, default=0)
    training = parser.add_argument_group("training (identical for flat and HEAL)")
    training.add_argument("--batch-size", type=int, default=32)
    training.add_argument(
        "--epochs", type=int, default=1, help="epochs over the training pairs (sets the steps)"
    )
    training.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="steps per fine-tune (default: epochs x ceil(pairs / batch))",
    )
    training.add_argument("--learning-rate", type=float, default=2e-5)
    training.add_argument(
        "--max-seq-length", type=int, default=256, help="token limit, training and evaluation"
    )
    training.add_argument("--device", default=None, help="cpu, cuda, ... (default: automatic)")
    heal = parser.add_argument_group("HEAL settings (the main HEAL configuration)")
    heal.add_argument(
        "--level-weights",
        default="document-heavy",
        help="document-heavy, fine-heavy, coarse-heavy, uniform or w1,w2,...",
    )
    heal.add_argument("--temperature", type=float, default=0.05, help="τ (also used by the flat loss)")
    heal.add_argument("--contrast", choices=CONTRAST_MODES, default="graded", help="HEAL contrast per level")
    heal.add_argument("--depth", type=int, default=2, help="topic levels of the HNMFk hierarchy")
    heal.add_argument(
        "--no-document-level", action="store_true", help="HEAL without the document-identity level"
    )
    heal.add_argument("--k-min", type=int, default=2, help="HNMFk: smallest number of topics per split")
    heal.add_argument("--k-max", type=int, default=10, help="HNMFk: largest number of topics per split")
    heal.add_argument(
        "--min-topic-size", type=int, default=10, help="HNMFk: smallest topic that is split again"
    )
    ablation = parser.add_argument_group(
        "ablations (extra HEAL variants, trained and evaluated like the others)"
    )
    ablation.add_argument(
        "--ablate",
        nargs="*",
        choices=ABLATIONS,
        default=[],
        help="lambda: coarse-heavy and uniform λ; temperature: --ablate-temperatures; levels: 1/2/3 levels; "
        "doc-level: without the document level; contrast: supcon and graded; sampler: HEAL batches with "
        "the topic levels weighted 0",
    )
    ablation.add_argument(
        "--ablate-temperatures", default="0.02,0.1", help="τ values for the temperature ablation"
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--quick", action="store_true", help="small, fast settings for a smoke run (see --help text)"
    )
    run.add_argument(
        "--max-corpus", type=int, default=None, help="cap the corpus (relevant documents are kept)"
    )
    run.add_argument("--max-test-queries", type=int, default=None, help="cap the test queries")
    run.add_argument(
        "--max-train-queries", type=int, default=None, help="cap the supervised training queries"
    )
    run.add_argument("--eval-batch-size", type=int, default=64)
    run.add_argument("--repeats", type=int, default=1, help="train each model N times; timings are medians")
    run.add_argument(
        "--work-dir",
        default=str(REPO_ROOT / "evals" / "cache" / "bench_retrieval"),
        help="models + embedding cache",
    )
    run.add_argument(
        "--out", default=None, help="results path without suffix (default: evals/results/bench_retrieval)"
    )
    run.add_argument("--keep-models", action="store_true", help="keep the fine-tuned model folders")
    run.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        # A smoke run that fits ~20 minutes on 2 busy cores: few steps, short texts, small corpus.
        args.max_steps = args.max_steps or 20
        args.max_seq_length = min(args.max_seq_length, 128)
        args.max_corpus = args.max_corpus or 1000
        args.max_test_queries = args.max_test_queries or 100
        args.max_train_queries = args.max_train_queries or 300
    if args.out is None:
        args.out = str(
            REPO_ROOT / "evals" / "results" / ("bench_retrieval.quick" if args.quick else "bench_retrieval")
        )
    return args


def make_variants(args: argparse.Namespace) -> list[Variant]:
    """Flat, the main HEAL configuration, and the requested ablations (names are unique)."""
    from heal_rag.cli._finetune import parse_level_weights

    weights = parse_level_weights(args.level_weights)
    main = {
        "level_weights": weights,
        "temperature": args.temperature,
        "contrast": args.contrast,
        "depth": args.depth,
        "use_document_level": not args.no_document_level,
    }
    variants: list[Variant] = []
    if "flat" in args.configs:
        variants.append(
            Variant(
                "flat", use_hierarchy=False, temperature=args.temperature, description="document level only"
            )
        )
    if "heal" in args.configs:
        variants.append(Variant("heal", use_hierarchy=True, description="main HEAL configuration", **main))

    def add(name: str, description: str, **changes: Any) -> None:
        settings = {**main, **changes}
        if any(v.use_hierarchy and {k: getattr(v, k) for k in main} == settings for v in variants):
            return  # same as an existing variant (e.g. the main one): do not train it twice
        variants.append(Variant(name, use_hierarchy=True, description=description, **settings))

    if "lambda" in args.ablate:
        for preset in LEVEL_WEIGHT_PRESETS:
            add(f"heal[λ={preset}]", f"λ preset {preset}", level_weights=preset)
    if "temperature" in args.ablate:
        for text in args.ablate_temperatures.split(","):
            tau = float(text)
            add(f"heal[τ={tau:g}]", f"temperature {tau:g}", temperature=tau)
    if "levels" in args.ablate:
        for depth in (1, 2, 3):
            # a λ vector is tied to the number of levels; ablate depth with the preset of the main run
            preset = weights if isinstance(weights, str) else "document-heavy"
            add(f"heal[levels={depth}]", f"{depth} topic level(s)", depth=depth, level_weights=preset)
    if "contrast" in args.ablate:
        for contrast in CONTRAST_MODES:
            add(f"heal[contrast={contrast}]", f"{contrast} contrast per level", contrast=contrast)
    if "sampler" in args.ablate:
        # the HEAL batch sampler with every topic level weighted 0: only the batch composition differs
        # from flat, which separates the sampler's effect from the topic-level loss terms
        add(
            "heal[sampler-only]",
            "HEAL batches, document level only",
            level_weights=[0.0] * args.depth + [1.0],
        )
    if "doc-level" in args.ablate:
        add("heal[no-doc]", "topic levels only, without the document level", use_document_level=False)
    return variants


# --------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------


def _cap_queries(dataset: Any, cap: int | None, seed: int) -> Any:
    if cap is None or len(dataset.queries) <= cap:
        return dataset
    ids = sorted(dataset.queries)
    random.Random(seed).shuffle(ids)
    keep = set(ids[:cap])
    return dataset.subset([q for q in dataset.queries if q in keep])


def load_data(name: str, args: argparse.Namespace) -> tuple[Any, Any | None, dict[str, Any]]:
    """(test dataset, train dataset or None, notes), both over the same (possibly capped) corpus."""
    from heal_rag.datasets import RetrievalDataset, available_splits, demo_corpus_path, load_beir

    folder = DATASETS[name] or demo_corpus_path()
    if not any((folder / f).is_file() for f in ("corpus.jsonl", "corpus.jsonl.gz")):
        raise SystemExit(f"{name}: no BEIR folder at {folder} (the benchmark data lives in ../shared/data).")
    test = _cap_queries(load_beir(folder, split="test", name=name), args.max_test_queries, args.seed)
    train = None
    if "train" in available_splits(folder):
        train = _cap_queries(
            load_beir(folder, split="train", name=f"{name}-train"), args.max_train_queries, args.seed
        )
    notes: dict[str, Any] = {
        "documents_full": len(test.corpus),
        "test_queries": len(test.queries),
        "train_queries": len(train.queries) if train is not None else 0,
    }
    if args.max_corpus is not None and len(test.corpus) > args.max_corpus:
        # keep every document judged relevant to a kept query, fill up with a seeded random sample
        needed = {d for split in (test, train) if split is not None for j in split.qrels.values() for d in j}
        others = [d for d in test.corpus if d not in needed]
        random.Random(args.seed).shuffle(others)
        keep = needed | set(others[: max(0, args.max_corpus - len(needed))])
        corpus = {d: doc for d, doc in test.corpus.items() if d in keep}
        test = RetrievalDataset(corpus, test.queries, test.qrels, name=name)
        if train is not None:
            train = RetrievalDataset(corpus, train.queries, train.qrels, name=f"{name}-train")
        notes["documents_capped"] = len(corpus)
    notes["documents"] = len(test.corpus)
    return test, train, notes


def training_pairs_count(regime: str, test: Any, train: Any | None, seed: int) -> int:
    """How many pairs the engine will train on (before removing overlaps with test queries)."""
    from heal_rag.training.queries import make_pseudo_queries, pairs_from_qrels

    if regime == "supervised":
        return len(pairs_from_qrels(train))
    return len(make_pseudo_queries(test.documents, seed=seed))


# --------------------------------------------------------------------------------------------------------
# steps
# ----------------------------------------------------------------------------------------------------------


def fit_hierarchy(dataset: Any, depth: int, args: argparse.Namespace) -> tuple[Any, float]:
    from heal_rag.hierarchy import HNMFk

    start = time.perf_counter()
    estimator = HNMFk(
        depth=depth,
        k_range=(args.k_min, args.k_max),
        min_topic_size=args.min_topic_size,
        random_state=args.seed,
    )
    hierarchy = estimator.fit(dataset.texts, doc_ids=dataset.doc_ids).hierarchy_
    return hierarchy, time.perf_counter() - start


def hierarchy_summary(hierarchy: Any, seconds: float) -> dict[str, Any]:
    return {
        "n_levels": hierarchy.n_levels,
        "topics_per_level": [len(hierarchy.topics_at(level)) for level in range(hierarchy.n_levels)],
        "fingerprint": hierarchy.fingerprint,
        "fit_seconds": round(seconds, 1),
    }


def train_variant(
    variant: Variant,
    regime: str,
    test: Any,
    train: Any | None,
    hierarchy: Any | None,
    max_steps: int,
    out_dir: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Fine-tune one variant (``repeats`` times, same seed); returns its training record."""
    from heal_rag import HEALFinetuneEngine

    repeats: list[dict[str, Any]] = []

    def once() -> Any:
        engine = HEALFinetuneEngine(
            test,  # its corpus (documents) only; the test queries are passed as eval_queries below
            base_model=None if args.base_model == "default" else args.base_model,
            output_dir=out_dir,
            hierarchy=hierarchy if variant.use_hierarchy else None,
            use_hierarchy=variant.use_hierarchy,
            queries=train if regime == "supervised" else "pseudo",
            eval_queries=test.queries,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            temperature=variant.temperature,
            contrast=variant.contrast,
            level_weights=variant.level_weights,
            use_document_level=variant.use_document_level,
            max_steps=max_steps,
            max_seq_length=args.max_seq_length,
            seed=args.seed,
            device=args.device,
            overwrite=True,
            show_progress=args.verbose,
        )
        engine.finetune()
        repeats.append(engine.metrics_)
        return engine

    _, engine_times, engine = median_timing(once, args.repeats)
    metrics = engine.metrics_
    from heal_rag.training import load_model_dir

    saved = load_model_dir(out_dir)
    return {
        "variant": asdict(variant),
        "steps": metrics["steps"],
        "n_pairs": metrics["n_pairs"],
        "pair_sources": metrics.get("pair_sources"),
        "dropped_eval_overlap": metrics.get("dropped_eval_overlap"),
        "train_loss": metrics["train_loss"],
        # medians over the repeats (same seed, same data): only the timings vary
        "train_wall_s": median([m["training_wall_time_s"] for m in repeats]),
        "samples_per_s": median([m["samples_per_second"] for m in repeats]),
        "train_wall_s_runs": [m["training_wall_time_s"] for m in repeats],
        "engine_wall_s_runs": [round(t, 2) for t in engine_times],
        "resolved_level_weights": saved.config.get("training", {}).get("resolved_level_weights"),
    }


def significance(
    per_query: dict[str, dict[str, dict[str, float]]], pairs: list[tuple[str, str]], seed: int
) -> list:
    """Paired tests (bootstrap CI + sign-flip permutation) of b - a for every metric."""
    try:
        from heal_rag.evaluation.stats import paired_test
    except ImportError as error:  # stats is another module of the package; the benchmark works without it
        logger.warning("No significance tests: %s", error)
        return []
    out = []
    for a, b in pairs:
        if a not in per_query or b not in per_query:
            continue
        for metric in METRICS:
            qids = list(per_query[a][metric])
            comparison = paired_test(
                [per_query[a][metric][q] for q in qids],
                [per_query[b][metric][q] for q in qids],
                metric=metric,
                name_a=a,
                name_b=b,
                seed=seed,
            )
            out.append(comparison.to_dict())
    return out


# --------------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s: %(message)s"
    )
    logger.setLevel(logging.INFO)
    import os

    if not args.verbose:
        os.environ.setdefault("TQDM_DISABLE", "1")

    from heal_rag._models import resolve_model_name
    from heal_rag.evaluation.retrieval import BM25_NAME, evaluate_models

    variants = make_variants(args)
    work = Path(args.work_dir)
    cache_dir = work / "embeddings"
    base_model = resolve_model_name(args.base_model)
    config = {k: v for k, v in vars(args).items() if k not in {"verbose"}}
    config["base_model_path"] = base_model
    config["variants"] = [asdict(v) for v in variants]
    started = time.perf_counter()

    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for name in args.datasets:
        test, train, notes = load_data(name, args)
        logger.info("%s: %s", name, notes)
        regimes = [r for r in args.regimes if r == "unsupervised" or train is not None]
        skipped = [r for r in args.regimes if r not in regimes]
        dataset_result: dict[str, Any] = {
            "data": notes,
            "skipped_regimes": skipped,
            "hierarchies": {},
            "regimes": {},
        }
        results[name] = dataset_result
        if skipped:
            logger.info("%s has no train queries: regime(s) %s skipped.", name, skipped)

        # zero-shot systems: the same for every regime, evaluated once
        fixed_models = ["base"] if "base" in args.configs else []
        t0 = time.perf_counter()
        fixed = (
            evaluate_models(
                test,
                [base_model] if fixed_models else [],
                k=100,
                batch_size=args.eval_batch_size,
                max_seq_length=args.max_seq_length,
                cache_dir=cache_dir,
                include_bm25="bm25" in args.configs,
                show_progress=args.verbose,
                device=args.device,
            )
            if (fixed_models or "bm25" in args.configs)
            else None
        )
        fixed_metrics, fixed_per_query, fixed_info = {}, {}, {}
        if fixed is not None:
            for key, label in ((base_model, "base"), (BM25_NAME, "bm25")):
                if key in fixed:
                    fixed_metrics[label] = dict(fixed[key])
                    fixed_per_query[label] = fixed.per_query[key]
                    fixed_info[label] = {"seconds": fixed.runs[key].seconds, "cache": fixed.runs[key].cache}
        logger.info("%s zero-shot: %s (%.0f s)", name, fixed_metrics, time.perf_counter() - t0)

        hierarchies: dict[int, Any] = {}
        for regime in regimes:
            n_pairs = training_pairs_count(regime, test, train, args.seed)
            max_steps = args.max_steps or args.epochs * math.ceil(n_pairs / args.batch_size)
            regime_result: dict[str, Any] = {
                "n_pairs_planned": n_pairs,
                "max_steps": max_steps,
                "systems": {},
            }
            dataset_result["regimes"][regime] = regime_result
            model_dirs: dict[str, str] = {}
            training: dict[str, dict[str, Any]] = {}
            for variant in variants:
                hierarchy = None
                if variant.use_hierarchy:
                    if variant.depth not in hierarchies:
                        logger.info("%s: fitting HNMFk (depth %d)", name, variant.depth)
                        hierarchies[variant.depth], seconds = fit_hierarchy(test, variant.depth, args)
                        dataset_result["hierarchies"][str(variant.depth)] = hierarchy_summary(
                            hierarchies[variant.depth], seconds
                        )
                        logger.info(
                            "%s hierarchy: %s", name, dataset_result["hierarchies"][str(variant.depth)]
                        )
                    hierarchy = hierarchies[variant.depth]
                out_dir = work / "models" / name / regime / variant.name
                logger.info("%s/%s: training %s (%d steps)", name, regime, variant.name, max_steps)
                training[variant.name] = train_variant(
                    variant, regime, test, train, hierarchy, max_steps, out_dir, args
                )
                logger.info("%s/%s/%s: %s", name, regime, variant.name, training[variant.name])
                model_dirs[variant.name] = str(out_dir)
            tuned = (
                evaluate_models(
                    test,
                    list(model_dirs.values()),
                    k=100,
                    batch_size=args.eval_batch_size,
                    max_seq_length=args.max_seq_length,
                    cache_dir=cache_dir,
                    show_progress=args.verbose,
                    device=args.device,
                )
                if model_dirs
                else None
            )
            per_query = dict(fixed_per_query)
            systems: dict[str, Any] = {}
            for label in ("base",):
                if label in fixed_metrics:
                    systems[label] = {**fixed_metrics[label], "train_wall_s": None, "samples_per_s": None}
            for variant_name, directory in model_dirs.items():
                systems[variant_name] = {**dict(tuned[directory]), **training[variant_name]}
                per_query[variant_name] = tuned.per_query[directory]
            if "bm25" in fixed_metrics:
                systems["bm25"] = {**fixed_metrics["bm25"], "train_wall_s": None, "samples_per_s": None}
            regime_result["systems"] = systems
            regime_result["zero_shot_info"] = fixed_info
            heal_names = [v.name for v in variants if v.use_hierarchy]
            pairs = [
                (other, h) for h in heal_names for other in ("flat", "base", "bm25") if other in per_query
            ]
            regime_result["significance"] = significance(per_query, pairs, args.seed)
            for system, values in systems.items():
                rows.append({"dataset": name, "regime": regime, "system": system, **values})
            if not args.keep_models:
                shutil.rmtree(work / "models" / name / regime, ignore_errors=True)

    total = time.perf_counter() - started
    payload = {
        "benchmark": "bench_retrieval",
        "quick": args.quick,
        "quick_note": (
            "--quick: capped corpus/queries, few steps, max_seq_length 128; a smoke test of the pipeline, "
            "not comparable with the full benchmark or the reference figures."
            if args.quick
            else None
        ),
        "provenance": provenance(config, seed=args.seed),
        "results": results,
        "total_wall_s": round(total, 1),
    }
    columns = [
        ("dataset", "dataset"),
        ("regime", "regime"),
        ("system", "system"),
        ("ndcg@10", "nDCG@10"),
        ("recall@100", "Recall@100"),
        ("mrr@10", "MRR@10"),
        ("steps", "steps"),
        ("train_wall_s", "train s"),
        ("samples_per_s", "samples/s"),
    ]
    table = markdown_table(rows, columns, formats={"train_wall_s": ".1f", "samples_per_s": ".2f"})
    sig_lines = []
    for name, dataset_result in results.items():
        for regime, regime_result in dataset_result["regimes"].items():
            for c in regime_result.get("significance", []):
                if c["metric"] == "ndcg@10":
                    sig_lines.append(
                        f"- {name}/{regime}: nDCG@10 {c['b']} − {c['a']} = {c['diff']:+.4f} "
                        f"[{c['low']:+.4f}, {c['high']:+.4f}], p = {c['p_value']:.3g} (n = {c['n']})"
                    )
    prov = payload["provenance"]
    markdown = "\n".join(
        [
            f"# Retrieval benchmark{' (quick smoke run)' if args.quick else ''}",
            "",
            f"Command: `{prov['command']}`  ",
            f"Commit: `{prov['git_commit']}`, seed {args.seed}, base model `{args.base_model}`, batch "
            f"{args.batch_size}, max_seq_length {args.max_seq_length}, "
            f"{prov['machine']['usable_cpus']} CPU cores"
            f"{', GPU ' + prov['machine']['gpu'] if prov['machine'].get('gpu') else ''}; "
            f"total {total / 60:.1f} min.",
            "",
            *([payload["quick_note"], ""] if args.quick else []),
            table,
            "",
            "Paired differences (bootstrap 95% CI, sign-flip permutation p):" if sig_lines else "",
            *sig_lines,
            "",
            prov["note"],
        ]
    )
    json_path, md_path = write_results(args.out, payload, markdown)
    print(table)
    if sig_lines:
        print("\n".join(sig_lines))
    print(f"\nwrote {json_path} and {md_path} ({total / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

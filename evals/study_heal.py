"""The HEAL retrieval study (issue 9): does the topic hierarchy make a fine-tune retrieve better?

Protocol (the same for every system; only the loss, the sampler or the negatives differ):

- **dev**: SciFact's train claims are split 80/20 (seed 0). Models train on the 80 % with the train qrels
  and are evaluated on the 20 % after every epoch (sentence-transformers' ``InformationRetrievalEvaluator``
  inside the trainer); the best epoch is kept and the whole curve recorded. The dev corpus is every
  document judged for a dev claim plus a seeded random sample of the others (``--dev-corpus``), embedded at
  the training length, so that a dev run costs minutes on a CPU. All choices are made here.
- **test**: the chosen configurations train on all train claims for the chosen number of epochs (no dev
  set: what a user of the defaults gets) and are evaluated once on SciFact test, full corpus, 256 tokens,
  dense and fused with BM25 (``<system>+bm25``).

Regimes (``--regime``): ``scifact-supervised`` (train qrels), ``scifact-unsupervised`` (the engine's offline
pseudo-queries over the whole corpus, no judged query in training; dev still selects on the dev claims) and
``med-unsupervised`` (pseudo-queries; MED has no train or dev queries, so it only checks on an untuned corpus
the defaults chosen on SciFact dev: stage ``test`` only).

Every (stage, regime, system, seed) run is one JSON record under ``evals/results/study_heal/runs/``; a run
whose record exists is skipped, so the study is re-run piece by piece and ``table`` rebuilds the tables
(mean ± sd over seeds, paired tests per seed and pooled over seeds) from the records alone.

Usage:
    python evals/study_heal.py dev --systems flat heal heal-tree --seeds 0 1 2
    python evals/study_heal.py test --systems flat heal-tree --seeds 0 1 2 --epochs 3
    python evals/study_heal.py test --regime med-unsupervised --systems flat heal-mined --seeds 0 1 2
    python evals/study_heal.py table

Results: evals/results/study_heal.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO_ROOT, SHARED_DATA_DIR, provenance, write_results  # noqa: E402

logger = logging.getLogger("study_heal")

RUNS_DIR = REPO_ROOT / "evals" / "results" / "study_heal" / "runs"
WORK_DIR = REPO_ROOT / "evals" / "cache" / "study_heal"
SCIFACT = SHARED_DATA_DIR / "scifact"
MED = SHARED_DATA_DIR / "classic_ir" / "med"
#: ``supervised``: trained on SciFact's train qrels; ``unsupervised``: on the engine's offline pseudo-queries
#: only (no judged query is seen in training). MED has no train or dev claims: it only checks, on a corpus
#: that no choice was made on, the defaults chosen on SciFact dev.
REGIMES = ("scifact-supervised", "scifact-unsupervised", "med-unsupervised")
DEV_SPLIT_SEED = 0
DEV_SHARE = 0.2

#: The systems compared: engine settings on top of the shared training budget. ``flat`` is a plain
#: in-batch-negatives fine-tune (MultipleNegativesRankingLoss); everything else uses the topic hierarchy
#: in the loss, the sampler, the negatives, or several of them.
#: Every loss setting is pinned here, so that changing the engine's defaults never changes a system.
PINNED = {
    "temperature": 0.05,
    "contrast": "graded",
    "level_weights": "document-heavy",
    "hard_negatives": "none",
}
SYSTEMS: dict[str, dict[str, Any]] = {
    "flat": {"use_hierarchy": False},
    "flat-mined": {"use_hierarchy": False, "hard_negatives": "mined"},
    "heal": {"use_hierarchy": True},
    "heal-sampler": {"use_hierarchy": True, "level_weights": [0.0, 0.0, 1.0]},
    "heal-tree": {"use_hierarchy": True, "hard_negatives": "tree"},
    "sampler-tree": {"use_hierarchy": True, "level_weights": [0.0, 0.0, 1.0], "hard_negatives": "tree"},
    "heal-mined": {"use_hierarchy": True, "hard_negatives": "mined"},
    "heal-soft": {"use_hierarchy": True, "contrast": "soft", "level_weights": [0.02, 0.05, 1.0]},
    "heal-supcon": {"use_hierarchy": True, "contrast": "supcon"},
    # The same ablations on top of the mined negative that every default now trains with.
    "sampler-mined": {"use_hierarchy": True, "level_weights": [0.0, 0.0, 1.0], "hard_negatives": "mined"},
    "heal-soft-mined": {
        "use_hierarchy": True,
        "contrast": "soft",
        "level_weights": [0.02, 0.05, 1.0],
        "hard_negatives": "mined",
    },
    "heal-supcon-mined": {"use_hierarchy": True, "contrast": "supcon", "hard_negatives": "mined"},
}
SYSTEMS = {name: {**PINNED, **settings} for name, settings in SYSTEMS.items()}
DESCRIPTIONS = {
    "flat": "document level only, random batches (MNRL)",
    "flat-mined": "flat + 1 negative mined by the base model (mine_hard_negatives)",
    "heal": "HEAL defaults: graded contrast, document-heavy λ, hierarchy sampler",
    "heal-sampler": "hierarchy sampler, topic levels weighted 0",
    "heal-tree": "HEAL + 1 same-leaf negative per pair",
    "sampler-tree": "hierarchy sampler + same-leaf negative, topic levels weighted 0",
    "heal-mined": "HEAL + 1 mined negative",
    "heal-soft": "soft tree-distance target, λ [0.02, 0.05, 1]",
    "heal-supcon": "HEAL with the paper's SupCon contrast",
    "sampler-mined": "hierarchy sampler + 1 mined negative, topic levels weighted 0 (the sampler alone)",
    "heal-soft-mined": "soft tree-distance target + 1 mined negative",
    "heal-supcon-mined": "SupCon contrast + 1 mined negative",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("dev", "test", "table"))
    parser.add_argument("--regime", choices=REGIMES, default="scifact-supervised")
    parser.add_argument("--systems", nargs="+", choices=sorted(SYSTEMS), default=["flat", "heal"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=4, help="dev: the most epochs; test: epochs to train")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--train-seq-length", type=int, default=128, help="tokens while training")
    parser.add_argument("--eval-seq-length", type=int, default=None, help="dev: training length; test: 256")
    parser.add_argument("--dev-corpus", type=int, default=1500, help="documents in the dev corpus")
    parser.add_argument(
        "--length-check",
        action="store_true",
        help="dev: also score the kept models at 256 tokens (shows whether 128 changes the ranking)",
    )
    parser.add_argument(
        "--max-steps", type=int, default=None, help="cap on optimiser steps (the same for every system)"
    )
    parser.add_argument(
        "--pseudo-query-mode",
        choices=("auto", "title", "sentence", "both"),
        default="auto",
        help="unsupervised regimes: which pseudo-queries per document (`both`: up to two)",
    )
    parser.add_argument(
        "--mixed-precision",
        choices=("bf16", "fp16"),
        default=None,
        help="train with autocast (bf16 on CPUs with AVX-512 BF16); the default trains in fp32",
    )
    parser.add_argument("--tag", default="", help="suffix of the run folder (a variant of the protocol)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------


def scifact() -> tuple[Any, Any, Any]:
    """(all train claims, their 80 % training part, the 20 % dev part), all over the full corpus."""
    from heal_rag.datasets import load_beir

    train_all = load_beir(SCIFACT, split="train", name="scifact-train")
    train, dev = train_all.split(test_size=DEV_SHARE, seed=DEV_SPLIT_SEED)
    return train_all, train, dev


def dev_subcorpus(dev: Any, size: int) -> Any:
    """The dev claims over their judged documents plus a seeded sample of the others (``size`` in all)."""
    from heal_rag.datasets import RetrievalDataset

    judged = {d for docs in dev.qrels.values() for d in docs}
    others = sorted(d for d in dev.corpus if d not in judged)
    random.Random(DEV_SPLIT_SEED).shuffle(others)
    keep = judged | set(others[: max(0, size - len(judged))])
    corpus = {d: doc for d, doc in dev.corpus.items() if d in keep}
    return RetrievalDataset(corpus, dev.queries, dev.qrels, name=f"scifact-dev{size}")


def regime_data(regime: str, stage: str, args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(the corpus to train on, the training queries, the evaluation set, the dev set or None)."""
    from heal_rag.datasets import load_beir

    if regime == "med-unsupervised":
        if stage == "dev":
            raise SystemExit("MED has no dev queries: it checks the SciFact dev choices (use test).")
        med = load_beir(MED, split="test", name="med")
        return med, "pseudo", med, None
    train_all, train, dev = scifact()
    supervised = regime == "scifact-supervised"
    if stage == "dev":
        dev_set = dev_subcorpus(dev, args.dev_corpus)
        return train_all, train if supervised else "pseudo", dev_set, dev_set
    test = load_beir(SCIFACT, split="test", name="scifact-test")
    return train_all, train_all if supervised else "pseudo", test, None


def hierarchy_for(dataset: Any, corpus: str = "scifact") -> Any:
    """The HNMFk hierarchy of a whole corpus (engine defaults, seed 0), fitted once and cached."""
    from heal_rag.hierarchy import Hierarchy, HNMFk

    folder = WORK_DIR / f"hierarchy_{corpus}"
    if folder.is_dir():
        try:
            return Hierarchy.load(folder)
        except (OSError, ValueError) as error:
            logger.warning("Refitting the hierarchy: %s", error)
    start = time.perf_counter()
    estimator = HNMFk(random_state=0, show_progress=False)
    hierarchy = estimator.fit(dataset.texts, doc_ids=dataset.doc_ids).hierarchy_
    logger.info("HNMFk on %d documents: %.0f s", len(dataset.corpus), time.perf_counter() - start)
    hierarchy.save(folder)
    return hierarchy


def qrels_agreement(hierarchy: Any, dataset: Any) -> dict[str, float]:
    """How often two documents judged relevant to the same claim share a topic, per level, vs chance."""
    import numpy as np

    row = {str(d): i for i, d in enumerate(hierarchy.doc_ids)}
    paths = hierarchy.paths
    out: dict[str, float] = {}
    pairs = [
        (row[a], row[b])
        for docs in dataset.qrels.values()
        for i, a in enumerate(sorted(docs))
        for b in sorted(docs)[i + 1 :]
    ]
    for level in range(hierarchy.n_levels):
        labels = paths[:, level]
        same = np.mean([labels[a] == labels[b] for a, b in pairs]) if pairs else float("nan")
        _, counts = np.unique(labels, return_counts=True)
        chance = float(((counts / counts.sum()) ** 2).sum())
        out[f"level_{level}_same"] = round(float(same), 3)
        out[f"level_{level}_chance"] = round(chance, 3)
    out["judged_pairs"] = len(pairs)
    return out


# ------------------------------------------------------------------------------------------------------
# one run
# ------------------------------------------------------------------------------------------------------


def stage_dir_name(args: argparse.Namespace) -> str:
    return f"{args.stage}{'-' + args.tag if args.tag else ''}"


def run_path(args: argparse.Namespace, system: str, seed: int | None) -> Path:
    name = "none.json" if seed is None else f"seed{seed}.json"
    return RUNS_DIR / stage_dir_name(args) / args.regime / system / name


def train_and_evaluate(stage: str, system: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from heal_rag import HEALFinetuneEngine
    from heal_rag.evaluation.retrieval import evaluate_models

    corpus, queries, eval_set, dev_set = regime_data(args.regime, stage, args)
    corpus_name = args.regime.split("-")[0]
    hierarchy = hierarchy_for(corpus, corpus_name) if SYSTEMS[system]["use_hierarchy"] else None
    out_dir = WORK_DIR / "models" / f"{stage}-{args.regime}-{system}-seed{seed}"
    settings = dict(SYSTEMS[system])
    if settings.get("hard_negatives") == "mined":
        settings["hard_negative_kwargs"] = {"cache_folder": str(WORK_DIR / "mining_cache"), "verbose": False}
    epochs = args.epochs
    eval_length = args.eval_seq_length or (args.train_seq_length if stage == "dev" else 256)
    engine = HEALFinetuneEngine(
        corpus,
        base_model=None,
        output_dir=out_dir,
        hierarchy=hierarchy,
        queries=queries,
        eval_queries=eval_set.queries,
        dev_set=dev_set,
        epochs=epochs,
        max_steps=args.max_steps,
        pseudo_query_mode=args.pseudo_query_mode,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_seq_length=args.train_seq_length,
        seed=seed,
        mixed_precision=args.mixed_precision,
        overwrite=True,
        show_progress=args.verbose,
        **settings,
    )
    engine.finetune()
    metrics = engine.metrics_
    start = time.perf_counter()
    results = evaluate_models(
        eval_set,
        [str(out_dir)],
        max_seq_length=eval_length,
        include_bm25=True,
        include_hybrid=True,  # HEAL must also help on top of BM25
        show_progress=args.verbose,
        batch_size=64,
    )
    eval_seconds = time.perf_counter() - start
    full_length = None
    if stage == "dev" and eval_length != 256 and args.length_check:
        # the check that training and scoring dev at 128 tokens does not change the ranking of systems:
        # the same kept model, scored again at the full 256 tokens
        full_length = evaluate_models(
            eval_set, [str(out_dir)], max_seq_length=256, show_progress=args.verbose, batch_size=64
        )
    systems = {str(out_dir): system, "bm25": "bm25", f"{out_dir}+bm25": f"{system}+bm25"}
    record = {
        "stage": stage,
        "regime": args.regime,
        "system": system,
        "description": DESCRIPTIONS[system],
        "seed": seed,
        "settings": SYSTEMS[system],
        "budget": {
            "epochs": epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "train_seq_length": args.train_seq_length,
            "eval_seq_length": eval_length,
            "steps": metrics["steps"],
            "n_pairs": metrics["n_pairs"],
            "queries": metrics.get("queries"),
        },
        "eval_set": {
            "name": eval_set.name,
            "queries": len(eval_set.queries),
            "documents": len(eval_set.corpus),
        },
        "dev_history": metrics.get("dev_history"),
        "best_epoch": metrics.get("best_epoch"),
        "hard_negatives": metrics.get("hard_negatives"),
        **scores(results, systems),
        **scores(full_length, systems, suffix="_256_tokens"),
        "train_wall_s": metrics["training_wall_time_s"],
        "eval_wall_s": round(eval_seconds, 1),
        "provenance": provenance(vars(args), seed=seed),
    }
    shutil.rmtree(out_dir, ignore_errors=True)
    return record


def base_record(stage: str, args: argparse.Namespace) -> dict[str, Any]:
    """The untrained base model (and, on test, BM25 and base+BM25) on the stage's evaluation set."""
    from heal_rag.evaluation.retrieval import evaluate_models

    eval_set = regime_data(args.regime, stage, args)[2]
    length = args.eval_seq_length or (args.train_seq_length if stage == "dev" else 256)
    results = evaluate_models(
        eval_set,
        ["default"],
        max_seq_length=length,
        include_bm25=True,
        include_hybrid=True,
        show_progress=args.verbose,
        batch_size=64,
        cache_dir=REPO_ROOT / "evals" / "cache" / "embeddings",
    )
    names = {"default": "base", "bm25": "bm25", "default+bm25": "base+bm25"}
    full_length = None
    if stage == "dev" and length != 256 and args.length_check:
        full_length = evaluate_models(
            eval_set,
            ["default"],
            max_seq_length=256,
            show_progress=args.verbose,
            batch_size=64,
            cache_dir=REPO_ROOT / "evals" / "cache" / "embeddings",
        )
    return {
        **scores(results, names),
        **scores(full_length, names, suffix="_256_tokens"),
        "stage": stage,
        "regime": args.regime,
        "system": "base",
        "seed": None,
        "eval_set": {
            "name": eval_set.name,
            "queries": len(eval_set.queries),
            "documents": len(eval_set.corpus),
        },
        "budget": {"eval_seq_length": length},
        "provenance": provenance(vars(args), seed=None),
    }


def scores(results: Any, names: dict[str, str], suffix: str = "") -> dict[str, Any]:
    """Mean metrics and per-query nDCG@10 of evaluate_models' results, keyed by study names."""
    if results is None:
        return {f"metrics{suffix}": None, f"per_query_ndcg@10{suffix}": None}
    return {
        f"metrics{suffix}": {names.get(k, k): dict(v) for k, v in results.items()},
        f"per_query_ndcg@10{suffix}": {names.get(k, k): v["ndcg@10"] for k, v in results.per_query.items()},
    }


def save_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------------


def load_records() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(RUNS_DIR.glob("*/*/*/*.json"))]


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def stage_tables(records: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """Markdown lines and JSON summary of one stage and regime: systems by mean nDCG@10, paired tests."""
    from heal_rag.evaluation.stats import paired_test

    base = next((r for r in records if r["system"] == "base"), None)
    trained = [r for r in records if r["system"] != "base"]
    per_system: dict[str, dict[int | None, dict[str, float]]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for r in trained:
        for name, per_query in r["per_query_ndcg@10"].items():
            if name == "bm25":
                continue
            per_system.setdefault(name, {})[r["seed"]] = per_query
            row = rows.setdefault(
                name, {"ndcg": [], "recall": [], "epochs": [], "steps": [], "train_s": [], "seeds": []}
            )
            row["ndcg"].append(r["metrics"][name]["ndcg@10"])
            row["recall"].append(r["metrics"][name]["recall@100"])
            row["seeds"].append(r["seed"])
            if "+" not in name:
                row["epochs"].append(r.get("best_epoch") or r["budget"]["epochs"])
                row["steps"].append(r["budget"]["steps"])
                row["train_s"].append(r["train_wall_s"])
    if base is not None:
        for name, per_query in base["per_query_ndcg@10"].items():
            per_system[name] = {None: per_query}
            rows[name] = {
                "ndcg": [base["metrics"][name]["ndcg@10"]],
                "recall": [base["metrics"][name]["recall@100"]],
                "epochs": [],
                "steps": [],
                "train_s": [],
                "seeds": [None],
            }
    ordered = sorted(rows, key=lambda n: -statistics.mean(rows[n]["ndcg"]))
    lines = [
        "| system | nDCG@10 (mean ± sd) | Recall@100 | seeds | best epoch | steps | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ordered:
        row = rows[name]
        seeds = ",".join("–" if s is None else str(s) for s in row["seeds"])
        epochs = ",".join(f"{e:g}" for e in row["epochs"]) or "–"
        steps = ",".join(str(n) for n in sorted(set(row["steps"]))) or "–"
        train_s = f"{statistics.median(row['train_s']):.0f}" if row["train_s"] else "–"
        lines.append(
            f"| {name} | {_mean_sd(row['ndcg'])} | {_mean_sd(row['recall'])} | {seeds} | {epochs} "
            f"| {steps} | {train_s} |"
        )

    all_seeds = sorted({s for name in ordered for s in rows[name]["seeds"] if s is not None})
    if all_seeds:
        lines += [
            "",
            "Per seed (nDCG@10):",
            "",
            "| system | " + " | ".join(f"seed {s}" for s in all_seeds) + " | mean |",
            "|---|" + "---|" * (len(all_seeds) + 1),
        ]
        for name in ordered:
            by_seed = dict(zip(rows[name]["seeds"], rows[name]["ndcg"], strict=True))
            cells = [f"{by_seed[s]:.4f}" if s in by_seed else "–" for s in all_seeds]
            if None in by_seed:  # untrained: the same at every seed
                cells = [f"{by_seed[None]:.4f}"] * len(all_seeds)
            mean = statistics.mean(rows[name]["ndcg"])
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean:.4f} |")

    # paired tests of every trained system against flat (and base), per seed and pooled over seeds
    tests: list[dict[str, Any]] = []
    references = [
        n
        for n in ("flat", "flat-mined", "base", "flat+bm25", "flat-mined+bm25", "base+bm25")
        if n in per_system
    ]
    for name in ordered:
        for ref in references:
            if name == ref or ("+" in name) != ("+" in ref) or name in ("base", "base+bm25", "bm25"):
                continue
            if ref.startswith("flat-mined") and "mined" not in name:
                continue  # the mined peer is the reference of the mined systems only
            seeds = sorted(s for s in per_system[name] if s is not None)
            per_seed = []
            for seed in seeds:
                a = per_system[ref].get(seed, per_system[ref].get(None))
                if a is None:
                    continue
                qids = sorted(a)
                c = paired_test([a[q] for q in qids], [per_system[name][seed][q] for q in qids], seed=0)
                per_seed.append({"seed": seed, "diff": c.diff, "p": c.p_value})
            if not per_seed:
                continue
            qids = sorted(next(iter(per_system[ref].values())))
            seeds = [p["seed"] for p in per_seed]  # pooled over the seeds both systems have

            def mean_over_seeds(system: str, q: str, seeds: list[int] = seeds) -> float:
                runs = per_system[system]
                return statistics.mean(runs[s][q] for s in (seeds if None not in runs else [None]))

            pooled = paired_test(
                [mean_over_seeds(ref, q) for q in qids], [mean_over_seeds(name, q) for q in qids], seed=0
            )
            tests.append(
                {
                    "system": name,
                    "reference": ref,
                    "pooled": pooled.to_dict(),
                    "per_seed": per_seed,
                    "holds_across_seeds": all(p["diff"] > 0 for p in per_seed)
                    or all(p["diff"] < 0 for p in per_seed),
                }
            )
    eval_set = (base or trained[0])["eval_set"] if (base or trained) else {}
    lines += [
        "",
        f"Evaluated on {eval_set.get('name')} ({eval_set.get('queries')} queries, "
        f"{eval_set.get('documents')} documents).",
        "",
        "Paired differences in nDCG@10 (pooled: per-query mean over seeds; bootstrap 95 % CI, sign-flip p; "
        "per seed: diff (p)):",
        "",
    ]
    for t in tests:
        p = t["pooled"]
        per_seed = ", ".join(f"s{x['seed']} {x['diff']:+.4f} ({x['p']:.2g})" for x in t["per_seed"])
        lines.append(
            f"- {t['system']} − {t['reference']}: {p['diff']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}], "
            f"p = {p['p_value']:.3g}; per seed: {per_seed}"
        )
    curves = [
        f"- {r['system']} seed {r['seed']}: " + ", ".join(f"{e['ndcg@10']:.4f}" for e in r["dev_history"])
        for r in trained
        if r.get("dev_history")
    ]
    if curves:
        lines += [
            "",
            "Dev nDCG@10 after each epoch (InformationRetrievalEvaluator, best epoch kept):",
            "",
            *curves,
        ]
    long_runs: dict[str, dict[str, list[float]]] = {}
    for r in records:
        for name, values in (r.get("metrics_256_tokens") or {}).items():
            if name != "bm25" and "+" not in name:
                entry = long_runs.setdefault(name, {"128": [], "256": []})
                entry["128"].append(r["metrics"][name]["ndcg@10"])
                entry["256"].append(values["ndcg@10"])
    if long_runs:
        lines += [
            "",
            "The same kept models scored at 128 tokens (as trained and selected) and at 256 tokens "
            "(the ranking of systems must not change):",
            "",
            "| system | nDCG@10 at 128 | nDCG@10 at 256 |",
            "|---|---|---|",
            *(
                f"| {name} | {_mean_sd(v['128'])} | {_mean_sd(v['256'])} |"
                for name, v in sorted(long_runs.items(), key=lambda kv: -statistics.mean(kv[1]["128"]))
            ),
        ]
    summary = {"systems": {n: rows[n] for n in ordered}, "tests": tests, "length_check": long_runs}
    return lines, summary


def write_tables(args: argparse.Namespace) -> None:
    records = load_records()
    by_stage: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        key = (r.get("stage_dir") or r["stage"], r.get("regime", "scifact-supervised"))
        by_stage.setdefault(key, []).append(r)
    lines = [
        "# HEAL retrieval study (issue 9)",
        "",
        "Produced by `evals/study_heal.py` (protocol in its docstring). Each row: mean ± sd over seeds; "
        "the test figures are computed once per final configuration. Commands, commits, seeds and versions "
        "of each run are in `evals/results/study_heal/runs/`.",
        "",
    ]
    payload: dict[str, Any] = {"stages": {}}
    # the final test tables first, then the dev tables the choices were made on
    for stage, regime in sorted(by_stage, key=lambda k: (not k[0].startswith("test"), k)):
        stage_lines, summary = stage_tables(by_stage[stage, regime])
        lines += [f"## {stage}: {regime}", "", *stage_lines, ""]
        payload["stages"][f"{stage}/{regime}"] = summary
    payload["provenance"] = provenance({"stage": "table"}, seed=None)
    json_path, md_path = write_results(
        REPO_ROOT / "evals" / "results" / "study_heal", payload, "\n".join(lines)
    )
    print("\n".join(lines))
    print(f"\nwrote {json_path} and {md_path}")


# ------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("heal_rag.training.engine").setLevel(logging.INFO)
    if not args.verbose:
        os.environ.setdefault("TQDM_DISABLE", "1")
    if args.stage == "table":
        write_tables(args)
        return 0
    stage_dir = stage_dir_name(args)
    base_path = run_path(args, "base", None)
    if not base_path.is_file():
        record = base_record(args.stage, args)
        record["stage_dir"] = stage_dir
        save_record(base_path, record)
        logger.info("base: %s", record["metrics"])
    agreement_path = RUNS_DIR.parent / "hierarchy_qrels_agreement.json"
    if args.regime.startswith("scifact") and not agreement_path.is_file():
        train_all = scifact()[0]
        save_record(agreement_path, qrels_agreement(hierarchy_for(train_all), train_all))
    for seed in args.seeds:
        for system in args.systems:
            path = run_path(args, system, seed)
            if path.is_file():
                logger.info("%s seed %d: done already (%s)", system, seed, path)
                continue
            start = time.perf_counter()
            record = train_and_evaluate(args.stage, system, seed, args)
            record["stage_dir"] = stage_dir
            record["wall_s"] = round(time.perf_counter() - start, 1)
            save_record(path, record)
            logger.info(
                "%s seed %d: %s (dev curve %s, %.0f s)",
                system,
                seed,
                {k: round(v["ndcg@10"], 4) for k, v in record["metrics"].items()},
                [round(e["ndcg@10"], 4) for e in record["dev_history"] or []],
                record["wall_s"],
            )
    write_tables(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

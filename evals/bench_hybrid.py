"""Hybrid retrieval (dense + BM25): choose the fusion on a dev split, then report it on test.

1. **Dev (the choice).** A seeded 20 % of SciFact's *train* claims (``RetrievalDataset.split(0.2, seed)``;
   SciFact test claims are never looked at here). The untrained base model and BM25 rank the corpus; every
   fusion candidate (RRF; relative-score and distribution-based fusion at dense weights 0.3-0.7) is scored
   on dev. Rule fixed before looking: take the best candidate by dev nDCG@10, unless its paired permutation
   test against parameter-free RRF has p >= 0.05, in which case keep RRF (nothing to tune on a new corpus).
2. **Test (reported once).** SciFact test and MED: dense, BM25 and dense+BM25 with the chosen fusion,
   paired tests of the hybrid against each.

Fusion goes through :func:`heal_rag.integrations.hybrid.fuse_runs`, i.e. LlamaIndex's QueryFusionRetriever,
the same code ``hybrid_retriever`` and ``heal-rag evaluate retrieval --hybrid`` use. Corpus embeddings are
cached (``--cache-dir``), so a re-run only fuses.

    python evals/bench_hybrid.py                       # SciFact dev + test, MED test, base model
    python evals/bench_hybrid.py --model runs/heal     # the same for another model (fusion re-chosen on dev)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO_ROOT, SHARED_DATA_DIR, markdown_table, provenance, write_results  # noqa: E402

from heal_rag.datasets import load_beir  # noqa: E402
from heal_rag.evaluation.metrics import DEFAULT_METRICS, per_query_metrics  # noqa: E402
from heal_rag.evaluation.retrieval import bm25_run, dense_run  # noqa: E402
from heal_rag.evaluation.stats import paired_test  # noqa: E402
from heal_rag.integrations.hybrid import fuse_runs  # noqa: E402

WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7)
CANDIDATES = [("rrf", None)] + [(f, w) for f in ("relative_score", "dist_based_score") for w in WEIGHTS]


def label(fusion: str, weight: float | None) -> str:
    return fusion if weight is None else f"{fusion} w={weight}"


def score(qrels: dict, run: dict) -> dict[str, dict[str, float]]:
    return per_query_metrics(qrels, run, DEFAULT_METRICS)


def means(per_query: dict[str, dict[str, float]]) -> dict[str, float]:
    return {m: float(np.mean(list(v.values()))) for m, v in per_query.items()}


def paired(a: dict[str, float], b: dict[str, float], name_a: str, name_b: str, seed: int) -> dict:
    ids = sorted(a)
    test = paired_test(
        [a[q] for q in ids], [b[q] for q in ids], metric="ndcg@10", name_a=name_a, name_b=name_b, seed=seed
    )
    return {
        "a": name_a,
        "b": name_b,
        "diff": test.diff,
        "low": test.low,
        "high": test.high,
        "p": test.p_value,
    }


def runs_for(dataset, model: str, args) -> tuple[dict, dict, dict]:
    start = time.perf_counter()
    dense = dense_run(
        model,
        dataset,
        k=100,
        cache_dir=args.cache_dir,
        max_seq_length=args.max_seq_length,
        show_progress=True,
    )
    bm25 = bm25_run(dataset, k=100, show_progress=False)
    seconds = {
        "dense": round(time.perf_counter() - start, 1),
        **{k: round(v, 2) for k, v in bm25.seconds.items()},
    }
    return dense.run, bm25.run, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="dense model (default: the bundled base model)")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA_DIR)
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "evals" / "cache" / "embeddings")
    parser.add_argument("--max-seq-length", type=int, default=None, help="default: the model's own (256)")
    parser.add_argument("--dev-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="bench_hybrid")
    args = parser.parse_args()

    scifact = args.data_dir / "scifact"
    med = args.data_dir / "classic_ir" / "med"
    results: dict = {"dev": {}, "test": {}}

    # 1. dev: choose the fusion ------------------------------------------------------------------------
    _, dev = load_beir(scifact, split="train").split(args.dev_share, seed=args.seed)
    dense, bm25, seconds = runs_for(dev, args.model, args)
    dev_scores = {"dense": score(dev.qrels, dense), "bm25": score(dev.qrels, bm25)}
    for fusion, weight in CANDIDATES:
        dev_scores[label(fusion, weight)] = score(
            dev.qrels, fuse_runs(dense, bm25, fusion=fusion, dense_weight=weight)
        )
    dev_means = {name: means(s) for name, s in dev_scores.items()}
    fused_names = [label(f, w) for f, w in CANDIDATES]
    best = max(fused_names, key=lambda n: dev_means[n]["ndcg@10"])
    versus_rrf = paired(dev_scores["rrf"]["ndcg@10"], dev_scores[best]["ndcg@10"], "rrf", best, args.seed)
    chosen_name = best if best == "rrf" or versus_rrf["p"] < 0.05 else "rrf"
    chosen = next((f, w) for f, w in CANDIDATES if label(f, w) == chosen_name)
    results["dev"] = {
        "dataset": f"SciFact train claims, seeded {args.dev_share:.0%} dev split (seed {args.seed})",
        "n_queries": len(dev.queries),
        "means": dev_means,
        "best_by_ndcg": best,
        "best_vs_rrf": versus_rrf,
        "chosen": chosen_name,
        "seconds": seconds,
    }
    print(f"dev ({len(dev.queries)} SciFact train claims): best {best}, chosen {chosen_name}")

    # 2. test: report once --------------------------------------------------------------------------------
    for name, folder in (("scifact", scifact), ("med", med)):
        dataset = load_beir(folder, split="test")
        dense, bm25, seconds = runs_for(dataset, args.model, args)
        fused = fuse_runs(dense, bm25, fusion=chosen[0], dense_weight=chosen[1])
        per = {"dense": score(dataset.qrels, dense), "bm25": score(dataset.qrels, bm25)}
        per["hybrid"] = score(dataset.qrels, fused)
        results["test"][name] = {
            "n_queries": len(dataset.queries),
            "means": {k: means(v) for k, v in per.items()},
            "hybrid_vs_bm25": paired(
                per["bm25"]["ndcg@10"], per["hybrid"]["ndcg@10"], "bm25", "hybrid", args.seed
            ),
            "hybrid_vs_dense": paired(
                per["dense"]["ndcg@10"], per["hybrid"]["ndcg@10"], "dense", "hybrid", args.seed
            ),
            "seconds": seconds,
        }
        m = results["test"][name]["means"]
        print(
            f"{name} test: dense {m['dense']['ndcg@10']:.4f}  bm25 {m['bm25']['ndcg@10']:.4f}  "
            f"hybrid {m['hybrid']['ndcg@10']:.4f}"
        )

    config = {"model": args.model, "max_seq_length": args.max_seq_length, "candidates_per_retriever": 100}
    payload = {"results": results, "chosen_fusion": {"fusion": chosen[0], "dense_weight": chosen[1]}}
    payload["provenance"] = provenance(config, seed=args.seed)

    dev_rows = [{"system": n, **dev_means[n]} for n in ["dense", "bm25", *fused_names]]
    cols = [("system", "system"), ("ndcg@10", "nDCG@10"), ("recall@100", "Recall@100"), ("mrr@10", "MRR@10")]
    test_rows = []
    for name, block in results["test"].items():
        for system in ("dense", "bm25", "hybrid"):
            row = {"set": name, "system": system, **block["means"][system]}
            if system == "hybrid":
                vs_bm25, vs_dense = block["hybrid_vs_bm25"], block["hybrid_vs_dense"]
                row["vs"] = (
                    f"{vs_bm25['diff']:+.4f} vs BM25 (p={vs_bm25['p']:.4f}), "
                    f"{vs_dense['diff']:+.4f} vs dense (p={vs_dense['p']:.4f})"
                )
            test_rows.append(row)
    markdown = "\n".join(
        [
            f"# Hybrid retrieval: {args.model} + BM25",
            "",
            f"Command: `{payload['provenance']['command']}` · commit {payload['provenance']['git_commit']}",
            "",
            f"## Dev: {results['dev']['dataset']} ({len(dev.queries)} claims)",
            "",
            markdown_table(dev_rows, cols),
            "",
            f"Best by dev nDCG@10: **{best}** ({versus_rrf['diff']:+.4f} vs RRF, "
            f"paired p = {versus_rrf['p']:.4f}). Rule: keep parameter-free RRF unless the best beats it "
            f"with p < 0.05. Chosen: **{chosen_name}**.",
            "",
            "## Test (chosen fusion, reported once)",
            "",
            markdown_table(test_rows, [("set", "set"), *cols, ("vs", "hybrid, paired nDCG@10 difference")]),
        ]
    )
    write_results(args.name, payload, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

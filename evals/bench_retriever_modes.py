"""HierarchicalRetriever modes (flat / rescore / route) vs LlamaIndex's VectorIndexRetriever.

For each dataset (BEIR layout in ../shared/data) and each model (``base`` = the bundled all-MiniLM-L6-v2, or a
HEAL model directory): embed the corpus once with HEALEmbedding into a FAISS VectorStoreIndex, take the
hierarchy from the model directory (or fit HNMFk on the corpus when the model has none), then retrieve the
top 100 for every test query with

- LlamaIndex's ``VectorIndexRetriever`` (the default retriever, same embeddings),
- ``HierarchicalRetriever`` in ``flat``, ``rescore`` (for each ``--alphas``) and ``route`` (for each
  ``--route-breadths``) modes,

and report nDCG@10, Recall@100 and per-query latency p50/p95 (embedding the query included).

    python evals/bench_retriever_modes.py --quick                      # MED, base model, HNMFk hierarchy
    python evals/bench_retriever_modes.py --datasets med scifact --models base runs/heal-scifact
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, SHARED_DATA_DIR, git_commit  # noqa: E402

from heal_rag._io import atomic_write_json, atomic_write_text  # noqa: E402

DATASETS = {"med": "classic_ir/med", "scifact": "scifact"}


def run_retriever(retriever, queries: dict[str, str], top_k: int) -> tuple[dict, list[float]]:
    run, times = {}, []
    for qid, text in queries.items():
        start = time.perf_counter()
        hits = retriever.retrieve(text)
        times.append(time.perf_counter() - start)
        run[qid] = {}
        for rank, hit in enumerate(hits[:top_k]):
            doc_id = hit.node.node_id
            # ranx ranks by score; break exact ties by retrieval order
            run[qid][doc_id] = float(hit.score if hit.score is not None else 0.0) - rank * 1e-9
    return run, times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["med", "scifact"], choices=sorted(DATASETS))
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA_DIR)
    parser.add_argument("--models", nargs="+", default=["base"], help="'base' or HEAL model directories")
    parser.add_argument("--split", default="test")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2])
    parser.add_argument("--route-breadths", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--hnmfk-depth", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="MED with the base model only")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.models = ["med"], ["base"]

    import torch
    from llama_index.core.indices.vector_store.retrievers import VectorIndexRetriever
    from llama_index.core.schema import TextNode

    from heal_rag.datasets import load_beir
    from heal_rag.evaluation.metrics import ir_metrics
    from heal_rag.hierarchy import HNMFk
    from heal_rag.integrations import HEALEmbedding, HierarchicalRetriever, build_faiss_index

    torch.manual_seed(args.seed)
    rows, details = [], []
    for dataset_name in args.datasets:
        dataset = load_beir(args.data_dir / DATASETS[dataset_name], split=args.split)
        queries = {q: dataset.queries[q] for q in dataset.qrels if q in dataset.queries}
        if args.max_queries:
            queries = dict(list(queries.items())[: args.max_queries])
        documents = list(dataset.corpus.values())
        texts = [(f"{d.title}. {d.text}" if d.title else d.text).strip() for d in documents]
        for model_name in args.models:
            embed = HEALEmbedding(
                None if model_name == "base" else model_name, embed_batch_size=args.batch_size
            )
            hierarchy = embed.hierarchy
            hierarchy_source = "model directory"
            t0 = time.perf_counter()
            if hierarchy is None:
                hierarchy_source = f"HNMFk(depth={args.hnmfk_depth}, random_state={args.seed}) on the corpus"
                hierarchy = (
                    HNMFk(depth=args.hnmfk_depth, random_state=args.seed, show_progress=False)
                    .fit(texts, doc_ids=[d.id for d in documents])
                    .hierarchy_
                )
            hierarchy_s = time.perf_counter() - t0
            nodes = [TextNode(id_=d.id, text=t) for d, t in zip(documents, texts, strict=False)]
            t0 = time.perf_counter()
            index = build_faiss_index(nodes, embed, hierarchy=hierarchy)
            index_s = time.perf_counter() - t0
            print(
                f"[{dataset_name}/{model_name}] {len(nodes)} docs indexed in {index_s:.0f}s; hierarchy "
                f"{hierarchy.n_levels} levels, {len(hierarchy.leaves())} leaves ({hierarchy_source}, "
                f"{hierarchy_s:.0f}s)"
            )
            k = args.top_k
            systems = [("VectorIndexRetriever (LlamaIndex)", VectorIndexRetriever(index, similarity_top_k=k))]
            systems.append(
                ("flat", HierarchicalRetriever(index, hierarchy=hierarchy, mode="flat", similarity_top_k=k))
            )
            for alpha in args.alphas:
                systems.append(
                    (
                        f"rescore alpha={alpha:g}",
                        HierarchicalRetriever(
                            index, hierarchy=hierarchy, mode="rescore", similarity_top_k=k, alpha=alpha
                        ),
                    )
                )
            for breadth in args.route_breadths:
                systems.append(
                    (
                        f"route breadth={breadth}",
                        HierarchicalRetriever(
                            index,
                            hierarchy=hierarchy,
                            mode="route",
                            similarity_top_k=k,
                            route_breadth=breadth,
                        ),
                    )
                )
            for name, retriever in systems:
                retriever.retrieve(next(iter(queries.values())))  # warm-up (builds lazy structures)
                run, times = run_retriever(retriever, queries, k)
                scores = ir_metrics(dataset.qrels, run, metrics=["ndcg@10", "recall@100"])
                row = {
                    "dataset": dataset_name,
                    "model": model_name,
                    "system": name,
                    "ndcg@10": round(scores["ndcg@10"], 4),
                    "recall@100": round(scores["recall@100"], 4),
                    "latency_p50_ms": round(float(np.percentile(times, 50) * 1000), 2),
                    "latency_p95_ms": round(float(np.percentile(times, 95) * 1000), 2),
                }
                rows.append(row)
                print(
                    f"  {name:36s} nDCG@10 {row['ndcg@10']:.4f}  R@100 {row['recall@100']:.4f}  "
                    f"p50 {row['latency_p50_ms']:.1f} ms  p95 {row['latency_p95_ms']:.1f} ms"
                )
            details.append(
                {
                    "dataset": dataset_name,
                    "model": model_name,
                    "weights_fingerprint": embed.weights_fingerprint,
                    "n_documents": len(nodes),
                    "n_queries": len(queries),
                    "hierarchy": {
                        "source": hierarchy_source,
                        "fingerprint": hierarchy.fingerprint,
                        "n_levels": hierarchy.n_levels,
                        "n_leaves": len(hierarchy.leaves()),
                        "topics_per_level": [
                            len(hierarchy.topics_at(level)) for level in range(hierarchy.n_levels)
                        ],
                    },
                    "index_seconds": round(index_s, 1),
                }
            )
    versions = {
        pkg: version(pkg)
        for pkg in ("llama-index-core", "sentence-transformers", "torch", "faiss-cpu", "ranx", "numpy")
    }
    report = {
        "benchmark": "bench_retriever_modes",
        "command": "python evals/bench_retriever_modes.py " + " ".join(sys.argv[1:]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seed": args.seed,
        "versions": {**versions, "python": platform.python_version()},
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "note": "shared 2-core machine (other jobs running): latencies are noisy",
        },
        "git_commit": git_commit(),
        "runs": details,
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "bench_retriever_modes.json", report)
    lines = [
        "# Retriever modes: nDCG@10, Recall@100, latency per query",
        "",
        f"`{report['command']}`; commit {report['git_commit']}; shared 2-core machine (latencies noisy).",
        "Latency includes embedding the query. Hierarchies: "
        + "; ".join(
            f"{d['dataset']}/{d['model']}: {d['hierarchy']['source']}, "
            f"topics per level {d['hierarchy']['topics_per_level']}"
            for d in details
        ),
        "",
        "| dataset | model | retriever | nDCG@10 | Recall@100 | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['dataset']} | {r['model']} | {r['system']} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | "
        f"{r['latency_p50_ms']} | {r['latency_p95_ms']} |"
        for r in rows
    ]
    atomic_write_text(args.out / "bench_retriever_modes.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

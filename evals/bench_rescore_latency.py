"""Rescore vs flat query latency of HierarchicalRetriever, side by side in one run (issue 10).

For each dataset (BEIR layout in ../shared/data) with the base model (the bundled all-MiniLM-L6-v2): fit
HNMFk(depth=2) on the corpus, index the corpus on FAISS (corpus embeddings cached under
``evals/cache/embeddings/``), then time every test query with ``HierarchicalRetriever`` in ``flat`` and in
``rescore`` mode (top ``--top-k``, default alpha, placement cache off so that every timed query is
placed), interleaved query by query (the order alternates) so that
both modes see the same load on a shared machine. Two timings per query and mode:

- ``end-to-end``: ``retrieve(text)``, embedding the query included (what bench_retriever_modes reports);
- ``no-embedding``: ``retrieve(QueryBundle(text, embedding=...))`` with the query embedded beforehand, so
  the figure is the retriever's own work (search, placement, rescoring, metadata).

The headline is the ratio rescore p50 / flat p50 of each. When the retriever has ``retrieve_many``, the
script also times it on all queries at once and checks that it returns what ``retrieve`` returns.

    python evals/bench_rescore_latency.py                          # SciFact and MED
    python evals/bench_rescore_latency.py --datasets med --repeats 1 --name bench_rescore_latency_quick
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO_ROOT,
    SHARED_DATA_DIR,
    markdown_table,
    package_versions,
    provenance,
    write_results,
)

DATASETS = {"med": "classic_ir/med", "scifact": "scifact"}
PACKAGES = ("heal-rag", "numpy", "scipy", "scikit-learn", "faiss-cpu", "llama-index-core", "torch")


def corpus_embeddings(embed, texts: list[str], cache_dir: Path, dataset: str) -> np.ndarray:
    """Unit-norm corpus embeddings, cached by model weights and corpus text."""
    digest = hashlib.sha256()
    digest.update(str(embed.weights_fingerprint).encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    path = cache_dir / f"bench_rescore_latency-{dataset}-{digest.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path)
    vectors = np.asarray(embed.get_text_embedding_batch(texts), dtype=np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors


def p50_ms(times: list[float]) -> float:
    return round(float(np.percentile(times, 50) * 1000), 2)


def p95_ms(times: list[float]) -> float:
    return round(float(np.percentile(times, 95) * 1000), 2)


def interleaved(retrievers: dict, inputs: list, repeats: int) -> dict[str, list[float]]:
    """Time ``retrieve`` of every input with every retriever, alternating the order query by query."""
    names = list(retrievers)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for i, item in enumerate(inputs):
            order = names if (i + r) % 2 == 0 else names[::-1]
            for name in order:
                start = time.perf_counter()
                retrievers[name].retrieve(item)
                times[name].append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["scifact", "med"], choices=sorted(DATASETS))
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA_DIR)
    parser.add_argument("--split", default="test")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="passes over the queries per timing")
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "evals" / "cache" / "embeddings")
    parser.add_argument("--name", default="bench_rescore_latency", help="results file name (no suffix)")
    args = parser.parse_args()

    import torch
    from llama_index.core.schema import QueryBundle, TextNode

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
        embed = HEALEmbedding(None, embed_batch_size=32)
        hierarchy = (
            HNMFk(depth=2, random_state=args.seed, show_progress=False)
            .fit(texts, doc_ids=[d.id for d in documents])
            .hierarchy_
        )
        vectors = corpus_embeddings(embed, texts, args.cache_dir, dataset_name)
        nodes = [
            TextNode(id_=d.id, text=t, embedding=v.tolist())
            for d, t, v in zip(documents, texts, vectors, strict=True)
        ]
        index = build_faiss_index(nodes, embed, hierarchy=hierarchy)
        k = args.top_k
        # Time every query's placement: no placement cache (repeated passes would otherwise find it ready)
        no_cache = (
            {"placement_cache_size": 0}
            if "placement_cache_size" in inspect.signature(HierarchicalRetriever).parameters
            else {}
        )
        retrievers = {
            mode: HierarchicalRetriever(index, hierarchy=hierarchy, mode=mode, similarity_top_k=k, **no_cache)
            for mode in ("flat", "rescore")
        }
        texts_q = list(queries.values())
        for retriever in retrievers.values():  # warm-up: lazy structures, first-call costs
            retriever.retrieve(texts_q[0])
        query_vectors = embed.get_query_embeddings(texts_q)
        bundles = [QueryBundle(query_str=q, embedding=v) for q, v in zip(texts_q, query_vectors, strict=True)]
        e2e = interleaved(retrievers, texts_q, args.repeats)
        bare = interleaved(retrievers, bundles, args.repeats)
        quality = {}
        for mode, retriever in retrievers.items():
            run = {
                qid: {h.node.node_id: float(h.score or 0.0) - r * 1e-9 for r, h in enumerate(hits)}
                for qid, hits in zip(queries, (retriever.retrieve(b) for b in bundles), strict=True)
            }
            qrels = {q: dataset.qrels[q] for q in queries}  # only the queries timed (--max-queries)
            quality[mode] = round(ir_metrics(qrels, run, metrics=["ndcg@10"])["ndcg@10"], 4)
        row = {
            "dataset": dataset_name,
            "n_documents": len(nodes),
            "n_queries": len(queries),
            "topics_per_level": [len(hierarchy.topics_at(level)) for level in range(hierarchy.n_levels)],
            "flat_p50_ms": p50_ms(e2e["flat"]),
            "rescore_p50_ms": p50_ms(e2e["rescore"]),
            "ratio_p50": round(statistics.median(e2e["rescore"]) / statistics.median(e2e["flat"]), 3),
            "flat_p95_ms": p95_ms(e2e["flat"]),
            "rescore_p95_ms": p95_ms(e2e["rescore"]),
            "bare_flat_p50_ms": p50_ms(bare["flat"]),
            "bare_rescore_p50_ms": p50_ms(bare["rescore"]),
            "bare_ratio_p50": round(statistics.median(bare["rescore"]) / statistics.median(bare["flat"]), 3),
            "flat_ndcg@10": quality["flat"],
            "rescore_ndcg@10": quality["rescore"],
        }
        rescore = retrievers["rescore"]
        if hasattr(rescore, "retrieve_many"):
            start = time.perf_counter()
            many = rescore.retrieve_many(bundles)
            row["retrieve_many_ms_per_query"] = round((time.perf_counter() - start) * 1000 / len(bundles), 2)
            single = [rescore.retrieve(b) for b in bundles]
            row["retrieve_many_identical"] = all(
                [(h.node.node_id, h.score) for h in a] == [(h.node.node_id, h.score) for h in b]
                for a, b in zip(many, single, strict=True)
            )
        rows.append(row)
        print(
            f"[{dataset_name}] end-to-end p50 flat {row['flat_p50_ms']} ms, rescore "
            f"{row['rescore_p50_ms']} ms (x{row['ratio_p50']}); no-embedding p50 flat "
            f"{row['bare_flat_p50_ms']} ms, rescore "
            f"{row['bare_rescore_p50_ms']} ms (x{row['bare_ratio_p50']}); nDCG@10 flat {row['flat_ndcg@10']} "
            f"rescore {row['rescore_ndcg@10']}",
            flush=True,
        )
        details.append({"dataset": dataset_name, "hierarchy_fingerprint": hierarchy.fingerprint})
    config = {key: (str(v) if isinstance(v, Path) else v) for key, v in vars(args).items()}
    payload = {
        "benchmark": "bench_rescore_latency",
        **provenance(config, seed=args.seed),
        "versions": package_versions(PACKAGES),
        "runs": details,
        "results": rows,
    }
    meta = payload
    columns = [
        ("dataset", "dataset"),
        ("n_queries", "queries"),
        ("flat_p50_ms", "flat p50 ms"),
        ("rescore_p50_ms", "rescore p50 ms"),
        ("ratio_p50", "rescore/flat p50"),
        ("bare_flat_p50_ms", "flat p50 ms (no emb.)"),
        ("bare_rescore_p50_ms", "rescore p50 ms (no emb.)"),
        ("bare_ratio_p50", "ratio (no emb.)"),
        ("flat_ndcg@10", "flat nDCG@10"),
        ("rescore_ndcg@10", "rescore nDCG@10"),
    ]
    if any("retrieve_many_ms_per_query" in r for r in rows):
        columns += [("retrieve_many_ms_per_query", "retrieve_many ms/query (no emb.)")]
    lines = [
        "# Rescore vs flat query latency (HierarchicalRetriever, base model, FAISS)",
        "",
        f"`{meta['command']}`; commit {meta['git_commit']}; {meta['date']}.",
        f"Top {args.top_k}, default alpha, {args.repeats} interleaved passes over the test queries; p50 over "
        "all of them. End-to-end includes embedding the query; 'no emb.' passes a precomputed embedding. "
        "The placement cache is off (placement_cache_size=0), so every query is placed. " + meta["note"],
        "",
        markdown_table(rows, columns, formats={"ratio_p50": ".3f", "bare_ratio_p50": ".3f"}),
    ]
    json_path, md_path = write_results(args.name, payload, "\n".join(lines))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

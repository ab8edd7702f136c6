"""Route mode against the real peers: exact, FAISS IVF-Flat, FAISS HNSW and route on >= 100k real passages.

Usage:
    python evals/bench_route_peers.py --part embed      # embed the passages once (cached, resumable)
    python evals/bench_route_peers.py                   # embed if needed, then the sweep

Passages: the 111,895 60-word chunks of ../shared/data that ``bench_hnmfk_sample.py`` builds and caches
(20 Newsgroups, SciFact, PubMedQA, MED). Embeddings: the bundled all-MiniLM-L6-v2, copied to
``evals/cache/bench_route_peers/model`` and exported to int8 ONNX (``heal_rag.export_onnx``), max_seq_length
128, batch 64, L2-normalised float32, cached in chunks keyed by the passage set's hash and the ONNX file's
fingerprint (an interrupted run resumes at the next missing chunk).

Protocol: a seeded hold-out of passages are the queries (their embeddings, i.e. "find the passages like
this one"); the rest are indexed. Ground truth is the exact top-10 by inner product (``faiss.IndexFlatIP``).
Every system answers the held-out queries one at a time (single-query latency, p50/p95), faiss with a fixed
number of OpenMP threads (index builds use every thread); recall@10 is the share of the exact top-10 found
in the system's top 10. Systems: exact (``IndexFlatIP``), IVF-Flat (nlist = 4 sqrt(N), k-means on a seeded
sample of 40 points per cell, nprobe swept), HNSW (``IndexHNSWFlat``, M 32, efConstruction 80, efSearch
swept) and route: ``HNMFk(depth=2, fit_sample=10000)`` fitted on the indexed passages' texts, each query's
text placed in the tree (``Hierarchy.predict_memberships``), routed as ``HierarchicalRetriever(mode="route")``
routes (``route_topics``, breadth swept) and searched in ``TopicPartitionedIndex``. ``route`` latency
includes the placement, as the retriever pays it per query; ``route-search`` leaves it out (a lower bound).
Qdrant is not measured: qdrant-client's in-process mode is exact brute force, its HNSW needs a server.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO_ROOT, exported_model_copy  # noqa: E402

CACHE = REPO_ROOT / "evals" / "cache" / "bench_route_peers"
MAX_SEQ_LENGTH, BATCH, CHUNK, ORDER_SEED = 128, 64, 2048, 0


# ----------------------------------------------------------------------------------------------- embeddings
def passage_set_hash(passages: list[dict]) -> str:
    digest = hashlib.sha256()
    for p in passages:
        digest.update(p["id"].encode("utf-8") + b"\0" + p["text"].encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


def load_embeddings(threads: int | None = None, partial: bool = False) -> tuple[np.ndarray, list[dict], dict]:
    """Every passage's embedding (float32, normalised), the passages and the cache's key.

    Passages are embedded in chunks of a seeded permutation (so any prefix of the chunks is a random sample
    of every source) and each chunk is saved as it is done; a rerun resumes at the first missing chunk.
    With ``partial=True`` nothing is embedded: the passages of the chunks done so far are returned.
    """
    from bench_hnmfk_sample import load_passages
    from tqdm.auto import tqdm

    from heal_rag._models import default_model_path
    from heal_rag.backends import load_onnx_sentence_transformer

    passages, info = load_passages()
    folder = exported_model_copy(default_model_path(), CACHE / "model")
    model = load_onnx_sentence_transformer(folder, threads=threads)
    model.max_seq_length = MAX_SEQ_LENGTH
    key = {
        "passages": passage_set_hash(passages),
        "n_passages": len(passages),
        "model": model.heal_onnx_fingerprint[:16],
        "max_seq_length": MAX_SEQ_LENGTH,
        "chunk": CHUNK,
        "order_seed": ORDER_SEED,
    }
    name = f"emb_{key['passages']}_{key['model']}_L{MAX_SEQ_LENGTH}"
    final = CACHE / f"{name}.npy"
    if final.is_file():
        return np.load(final), passages, key
    order = np.random.default_rng(ORDER_SEED).permutation(len(passages))
    parts = CACHE / f"{name}_c{CHUNK}_s{ORDER_SEED}"
    parts.mkdir(parents=True, exist_ok=True)
    n_chunks = -(-len(passages) // CHUNK)
    if partial:
        done = 0
        while done < n_chunks and (parts / f"{done:05d}.npy").is_file():
            done += 1
        rows = order[: min(done * CHUNK, len(passages))]
        matrix = np.concatenate([np.load(parts / f"{i:05d}.npy") for i in range(done)])
        return matrix, [passages[i] for i in rows], {**key, "partial_chunks": done, "n_embedded": len(rows)}
    done = sum((parts / f"{i:05d}.npy").is_file() for i in range(n_chunks))
    bar = tqdm(total=len(passages), initial=min(done * CHUNK, len(passages)), unit="passage", desc="embed")
    for i in range(n_chunks):
        path = parts / f"{i:05d}.npy"
        if path.is_file():
            continue
        chunk = [passages[j]["text"] for j in order[i * CHUNK : (i + 1) * CHUNK]]
        vectors = model.encode(chunk, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False)
        tmp = parts / f"{i:05d}.tmp.npy"
        np.save(tmp, np.asarray(vectors, dtype=np.float32))
        os.replace(tmp, path)
        bar.update(len(chunk))
    bar.close()
    matrix = np.empty((len(passages), model[0].get_word_embedding_dimension()), dtype=np.float32)
    matrix[order] = np.concatenate([np.load(parts / f"{i:05d}.npy") for i in range(n_chunks)])
    tmp = CACHE / f"{name}.tmp.npy"
    np.save(tmp, matrix)
    os.replace(tmp, final)
    (CACHE / f"{name}.json").write_text(
        json.dumps({"key": key, "shape": list(matrix.shape)}, indent=2) + "\n"
    )
    shutil.rmtree(parts)
    return matrix, passages, key


# ----------------------------------------------------------------------------------------------- systems
def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's exact top-k found in its returned top-k."""
    hits = [
        len(set(f[f >= 0].tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits))


def single_queries(search, queries: np.ndarray, k: int, extra_s: np.ndarray | None = None):
    """Answer the queries one at a time, REPEATS passes: (ids (n, k), per pass the per-query seconds)."""
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    passes = []
    for _ in range(REPEATS):
        seconds = []
        for i in range(len(queries)):
            q = queries[i : i + 1]
            start = time.perf_counter()
            found = search(i, q)
            seconds.append(time.perf_counter() - start + (0.0 if extra_s is None else float(extra_s[i])))
            ids[i, : min(k, found.shape[1])] = found[0, :k]
        passes.append(seconds)
    return ids, passes


def build_then_search() -> None:
    """Switch faiss to SEARCH_THREADS threads: builds run with every thread, searches with these."""
    import faiss

    faiss.omp_set_num_threads(SEARCH_THREADS)


def index_mb(index) -> float:
    import faiss

    return float(faiss.serialize_index(index).nbytes) / 2**20


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def row(system: str, setting: str, value, ids, truth, passes, **more) -> dict:
    """One setting's figures: p50/p95 are the medians over the passes of each pass's percentiles."""
    per_pass = [percentiles_ms(seconds) for seconds in passes]
    p50, p95 = (float(np.median([p[j] for p in per_pass])) for j in (0, 1))
    out = {
        "system": system,
        "setting": setting,
        "value": value,
        "recall_at_10": recall_at(ids, truth),
        "p50_ms": p50,
        "p95_ms": p95,
        "mean_ms": float(np.median([np.mean(seconds) for seconds in passes]) * 1000),
        "p50_ms_per_pass": [p[0] for p in per_pass],
        "p95_ms_per_pass": [p[1] for p in per_pass],
        **more,
    }
    print(
        f"[sweep] {system:6s} {setting:>14s} recall@10 {out['recall_at_10']:.4f} p50 {p50:.3f} ms "
        f"p95 {p95:.3f} ms {more}",
        flush=True,
    )
    return out


def run_exact(base, queries, k, truth):
    import faiss

    start = time.perf_counter()
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    build = time.perf_counter() - start
    build_then_search()
    ids, seconds = single_queries(lambda i, q: index.search(q, k)[1], queries, k)
    info = {"build_s": build, "index_mb": index_mb(index), "load_after": load()}
    return [row("exact", "-", None, ids, truth, seconds)], info


def run_ivf(base, queries, k, truth, nprobes, seed, train_size):
    import faiss

    n, d = base.shape
    nlist = int(round(4 * np.sqrt(n)))
    rng = np.random.default_rng(seed)
    size = min(n, train_size or 40 * nlist)  # faiss asks for >= 39 training points per centroid
    sample = base[np.sort(rng.choice(n, size=size, replace=False))]
    start = time.perf_counter()
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(sample)
    train = time.perf_counter() - start
    index.add(base)
    build = time.perf_counter() - start
    build_then_search()
    rows = []
    for nprobe in nprobes:
        if nprobe > nlist:
            continue
        index.nprobe = nprobe
        ids, seconds = single_queries(lambda i, q: index.search(q, k)[1], queries, k)
        rows.append(row("ivf", f"nprobe={nprobe}", nprobe, ids, truth, seconds))
    info = {
        "nlist": nlist,
        "train_size": len(sample),
        "train_s": train,
        "build_s": build,
        "index_mb": index_mb(index),
        "load_after": load(),
    }
    return rows, info


def run_hnsw(base, queries, k, truth, efs, m, ef_construction):
    import faiss

    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(base.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(base)
    build = time.perf_counter() - start
    build_then_search()
    rows = []
    for ef in efs:
        index.hnsw.efSearch = ef
        ids, seconds = single_queries(lambda i, q: index.search(q, k)[1], queries, k)
        rows.append(row("hnsw", f"efSearch={ef}", ef, ids, truth, seconds))
    info = {
        "M": m,
        "efConstruction": ef_construction,
        "build_s": build,
        "index_mb": index_mb(index),
        "load_after": load(),
    }
    return rows, info


def run_route(base, base_texts, base_ids, queries, query_texts, k, truth, breadths, seed, fit_sample):
    from heal_rag.hierarchy import HNMFk
    from heal_rag.hierarchy.routing import hierarchy_layout, route_topics
    from heal_rag.integrations._faiss import TopicPartitionedIndex

    start = time.perf_counter()
    model = HNMFk(depth=2, fit_sample=fit_sample, random_state=seed, show_progress=False)
    hierarchy = model.fit(base_texts, doc_ids=base_ids).hierarchy_
    fit = time.perf_counter() - start
    start = time.perf_counter()
    index = TopicPartitionedIndex(base, hierarchy.paths[:, -1])
    build = time.perf_counter() - start
    build_then_search()
    by_level, children = hierarchy_layout(hierarchy)
    # placing each query in the tree (TF-IDF + NMF projection of its text) is part of route's cost
    memberships, place_s = [], []
    for text in query_texts:
        times = []
        for _ in range(REPEATS):  # the per-query median over REPEATS placements
            start = time.perf_counter()
            placed = hierarchy.predict_memberships([text])
            times.append(time.perf_counter() - start)
        memberships.append(placed)
        place_s.append(float(np.median(times)))
    place_s = np.asarray(place_s)
    sizes = dict(zip(index.topics.tolist(), index.sizes.tolist(), strict=True))
    rows = []
    n_leaves = len(index.topics)
    for breadth in breadths:
        scanned = []

        def search(i, q, breadth=breadth, scanned=scanned):
            leaves = route_topics(memberships[i], by_level, children, breadth)[-1]
            scanned.append(sum(sizes.get(t, 0) for t in leaves))
            return index.search(q, k, [sorted(leaves)])[1]

        ids, passes = single_queries(search, queries, k, extra_s=place_s)
        share = float(np.mean(scanned)) / len(base)
        rows.append(row("route", f"breadth={breadth}", breadth, ids, truth, passes, scanned_share=share))
        # the same answers without the placement: a lower bound, for a caller who already has memberships
        search_only = [list(np.asarray(seconds) - place_s) for seconds in passes]
        rows.append(
            row("route-search", f"breadth={breadth}", breadth, ids, truth, search_only, scanned_share=share)
        )
        if np.mean(scanned) >= len(base):
            break
    place_p50, place_p95 = percentiles_ms(list(place_s))
    info = {
        "hnmfk_fit_s": fit,
        "fit_sample": fit_sample,
        "build_s": build,
        "index_mb": index_mb(index.index),
        "topics_per_level": [len(hierarchy.topics_at(level)) for level in range(hierarchy.n_levels)],
        "n_leaf_cells": n_leaves,
        "largest_cell": int(index.sizes.max()),
        "smallest_cell": int(index.sizes.min()),
        "placement_p50_ms": place_p50,
        "placement_p95_ms": place_p95,
        "load_after": load(),
    }
    return rows, info


def pareto(rows: list[dict], targets: list[float]) -> list[dict]:
    """Per system and target recall, the lowest-p50 setting whose recall@10 reaches the target."""
    out = []
    systems = list(dict.fromkeys(r["system"] for r in rows))
    for target in targets:
        for system in systems:
            ok = [r for r in rows if r["system"] == system and r["recall_at_10"] >= target]
            best = min(ok, key=lambda r: r["p50_ms"]) if ok else None
            out.append(
                {
                    "target": target,
                    "system": system,
                    "setting": best["setting"] if best else "not reached",
                    "recall_at_10": best["recall_at_10"] if best else None,
                    "p50_ms": best["p50_ms"] if best else None,
                    "p95_ms": best["p95_ms"] if best else None,
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["embed", "all"], default="all")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads for the embedding")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="passes over the queries per setting")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--omp-threads", type=int, default=1, help="faiss OpenMP threads while searching")
    parser.add_argument(
        "--partial", action="store_true", help="benchmark the passages embedded so far (no embedding)"
    )
    parser.add_argument("--limit", type=int, default=None, help="use only the first N passages (smoke test)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=80)
    parser.add_argument("--ivf-train", type=int, default=None, help="IVF training sample (40 * nlist)")
    parser.add_argument("--breadth", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 12, 16, 24, 32])
    parser.add_argument("--fit-sample", type=int, default=10_000)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.90, 0.95, 0.99])
    parser.add_argument("--systems", nargs="+", default=["exact", "ivf", "hnsw", "route"])
    parser.add_argument("--out", default="bench_route_peers")
    args = parser.parse_args()
    load_at_start = load()
    matrix, passages, key = load_embeddings(args.threads, partial=args.partial)
    print(f"[embed] {matrix.shape} {key}", flush=True)
    if args.part == "embed":
        return
    import faiss
    from _common import markdown_table, provenance, write_results

    if args.limit:
        matrix, passages = matrix[: args.limit], passages[: args.limit]
    n = len(passages)
    order = np.random.default_rng(args.seed).permutation(n)
    held, kept = np.sort(order[: args.queries]), np.sort(order[args.queries :])
    base, queries = np.ascontiguousarray(matrix[kept]), np.ascontiguousarray(matrix[held])
    base_texts = [passages[i]["text"] for i in kept]
    base_ids = [passages[i]["id"] for i in kept]
    query_texts = [passages[i]["text"] for i in held]
    del matrix
    build_threads = faiss.omp_get_max_threads()
    # ground truth: exact top-k by inner product (batched, all threads)
    truth_index = faiss.IndexFlatIP(base.shape[1])
    truth_index.add(base)
    truth = truth_index.search(queries, args.k)[1]
    del truth_index
    global SEARCH_THREADS, REPEATS
    SEARCH_THREADS, REPEATS = args.omp_threads, args.repeats
    systems, rows = {}, []
    print(f"[bench] {len(base)} indexed, {len(queries)} queries; load {load()}", flush=True)
    runs = {
        "exact": (run_exact, (base, queries, args.k, truth)),
        "ivf": (run_ivf, (base, queries, args.k, truth, args.nprobe, args.seed, args.ivf_train)),
        "hnsw": (run_hnsw, (base, queries, args.k, truth, args.ef_search, args.hnsw_m, args.ef_construction)),
        "route": (
            run_route,
            (
                base,
                base_texts,
                base_ids,
                queries,
                query_texts,
                args.k,
                truth,
                args.breadth,
                args.seed,
                args.fit_sample,
            ),
        ),
    }
    for name in args.systems:
        fn, arguments = runs[name]
        faiss.omp_set_num_threads(build_threads)  # builds with every thread, searches with SEARCH_THREADS
        r, systems[name] = fn(*arguments)
        rows += r
    faiss.omp_set_num_threads(build_threads)
    table = pareto(rows, args.targets)
    config = {
        "n_passages": n,
        "n_indexed": len(base),
        "n_queries": len(queries),
        "k": args.k,
        "embeddings": key,
        "omp_threads_search": args.omp_threads,
        "repeats": args.repeats,
        "omp_threads_build": build_threads,
        "nprobe": args.nprobe,
        "ef_search": args.ef_search,
        "hnsw_m": args.hnsw_m,
        "ef_construction": args.ef_construction,
        "breadth": args.breadth,
        "targets": args.targets,
        "systems": args.systems,
        "ivf_train": args.ivf_train,
        "fit_sample": args.fit_sample,
        "partial": bool(args.partial),
        "qdrant": "skipped: qdrant-client's in-process (local) mode searches by exact brute force (it "
        "ignores hnsw_ef); Qdrant's HNSW needs a Qdrant server, which this offline machine does not have",
    }
    payload = {
        "provenance": provenance(config, seed=args.seed),
        "faiss_version": faiss.__version__,
        "systems": systems,
        "sweep": rows,
        "pareto": table,
        "load_average_at_start": load_at_start,
        "load_average_at_end": load(),
    }
    columns = [
        ("system", "system"),
        ("setting", "setting"),
        ("recall_at_10", "recall@10"),
        ("p50_ms", "p50 ms"),
        ("p95_ms", "p95 ms"),
    ]
    prov = payload["provenance"]
    placement = systems.get("route", {}).get("placement_p50_ms")
    md = [
        f"# bench_route_peers\n\n`{prov['command']}` at {prov['git_commit']}; {len(base):,} indexed "
        f"passages, {len(queries):,} held-out queries, recall@{args.k} against exact inner-product search; "
        f"one query per call, faiss {faiss.__version__} with {args.omp_threads} OpenMP thread(s) while "
        "searching. Route latency includes placing the query in the tree (TF-IDF + NMF projection"
        + (f", p50 {placement:.2f} ms" if placement is not None else "")
        + f"). p50/p95: medians over {args.repeats} passes. Load average at start "
        f"{payload['load_average_at_start']}, at end "
        f"{payload['load_average_at_end']} (shared machine).\n",
        "## Pareto: the cheapest setting per system reaching each recall@10\n",
    ]
    for target in args.targets:
        md.append(f"### recall@10 >= {target}\n")
        md.append(markdown_table([t for t in table if t["target"] == target], columns, digits=3) + "\n")
    md.append("## Build\n")
    build_rows = [{"system": name, **info} for name, info in systems.items()]
    build_columns = [("system", "system"), ("build_s", "build s"), ("index_mb", "index MB")]
    md.append(markdown_table(build_rows, build_columns, digits=1) + "\n")
    md += [f"{name}: `{json.dumps(info)}`\n" for name, info in systems.items()]
    md.append("## Full sweep\n")
    md.append(markdown_table(rows, [*columns, ("scanned_share", "share scanned")], digits=3) + "\n")
    md.append(f"Qdrant: {config['qdrant']}.\n")
    paths = write_results(args.out, payload, "\n".join(md))
    print(f"[bench] wrote {paths}", flush=True)


SEARCH_THREADS = 1
REPEATS = 3


if __name__ == "__main__":
    main()

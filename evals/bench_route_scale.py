"""Route-mode search at scale: topic-partitioned FAISS search vs exact flat FAISS search.

Synthetic data with a synthetic two-level cluster hierarchy (n_top topics, each with n_sub children):
level-0 centres are random unit vectors, leaf centres are their parents plus noise, and each vector is its
leaf centre plus noise, all L2-normalised (cosine = inner product, as with HEALEmbedding + IndexFlatIP).
Queries are noisy copies of held-out points. A query is placed in the hierarchy with soft memberships
(softmax of its similarity to the topic centres per level, the synthetic stand-in for
``Hierarchy.predict_memberships``) and routed exactly as ``HierarchicalRetriever(mode="route")`` routes:
the top ``r0`` level-0 topics, then the top ``r1`` leaves among their children
(``heal_rag.integrations.retriever.route_topics``). The routed search scans only those leaves' cells in
``TopicPartitionedIndex`` (faiss IVF with the leaf topics as cells, ``search_preassigned``).

Reports per-query latency (one query per call, p50/p95, median of repeats), batched throughput, the
speed-up over exact ``IndexFlatIP`` search, and recall@10 against the exact top-10.

    python evals/bench_route_scale.py                      # 100k and 1M vectors
    python evals/bench_route_scale.py --sizes 100000 --quick

The synthetic vectors follow the tree by construction, which real text does not: on real passages against
FAISS IVF and HNSW, see ``bench_route_peers.py`` (route is slower than both at every matched recall).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, git_commit  # noqa: E402

from heal_rag._io import atomic_write_json, atomic_write_text  # noqa: E402
from heal_rag.hierarchy.routing import route_topics  # noqa: E402
from heal_rag.integrations._faiss import TopicPartitionedIndex, import_faiss  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_data(n: int, n_queries: int, dim: int, n_top: int, n_sub: int, args, rng: np.random.Generator):
    top = unit(rng.standard_normal((n_top, dim)))
    leaf_parent = np.repeat(np.arange(n_top), n_sub)
    leaves = unit(top[leaf_parent] + args.leaf_noise * unit(rng.standard_normal((n_top * n_sub, dim))))
    total = n + n_queries
    leaf_of = rng.integers(0, n_top * n_sub, size=total)
    x = np.empty((total, dim), dtype=np.float32)
    step = 100_000
    for start in range(0, total, step):  # chunked: keeps the float64 temporaries small at 1M
        stop = min(total, start + step)
        noise = unit(rng.standard_normal((stop - start, dim))) * args.point_noise
        x[start:stop] = unit(leaves[leaf_of[start:stop]] + noise)
    base, held = x[:n], x[n:]
    queries = unit(held + args.query_noise * unit(rng.standard_normal(held.shape)))
    # topic ids unique across the tree: level 0 = 0..n_top-1, leaves = n_top..n_top+n_top*n_sub-1
    paths = np.stack([leaf_parent[leaf_of[:n]], n_top + leaf_of[:n]], axis=1)
    return base, paths, queries, top, leaves, leaf_parent


def softmax(z: np.ndarray, temperature: float) -> np.ndarray:
    z = z / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def percentile_ms(times: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(times) * 1000, q))


def run_size(n: int, args, rng: np.random.Generator) -> dict:
    faiss = import_faiss()
    dim, n_top, n_sub = args.dim, args.n_top, args.n_sub
    t0 = time.perf_counter()
    base, paths, queries, top, leaves, leaf_parent = make_data(n, args.queries, dim, n_top, n_sub, args, rng)
    gen_s = time.perf_counter() - t0
    # cluster separation, so a reader can judge how easy the synthetic data is
    idx = rng.choice(n, size=2000, replace=False)
    sims = base[idx] @ base[idx].T
    same_leaf = paths[idx, 1][:, None] == paths[idx, 1][None, :]
    same_top = paths[idx, 0][:, None] == paths[idx, 0][None, :]
    off = ~np.eye(len(idx), dtype=bool)
    separation = {
        "mean_cos_same_leaf": float(sims[same_leaf & off].mean()),
        "mean_cos_sibling_leaf": float(sims[same_top & ~same_leaf].mean()),
        "mean_cos_other_top": float(sims[~same_top].mean()),
    }
    del sims

    flat = faiss.IndexFlatIP(dim)
    t0 = time.perf_counter()
    flat.add(base)
    flat_build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    routed = TopicPartitionedIndex(base, paths[:, 1])
    route_build_s = time.perf_counter() - t0

    # Query placement: soft memberships per level, then the retriever's own routing rule.
    topics_by_level = [list(range(n_top)), list(range(n_top, n_top + n_top * n_sub))]
    children = {t: tuple(n_top + np.flatnonzero(leaf_parent == t)) for t in range(n_top)}
    children.update({leaf: () for leaf in topics_by_level[1]})

    def place(q: np.ndarray) -> list[np.ndarray]:
        return [softmax(q @ top.T, args.temperature), softmax(q @ leaves.T, args.temperature)]

    k = args.k
    exact_scores, exact_ids = flat.search(queries, k)
    results = {
        "n_vectors": n,
        "generate_s": round(gen_s, 2),
        "flat_build_s": round(flat_build_s, 3),
        "route_build_s": round(route_build_s, 3),
        "separation": separation,
        "leaf_sizes": {"min": int(routed.sizes.min()), "max": int(routed.sizes.max())},
        "configs": [],
    }

    def time_single(fn) -> list[float]:
        times = []
        for i in range(len(queries)):
            t = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t)
        return times

    flat_runs = []
    for _ in range(args.repeats):
        flat_runs.append(time_single(lambda i: flat.search(queries[i : i + 1], k)))
    flat_p50 = float(np.median([percentile_ms(r, 50) for r in flat_runs]))
    flat_p95 = float(np.median([percentile_ms(r, 95) for r in flat_runs]))
    t = time.perf_counter()
    flat.search(queries, k)
    flat_batch_qps = len(queries) / (time.perf_counter() - t)
    results["flat"] = {
        "p50_ms": round(flat_p50, 3),
        "p95_ms": round(flat_p95, 3),
        "batch_qps": round(flat_batch_qps, 1),
    }
    print(f"[n={n}] flat exact: p50 {flat_p50:.2f} ms, p95 {flat_p95:.2f} ms, batch {flat_batch_qps:.0f} q/s")

    for r0, r1 in args.route:

        def routed_search(i: int, r0=r0, r1=r1):
            memberships = place(queries[i : i + 1])
            allowed = route_topics(memberships, topics_by_level, children, (r0, r1))
            return routed.search(queries[i : i + 1], k, [sorted(allowed[-1])])

        runs = [time_single(routed_search) for _ in range(args.repeats)]
        p50 = float(np.median([percentile_ms(r, 50) for r in runs]))
        p95 = float(np.median([percentile_ms(r, 95) for r in runs]))
        # recall and scanned fraction (batched, identical results)
        memberships = place(queries)
        allowed = [
            route_topics([m[i : i + 1] for m in memberships], topics_by_level, children, (r0, r1))[-1]
            for i in range(len(queries))
        ]
        t = time.perf_counter()
        _, ids = routed.search(queries, k, [sorted(a) for a in allowed])
        batch_qps = len(queries) / (time.perf_counter() - t)
        recall = float(np.mean([len(set(ids[i]) & set(exact_ids[i])) / k for i in range(len(queries))]))
        scanned = float(
            np.mean([sum(routed.sizes[routed._cell_of_topic[int(t)]] for t in a) / n for a in allowed])
        )
        row = {
            "route_topics": [r0, r1],
            "p50_ms": round(p50, 3),
            "p95_ms": round(p95, 3),
            "speedup_p50": round(flat_p50 / p50, 2),
            "batch_qps": round(batch_qps, 1),
            "batch_speedup": round(batch_qps / flat_batch_qps, 2),
            f"recall@{k}": round(recall, 4),
            "scanned_fraction": round(scanned, 4),
        }
        results["configs"].append(row)
        print(
            f"[n={n}] route {r0},{r1}: p50 {p50:.2f} ms (x{flat_p50 / p50:.1f}), p95 {p95:.2f} ms, "
            f"recall@{k} {recall:.3f}, scanned {scanned:.1%}, batch x{batch_qps / flat_batch_qps:.1f}"
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--n-top", type=int, default=10)
    parser.add_argument("--n-sub", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--leaf-noise", type=float, default=0.8)
    parser.add_argument("--point-noise", type=float, default=1.5)
    parser.add_argument("--query-noise", type=float, default=0.7)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument(
        "--route",
        type=str,
        nargs="+",
        default=["1,1", "1,2", "2,2", "2,3", "2,4", "3,6"],
        help="routing breadths 'r0,r1' (level-0 topics, leaves)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="100k only, 50 queries, 1 repeat")
    parser.add_argument("--tag", default="", help="suffix of the result file names (e.g. 'hard')")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.queries, args.repeats = [100_000], 50, 1
    args.route = [tuple(int(v) for v in r.split(",")) for r in args.route]
    faiss = import_faiss()
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    runs = [run_size(n, args, rng) for n in args.sizes]
    config = {k: (v if not isinstance(v, Path) else str(v)) for k, v in vars(args).items()}
    report = {
        "benchmark": "bench_route_scale",
        "command": "python evals/bench_route_scale.py " + " ".join(sys.argv[1:]),
        "config": config,
        "seed": args.seed,
        "versions": {
            "faiss": faiss.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "faiss_threads": args.threads,
            "note": "shared 2-core machine (other jobs running): timings are noisy",
        },
        "git_commit": git_commit(),
        "results": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"_{args.tag}" if args.tag else ""
    atomic_write_json(args.out / f"bench_route_scale{suffix}.json", report)
    lines = [
        f"# Route-mode search at scale (synthetic, dim {args.dim}, {args.n_top} x {args.n_sub} topics)",
        "",
        f"`{report['command']}`; {args.queries} queries, one per call, faiss threads {args.threads}, "
        f"median of {args.repeats} repeats; shared 2-core machine, timings noisy; commit "
        f"{report['git_commit']}.",
        "",
        "| vectors | search | route topics (l0, leaves) | p50 ms | p95 ms | speed-up (p50) | recall@10 "
        "| scanned |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        f = run["flat"]
        lines.append(
            f"| {run['n_vectors']:,} | exact flat | - | {f['p50_ms']} | {f['p95_ms']} | 1.0 | 1.0 | 100% |"
        )
        for row in run["configs"]:
            lines.append(
                f"| {run['n_vectors']:,} | route | {row['route_topics']} | {row['p50_ms']} | "
                f"{row['p95_ms']} | "
                f"{row['speedup_p50']} | {row[f'recall@{args.k}']} | {row['scanned_fraction']:.1%} |"
            )
    lines += ["", "Cluster separation (mean cosine): " + json.dumps([r["separation"] for r in runs])]
    atomic_write_text(args.out / f"bench_route_scale{suffix}.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

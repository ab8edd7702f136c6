"""Benchmark HNMFk: quality on 20 Newsgroups, speed and memory on SciFact, time growth 1k->20k.

Usage:
    python evals/bench_hierarchy.py                      # everything (about 5-10 minutes on 2 cores)
    python evals/bench_hierarchy.py --part quality --seeds 0
    python evals/bench_hierarchy.py --part speed --params '{"n_perturbations": 3}'

Quality: HNMFk (default settings, KL final fits) on the 20 Newsgroups *test* bodies, headers always dropped,
in two variants: "stripped" (quoted lines, "... writes:" lines and signatures removed, as scikit-learn's
``remove=("headers", "footers", "quotes")``; the harder, leak-free setting) and "raw" (bodies as they are,
quotes included: the setting of the issue's T-ELF/KMeans reference figures). For each level of the tree:
NMI / ARI of the hard labels against the dataset's ``level1`` (7 classes) and ``level2`` (16 classes) labels,
side by side with, on the same TF-IDF matrix and at the same number of clusters (the number of topics HNMFk
has at that level): flat KMeans (k-means++, n_init=10: a strong baseline), flat NMF (Frobenius, NNDSVDa)
and flat NMF with the KL divergence (NNDSVDa, multiplicative updates); plus the ablation
``hnmfk_frobenius`` (the same tree builder with ``beta_loss="frobenius"``, the behaviour before KL; its own
tree, so its own k per level).
Medians over seeds.

Speed: wall time and peak memory (max RSS of a fresh child process) of a depth-2 build on SciFact's 5,183
abstracts with the defaults, median over repeats; then the time for 1k, 5k and 20k documents drawn from
SciFact + 20 Newsgroups bodies (one seeded shuffle, nested prefixes).

Figures go to evals/results/bench_hierarchy.json and .md. Data: ../shared/data (scifact, 20newsgroups).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "evals" / "results"
sys.path.insert(0, str(ROOT))

_QUOTE = re.compile(r"(writes in|writes:|wrote:|says:|said:|^In article|^Quoted from|^\||^>)")


def strip_newsgroup_body(body: str) -> str:
    """Drop quoted lines, attribution lines and a trailing signature (after the last line starting '--')."""
    lines = [line for line in body.split("\n") if not _QUOTE.search(line.strip())]
    text = "\n".join(lines).strip()
    parts = text.split("\n")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].strip().startswith("--"):
            if i > 0:  # like scikit-learn: only when something precedes the signature
                text = "\n".join(parts[:i])
            break
    return text


def load_20ng(split: str | None) -> list[dict]:
    with gzip.open(DATA / "20newsgroups" / "20news-bydate.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [r for r in rows if split is None or r["split"] == split]


def load_scifact() -> list[str]:
    with open(DATA / "scifact" / "corpus.jsonl", encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle]
    return [(d.get("title", "") + ". " + d.get("text", "")).strip() for d in docs]


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout
        return out.stdout.strip() + (" (+ uncommitted changes)" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted"


def versions() -> dict[str, str]:
    import scipy
    import sklearn

    from heal_rag._version import __version__

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "heal-rag": __version__,
    }


# ----------------------------------------------------------------------------------------------- quality
METHODS = ("hnmfk", "hnmfk_frobenius", "kmeans", "nmf", "nmf_kl")


def quality(seeds: list[int], params: dict, bodies: str) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import NMF
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from heal_rag.hierarchy import HNMFk

    rows = load_20ng("test")
    texts = [strip_newsgroup_body(r["body"]) if bodies == "stripped" else r["body"] for r in rows]
    truth = {name: np.array([r[name] for r in rows]) for name in ("level1", "level2")}

    def scores(labels: np.ndarray) -> dict:
        out = {}
        for name, y in truth.items():
            out[f"nmi_{name}"] = float(normalized_mutual_info_score(y, labels))
            out[f"ari_{name}"] = float(adjusted_rand_score(y, labels))
        return out

    runs = []
    for seed in seeds:
        start = time.perf_counter()
        model = HNMFk(depth=2, random_state=seed, show_progress=False, **params).fit(texts)
        seconds = time.perf_counter() - start
        h = model.hierarchy_
        frobenius = HNMFk(
            depth=2, random_state=seed, show_progress=False, **{**params, "beta_loss": "frobenius"}
        ).fit(texts)
        X = h.vectorize(texts)  # the same TF-IDF matrix HNMFk used
        run = {
            "seed": seed,
            "build_seconds": seconds,
            "n_topics": len(h.topics),
            "min_leaf_size": min(t.size for t in h.leaves()),
            "root_k_selection": model.k_selection_[-1]["candidates"],
            "levels": [],
        }
        for level in range(h.n_levels):
            labels = h.labels(level)
            k = len(np.unique(labels))
            frob_labels = frobenius.hierarchy_.labels(min(level, frobenius.hierarchy_.n_levels - 1))
            km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(X)
            nmf = NMF(n_components=k, init="nndsvda", max_iter=300, random_state=seed).fit_transform(X)
            nmf_kl = NMF(
                n_components=k,
                init="nndsvda",
                solver="mu",
                beta_loss="kullback-leibler",
                max_iter=200,
                random_state=seed,
            ).fit_transform(X)
            run["levels"].append(
                {
                    "level": level,
                    "n_clusters": k,
                    "n_clusters_hnmfk_frobenius": len(np.unique(frob_labels)),
                    "hnmfk": scores(labels),
                    "hnmfk_frobenius": scores(frob_labels),
                    "kmeans": scores(km),
                    "nmf": scores(np.argmax(nmf, axis=1)),
                    "nmf_kl": scores(np.argmax(nmf_kl, axis=1)),
                }
            )
        runs.append(run)
        print(f"[quality] seed {seed}: {seconds:.1f} s, {len(h.topics)} topics", flush=True)
        for lv in run["levels"]:
            print(
                f"  level {lv['level']} k={lv['n_clusters']}: "
                + "  ".join(
                    f"{m} NMI1 {lv[m]['nmi_level1']:.3f} NMI2 {lv[m]['nmi_level2']:.3f}" for m in METHODS
                ),
                flush=True,
            )
    # medians per level over seeds (levels that exist in every run)
    n_levels = min(len(r["levels"]) for r in runs)
    summary = []
    for level in range(n_levels):
        entry: dict = {
            "level": level,
            "n_clusters": [r["levels"][level]["n_clusters"] for r in runs],
            "n_clusters_hnmfk_frobenius": [r["levels"][level]["n_clusters_hnmfk_frobenius"] for r in runs],
        }
        for method in METHODS:
            keys = runs[0]["levels"][level][method]
            entry[method] = {k: statistics.median(r["levels"][level][method][k] for r in runs) for k in keys}
        summary.append(entry)
    return {
        "dataset": f"20newsgroups test bodies (7,532), {bodies}",
        "bodies": bodies,
        "seeds": seeds,
        "runs": runs,
        "median": summary,
    }


# ----------------------------------------------------------------------------------------------- ablation
def ablation(seeds: list[int], params: dict) -> dict:
    """Level-0 split alone (stripped bodies, k fixed): which change to the final fit / assignment helps.

    Every variant starts from the same NMFk consensus topics of the same perturbations (the tree builder's
    path), so only the final fit and the assignment differ; KMeans (n_init=10) on the same matrix for scale.
    Then the TF-IDF settings (KL vs KMeans) and NMI against ``level1`` across k (seed 0) for the k-selection.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    from heal_rag.hierarchy import HNMFk, _nmf
    from heal_rag.hierarchy.nmfk import nmfk

    rows = load_20ng("test")
    texts = [strip_newsgroup_body(r["body"]) for r in rows]
    y = np.array([r["level1"] for r in rows])
    ops = _nmf._Ops("cpu")

    def nmi(labels: np.ndarray) -> float:
        return float(normalized_mutual_info_score(y, labels))

    def consensus(X, k: int, seed: int, beta_loss: str):  # noqa: ANN001, ANN202 - local helper
        return nmfk(
            X,
            [k],
            n_perturbations=4,
            noise=0.05,
            bootstrap=True,
            max_iter=100,
            perturbation_max_iter=30,
            tol=1e-3,
            stability_threshold=-1.0,  # k is fixed here: never refuse it
            stability_tolerance=2.0,
            rng=np.random.default_rng(seed),
            ops=ops,
            beta_loss=beta_loss,
        ).components

    def variants(X, k: int, seed: int) -> dict[str, float]:  # noqa: ANN001 - sparse matrix
        out: dict[str, float] = {}
        H = consensus(X, k, seed, "frobenius")
        out["frobenius (before)"] = nmi(np.argmax(_nmf.project(X, H), axis=1))
        out["frobenius, L1-scaled topics"] = nmi(
            np.argmax(_nmf.project(X, H / H.sum(1, keepdims=True)), axis=1)
        )
        W0 = np.maximum(_nmf.project(X, H, n_iter=5), 1e-6)
        long = _nmf.hals(X, W0, H, max_iter=400, tol=1e-6, ops=ops)
        out["frobenius, 400 sweeps tol 1e-6"] = nmi(
            np.argmax(_nmf.project(X, _nmf.unit_rows(long.H)), axis=1)
        )
        rng = np.random.default_rng(seed)
        inits = [_nmf.nndsvd_components(X, k, seed)]
        scale = float(np.sqrt(X.mean() / k))
        for _ in range(4):
            inits.append(
                (
                    (rng.random((X.shape[0], k)) * scale).astype(np.float32),
                    (rng.random((k, X.shape[1])) * scale).astype(np.float32),
                )
            )
        fits = [_nmf.hals(X, a, b, max_iter=400, tol=1e-6, ops=ops) for a, b in inits]
        best = min(fits, key=lambda f: f.rel_error)
        out["frobenius, best of 5 inits by error"] = nmi(
            np.argmax(_nmf.project(X, _nmf.unit_rows(best.H)), axis=1)
        )
        out["kl (new default)"] = nmi(
            np.argmax(_nmf.project_kl(X, consensus(X, k, seed, "kullback-leibler")), axis=1)
        )
        out["kmeans n_init=10"] = nmi(KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(X))
        return out

    X = HNMFk(**params)._vectorize(texts)[0]
    fixed_k = {}
    for k in (4, 8):
        per_seed = [variants(X, k, seed) for seed in seeds]
        fixed_k[str(k)] = {name: statistics.median(r[name] for r in per_seed) for name in per_seed[0]}
        print(f"[ablation] k={k}: {fixed_k[str(k)]}", flush=True)
    tfidf = {}
    for name, extra in (
        ("defaults", {}),
        ("max_features=10000", {"max_features": 10000}),
        ("sublinear_tf=False", {"sublinear_tf": False}),
        ("min_df=5", {"min_df": 5}),
    ):
        Xv = HNMFk(**{**params, **extra})._vectorize(texts)[0]
        entry = {}
        for k in (4, 8):
            kl = [
                nmi(np.argmax(_nmf.project_kl(Xv, consensus(Xv, k, s, "kullback-leibler")), axis=1))
                for s in seeds
            ]
            km = [nmi(KMeans(n_clusters=k, n_init=10, random_state=s).fit_predict(Xv)) for s in seeds]
            entry[f"k{k}"] = {"kl": statistics.median(kl), "kmeans": statistics.median(km)}
        tfidf[name] = entry
        print(f"[ablation] tfidf {name}: {entry}", flush=True)
    sweep = {}
    for k in range(2, 11):
        sweep[str(k)] = {
            "kl": nmi(np.argmax(_nmf.project_kl(X, consensus(X, k, seeds[0], "kullback-leibler")), axis=1)),
            "kmeans": nmi(KMeans(n_clusters=k, n_init=10, random_state=seeds[0]).fit_predict(X)),
        }
    print(f"[ablation] k sweep: {sweep}", flush=True)
    return {"seeds": seeds, "fixed_k": fixed_k, "tfidf": tfidf, "k_sweep_seed0": sweep}


# ----------------------------------------------------------------------------------------------- speed
def _child_build(corpus: str, n: int, params: dict, seed: int) -> dict:
    """Run in a fresh process: one depth-2 build, wall time and peak RSS."""
    from heal_rag.hierarchy import HNMFk

    if corpus == "scifact":
        texts = load_scifact()
    else:  # "mix": SciFact abstracts + 20NG bodies, one seeded shuffle, prefix of n
        pool = load_scifact() + [strip_newsgroup_body(r["body"]) for r in load_20ng(None)]
        order = np.random.default_rng(0).permutation(len(pool))
        texts = [pool[i] for i in order]
    texts = texts[:n]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    model = HNMFk(depth=2, random_state=seed, show_progress=False, **params).fit(texts)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    h = model.hierarchy_
    return {
        "n_documents": len(texts),
        "seconds": seconds,
        "peak_rss_mb": peak / 1024,
        "rss_before_fit_mb": base / 1024,
        "n_topics": len(h.topics),
        "n_levels": h.n_levels,
        "topics_per_level": [len(h.topics_at(level)) for level in range(h.n_levels)],
        "min_leaf_size": min(t.size for t in h.leaves()),
        "n_features": h.n_features,
    }


def run_child(corpus: str, n: int, params: dict, seed: int, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--_child", json.dumps([corpus, n, params, seed])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(params: dict, repeats: int, sizes: list[int], timeout: int) -> dict:
    scifact = [run_child("scifact", 10**9, params, 0, timeout) for _ in range(repeats)]
    for r in scifact:
        print(
            f"[speed] scifact {r['n_documents']}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    growth = []
    for n in sizes:
        r = run_child("mix", n, params, 0, timeout)
        growth.append(r)
        print(f"[speed] mix {n}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    return {
        "scifact_runs": scifact,
        "scifact_median_seconds": statistics.median(r["seconds"] for r in scifact),
        "scifact_median_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in scifact),
        "growth": growth,
    }


# ----------------------------------------------------------------------------------------------- report
def markdown(result: dict) -> str:
    lines = ["# HNMFk hierarchy benchmark", ""]
    lines.append(f"Machine: {result['machine']}. {result['note']}")
    lines.append(
        f"Commit: {result['commit']}. Settings: HNMFk defaults"
        + (f" + {json.dumps(result['params'])}." if result["params"] else ".")
    )
    lines.append("")
    for q in result.get("quality", []):
        lines += [
            f"## Quality: {q['dataset']}, medians over seeds {q['seeds']}",
            "",
            "| level | k | method | NMI level1 | ARI level1 | NMI level2 | ARI level2 |",
            "|---|---|---|---|---|---|---|",
        ]
        for entry in q["median"]:
            for method in METHODS:
                s = entry[method]
                ks = entry["n_clusters_hnmfk_frobenius" if method == "hnmfk_frobenius" else "n_clusters"]
                lines.append(
                    f"| {entry['level']} | {'/'.join(map(str, ks))} | {method} | "
                    f"{s['nmi_level1']:.3f} | {s['ari_level1']:.3f} | "
                    f"{s['nmi_level2']:.3f} | {s['ari_level2']:.3f} |"
                )
        lines += [
            "",
            "Smallest leaf per seed: " + ", ".join(str(r["min_leaf_size"]) for r in q["runs"]),
            "HNMFk build seconds per seed: "
            + ", ".join(format(r["build_seconds"], ".1f") for r in q["runs"]),
            "",
        ]
    if "speed" in result:
        s = result["speed"]
        lines += [
            "## Speed (depth 2, defaults, fresh process per build)",
            "",
            f"SciFact 5,183 abstracts: median {s['scifact_median_seconds']:.1f} s, "
            f"peak RSS {s['scifact_median_peak_rss_mb']:.0f} MB "
            f"(runs: {', '.join(format(r['seconds'], '.1f') for r in s['scifact_runs'])} s; "
            f"topics per level {s['scifact_runs'][0]['topics_per_level']}, "
            f"smallest leaf {s['scifact_runs'][0]['min_leaf_size']}).",
            "",
            "| documents (SciFact + 20NG mix) | seconds | peak RSS MB | topics per level | smallest leaf |",
            "|---|---|---|---|---|",
        ]
        for r in s["growth"]:
            lines.append(
                f"| {r['n_documents']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
                f"{r['topics_per_level']} | {r['min_leaf_size']} |"
            )
        lines.append("")
    if "ablation" in result:
        a = result["ablation"]
        lines += [
            "## Ablation: the level-0 split alone, stripped bodies, NMI level1, "
            f"medians over seeds {a['seeds']}",
            "",
            "Same NMFk consensus topics for every variant; only the final fit / assignment differs.",
            "",
            "| variant | k=4 | k=8 |",
            "|---|---|---|",
        ]
        for name in a["fixed_k"]["4"]:
            lines.append(f"| {name} | {a['fixed_k']['4'][name]:.3f} | {a['fixed_k']['8'][name]:.3f} |")
        lines += ["", "TF-IDF settings (HNMFk's vectoriser; the same matrix for both methods):", ""]
        lines += ["| TF-IDF | KL k=4 | KMeans k=4 | KL k=8 | KMeans k=8 |", "|---|---|---|---|---|"]
        for name, e in a["tfidf"].items():
            lines.append(
                f"| {name} | {e['k4']['kl']:.3f} | {e['k4']['kmeans']:.3f} | "
                f"{e['k8']['kl']:.3f} | {e['k8']['kmeans']:.3f} |"
            )
        sweep = a["k_sweep_seed0"]
        lines += ["", "NMI level1 across k (seed 0), for the choice of k:", ""]
        lines += ["| k | " + " | ".join(sweep) + " |", "|---" * (len(sweep) + 1) + "|"]
        for method in ("kl", "kmeans"):
            lines.append(f"| {method} | " + " | ".join(f"{sweep[k][method]:.3f}" for k in sweep) + " |")
        lines.append("")
    lines.append(
        "Reference (issue 2, T-ELF on such a machine): ~16 min for the SciFact depth-2 build, "
        "0.5 GB written, "
        "leaves of 2 documents; 20NG level-1 NMI 0.26-0.28 vs flat KMeans 0.36-0.49 (k 4..10)."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--part",
        choices=["all", "quality", "speed", "ablation"],
        default="all",
        help="'ablation' alone adds its figures to the existing results files",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--bodies",
        choices=["both", "stripped", "raw"],
        default="both",
        help="20NG bodies with quotes/signatures stripped, as they are, or both",
    )
    parser.add_argument("--repeats", type=int, default=3, help="SciFact speed repeats")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--params", default="{}", help="JSON of HNMFk parameters overriding the defaults")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per build")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        corpus, n, params, seed = json.loads(args._child)
        print(json.dumps(_child_build(corpus, n, params, seed)))
        return
    if not DATA.is_dir():
        sys.exit(f"data folder {DATA} not found")
    params = json.loads(args.params)
    result: dict = {
        "benchmark": "bench_hierarchy",
        "command": "python evals/bench_hierarchy.py " + " ".join(sys.argv[1:]),
        "params": params,
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "note": "Shared machine (other jobs running, benchmark under nice): timings are noisy.",
        "commit": git_commit(),
        "versions": versions(),
    }
    if args.part in ("all", "quality"):
        variants = ["stripped", "raw"] if args.bodies == "both" else [args.bodies]
        result["quality"] = [quality(args.seeds, params, bodies) for bodies in variants]
    if args.part in ("all", "speed"):
        result["speed"] = speed(params, args.repeats, args.sizes, args.timeout)
    if args.part in ("all", "ablation"):
        result["ablation"] = ablation(args.seeds, params)
        previous = RESULTS / "bench_hierarchy.json"
        if args.part == "ablation" and previous.is_file():  # keep the other parts of the last full run
            result = {**json.loads(previous.read_text()), "ablation": result["ablation"]}
    text = markdown(result)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "bench_hierarchy.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "bench_hierarchy.md").write_text(text)


if __name__ == "__main__":
    main()

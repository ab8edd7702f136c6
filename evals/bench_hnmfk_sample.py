"""Benchmark ``HNMFk(fit_sample=N)``: a tree fitted on a sample, every document placed with its factors.

Usage:
    python evals/bench_hnmfk_sample.py                        # both parts (about 10-15 minutes on 2 cores)
    python evals/bench_hnmfk_sample.py --part scale --sample 10000
    python evals/bench_hnmfk_sample.py --part nmi --seeds 0 --nmi-samples 10000

Scale: >= 100k real passages, the corpora of ../shared/data cut into chunks of 60 whitespace words (20
Newsgroups bodies with headers dropped, SciFact titles + abstracts, PubMedQA contexts, MED abstracts; a
tail shorter than 20 words joins the chunk before it); the chunk list is cached under
``evals/cache/hnmfk_sample/``. ``HNMFk(depth=2, fit_sample=N)`` with the defaults otherwise, in a fresh child
process per run: wall time of the whole ``fit`` (sample vocabulary, tree, placement of every passage) and
peak RSS (``ru_maxrss``) next to the RSS before the fit (the process with the passages loaded). The same
fit on nested prefixes (25k, 50k, all) shows how time and memory grow with the corpus at a fixed sample.

NMI: all 18,846 20 Newsgroups posts (train + test, bodies with quotes and signatures stripped as in
``bench_hierarchy.py``), the full fit against fits on samples of N posts (same settings, same seed); NMI of
the tree's hard labels at each level against the dataset's ``level1`` (7 classes) and ``level2`` (16)
labels, per seed, with the sample-minus-full differences.

Results: evals/results/bench_hnmfk_sample.json and .md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO_ROOT, SHARED_DATA_DIR, markdown_table, provenance, write_results  # noqa: E402

CACHE = REPO_ROOT / "evals" / "cache" / "hnmfk_sample"
WORDS, MIN_TAIL = 60, 20
TARGET_SECONDS, TARGET_NMI = 180.0, 0.02


# ----------------------------------------------------------------------------------------------- passages
def chunk_words(text: str, size: int = WORDS, min_tail: int = MIN_TAIL) -> list[str]:
    """Cut a text into chunks of ``size`` whitespace words; a short tail joins the chunk before it."""
    words = text.split()
    chunks = [words[i : i + size] for i in range(0, len(words), size)]
    if len(chunks) > 1 and len(chunks[-1]) < min_tail:
        tail = chunks.pop()
        chunks[-1] = chunks[-1] + tail
    return [" ".join(c) for c in chunks if c]


def _sources() -> list[Path]:
    return [
        SHARED_DATA_DIR / "20newsgroups" / "20news-bydate.jsonl.gz",
        SHARED_DATA_DIR / "scifact" / "corpus.jsonl",
        SHARED_DATA_DIR / "pubmedqa_pqal" / "corpus.jsonl",
        SHARED_DATA_DIR / "classic_ir" / "med" / "corpus.jsonl",
    ]


def build_passages() -> list[dict]:
    """Chunk every corpus of ../shared/data: dicts with ``id``, ``source`` and ``text``."""
    ng, scifact, pubmedqa, med = _sources()
    out: list[dict] = []

    def add(source: str, doc_id: str, text: str) -> None:
        for j, chunk in enumerate(chunk_words(text)):
            out.append({"id": f"{source}:{doc_id}:{j}", "source": source, "text": chunk})

    with gzip.open(ng, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            add("20ng", str(row["id"]), row["body"])
    for source, path in (("scifact", scifact), ("pubmedqa", pubmedqa), ("med", med)):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                doc = json.loads(line)
                add(source, str(doc["_id"]), (doc.get("title", "") + ". " + doc.get("text", "")).strip(". "))
    return out


def load_passages() -> tuple[list[dict], dict]:
    """The passages, from the cache when it was built from the same source files with the same rule."""
    key = {
        "words": WORDS,
        "min_tail": MIN_TAIL,
        "sources": {str(p.relative_to(SHARED_DATA_DIR)): p.stat().st_size for p in _sources()},
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    data, meta = CACHE / f"passages_w{WORDS}.jsonl.gz", CACHE / f"passages_w{WORDS}.json"
    if data.is_file() and meta.is_file() and json.loads(meta.read_text())["key"] == key:
        with gzip.open(data, "rt", encoding="utf-8") as handle:
            return [json.loads(line) for line in handle], json.loads(meta.read_text())
    passages = build_passages()
    tmp = data.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as handle:
        for p in passages:
            handle.write(json.dumps(p) + "\n")
    os.replace(tmp, data)
    counts: dict[str, int] = {}
    for p in passages:
        counts[p["source"]] = counts.get(p["source"], 0) + 1
    info = {"key": key, "n_passages": len(passages), "per_source": counts}
    meta.write_text(json.dumps(info, indent=2) + "\n")
    return passages, info


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child_scale(n: int | None, sample: int | None, seed: int) -> dict:
    """Fresh process: fit ``HNMFk(fit_sample=sample)`` on the first ``n`` passages (all when None)."""
    from heal_rag.hierarchy import HNMFk

    passages, _ = load_passages()
    order = np.random.default_rng(0).permutation(len(passages))  # prefixes that mix the sources
    passages = [passages[i] for i in (order[:n] if n else order)]
    texts, ids = [p["text"] for p in passages], [p["id"] for p in passages]
    del passages
    before = _rss_mb()
    start = time.perf_counter()
    model = HNMFk(depth=2, fit_sample=sample, random_state=seed, show_progress=False).fit(texts, doc_ids=ids)
    seconds = time.perf_counter() - start
    h = model.hierarchy_
    sizes = [t.size for t in h.leaves()]
    outputs = h.paths.nbytes + sum(h.memberships(level).nbytes for level in range(h.n_levels))
    return {
        "n_documents": h.n_documents,
        "fit_sample": sample,
        "seconds": seconds,
        "rss_before_fit_mb": before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "outputs_mb": outputs / 2**20,  # paths + memberships of every document: what must grow with n
        "topics_per_level": [len(h.topics_at(level)) for level in range(h.n_levels)],
        "smallest_leaf": min(sizes),
        "largest_leaf": max(sizes),
        "vocabulary": h.n_features,
    }


def _run_child(payload: list, timeout: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--_child", json.dumps(payload)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {payload} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scale(sample: int, seed: int, prefixes: list[int], full_at: list[int], timeout: int) -> dict:
    _, info = load_passages()
    print(f"[scale] {info['n_passages']} passages {info['per_source']}", flush=True)
    runs = []
    for n in [*prefixes, None]:
        run = _run_child([n, sample, seed], timeout)
        run["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        runs.append(run)
        print(f"[scale] sample {sample}: {json.dumps(run)}", flush=True)
    full = []
    for n in full_at:  # the same corpus fitted whole, for the time it saves (slow: opt-in)
        run = _run_child([n, None, seed], timeout)
        run["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        full.append(run)
        print(f"[scale] full fit: {json.dumps(run)}", flush=True)
    return {"passages": info, "fit_sample": sample, "seed": seed, "runs": runs, "full_fits": full}


# ----------------------------------------------------------------------------------------------- nmi
def nmi(seeds: list[int], samples: list[int]) -> dict:
    from bench_hierarchy import load_20ng, strip_newsgroup_body
    from sklearn.metrics import normalized_mutual_info_score

    from heal_rag.hierarchy import HNMFk

    rows = load_20ng(None)
    texts = [strip_newsgroup_body(r["body"]) for r in rows]
    truth = {name: np.array([r[name] for r in rows]) for name in ("level1", "level2")}
    keep = [i for i, t in enumerate(texts) if t.strip()]  # HNMFk leaves empty texts out (with a warning)
    texts = [texts[i] for i in keep]
    truth = {name: y[keep] for name, y in truth.items()}

    def scores(model: HNMFk) -> list[dict]:
        h = model.hierarchy_
        return [
            {
                "level": level,
                "n_topics": len(h.topics_at(level)),
                **{
                    f"nmi_{name}": float(normalized_mutual_info_score(y, h.labels(level)))
                    for name, y in truth.items()
                },
            }
            for level in range(h.n_levels)
        ]

    runs = []
    for seed in seeds:
        entry: dict = {"seed": seed, "fits": []}
        for sample in [None, *samples]:
            start = time.perf_counter()
            model = HNMFk(depth=2, fit_sample=sample, random_state=seed, show_progress=False).fit(texts)
            fit = {"fit_sample": sample, "seconds": time.perf_counter() - start, "levels": scores(model)}
            entry["fits"].append(fit)
            print(f"[nmi] seed {seed} sample {sample}: {json.dumps(fit)}", flush=True)
        full = entry["fits"][0]["levels"]
        for fit in entry["fits"][1:]:
            for level, lv in enumerate(fit["levels"]):
                if level < len(full):
                    for name in truth:
                        lv[f"diff_nmi_{name}"] = lv[f"nmi_{name}"] - full[level][f"nmi_{name}"]
        runs.append(entry)
    summary = []
    for i, sample in enumerate([None, *samples]):
        for level in range(2):
            cells = [r["fits"][i]["levels"][level] for r in runs if len(r["fits"][i]["levels"]) > level]
            row: dict = {"fit_sample": sample, "level": level, "n_seeds": len(cells)}
            for key in ("nmi_level1", "nmi_level2", "diff_nmi_level1", "diff_nmi_level2"):
                values = [c[key] for c in cells if key in c]
                if values:
                    row[f"{key}_mean"] = statistics.mean(values)
                    row[f"{key}_median"] = statistics.median(values)
            summary.append(row)
    return {
        "dataset": f"20newsgroups train + test, stripped bodies ({len(texts)} with text)",
        "seeds": seeds,
        "samples": samples,
        "runs": runs,
        "summary": summary,
    }


# ----------------------------------------------------------------------------------------------- report
def markdown(result: dict) -> str:
    prov = result["provenance"]
    lines = [
        "# HNMFk fitted on a sample, every document placed (`fit_sample`)",
        "",
        f"`{prov['command']}`; commit {prov['git_commit']}; scale seed {prov['seed']}, NMI seeds "
        f"{prov['config']['nmi']['seeds']}; "
        f"{prov['machine']['usable_cpus']} usable CPU cores, "
        f"OMP_NUM_THREADS={prov['machine']['omp_num_threads']}, "
        f"load average at start {prov['machine']['load_average_at_start']}. {prov['note']}",
        "",
    ]
    if "scale" in result:
        s = result["scale"]
        p = s["passages"]
        lines += [
            f"## Scale: {p['n_passages']:,} passages of {WORDS} words "
            f"({', '.join(f'{k} {v:,}' for k, v in p['per_source'].items())}), "
            f"depth 2, defaults, fit_sample={s['fit_sample']}",
            "",
            "Fresh process per run; seconds = the whole `fit` (sample vocabulary and tree, then every "
            "passage vectorised and placed in chunks of 8,192). Prefixes of one seeded shuffle (seed 0) of "
            "the passages, so every size mixes the sources. RSS before fit: the child with all passages "
            "loaded (then the prefix kept).",
            "",
            markdown_table(
                [{**r, "kind": f"sample {r['fit_sample']}"} for r in s["runs"]]
                + [{**r, "kind": "full fit"} for r in s["full_fits"]],
                [
                    ("n_documents", "passages"),
                    ("kind", "fit"),
                    ("seconds", "seconds"),
                    ("rss_before_fit_mb", "RSS before fit MB"),
                    ("peak_rss_mb", "peak RSS MB"),
                    ("outputs_mb", "paths + memberships MB"),
                    ("topics_per_level", "topics per level"),
                    ("smallest_leaf", "smallest leaf"),
                    ("load_average_after", "load avg after"),
                ],
                formats={key: ".0f" for key in ("rss_before_fit_mb", "peak_rss_mb", "outputs_mb")}
                | {"seconds": ".1f"},
            ),
            "",
        ]
        last = s["runs"][-1]
        met = "met" if last["seconds"] < TARGET_SECONDS else "NOT met"
        lines += [f"Target < {TARGET_SECONDS:.0f} s at {last['n_documents']:,} passages: {met}.", ""]
    if "nmi" in result:
        q = result["nmi"]
        lines += [
            f"## NMI: {q['dataset']}, depth 2, defaults; full fit vs fit_sample, seeds {q['seeds']}",
            "",
        ]
        rows = []
        for run in q["runs"]:
            for fit in run["fits"]:
                for lv in fit["levels"]:
                    rows.append({"seed": run["seed"], "fit_sample": fit["fit_sample"] or "full", **lv})
        lines += [
            markdown_table(
                rows,
                [
                    ("seed", "seed"),
                    ("fit_sample", "fit"),
                    ("level", "tree level"),
                    ("n_topics", "topics"),
                    ("nmi_level1", "NMI level1 (7)"),
                    ("diff_nmi_level1", "sample - full"),
                    ("nmi_level2", "NMI level2 (16)"),
                    ("diff_nmi_level2", "sample - full"),
                ],
                digits=3,
            ),
            "",
            "Over seeds:",
            "",
            markdown_table(
                [{**r, "fit_sample": r["fit_sample"] or "full"} for r in q["summary"]],
                [
                    ("fit_sample", "fit"),
                    ("level", "tree level"),
                    ("nmi_level1_mean", "NMI level1 mean"),
                    ("diff_nmi_level1_mean", "diff mean"),
                    ("diff_nmi_level1_median", "diff median"),
                    ("nmi_level2_mean", "NMI level2 mean"),
                    ("diff_nmi_level2_mean", "diff mean"),
                    ("diff_nmi_level2_median", "diff median"),
                ],
                digits=3,
            ),
            "",
        ]
        roots = {
            str(sample or "full"): [r["fits"][i]["levels"][0]["n_topics"] for r in q["runs"]]
            for i, sample in enumerate([None, *q["samples"]])
        }
        lines += [
            "Level-0 topics per seed: " + "; ".join(f"{k} {v}" for k, v in roots.items()) + ".",
            "",
        ]
        for sample in q["samples"]:
            diffs = [
                abs(r["diff_nmi_level1_mean"])
                for r in q["summary"]
                if r["fit_sample"] == sample and "diff_nmi_level1_mean" in r
            ]
            met = "met" if diffs and max(diffs) <= TARGET_NMI else "NOT met"
            per_seed = [
                abs(lv["diff_nmi_level1"])
                for run in q["runs"]
                for fit in run["fits"]
                if fit["fit_sample"] == sample
                for lv in fit["levels"]
                if "diff_nmi_level1" in lv
            ]
            within = sum(d <= TARGET_NMI for d in per_seed)
            lines.append(
                f"- fit_sample={sample}: |mean diff| of NMI against level1 at every tree level "
                f"<= {TARGET_NMI}: {met} (largest {max(diffs):.3f}); per seed and level, {within} of "
                f"{len(per_seed)} differences within {TARGET_NMI} (largest {max(per_seed):.3f})."
            )
        lines.append("")
    if result.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in result["notes"]], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["all", "scale", "nmi"], default="all")
    parser.add_argument("--sample", type=int, default=10000, help="fit_sample of the scale part")
    parser.add_argument("--prefixes", type=int, nargs="*", default=[25000, 50000], help="smaller corpora")
    parser.add_argument(
        "--full-at", type=int, nargs="*", default=[], help="also fit these prefixes whole (slow)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the scale part")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the NMI part")
    parser.add_argument("--nmi-samples", type=int, nargs="+", default=[10000, 5000])
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per child run")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's notes")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        n, sample, seed = json.loads(args._child)
        print(json.dumps(_child_scale(n, sample, seed)))
        return
    if not SHARED_DATA_DIR.is_dir():
        sys.exit(f"data folder {SHARED_DATA_DIR} not found")
    config = {
        "part": args.part,
        "scale": {"fit_sample": args.sample, "prefixes": args.prefixes, "full_at": args.full_at},
        "nmi": {"fit_samples": args.nmi_samples, "seeds": args.seeds},
        "hnmfk": "depth=2, defaults otherwise",
        "passages": {"words": WORDS, "min_tail": MIN_TAIL},
    }
    # the seed of the scale part; the NMI part's seeds are in config["nmi"]["seeds"]
    result: dict = {"provenance": provenance(config, seed=args.seed), "notes": list(args.note)}
    if args.part in ("all", "scale"):
        result["scale"] = scale(args.sample, args.seed, args.prefixes, args.full_at, args.timeout)
    if args.part in ("all", "nmi"):
        result["nmi"] = nmi(args.seeds, args.nmi_samples)
    result["load_average_at_end"] = list(os.getloadavg())
    text = markdown(result)
    print(text)
    if not args.no_write:
        write_results("bench_hnmfk_sample", result, text)


if __name__ == "__main__":
    main()

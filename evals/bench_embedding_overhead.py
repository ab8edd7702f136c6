"""HEALEmbedding overhead over calling SentenceTransformer.encode directly.

Embeds the same documents (default: 2,000 SciFact abstracts from ../shared/data, or the bundled demo corpus
when absent) with the same model object and batch size, alternating the two in each repeat, and compares
median wall times. Target: overhead < 5%.

    python evals/bench_embedding_overhead.py [--n-docs 2000] [--repeats 3] [--max-length 128]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-docs", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text (same for both)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR / "scifact")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()

    import torch

    from heal_rag.datasets import load_beir, load_demo_dataset
    from heal_rag.integrations import HEALEmbedding

    torch.manual_seed(args.seed)
    if (args.data / "corpus.jsonl").exists():
        corpus, source = load_beir(args.data, split=None).corpus, str(args.data)
    else:
        corpus, source = load_demo_dataset(split=None).corpus, "bundled demo corpus"
    texts = [(f"{d.title}. {d.text}" if d.title else d.text) for d in corpus.values()][: args.n_docs]
    embed = HEALEmbedding(device="cpu", embed_batch_size=args.batch_size, max_length=args.max_length)
    model = embed.model

    def direct() -> np.ndarray:
        return model.encode(
            texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False
        )

    def ours() -> list:
        return embed.get_text_embedding_batch(texts)

    np.testing.assert_allclose(np.asarray(ours()[:5]), direct()[:5], atol=1e-5)  # same vectors
    times = {"SentenceTransformer.encode": [], "HEALEmbedding.get_text_embedding_batch": []}
    for repeat in range(args.repeats):
        order = [("SentenceTransformer.encode", direct), ("HEALEmbedding.get_text_embedding_batch", ours)]
        if repeat % 2:  # alternate the order so that drifting machine load hits both alike
            order.reverse()
        for name, fn in order:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            print(f"repeat {repeat}: {name} {times[name][-1]:.2f} s")
    med_direct = float(np.median(times["SentenceTransformer.encode"]))
    med_ours = float(np.median(times["HEALEmbedding.get_text_embedding_batch"]))
    overhead = med_ours / med_direct - 1.0
    print(f"median: encode {med_direct:.2f} s, HEALEmbedding {med_ours:.2f} s, overhead {overhead:+.1%}")
    report = {
        "benchmark": "bench_embedding_overhead",
        "command": "python evals/bench_embedding_overhead.py " + " ".join(sys.argv[1:]),
        "config": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "source": source,
            "n_texts": len(texts),
        },
        "seed": args.seed,
        "versions": {p: version(p) for p in ("sentence-transformers", "torch", "llama-index-core")}
        | {"python": platform.python_version()},
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "note": "shared 2-core machine (other jobs running): timings are noisy",
        },
        "git_commit": git_commit(),
        "times_s": times,
        "median_s": {
            "SentenceTransformer.encode": med_direct,
            "HEALEmbedding.get_text_embedding_batch": med_ours,
        },
        "overhead": overhead,
        "target": "< 0.05",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "bench_embedding_overhead.json", report)
    atomic_write_text(
        args.out / "bench_embedding_overhead.md",
        "# HEALEmbedding overhead vs SentenceTransformer.encode\n\n"
        f"`{report['command']}`: {len(texts)} texts ({source}), batch {args.batch_size}, max_length "
        f"{args.max_length}, median of {args.repeats} alternating repeats; shared 2-core machine "
        "(noisy); commit "
        f"{report['git_commit']}.\n\n| method | median s |\n|---|---|\n"
        f"| SentenceTransformer.encode | {med_direct:.2f} |\n| HEALEmbedding.get_text_embedding_batch "
        f"| {med_ours:.2f} |\n"
        f"\nOverhead: **{overhead:+.1%}** (target < 5%).\n",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

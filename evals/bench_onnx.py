"""Encoding throughput and retrieval quality: torch fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8.

For each model (``base`` = the bundled all-MiniLM-L6-v2, ``heal`` = a HEAL model folder), a copy is exported
with ``heal_rag.export_onnx`` (fp32 + int8), then

- **throughput**: the same SciFact abstracts (``--n-docs``, ``--max-length`` tokens, batch 32) are encoded
  by the three backends in turn, ``--repeats`` rounds interleaved so that load on a shared machine hits
  them alike; the median docs/s and the ratio to torch fp32 are reported;
- **quality**: nDCG@10 (exact search, :func:`heal_rag.evaluation.evaluate_models`, the model's own token
  limit) on SciFact test and MED for each backend, with the paired difference to torch.

Target (issue 10): int8 >= 2.5x the docs/s of torch fp32 on 2 cores, nDCG@10 within 0.005 of fp32.

    python evals/bench_onnx.py                       # base + the bench_rag HEAL model, SciFact + MED
    python evals/bench_onnx.py --heal-model runs/heal-scifact --datasets scifact
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO_ROOT,
    SHARED_DATA_DIR,
    exported_model_copy,
    markdown_table,
    provenance,
    write_results,
)

from heal_rag.backends import ONNX_MODEL_FILE  # noqa: E402

WORK_DIR = REPO_ROOT / "evals" / "cache" / "bench_onnx"
EMBEDDING_CACHE = REPO_ROOT / "evals" / "cache" / "embeddings"
DATASETS = {"scifact": SHARED_DATA_DIR / "scifact", "med": SHARED_DATA_DIR / "classic_ir" / "med"}
BACKENDS = ("torch-fp32", "onnx-fp32", "onnx-int8")


def default_heal_model() -> Path | None:
    """The HEAL model ``bench_rag`` trained (the package defaults on the bundled corpus), if cached."""
    found = sorted((REPO_ROOT / "evals" / "cache" / "bench_rag" / "models").glob("heal-*"))
    return found[-1] if found else None


def load_backend(folder: Path, backend: str, max_length: int | None):
    from heal_rag.backends import load_onnx_sentence_transformer
    from heal_rag.evaluation.retrieval import load_model

    if backend == "torch-fp32":
        model = load_model(str(folder), device="cpu")
    else:
        model = load_onnx_sentence_transformer(
            folder, file_name=None if backend == "onnx-int8" else ONNX_MODEL_FILE
        )
    if max_length is not None:
        model.max_seq_length = max_length
    return model


def throughput(folder: Path, texts: list[str], max_length: int, repeats: int) -> dict[str, dict]:
    models = {backend: load_backend(folder, backend, max_length) for backend in BACKENDS}
    for model in models.values():
        model.encode(texts[:32], batch_size=32)  # warm-up: first-call allocations, thread pools
    seconds: dict[str, list[float]] = {backend: [] for backend in BACKENDS}
    for _ in range(repeats):
        for backend, model in models.items():
            start = time.perf_counter()
            model.encode(texts, batch_size=32, normalize_embeddings=True)
            seconds[backend].append(time.perf_counter() - start)
    torch_rate = len(texts) / statistics.median(seconds["torch-fp32"])
    out = {}
    for backend, times in seconds.items():
        rate = len(texts) / statistics.median(times)
        out[backend] = {"docs_per_s": rate, "ratio_to_torch": rate / torch_rate, "seconds": times}
    return out


def quality(folder: Path, dataset_dir: Path) -> dict[str, dict]:
    """nDCG@10 per backend; torch and int8 embeddings are cached (per backend fingerprint) across runs."""
    from heal_rag.datasets import load_beir
    from heal_rag.evaluation.metrics import per_query_metrics
    from heal_rag.evaluation.retrieval import dense_run
    from heal_rag.evaluation.stats import paired_test

    dataset = load_beir(dataset_dir, split="test")
    scores: dict[str, dict[str, float]] = {}
    results: dict[str, dict] = {}
    for backend in BACKENDS:
        start = time.perf_counter()
        if backend == "onnx-fp32":
            if dataset_dir.name == "scifact":
                continue  # fp32 ONNX equals torch (checked at export and on MED): saves minutes
            model = load_backend(folder, backend, max_length=None)
            run = dense_run(model, dataset, name=backend)  # a loaded model: not cached
        else:
            engine = "torch" if backend == "torch-fp32" else "onnx"
            run = dense_run(str(folder), dataset, cache_dir=EMBEDDING_CACHE, backend=engine, name=backend)
        per_query = per_query_metrics(dataset.qrels, run.run, ["ndcg@10"])["ndcg@10"]
        scores[backend] = per_query
        results[backend] = {
            "ndcg@10": statistics.fmean(per_query.values()),
            "seconds": round(time.perf_counter() - start, 1),
            "cache": run.cache,
        }
    reference = scores["torch-fp32"]
    queries = sorted(reference)
    for backend, per_query in scores.items():
        if backend != "torch-fp32":
            test = paired_test([reference[q] for q in queries], [per_query[q] for q in queries], seed=0)
            results[backend]["diff_to_torch"] = {
                "diff": test.diff,
                "low": test.low,
                "high": test.high,
                "p": test.p_value,
            }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--heal-model", type=Path, default=None, help="HEAL model folder (default: bench_rag's)"
    )
    parser.add_argument("--datasets", nargs="+", default=sorted(DATASETS), choices=sorted(DATASETS))
    parser.add_argument("--n-docs", type=int, default=512, help="documents per throughput round")
    parser.add_argument(
        "--max-length", type=int, default=128, help="tokens per text in the throughput rounds"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--name", default="bench_onnx")
    args = parser.parse_args()

    from heal_rag._models import default_model_path

    heal = args.heal_model or default_heal_model()
    sources = {"base": Path(default_model_path())}
    if heal is not None:
        sources["heal"] = heal
    else:
        print("no HEAL model found (run evals/bench_rag.py or pass --heal-model); base only")
    with open(DATASETS["scifact"] / "corpus.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for _, line in zip(range(args.n_docs), handle, strict=False)]
    texts = [f"{row.get('title', '')} {row['text']}".strip() for row in rows]

    rows_out, results = [], {}
    for name, source in sources.items():
        folder = exported_model_copy(source, WORK_DIR / name)
        entry = {
            "source": str(source),
            "throughput": throughput(folder, texts, args.max_length, args.repeats),
        }
        if not args.skip_quality:
            entry["quality"] = {ds: quality(folder, DATASETS[ds]) for ds in args.datasets}
        results[name] = entry
        for backend in BACKENDS:
            row = {"model": name, "backend": backend, **entry["throughput"][backend]}
            for ds, values in entry.get("quality", {}).items():
                if backend in values:
                    row[f"ndcg_{ds}"] = values[backend]["ndcg@10"]
                    diff = values[backend].get("diff_to_torch")
                    if diff is not None:
                        row[f"diff_{ds}"] = diff["diff"]
            rows_out.append(row)
        print(json.dumps({name: entry["throughput"]}, indent=1, default=str))

    columns = [
        ("model", "model"),
        ("backend", "backend"),
        ("docs_per_s", "docs/s"),
        ("ratio_to_torch", "× torch"),
    ]
    for ds in args.datasets if not args.skip_quality else []:
        columns += [(f"ndcg_{ds}", f"{ds} nDCG@10"), (f"diff_{ds}", f"Δ {ds}")]
    table = markdown_table(rows_out, columns, formats={"docs_per_s": ".1f", "ratio_to_torch": ".2f"})
    markdown = (
        f"# ONNX Runtime vs torch encoding ({args.n_docs} SciFact abstracts at {args.max_length} tokens, "
        f"median of {args.repeats} interleaved rounds; nDCG@10 at the model's own token limit)\n\n{table}\n"
    )
    payload = {"results": results, "provenance": provenance(vars(args) | {"heal_model": heal}, seed=0)}
    json_path, _ = write_results(args.name, payload, markdown)
    print(markdown)
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

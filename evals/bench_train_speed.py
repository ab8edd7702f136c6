"""Training speed on CPU: fp32 vs bf16 autocast, same pairs, seed, batches and steps; plus the padding share.

Runs ``HEALFinetuneEngine`` (HEAL defaults, SciFact train claims, the study's cached hierarchy, batch 32 at
``--max-seq-length`` tokens) for ``--steps`` optimiser steps per configuration, the configurations
interleaved over ``--repeats`` rounds so that load on a shared machine hits them alike, and reports the
median samples/s and the ratio to fp32. It also measures how many of the tokens in the trainer's batches
are padding: the most that length-grouped batches (or any padding trick) could save.

Target (issue 10): >= 1.5x samples/s at an unchanged dev nDCG@10 (check with
``python evals/study_heal.py dev --mixed-precision bf16 --tag bf16 ...``).

    python evals/bench_train_speed.py [--steps 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import markdown_table, provenance, write_results  # noqa: E402
from study_heal import hierarchy_for, scifact  # noqa: E402

CONFIGURATIONS = {"fp32": None, "bf16": "bf16"}


def train_once(train_all, train, hierarchy, mixed_precision, args) -> dict:
    from heal_rag import HEALFinetuneEngine

    with tempfile.TemporaryDirectory() as folder:
        engine = HEALFinetuneEngine(
            train_all,
            output_dir=Path(folder) / "model",
            hierarchy=hierarchy,
            queries=train,
            max_steps=args.steps,
            batch_size=32,
            max_seq_length=args.max_seq_length,
            hard_negatives="none",  # mining happens once before training: not what bf16 changes
            mixed_precision=mixed_precision,
            seed=0,
            show_progress=False,
        )
        engine.finetune()
        metrics = engine.metrics_
    return {"samples_per_second": metrics["samples_per_second"], "train_s": metrics["training_wall_time_s"]}


def padding_share(train, max_seq_length: int, n_batches: int = 20) -> float:
    """Share of padding tokens in batches of 32 (query, document) pairs, each side padded to its longest."""
    from heal_rag._models import load_sentence_transformer

    tokenizer = load_sentence_transformer(None, device="cpu").tokenizer
    pairs = [(train.queries[q], train.corpus[d].full_text) for q, docs in train.qrels.items() for d in docs]
    real = padded = 0
    for start in range(0, min(len(pairs), 32 * n_batches), 32):
        for side in zip(*pairs[start : start + 32], strict=True):
            lengths = [
                len(ids)
                for ids in tokenizer(list(side), truncation=True, max_length=max_seq_length)["input_ids"]
            ]
            real += sum(lengths)
            padded += max(lengths) * len(lengths)
    return 1 - real / padded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--name", default="bench_train_speed")
    args = parser.parse_args()

    train_all, train, _ = scifact()
    hierarchy = hierarchy_for(train_all, "scifact")
    rates: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
    for round_ in range(args.repeats):
        for name, mixed_precision in CONFIGURATIONS.items():
            result = train_once(train_all, train, hierarchy, mixed_precision, args)
            rates[name].append(result["samples_per_second"])
            print(f"round {round_}: {name} {result['samples_per_second']:.2f} samples/s")
    base = statistics.median(rates["fp32"])
    rows = [
        {
            "configuration": name,
            "samples_per_s": statistics.median(values),
            "ratio": statistics.median(values) / base,
        }
        for name, values in rates.items()
    ]
    share = padding_share(train, args.max_seq_length)
    table = markdown_table(
        rows,
        [("configuration", "configuration"), ("samples_per_s", "samples/s"), ("ratio", "× fp32")],
        formats={"samples_per_s": ".2f", "ratio": ".2f"},
    )
    markdown = (
        f"# CPU training speed ({args.steps} steps of batch 32 at {args.max_seq_length} tokens, median of "
        f"{args.repeats} interleaved rounds)\n\n{table}\n\nPadding share of the batches' tokens: {share:.1%} "
        "(the most length grouping could save).\n"
    )
    payload = {
        "rates": rates,
        "rows": rows,
        "padding_share": share,
        "provenance": provenance(vars(args), seed=0),
    }
    json_path, _ = write_results(args.name, payload, markdown)
    print(markdown)
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

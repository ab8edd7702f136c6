"""The demo's comparison, recorded: ``heal-rag demo``'s pipeline with its defaults, figures to evals/results.

Runs :func:`heal_rag.pipeline.run_pipeline` exactly as ``heal-rag demo`` does (bundled SciFact-800 corpus,
its 809 train claims for training, its 300 test claims for evaluation, 20 steps of batch 32 at 128 tokens,
seed 0), then writes every configuration's nDCG@10 / MRR@10 / Recall@10 with bootstrap CIs, the paired
tests on nDCG@10, the verdict line and the wall time per stage. The bundled test claims are SciFact test
claims: nothing is tuned here, the figures only describe the demo's defaults.

    python evals/bench_demo.py            # output folder evals/cache/demo (resumes an earlier run)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO_ROOT, markdown_table, provenance, write_results  # noqa: E402

from heal_rag.evaluation.report import headline  # noqa: E402
from heal_rag.pipeline import DEMO_DEFAULTS, run_pipeline  # noqa: E402

METRICS = ("ndcg@10", "mrr@10", "recall@10")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "evals" / "cache" / "demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restart", action="store_true", help="redo every stage (timings of a fresh run)")
    parser.add_argument("--name", default="bench_demo")
    args = parser.parse_args()

    result = run_pipeline(out_dir=args.out, seed=args.seed, restart=args.restart, show_progress=False)
    evaluation = result.evaluation
    rows = []
    for name in evaluation.configurations:
        row = {"configuration": name}
        for metric in METRICS:
            ci = evaluation.intervals[name][metric]
            row[metric] = ci.mean
            row[f"{metric} CI"] = f"[{ci.low:.3f}, {ci.high:.3f}]"
        rows.append(row)
    tests = [c.to_dict() for c in evaluation.comparisons if c.metric == "ndcg@10"]
    payload = {
        "configurations": {r["configuration"]: {m: r[m] for m in METRICS} for r in rows},
        "comparisons_ndcg@10": tests,
        "headline": headline(evaluation),
        "timings_s": result.timings,
        "reused": result.reused,
        "notes": result.notes,
        "provenance": provenance(
            {"pipeline": "run_pipeline() with the demo defaults", **DEMO_DEFAULTS}, seed=args.seed
        ),
    }
    columns = [("configuration", "configuration")]
    for metric in METRICS:
        columns += [(metric, metric), (f"{metric} CI", "95% CI")]
    test_rows = [
        {
            "pair": f"{t['b']} − {t['a']}",
            "diff": t["diff"],
            "ci": f"[{t['low']:.3f}, {t['high']:.3f}]",
            "p": t["p_value"],
            "p_holm": t["p_holm"],
        }
        for t in tests
    ]
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items())
    markdown = "\n".join(
        [
            "# The demo's comparison (bundled SciFact-800, 300 test claims)",
            "",
            f"Command: `{payload['provenance']['command']}` · commit {payload['provenance']['git_commit']} · "
            f"seed {args.seed}",
            "",
            markdown_table(rows, columns, digits=3),
            "",
            f"**{payload['headline']}.**",
            "",
            "Paired tests on nDCG@10 (permutation p; Holm over the metrics of each pair):",
            "",
            markdown_table(
                test_rows,
                [
                    ("pair", "pair"),
                    ("diff", "difference"),
                    ("ci", "95% CI"),
                    ("p", "p"),
                    ("p_holm", "p (Holm)"),
                ],
                digits=3,
            ),
            "",
            f"Wall time per stage: {stages}"
            + (f" (reused: {', '.join(result.reused)})" if result.reused else ""),
        ]
    )
    write_results(args.name, payload, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

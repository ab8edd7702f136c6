"""Check the demo's report as a newcomer would read it: three files, five configurations, a verdict.

python .ci/check_demo_report.py heal_rag_out
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

REQUIRED = ("bm25", "base", "flat", "heal", "heal+bm25")

out = Path(sys.argv[1] if len(sys.argv) > 1 else "heal_rag_out")
missing = [name for name in ("report.md", "report.html", "report.json") if not (out / name).is_file()]
if missing:
    raise SystemExit(f"the demo did not write {missing} in {out}")
report = json.loads((out / "report.json").read_text(encoding="utf-8"))
configurations = report["configurations"]
absent = [name for name in REQUIRED if name not in configurations]
if absent:
    raise SystemExit(f"report.json lacks the configurations {absent}; it has {sorted(configurations)}")
for name in REQUIRED:
    value = configurations[name].get("ndcg@10")
    if not isinstance(value, float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise SystemExit(f"{name}: nDCG@10 is {value!r}")
if not report.get("headline") or not report.get("topics"):
    raise SystemExit("report.json has no headline or no per-topic view")
print("demo report:", ", ".join(f"{n} {configurations[n]['ndcg@10']:.3f}" for n in REQUIRED))
print(report["headline"])

"""Reports of a RAG evaluation: Markdown, a self-contained HTML page, JSON, and a terminal summary.

``write_report(result, out_dir)`` writes ``report.md``, ``report.html`` and ``report.json`` atomically. The
HTML page has no external resources: plots are matplotlib PNGs embedded as base64, styles are inline.

JSON layout (NaN becomes ``null``)::

    {"configurations": {name: {metric: mean, ...}, ...},
     "intervals": {name: {metric: {"mean", "low", "high", "n", "n_missing", "confidence"}}},
     "comparisons": [{"metric", "a", "b", "diff", "low", "high", "p_value", "p_holm", ...}, ...],
     "counts": {name: {"questions", "retrieval_failures", "generation_failures", "judge_failures", "nan"}},
     "headline": "Best ndcg@10: ... over ... (runner-up; paired permutation p = ...)" | null,
     "references": [name, ...],  # reference conditions (gold, no-context), never ranked best
     "topics": [{"level", "topic", "terms", "n_documents", "n_questions", "means": {name: x}}] | null,
     "notes": [...], "config": {...}, "versions": {...}, "hierarchy": {...} | null,
     "question_ids": [...], "per_question": {name: {metric: [score | null, ...]}}}

Example:
    >>> paths = write_report(result, "runs/rag")  # doctest: +SKIP
    >>> print(summary_table(result))  # doctest: +SKIP

"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib.metadata
import io
import json
import math
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heal_rag._io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from heal_rag.evaluation.rag import RAGEvaluationResult

__all__ = [
    "package_versions",
    "report_dict",
    "to_markdown",
    "to_html",
    "headline",
    "summary_table",
    "write_report",
]

_PACKAGES = (
    "heal-rag",
    "ragas",
    "llama-index-core",
    "sentence-transformers",
    "torch",
    "ranx",
    "numpy",
    "scipy",
    "matplotlib",
    "xllamacpp",
)


def package_versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages that shape the results."""
    versions = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
    }
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _clean(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def _hierarchy_dict(hierarchy: Any) -> dict[str, Any] | None:
    if hierarchy is None:
        return None
    tree = hierarchy.format_tree() if hasattr(hierarchy, "format_tree") else str(hierarchy)
    out: dict[str, Any] = {"tree": tree}
    for attr in ("n_levels", "n_documents", "fingerprint"):
        if hasattr(hierarchy, attr):
            out[attr] = getattr(hierarchy, attr)
    return out


def report_dict(
    result: RAGEvaluationResult,
    *,
    hierarchy: Any = None,
    versions: Mapping[str, str] | None = None,
    topics: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Build the machine-readable report (see the module docstring for the layout)."""
    return _clean(
        {
            "configurations": result.summary,
            "headline": headline(result),
            "references": result.references,
            "topics": topics,
            "intervals": {
                c: {m: ci.to_dict() for m, ci in per.items()} for c, per in result.intervals.items()
            },
            "comparisons": [c.to_dict() for c in result.comparisons],
            "counts": result.counts,
            "notes": result.notes,
            "config": result.config,
            "versions": dict(versions) if versions is not None else package_versions(),
            "hierarchy": _hierarchy_dict(hierarchy),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": result.checkpoint,
            "question_ids": result.question_ids,
            "per_question": result.per_question,
        }
    )


# ------------------------------------------------------------------------------------------------------------
# formatting helpers
# ------------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def _fmt_p(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _higher_is_better(metric: str) -> bool:
    from heal_rag.evaluation.rag import METRIC_INFO

    return METRIC_INFO.get(metric, (True, ""))[0]


def _best(result: RAGEvaluationResult, metric: str) -> str | None:
    contenders = [c for c in result.configurations if c not in result.references]
    values = {c: result.summary[c].get(metric, math.nan) for c in contenders}
    finite = {c: v for c, v in values.items() if v is not None and math.isfinite(v)}
    if len(finite) < 2 or len(set(finite.values())) == 1:
        return None
    pick = max if _higher_is_better(metric) else min
    return pick(finite, key=finite.__getitem__)


def _metric_rows(result: RAGEvaluationResult) -> list[tuple[str, dict[str, str], str | None]]:
    rows = []
    for metric in result.metrics:
        cells = {}
        for config in result.configurations:
            ci = result.intervals[config].get(metric)
            if ci is None:
                cells[config] = "n/a"
            elif ci.n == 0:
                cells[config] = "–"
            else:
                cells[config] = f"{_fmt(ci.mean)} [{_fmt(ci.low)}, {_fmt(ci.high)}]"
        rows.append((metric, cells, _best(result, metric)))
    return rows


def _arrow(metric: str) -> str:
    return "↑" if _higher_is_better(metric) else "↓"


def headline(result: RAGEvaluationResult, metric: str = "ndcg@10") -> str | None:
    """One line: which configuration won on ``metric``, by how much over the runner-up, with the p-value.

    Example:
        >>> headline(result)  # doctest: +SKIP
        'Best ndcg@10: heal+bm25 0.842, +0.012 over bm25 (runner-up; paired permutation p = 0.031)'

    """
    from heal_rag.evaluation.rag import ranked_configurations

    order = ranked_configurations(result.summary, metric, exclude=result.references)
    if len(order) < 2:
        return None
    winner, runner_up = order[0], order[1]
    finite = {c: result.summary[c][metric] for c in (winner, runner_up)}
    if finite[winner] == finite[runner_up]:
        return f"No winner on {metric}: {winner} and {runner_up} tie at {_fmt(finite[winner])}."
    test = next(
        (c for c in result.comparisons if c.metric == metric and {c.a, c.b} == {winner, runner_up}), None
    )
    p_text = f"; paired permutation p = {_fmt_p(test.p_value)}" if test is not None else ""
    return (
        f"Best {metric}: {winner} {_fmt(finite[winner])}, {finite[winner] - finite[runner_up]:+.3f} over "
        f"{runner_up} (runner-up{p_text})"
    )


def _topic_pair(configs: list[str]) -> tuple[str, str, str | None]:
    """Return the (reference, focus, also) configurations of the per-topic view: base, heal, flat."""
    reference = "base" if "base" in configs else configs[0]
    focus = "heal" if "heal" in configs else configs[-1]
    also = "flat" if "flat" in configs and "flat" not in (reference, focus) else None
    return reference, focus, also


def _topic_label(row: Mapping[str, Any], *, count: bool = True) -> str:
    label = f"L{row['level']} T{row['topic']}: {', '.join(row['terms'])}"
    return f"{label} (n={row['n_questions']})" if count else label


# ------------------------------------------------------------------------------------------------------------
# Markdown and terminal
# ------------------------------------------------------------------------------------------------------------


def to_markdown(
    result: RAGEvaluationResult,
    *,
    hierarchy: Any = None,
    versions: Mapping[str, str] | None = None,
    topics: list[dict[str, Any]] | None = None,
) -> str:
    """Render the report as GitHub-flavoured Markdown."""
    versions = dict(versions) if versions is not None else package_versions()
    configs = result.configurations
    confidence = int(round(100 * _confidence(result)))
    lines = [
        "# RAG evaluation",
        "",
        f"{len(result.question_ids)} questions from `{result.config.get('question_set', '')}`; "
        f"configurations: {', '.join(f'`{c}`' for c in configs)}. Means with {confidence}% bootstrap CIs.",
        "",
        "| metric | " + " | ".join(configs) + " |",
        "|---|" + "---|" * len(configs),
    ]
    for metric, cells, best in _metric_rows(result):
        row = [f"**{cells[c]}**" if c == best else cells[c] for c in configs]
        lines.append(f"| {metric} {_arrow(metric)} | " + " | ".join(row) + " |")
    line = headline(result)
    if line:
        lines += ["", f"**{line}.**"]
    if result.comparisons:
        lines += [
            "",
            "## Paired comparisons (difference = second − first)",
            "",
            "| pair | metric | difference | CI | p (permutation) | p (Holm) | p (Wilcoxon) | n |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in result.comparisons:
            mark = " *" if c.significant else ""
            lines.append(
                f"| {c.b} − {c.a} | {c.metric} | {_fmt(c.diff)}{mark} | [{_fmt(c.low)}, {_fmt(c.high)}] | "
                f"{_fmt_p(c.p_value)} | {_fmt_p(c.p_holm)} | {_fmt_p(c.p_wilcoxon)} | {c.n} |"
            )
        lines += ["", "`*`: Holm-adjusted p < 0.05 over the metrics of the pair."]
    lines += [
        "",
        "## Failures and missing scores",
        "",
        "| configuration | failures | NaN per metric |",
        "|---|---|---|",
    ]
    for config in configs:
        counts = result.counts[config]
        lines.append(f"| {config} | {_failure_text(counts)} | {_nan_text(counts)} |")
    if topics:
        lines += ["", "## nDCG@10 by topic", "", "| topic | questions | " + " | ".join(configs) + " |"]
        lines.append("|---|---|" + "---|" * len(configs))
        for row in topics:
            cells = [_fmt(row["means"].get(c)) for c in configs]
            lines.append(
                f"| {_topic_label(row, count=False)} | {row['n_questions']} | " + " | ".join(cells) + " |"
            )
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    if hierarchy is not None:
        lines += ["", "## Topic tree", "", "```", _hierarchy_dict(hierarchy)["tree"], "```"]  # type: ignore[index]
    lines += [
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(_clean(result.config), indent=2),
        "```",
        "",
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
    ]
    return "\n".join(lines)


def _confidence(result: RAGEvaluationResult) -> float:
    for per in result.intervals.values():
        for ci in per.values():
            return ci.confidence
    return 0.95


def _failure_text(counts: Mapping[str, Any]) -> str:
    parts = [
        f"retrieval {counts.get('retrieval_failures', 0)}",
        f"generation {counts.get('generation_failures', 0)}",
    ]
    judge = counts.get("judge_failures") or {}
    if judge:
        parts.append("judge " + ", ".join(f"{m} {n}" for m, n in judge.items()))
    return "; ".join(parts)


def _nan_text(counts: Mapping[str, Any]) -> str:
    nan = {m: n for m, n in (counts.get("nan") or {}).items() if n}
    return ", ".join(f"{m} {n}" for m, n in nan.items()) if nan else "none"


def summary_table(result: RAGEvaluationResult) -> str:
    """Render a short plain-text table for the terminal: means per configuration, best marked ``*``."""
    configs = result.configurations
    rows = [["metric", *configs]]
    for metric in result.metrics:
        best = _best(result, metric)
        row = [f"{metric} {_arrow(metric)}"]
        for config in configs:
            value = _fmt(result.summary[config].get(metric))
            row.append(value + ("*" if config == best else ""))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(r))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    line = headline(result)
    if line:
        lines.append(line)
    # the paired tests on the headline metric, significant or not (the report has every metric)
    for comparison in result.comparisons:
        if comparison.metric == "ndcg@10":
            mark = " *" if comparison.significant else ""
            lines.append(
                f"  {comparison.b} vs {comparison.a}: ndcg@10 {comparison.diff:+.3f} "
                f"[{_fmt(comparison.low)}, {_fmt(comparison.high)}], p = {_fmt_p(comparison.p_value)}{mark}"
            )
    if any(c.metric == "ndcg@10" for c in result.comparisons):
        lines.append("  (* Holm-adjusted p < 0.05 over the metrics of the pair)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# plots and HTML
# ------------------------------------------------------------------------------------------------------------

# seaborn's "deep" palette: ten distinguishable colours
_COLORS = (
    "#4C72B0",
    "#DD8452",
    "#55A868",
    "#C44E52",
    "#8172B3",
    "#937860",
    "#DA8BC3",
    "#8C8C8C",
    "#CCB974",
    "#64B5CD",
)


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _plots(result: RAGEvaluationResult) -> list[tuple[str, str]]:
    """(caption, base64 PNG) pairs; empty when matplotlib is missing."""
    import numpy as np

    plt = _pyplot()
    if plt is None:
        return []
    plots: list[tuple[str, str]] = []
    configs = result.configurations
    metrics = [
        m
        for m in result.metrics
        if any(result.intervals[c].get(m) and result.intervals[c][m].n for c in configs)
    ]
    if metrics:
        fig, ax = plt.subplots(figsize=(7.5, min(14.0, 0.3 * len(metrics) * max(1, len(configs)) + 1.2)))
        height = 0.8 / len(configs)
        y = np.arange(len(metrics))
        for i, config in enumerate(configs):
            means, lows, highs = [], [], []
            for m in metrics:
                ci = result.intervals[config].get(m)
                mean = ci.mean if ci is not None and ci.n else np.nan
                means.append(mean)
                lows.append(mean - ci.low if ci is not None and ci.n else 0.0)
                highs.append(ci.high - mean if ci is not None and ci.n else 0.0)
            ax.barh(
                y + (i - (len(configs) - 1) / 2) * height,
                means,
                height=height * 0.92,
                xerr=[lows, highs],
                color=_COLORS[i % len(_COLORS)],
                error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "#333333"},
                label=config,
            )
        ax.set_yticks(y, [f"{m} {_arrow(m)}" for m in metrics])
        ax.invert_yaxis()
        ax.set_xlim(0, max(1.0, ax.get_xlim()[1]))
        ax.set_xlabel("mean score (bars: bootstrap CI)")
        ax.grid(axis="x", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        # below the axes, never over the bars
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(4, len(configs)), frameon=False)
        plots.append(("Metric means per configuration", _png(fig)))
    finite = [c for c in result.comparisons if c.n and math.isfinite(c.diff)]
    if finite:
        fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(finite) + 1.2))
        y = np.arange(len(finite))
        colors = ["#2E7D32" if (c.diff > 0) == _higher_is_better(c.metric) else "#C62828" for c in finite]
        colors = [col if c.significant else "#9E9E9E" for col, c in zip(colors, finite, strict=True)]
        ax.errorbar(
            [c.diff for c in finite],
            y,
            xerr=[[c.diff - c.low for c in finite], [c.high - c.diff for c in finite]],
            fmt="none",
            ecolor="#555555",
            capsize=3,
        )
        ax.scatter([c.diff for c in finite], y, c=colors, zorder=3, s=36)
        ax.axvline(0, color="#333333", lw=0.8)
        ax.set_yticks(y, [f"{c.metric}  ({c.b} − {c.a})" for c in finite])
        ax.invert_yaxis()
        ax.set_xlabel("paired difference with CI (green: better, red: worse, grey: not significant)")
        ax.grid(axis="x", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        plots.append(("Paired differences between configurations", _png(fig)))
    return plots


def _topic_plot(topics: list[dict[str, Any]], configs: list[str]) -> tuple[str, str] | None:
    """Sorted bar chart of the focus-minus-reference nDCG@10 per topic (one panel per level)."""
    from heal_rag.evaluation.topics import difference

    plt = _pyplot()
    if not topics or len(configs) < 2 or plt is None:
        return None
    reference, focus, also = _topic_pair(configs)
    levels = sorted({row["level"] for row in topics})
    panels = [
        sorted(
            (r for r in topics if r["level"] == level and math.isfinite(difference(r, reference, focus))),
            key=lambda r: difference(r, reference, focus),
        )
        for level in levels
    ]
    heights = [max(1, len(p)) for p in panels]
    fig, axes = plt.subplots(
        len(levels),
        1,
        figsize=(8.0, min(30.0, 0.26 * sum(heights) + 1.4 * len(levels))),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, level, rows in zip(axes[:, 0], levels, panels, strict=True):
        diffs = [difference(r, reference, focus) for r in rows]
        y = list(range(len(rows)))
        ax.barh(y, diffs, color=["#2E7D32" if d > 0 else "#C62828" for d in diffs], height=0.7)
        if also is not None:
            ax.scatter(
                [difference(r, reference, also) for r in rows],
                y,
                marker="D",
                s=16,
                color="#222222",
                zorder=3,
                label=f"{also} − {reference}",
            )
            ax.legend(loc="lower right", frameon=True, fontsize=8)
        ax.axvline(0, color="#333333", lw=0.8)
        ax.set_yticks(y, [_topic_label(r) for r in rows], fontsize=8)
        ax.set_title(f"level {level}: {focus} − {reference} nDCG@10 per topic", fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1, 0].set_xlabel(
        f"difference in mean nDCG@10 over the topic's questions (bars: {focus} − {reference})"
    )
    fig.tight_layout()
    caption = (
        f"Where retrieval changes, by topic: {focus} − {reference} nDCG@10 over the questions whose relevant "
        "document lies in each topic (green: better, red: worse)"
        + (f"; diamonds: {also} − {reference}" if also else "")
        + ". Topics with few questions are noisy."
    )
    return caption, _png(fig)


_CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
background:#f6f7f9;color:#1d2330;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:28px 24px 48px}
h1{font-size:1.6rem;margin:0 0 4px} h2{font-size:1.15rem;margin:28px 0 10px;border-bottom:1px solid #dde1e7;
padding-bottom:4px} .sub{color:#5b6577;margin:0 0 18px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:18px;align-items:start}
.stack{display:grid;grid-template-columns:1fr;gap:18px}
.card{background:#fff;border:1px solid #e2e6ec;border-radius:10px;padding:14px 16px;box-shadow:0 1px 2px
#0000000a;
overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem} th,td{padding:6px 9px;border-bottom:1px solid
#edf0f4;
text-align:right;white-space:nowrap} th:first-child,td:first-child{text-align:left}
thead th{background:#f0f3f7;font-weight:600} td.best{font-weight:700;color:#14532d;background:#ecfdf3}
td.sig{font-weight:700} .up{color:#15803d} .down{color:#b91c1c} .muted{color:#7b8494}
img{max-width:100%;height:auto} pre{background:#0f172a;color:#e2e8f0;padding:12px;border-radius:8px;
overflow:auto;font-size:.8rem;max-height:420px} ul.notes li{margin:3px 0}
.pill{display:inline-block;background:#e8eefc;color:#1e3a8a;border-radius:999px;padding:1px 9px;margin:0
4px 4px 0;
font-size:.8rem} details summary{cursor:pointer;font-weight:600}
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def to_html(
    result: RAGEvaluationResult,
    *,
    hierarchy: Any = None,
    versions: Mapping[str, str] | None = None,
    topics: list[dict[str, Any]] | None = None,
) -> str:
    """Render a self-contained HTML page (inline CSS, base64 PNG plots, no external resources)."""
    versions = dict(versions) if versions is not None else package_versions()
    configs = result.configurations
    confidence = int(round(100 * _confidence(result)))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>RAG evaluation – {_e(', '.join(configs))}</title><style>{_CSS}</style></head><body><main>",
        "<h1>RAG evaluation</h1>",
        f"<p class='sub'>{len(result.question_ids)} questions from "
        f"<b>{_e(result.config.get('question_set', ''))}</b>"
        f" · means with {confidence}% bootstrap confidence intervals · "
        + "".join(f"<span class='pill'>{_e(c)}</span>" for c in configs)
        + "</p>",
    ]
    # metric table
    table = ["<table id='metrics'><thead><tr><th>metric</th>"]
    table += [f"<th>{_e(c)}</th>" for c in configs] + ["</tr></thead><tbody>"]
    from heal_rag.evaluation.rag import METRIC_INFO

    for metric, cells, best in _metric_rows(result):
        tip = METRIC_INFO.get(metric, (True, ""))[1]
        table.append(f"<tr><td title='{_e(tip)}'>{_e(metric)} {_arrow(metric)}</td>")
        table += [f"<td class='{'best' if c == best else ''}'>{_e(cells[c])}</td>" for c in configs]
        table.append("</tr>")
    table.append("</tbody></table>")
    # comparisons table
    comp = [
        "<table id='comparisons'><thead><tr><th>pair</th><th>metric</th><th>difference</th><th>CI</th>"
        "<th>p</th><th>p (Holm)</th><th>p (Wilcoxon)</th><th>n</th></tr></thead><tbody>"
    ]
    for c in result.comparisons:
        better = math.isfinite(c.diff) and c.diff != 0 and ((c.diff > 0) == _higher_is_better(c.metric))
        cls = ("up" if better else "down") if c.significant else "muted"
        comp.append(
            f"<tr><td>{_e(c.b)} − {_e(c.a)}</td><td>{_e(c.metric)}</td>"
            f"<td class='{cls}{' sig' if c.significant else ''}'>{_fmt(c.diff)}</td>"
            f"<td>[{_fmt(c.low)}, {_fmt(c.high)}]</td><td>{_fmt_p(c.p_value)}</td><td>{_fmt_p(c.p_holm)}</td>"
            f"<td>{_fmt_p(c.p_wilcoxon)}</td><td>{c.n}</td></tr>"
        )
    comp.append("</tbody></table>")
    # full-width cards: side by side, the wide tables would hide columns behind a scrollbar
    line = headline(result)
    if line:
        parts.append(f"<p id='headline' class='card'><b>{_e(line)}</b></p>")
    parts.append("<div class='stack'>")
    parts.append("<div class='card'><h2 style='margin-top:0'>Metrics</h2>" + "".join(table))
    parts.append("<p class='muted'>↑ higher is better, ↓ lower is better; best value highlighted.</p></div>")
    if result.comparisons:
        parts.append(
            "<div class='card'><h2 style='margin-top:0'>Paired comparisons</h2>"
            + "".join(comp)
            + "<p class='muted'>Difference = second − first on the questions both scored; p: two-sided "
            + "paired "
            "permutation test; bold: Holm-adjusted p &lt; 0.05.</p></div>"
        )
    parts.append("</div>")
    plots = _plots(result)
    if plots:
        parts.append("<h2>Plots</h2><div class='grid'>")
        for caption, data in plots:
            parts.append(
                f"<div class='card'><img alt='{_e(caption)}' src='data:image/png;base64,{data}'>"
                f"<p class='muted'>{_e(caption)}</p></div>"
            )
        parts.append("</div>")
    if topics:
        parts.append(_topics_html(topics, configs))
    # failures
    parts.append("<h2>Failures and missing scores</h2><div class='card'><table id='counts'><thead><tr>")
    parts.append(
        "<th>configuration</th><th>questions</th><th>answered</th><th>failures</th><th>NaN per metric</th>"
    )
    parts.append("</tr></thead><tbody>")
    for config in configs:
        counts = result.counts[config]
        answered = counts.get("answered")
        parts.append(
            f"<tr><td>{_e(config)}</td><td>{counts.get('questions', 0)}</td>"
            f"<td>{'–' if answered is None else answered}</td><td>{_e(_failure_text(counts))}</td>"
            f"<td style='white-space:normal'>{_e(_nan_text(counts))}</td></tr>"
        )
    parts.append("</tbody></table></div>")
    if result.notes:
        parts.append(
            "<h2>Notes</h2><ul class='notes'>" + "".join(f"<li>{_e(n)}</li>" for n in result.notes) + "</ul>"
        )
    if hierarchy is not None:
        tree = _hierarchy_dict(hierarchy)["tree"]  # type: ignore[index]
        parts.append(f"<h2>Topic tree</h2><div class='card'><pre id='topic-tree'>{_e(tree)}</pre></div>")
    parts.append("<h2>Run</h2><div class='grid'>")
    parts.append(
        "<div class='card'><details open><summary>Configuration</summary><pre>"
        + _e(json.dumps(_clean(result.config), indent=2))
        + "</pre></details></div>"
    )
    parts.append(
        "<div class='card'><table "
        "id='versions'><thead><tr><th>package</th><th>version</th></tr></thead><tbody>"
    )
    parts += [f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in versions.items()]
    parts.append("</tbody></table></div></div>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _topics_html(topics: list[dict[str, Any]], configs: list[str]) -> str:
    reference, focus, _ = _topic_pair(configs)
    parts = ["<h2>Where retrieval fails, by topic</h2>"]
    plot = _topic_plot(topics, configs)
    if plot is not None:
        caption, data = plot
        parts.append(
            f"<div class='card'><img id='topic-plot' alt='{_e(caption)}' src='data:image/png;base64,{data}'>"
            f"<p class='muted'>{_e(caption)}</p></div>"
        )
    table = ["<div class='card'><table id='topics'><thead><tr><th>topic</th><th>top terms</th>"]
    table += ["<th>documents</th><th>questions</th>"] + [f"<th>{_e(c)}</th>" for c in configs]
    table.append(f"<th>{_e(focus)} − {_e(reference)}</th></tr></thead><tbody>")
    from heal_rag.evaluation.topics import difference

    for row in topics:
        means = {c: row["means"].get(c) for c in configs}
        finite = {c: v for c, v in means.items() if v is not None}
        best = max(finite, key=finite.__getitem__) if len(set(finite.values())) > 1 else None
        diff = difference(row, reference, focus)
        cls = "muted" if not math.isfinite(diff) or diff == 0 else ("up" if diff > 0 else "down")
        table.append(
            f"<tr><td>L{row['level']} T{row['topic']}</td><td style='text-align:left'>"
            f"{_e(', '.join(row['terms']))}</td><td>{row['n_documents']}</td><td>{row['n_questions']}</td>"
        )
        table += [f"<td class='{'best' if c == best else ''}'>{_fmt(means[c])}</td>" for c in configs]
        table.append(f"<td class='{cls}'>{_fmt(diff)}</td></tr>")
    table.append(
        "</tbody></table><p class='muted'>Mean nDCG@10 over the questions with a relevant document in the "
        "topic (a question counts in every topic that holds one of its relevant documents).</p></div>"
    )
    return "".join(parts + table)


def write_report(
    result: RAGEvaluationResult,
    out_dir: str | os.PathLike[str],
    *,
    hierarchy: Any = None,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``report.json`` to ``out_dir`` (atomically).

    Args:
        result: the evaluation result.
        out_dir: destination folder (created if missing).
        hierarchy: an optional :class:`heal_rag.hierarchy.Hierarchy` of the evaluated corpus, shown as the
            topic tree.
        qrels: the questions' relevance judgments; with ``hierarchy`` they add the per-topic view
            (:func:`heal_rag.evaluation.topics.topic_breakdown`, under ``"topics"`` in the JSON).

    Returns:
        ``{"md": path, "html": path, "json": path}``.

    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    versions = package_versions()
    paths = {"md": out / "report.md", "html": out / "report.html", "json": out / "report.json"}
    topics = None
    if hierarchy is not None and qrels is not None:
        from heal_rag.evaluation.topics import topic_breakdown

        topics = topic_breakdown(result, hierarchy, qrels)
    kwargs = {"hierarchy": hierarchy, "versions": versions, "topics": topics}
    atomic_write_text(paths["md"], to_markdown(result, **kwargs))
    atomic_write_text(paths["html"], to_html(result, **kwargs))
    atomic_write_json(paths["json"], report_dict(result, **kwargs))
    return paths

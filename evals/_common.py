"""Helpers shared by the benchmark scripts in evals/: provenance of a run, results files, median timings.

Every benchmark writes ``evals/results/NAME.json`` (figures + configuration + provenance) and a short
``NAME.md`` table, through :func:`write_results`, so any figure in the README can be traced to a command, a
commit, the package versions and the machine that produced it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "evals" / "results"
# ../shared/data next to the repository: the benchmark data (not shipped with the package)
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"

if str(REPO_ROOT) not in sys.path:  # run as `python evals/NAME.py` from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

T = TypeVar("T")

DEFAULT_PACKAGES = (
    "heal-rag",
    "torch",
    "sentence-transformers",
    "transformers",
    "numpy",
    "scikit-learn",
    "ranx",
    "bm25s",
    "PyStemmer",
    "llama-index-core",
)

SHARED_MACHINE_NOTE = (
    "Run on a machine shared with other jobs: wall times and samples/s are noisy; compare them only within "
    "one run, side by side."
)


def git_commit() -> str:
    """``git rev-parse HEAD`` of the repository, ``"uncommitted"`` when git or the repository is missing,
    with ``+dirty`` appended when tracked files have uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "uncommitted"
    return f"{commit}+dirty" if dirty else commit or "uncommitted"


def package_versions(packages: Sequence[str] = DEFAULT_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when not installed)."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info() -> dict[str, Any]:
    """CPU cores, thread settings, platform and GPU (if torch sees one)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a dependency
        info["gpu"] = None
    return info


def provenance(
    config: dict[str, Any], *, seed: int | None, command: Sequence[str] | None = None
) -> dict[str, Any]:
    """The block every results file carries: command, configuration, seed, versions, machine, commit, date."""
    return {
        "command": " ".join(command if command is not None else ["python", *sys.argv]),
        "config": {key: str(value) if isinstance(value, Path) else value for key, value in config.items()},
        "seed": seed,
        "git_commit": git_commit(),
        "versions": package_versions(),
        "machine": machine_info(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "note": SHARED_MACHINE_NOTE,
    }


def write_results(name: str | os.PathLike[str], payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``NAME.json`` and ``NAME.md`` atomically.

    Args:
        name: A bare name (written under ``evals/results/``) or a path without suffix.
        payload: JSON-serialisable results (include :func:`provenance`).
        markdown: The short table for humans.

    Returns:
        The two paths written.
    """
    from heal_rag._io import atomic_write_json, atomic_write_text

    base = Path(name)
    if base.parent == Path("."):
        base = RESULTS_DIR / base
    json_path = base.with_name(base.name + ".json")
    md_path = base.with_name(base.name + ".md")
    atomic_write_json(json_path, payload)
    atomic_write_text(md_path, markdown if markdown.endswith("\n") else markdown + "\n")
    return json_path, md_path


def median_timing(fn: Callable[[], T], repeats: int = 1) -> tuple[float, list[float], T]:
    """Run ``fn`` ``repeats`` times; return (median seconds, every time, the last result)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    times: list[float] = []
    result: T | None = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result  # type: ignore[return-value]


def median(values: Sequence[float]) -> float | None:
    """Median of the non-None values (None when there are none)."""
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def markdown_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    digits: int = 4,
    formats: dict[str, str] | None = None,
) -> str:
    """Format ``rows`` as a Markdown table.

    ``columns`` are (key, title) pairs; floats get ``digits`` decimals unless ``formats`` gives a key its
    format spec (e.g. ``{"train_s": ".1f"}``); missing values show as "–".
    """
    formats = formats or {}

    def cell(value: Any, key: str = "") -> str:
        if value is None:
            return "–"
        if key in formats and isinstance(value, int | float):
            return format(value, formats[key])
        if isinstance(value, float):
            return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.1f}"
        return str(value)

    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(cell(row.get(key), key) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def exported_model_copy(source: str | os.PathLike[str], target: Path) -> Path:
    """``target``: a copy of the model folder ``source`` with a current int8 ONNX export (made once).

    A copy whose export no longer matches its weights (or is missing) is rebuilt; the original folder is
    never written to.
    """
    import shutil

    from heal_rag import export_onnx
    from heal_rag.backends import load_onnx_sentence_transformer

    if target.exists():
        try:
            load_onnx_sentence_transformer(target)  # checks the export is of the weights in the folder
            return target
        except Exception:
            shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("onnx", "checkpoint-*", "runs"))
    start = time.perf_counter()
    export = export_onnx(target, quantize="int8")
    print(f"exported {target} in {time.perf_counter() - start:.1f} s; cosine to torch {export.cosine}")
    return target

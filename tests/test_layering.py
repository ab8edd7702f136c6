"""The package's layers, checked: who may import whom, no import cycles, light modules stay light.

Layers, bottom to top (docs/ARCHITECTURE.md draws them):

- core: data, artefact names, node-metadata keys, progress, errors, small checks, option names and the
  training settings (``HEALTrainingArguments``). Imports no other layer,
  and neither torch nor LlamaIndex.
- hierarchy (``heal_rag.hierarchy``): on core only; neither torch (except lazily, for the GPU kernels)
  nor LlamaIndex.
- ``heal_rag.model_dir``: the saved model directory, written by training and read by integrations; on
  core and hierarchy.
- training and integrations: on core, hierarchy and ``model_dir``; integrations never import training, and
  training reaches integrations only through the lazy imports listed in ``ALLOWED_LAZY``.
- evaluation: on everything below, never on training.
- ``pipeline``, ``systems`` (the RAG systems both build) and ``cli``: on top; nothing inside the package
  imports them (the package root's lazy ``__getattr__`` export of ``run_pipeline`` goes through
  ``importlib`` and is the public API).

The import graph is read statically with ``ast``: module-level imports, and imports inside functions
("lazy"), both without ``if TYPE_CHECKING:`` blocks.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "heal_rag"

CORE = {
    "heal_rag",
    "heal_rag._artifacts",
    "heal_rag._checks",
    "heal_rag._deprecation",
    "heal_rag._fusion_options",
    "heal_rag._io",
    "heal_rag._loss_options",
    "heal_rag._models",
    "heal_rag._node_metadata",
    "heal_rag._optional",
    "heal_rag._progress",
    "heal_rag._version",
    "heal_rag.backends",  # ONNX export and loading: torch and onnxruntime are imported lazily
    "heal_rag.datasets",
    "heal_rag.errors",
    "heal_rag.training_args",  # the training settings: plain data, read by the CLI without torch
}
MODEL_DIR = {"heal_rag.model_dir"}
# top-level modules besides cli/: the pipeline and the RAG systems it shares with ``evaluate rag``
TOP = {"heal_rag.pipeline", "heal_rag.systems"}

# Lazy imports (inside a function) that cross a layer boundary on purpose, each with its reason.
ALLOWED_LAZY = {
    # get_finetuned_model() returns a LlamaIndex embedding: that is its contract (llama-index-finetuning's
    # BaseEmbeddingFinetuneEngine); training stays importable without LlamaIndex otherwise.
    ("heal_rag.training.engine", "heal_rag.integrations.embedding"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """heal_rag modules an import statement loads (``from pkg import sub`` loads ``pkg.sub``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "heal_rag"]
    if node.level:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source.split(".")[0] != "heal_rag":
        return []
    out = []
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        out.append(submodule if submodule in MODULES else source)
    return out


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(module-level, lazy) heal_rag imports of ``module``."""
    path = MODULES[module]
    top: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (lazy if in_function else top).update(_targets(module, path, child))
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    top.discard(module)
    lazy.discard(module)
    return top, lazy


GRAPH = {module: _imports(module) for module in MODULES}


def _layer(module: str) -> str:
    if module in CORE:
        return "core"
    if module in MODEL_DIR:
        return "model_dir"
    if module == "heal_rag.llms":
        return "integrations"  # LocalGGUFLLM: a LlamaIndex adapter
    if module in TOP:
        return "top"
    name = module.split(".")[1]
    return {"cli": "top", "hierarchy": "hierarchy", "training": "training"}.get(name, name)


MAY_IMPORT = {
    "core": {"core"},
    "hierarchy": {"core", "hierarchy"},
    "model_dir": {"core", "hierarchy", "model_dir"},
    "training": {"core", "hierarchy", "model_dir", "training"},
    "integrations": {"core", "hierarchy", "model_dir", "integrations"},
    "evaluation": {"core", "hierarchy", "model_dir", "integrations", "evaluation"},
    "top": {"core", "hierarchy", "model_dir", "training", "integrations", "evaluation", "top"},
}


def test_every_module_has_a_layer():
    assert {_layer(m) for m in MODULES} <= set(MAY_IMPORT)
    assert CORE | MODEL_DIR | TOP <= set(MODULES), "a module listed as a layer no longer exists"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_only_from_its_own_or_lower_layers(module):
    top, lazy = GRAPH[module]
    allowed = MAY_IMPORT[_layer(module)]
    wrong = sorted(t for t in top | lazy if _layer(t) not in allowed and (module, t) not in ALLOWED_LAZY)
    assert not wrong, f"{module} ({_layer(module)}) imports {wrong}"


def test_allowed_lazy_imports_are_lazy_and_still_needed():
    for source, target in ALLOWED_LAZY:
        top, lazy = GRAPH[source]
        assert target not in top, f"{source} imports {target} at module level"
        assert target in lazy, f"{source} no longer imports {target}: drop it from ALLOWED_LAZY"


def test_pipeline_and_cli_are_imported_by_nothing_below_them():
    for module, (top, lazy) in GRAPH.items():
        if _layer(module) == "top":
            continue
        assert not {t for t in top | lazy if _layer(t) == "top"}, module


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (found := visit(target)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_import_cycles_at_module_level():
    assert _cycle({m: top for m, (top, _) in GRAPH.items()}) is None


def test_no_import_cycles_even_counting_lazy_imports():
    edges = {m: top | lazy for m, (top, lazy) in GRAPH.items()}
    assert _cycle(edges) is None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# --- light modules stay light: checked in a fresh interpreter --------------------------------------------
_HEAVY = ("torch", "llama_index", "sentence_transformers", "transformers")


def _heavy_after_importing(modules: list[str]) -> dict[str, list[str]]:
    """For each module (imported in order in one fresh interpreter), the heavy packages it brought in."""
    code = (
        "import importlib, json, sys\n"
        f"heavy = {_HEAVY!r}\n"
        "seen, out = set(), {}\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    now = {m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy}\n"
        "    if now - seen:\n"
        "        out[name] = sorted(now - seen)\n"
        "    seen |= now\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_core_hierarchy_and_model_dir_import_neither_torch_nor_llamaindex():
    light = sorted(CORE) + sorted(m for m in MODULES if _layer(m) == "hierarchy") + sorted(MODEL_DIR)
    assert _heavy_after_importing(light) == {}


def test_training_package_needs_no_llamaindex_at_import():
    leaks = _heavy_after_importing(["heal_rag.training"])
    assert "llama_index" not in leaks.get("heal_rag.training", [])

"""heal-rag: HEAL (Hierarchical Embedding Alignment Loss) for domain-aligned retrieval in LlamaIndex.

The public API is imported lazily, so ``import heal_rag`` stays cheap and the topic hierarchy can be used
without importing torch or LlamaIndex::

    from heal_rag import HNMFk
    hierarchy = HNMFk(depth=2, random_state=0).fit(texts).hierarchy_
    print(hierarchy)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from heal_rag._version import __version__

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # topic hierarchy
    "HNMFk": "heal_rag.hierarchy",
    "NMFk": "heal_rag.hierarchy",
    "Hierarchy": "heal_rag.hierarchy",
    "Topic": "heal_rag.hierarchy",
    # data
    "CorpusDocument": "heal_rag.datasets",
    "RetrievalDataset": "heal_rag.datasets",
    "load_beir": "heal_rag.datasets",
    "load_corpus": "heal_rag.datasets",
    "load_demo_dataset": "heal_rag.datasets",
    # training
    "HEALLoss": "heal_rag.training",
    "heal_loss": "heal_rag.training",
    "HierarchicalBatchSampler": "heal_rag.training",
    "HEALFinetuneEngine": "heal_rag.training",
    "HEALTrainingArguments": "heal_rag.training_args",
    # LlamaIndex
    "HEALEmbedding": "heal_rag.integrations",
    "HierarchicalRetriever": "heal_rag.integrations",
    "hybrid_retriever": "heal_rag.integrations",
    "save_heal_index": "heal_rag.integrations",
    "load_heal_index": "heal_rag.integrations",
    # errors
    "HealRagUserError": "heal_rag.errors",
    "InvalidValueError": "heal_rag.errors",
    "InvalidTypeError": "heal_rag.errors",
    "InputNotFoundError": "heal_rag.errors",
    "OutputExistsError": "heal_rag.errors",
    "OutputLocationError": "heal_rag.errors",
    "MissingDependencyError": "heal_rag.errors",
    "NotFittedError": "heal_rag.errors",
    # the saved model directory
    "HEALModelDir": "heal_rag.model_dir",
    "load_model_dir": "heal_rag.model_dir",
    # fast CPU encoding
    "export_onnx": "heal_rag.backends",
    "load_onnx_sentence_transformer": "heal_rag.backends",
    # end to end
    "run_pipeline": "heal_rag.pipeline",
    "PipelineResult": "heal_rag.pipeline",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from heal_rag.backends import export_onnx, load_onnx_sentence_transformer
    from heal_rag.datasets import CorpusDocument, RetrievalDataset, load_beir, load_corpus, load_demo_dataset
    from heal_rag.errors import (
        HealRagUserError,
        InputNotFoundError,
        InvalidTypeError,
        InvalidValueError,
        MissingDependencyError,
        NotFittedError,
        OutputExistsError,
        OutputLocationError,
    )
    from heal_rag.hierarchy import Hierarchy, HNMFk, NMFk, Topic
    from heal_rag.integrations import (
        HEALEmbedding,
        HierarchicalRetriever,
        hybrid_retriever,
        load_heal_index,
        save_heal_index,
    )
    from heal_rag.model_dir import HEALModelDir, load_model_dir
    from heal_rag.pipeline import PipelineResult, run_pipeline
    from heal_rag.training import (
        HEALFinetuneEngine,
        HEALLoss,
        HierarchicalBatchSampler,
        heal_loss,
    )
    from heal_rag.training_args import HEALTrainingArguments


#: old public name -> (module, new name); looking one up warns (DeprecationWarning) and returns the new one
_RENAMED: dict[str, tuple[str, str]] = {"Document": ("heal_rag.datasets", "CorpusDocument")}


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        from heal_rag._deprecation import warn_deprecated

        module_name, new_name = _RENAMED[name]
        warn_deprecated(f"heal_rag.{name}", f"it was renamed heal_rag.{new_name}")
        return getattr(importlib.import_module(module_name), new_name)
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'heal_rag' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # cache: later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

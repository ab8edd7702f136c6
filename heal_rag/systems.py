"""The RAG systems heal-rag compares, built one way for the pipeline and for ``heal-rag evaluate rag``.

A *system* is a :class:`~heal_rag.evaluation.rag.RAGConfiguration` over a LlamaIndex retriever: BM25
(:func:`bm25_system`), a dense model over a FAISS index, flat or hierarchy-aware (:func:`dense_system`), and
that dense model fused with BM25 (``<name>+bm25``, built by :func:`dense_system` when given BM25
candidates). ``run_pipeline`` and the CLI both build their systems here, so a system of the same name means
the same index, retriever and description in both, and so the same checkpoint hash.

Example:
    >>> nodes = dataset.to_nodes()  # doctest: +SKIP
    >>> bm25 = bm25_system(nodes, top_k=10)  # doctest: +SKIP
    >>> heal = dense_system("heal", HEALEmbedding.from_pretrained("runs/heal"), nodes, top_k=10,
    ...                     bm25_candidates=bm25_candidates(nodes))  # doctest: +SKIP
    >>> evaluate_rag([bm25, heal.configuration, heal.hybrid], dataset)  # doctest: +SKIP

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from heal_rag._fusion_options import DEFAULT_CANDIDATES, DEFAULT_FUSION
from heal_rag.evaluation.rag import RAGConfiguration
from heal_rag.evaluation.retrieval import BM25_NAME, hybrid_name

if TYPE_CHECKING:  # pragma: no cover
    from llama_index.core.schema import BaseNode

    from heal_rag.datasets import RetrievalDataset
    from heal_rag.hierarchy import Hierarchy

__all__ = ["DenseSystem", "bm25_candidates", "bm25_system", "dense_system", "reference_systems"]

#: How BM25 is described in reports and in the checkpoint hash.
BM25_DESCRIPTION = {"model": "BM25 (bm25s via llama-index-retrievers-bm25, stemmed)", "retriever": "bm25"}


@dataclass
class DenseSystem:
    """A dense model's systems: the model alone and, when BM25 candidates were given, fused with BM25.

    Attributes:
        configuration: the dense retriever's configuration (named as the model).
        hybrid: the dense retriever fused with BM25 (``<name>+bm25``), or None.
        index: the FAISS ``VectorStoreIndex`` both retrieve from.

    """

    configuration: RAGConfiguration
    hybrid: RAGConfiguration | None
    index: Any


def bm25_system(
    nodes: Sequence[BaseNode],
    *,
    top_k: int,
    llm: Any = None,
    generation_top_n: int | None = 3,
    passage_max_tokens: int | None = None,
) -> RAGConfiguration:
    """Return BM25 over ``nodes`` as a configuration named ``bm25``.

    ``llm``, ``generation_top_n`` and ``passage_max_tokens`` are those of
    :class:`~heal_rag.evaluation.rag.RAGConfiguration`.
    """
    from heal_rag.integrations.hybrid import bm25_retriever

    return RAGConfiguration(
        BM25_NAME,
        retriever=bm25_retriever(nodes, similarity_top_k=top_k),
        llm=llm,
        generation_top_n=generation_top_n,
        passage_max_tokens=passage_max_tokens,
        description=dict(BM25_DESCRIPTION),
    )


def reference_systems(
    dataset: RetrievalDataset,
    *,
    llm: Any,
    generation_top_n: int | None = 3,
    passage_max_tokens: int | None = None,
) -> list[RAGConfiguration]:
    """Return the two reference conditions of a generator: ``gold`` (the judged passages) and ``no-context``.

    See :mod:`heal_rag.evaluation.references`: decision accuracy says something about retrieval only when
    ``gold`` is clearly above ``no-context`` for the same generator.
    """
    from heal_rag.evaluation.references import GoldContextRetriever, NoContextRetriever

    common = {
        "llm": llm,
        "generation_top_n": generation_top_n,
        "passage_max_tokens": passage_max_tokens,
        "reference": True,
    }
    return [
        RAGConfiguration(
            "gold",
            retriever=GoldContextRetriever(dataset),
            description={"retriever": "gold: the question's judged passages (upper bound)"},
            **common,
        ),
        RAGConfiguration(
            "no-context",
            retriever=NoContextRetriever(),
            description={"retriever": "none: the generator's prior"},
            **common,
        ),
    ]


def bm25_candidates(nodes: Sequence[BaseNode]) -> Any:
    """Return the BM25 retriever whose top :data:`DEFAULT_CANDIDATES` every hybrid system fuses."""
    from heal_rag.integrations.hybrid import bm25_retriever

    return bm25_retriever(nodes, similarity_top_k=min(DEFAULT_CANDIDATES, len(nodes)))


def dense_system(
    name: str,
    embed_model: Any,
    nodes: Sequence[BaseNode],
    *,
    top_k: int,
    mode: str = "flat",
    hierarchy: Hierarchy | None = None,
    description: Mapping[str, Any] | None = None,
    llm: Any = None,
    generation_top_n: int | None = 3,
    passage_max_tokens: int | None = None,
    bm25_candidates: Any = None,
    show_progress: bool | None = None,
) -> DenseSystem:
    """Index ``nodes`` with a dense model on FAISS and return its configuration(s).

    Args:
        name: the configuration's name (the hybrid is ``<name>+bm25``).
        embed_model: a LlamaIndex embedding (usually :class:`~heal_rag.integrations.HEALEmbedding`).
        nodes: the corpus nodes (``RetrievalDataset.to_nodes()``).
        top_k: nodes retrieved per question.
        mode: ``"flat"`` (plain nearest neighbours) or a
            :class:`~heal_rag.integrations.HierarchicalRetriever` mode (needs ``hierarchy``).
        hierarchy: the topic hierarchy the model was trained with (routing, reports), or None.
        description: what else describes the system (``model``, ``max_length``, ...), for reports and the
            checkpoint hash; the weights' fingerprint, the retriever mode and the hierarchy's fingerprint are
            added.
        llm: the generator, or None for retrieval only.
        generation_top_n: how many retrieved nodes the generator sees.
        passage_max_tokens: cut each passage the generator sees to this many tokens (None: whole).
        bm25_candidates: BM25 candidates (:func:`bm25_candidates`) to fuse with; None builds no hybrid.
        show_progress: progress bar while embedding the corpus (None: follow the ``heal_rag`` logger).

    """
    from heal_rag.integrations import HierarchicalRetriever, build_faiss_index

    index = build_faiss_index(  # exact at any size: an evaluation must not measure an ANN index's misses
        nodes,
        embed_model,
        hierarchy=hierarchy if mode == "route" else None,
        index_type="flat",
        show_progress=show_progress,
    )

    def retriever(k: int) -> Any:
        if mode == "flat":
            return index.as_retriever(similarity_top_k=k)
        return HierarchicalRetriever(index, hierarchy=hierarchy, mode=mode, similarity_top_k=k)

    extra = dict(description or {})
    described = {
        "model": extra.pop("model", name),
        "weights": getattr(embed_model, "weights_fingerprint", ""),
        "retriever": mode,
        **extra,
        "hierarchy": getattr(hierarchy, "fingerprint", None),
    }
    common = {"llm": llm, "generation_top_n": generation_top_n, "passage_max_tokens": passage_max_tokens}
    configuration = RAGConfiguration(name, retriever=retriever(top_k), description=described, **common)
    hybrid = None
    if bm25_candidates is not None:
        from heal_rag.integrations.hybrid import hybrid_retriever

        candidates = min(DEFAULT_CANDIDATES, len(nodes))
        hybrid = RAGConfiguration(
            hybrid_name(name),
            retriever=hybrid_retriever(retriever(candidates), similarity_top_k=top_k, bm25=bm25_candidates),
            description={
                **described,
                "retriever": f"{mode} + BM25, {DEFAULT_FUSION} fusion of the top {candidates} of each",
            },
            **common,
        )
    return DenseSystem(configuration=configuration, hybrid=hybrid, index=index)

"""Reference conditions for reading answer quality: the gold passages alone, and no context at all.

Decision accuracy (does the answer's yes/no/maybe match the gold label?) only measures retrieval when the
generator actually uses its context. Two conditions of the same generator ground the reading:

- **gold** (:class:`GoldContextRetriever`): the question's own judged passages and nothing else, the best
  any retriever could give it (the upper bound);
- **no context** (:class:`NoContextRetriever`): no passage, so the answer is the model's prior.

A generator whose accuracy with the gold passages is not clearly above its no-context accuracy ignores its
context, and then a difference between retrievers says nothing about them.

Example:
    >>> gold = RAGConfiguration("gold", retriever=GoldContextRetriever(dataset), llm=llm)  # doctest: +SKIP
    >>> prior = RAGConfiguration("no-context", retriever=NoContextRetriever(), llm=llm)  # doctest: +SKIP
    >>> evaluate_rag([gold, prior, heal], dataset)  # doctest: +SKIP

"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from heal_rag.datasets import RetrievalDataset
from heal_rag.errors import InvalidTypeError, InvalidValueError
from heal_rag.evaluation._rag_runner import NO_CONTEXT_ID

__all__ = ["NO_CONTEXT_ID", "NO_CONTEXT_TEXT", "GoldContextRetriever", "NoContextRetriever"]

#: What the generator's prompt shows as context in the no-context condition.
NO_CONTEXT_TEXT = "(No context is available for this question.)"


class GoldContextRetriever(BaseRetriever):
    """Return a question's judged relevant passages (highest grade first), and nothing else.

    Questions are matched by their text, as the harness passes them: each query text of ``dataset`` must be
    unique.

    Args:
        dataset: the questions, their qrels and the corpus the passages come from.

    """

    def __init__(self, dataset: RetrievalDataset, **kwargs: Any) -> None:
        if not isinstance(dataset, RetrievalDataset):
            raise InvalidTypeError(
                f"GoldContextRetriever needs a RetrievalDataset; got {type(dataset).__name__}."
            )
        by_text: dict[str, str] = {}
        for qid, text in dataset.queries.items():
            if text in by_text:
                raise InvalidValueError(
                    f"Queries {by_text[text]!r} and {qid!r} have the same text, so the gold passages of a "
                    "question cannot be told apart by its text. Drop or rename one of them."
                )
            by_text[text] = qid
        self._dataset = dataset
        self._by_text = by_text
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        qid = self._by_text.get(query_bundle.query_str)
        if qid is None:
            raise InvalidValueError(
                f"GoldContextRetriever: {query_bundle.query_str[:60]!r} is not a question of dataset "
                f"{self._dataset.name!r}, so it has no gold passages."
            )
        grades = self._dataset.qrels.get(qid, {})
        out = []
        for doc_id in sorted(self._dataset.relevant(qid), key=lambda d: -grades[d]):
            document = self._dataset.corpus[doc_id]
            node = TextNode(id_=doc_id, text=document.full_text, metadata={"doc_id": doc_id})
            out.append(NodeWithScore(node=node, score=float(grades[doc_id])))
        return out


class NoContextRetriever(BaseRetriever):
    """Return one placeholder node that says no context is available: the generator answers from its prior.

    The placeholder (:data:`NO_CONTEXT_TEXT`, document id :data:`NO_CONTEXT_ID`, never a corpus id) goes
    through the same prompt as real passages, so the no-context condition differs from the others only in
    what the context says.
    """

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        node = TextNode(id_=NO_CONTEXT_ID, text=NO_CONTEXT_TEXT, metadata={"doc_id": NO_CONTEXT_ID})
        return [NodeWithScore(node=node, score=None)]

"""PubMedQA (PQA-L) as a RAG question set: questions with reference answers and gold yes/no/maybe decisions.

PubMedQA questions are nearly their article titles, so retrieval over PubMedQA alone is too easy;
:func:`load_pubmedqa` can mix in another corpus's documents as distractors, which makes wrong contexts
plausible.

Example:
    >>> dataset = load_pubmedqa("data/pubmedqa_pqal", "data/scifact")  # doctest: +SKIP
    >>> questions = dataset.sample_queries(100, seed=0)  # doctest: +SKIP

"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from pathlib import Path

from heal_rag._io import loads_json
from heal_rag.datasets import CorpusDocument, RetrievalDataset, load_beir
from heal_rag.errors import InputNotFoundError

__all__ = ["load_pubmedqa"]


def load_pubmedqa(
    pubmedqa_dir: str | os.PathLike[str],
    distractor_dir: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    n_distractors: int | None = None,
    distractor_prefix: str = "distractor:",
    seed: int = 0,
) -> RetrievalDataset:
    """Load PubMedQA questions over their passages, optionally mixed with another corpus as distractors.

    Reference answers are the abstracts' conclusions (``long_answer``), gold decisions the
    ``final_decision`` labels.

    Args:
        pubmedqa_dir: the BEIR-style PubMedQA folder (``corpus.jsonl`` with ``long_answer``,
            ``queries.jsonl`` with ``final_decision``, ``qrels/<split>.tsv``).
        distractor_dir: a BEIR folder whose documents are added as distractors (ids prefixed with
            ``distractor_prefix`` so they cannot collide with PubMed ids); None adds none.
        split: qrels split of PubMedQA (``test``, ``trainval`` or ``all``).
        n_distractors: a seeded sample of the distractor documents (None: all of them).
        distractor_prefix: prefix of distractor ids.
        seed: seed of the distractor sample.

    Returns:
        The dataset (named ``pubmedqa`` or ``pubmedqa+distractors``) with references and decisions; sample
        its questions with :meth:`~heal_rag.datasets.RetrievalDataset.sample_queries`.

    """
    folder = Path(pubmedqa_dir)
    if not (folder / "queries.jsonl").exists():
        raise InputNotFoundError(f"{folder} is not a PubMedQA BEIR folder: queries.jsonl is missing.")
    base = load_beir(folder, split=split, name="pubmedqa")
    decisions: dict[str, str] = {}
    for line in _read_lines(folder / "queries.jsonl"):
        row = loads_json(line)
        if row.get("final_decision"):
            decisions[str(row["_id"])] = str(row["final_decision"])
    references: dict[str, str] = {}
    for line in _read_lines(folder / "corpus.jsonl"):
        row = loads_json(line)
        if row.get("long_answer"):
            references[str(row["_id"])] = str(row["long_answer"])
    # a question's reference is the conclusion of its own (single relevant) abstract
    question_refs = {
        q: references[docs[0]]
        for q, judged in base.qrels.items()
        if (docs := [d for d, g in judged.items() if g > 0]) and docs[0] in references
    }
    corpus = dict(base.corpus)
    if distractor_dir is not None:
        distractors = load_beir(distractor_dir, split=None, name="distractors")
        ids = list(distractors.corpus)
        if n_distractors is not None and n_distractors < len(ids):
            keep = set(random.Random(seed).sample(ids, n_distractors))
            ids = [d for d in ids if d in keep]
        for d in ids:
            doc = distractors.corpus[d]
            new_id = f"{distractor_prefix}{d}"
            corpus[new_id] = CorpusDocument(
                id=new_id, text=doc.text, title=doc.title, metadata=dict(doc.metadata)
            )
    name = "pubmedqa+distractors" if distractor_dir is not None else "pubmedqa"
    return RetrievalDataset(
        corpus=corpus,
        queries=base.queries,
        qrels=base.qrels,
        name=name,
        references=question_refs,
        decisions={q: d for q, d in decisions.items() if q in base.queries},
    )


def _read_lines(path: Path) -> Iterable[str]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield line

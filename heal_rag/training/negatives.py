"""Hard negatives for training pairs: from the topic hierarchy, or mined with the base model.

A hard negative is a document the query should rank below its own although it looks related. Two sources:

- :func:`tree_negatives`: a document of the pair's own leaf topic (else of the nearest topic above that has
  another document): the hierarchy as hard negatives, the way topic structure classically helps dense
  retrieval (topic-aware sampling: Hofstätter et al., "Efficiently Teaching an Effective Dense Retriever
  with Balanced Topic Aware Sampling", SIGIR 2021).
- :func:`mined_negatives`: the nearest documents under the base model, through sentence-transformers'
  ``mine_hard_negatives`` (the peer a user would try instead; margin filtering against false negatives as
  in Moreira et al., "NV-Retriever: Improving text embedding models with effective hard-negative mining",
  2024).

Both return one corpus row per pair and never a document judged relevant to the pair's query.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from heal_rag._progress import show_progress as resolve_show_progress
from heal_rag.errors import InvalidValueError

logger = logging.getLogger(__name__)

__all__ = ["mined_negatives", "tree_negatives"]

#: Random draws from a topic before falling back to filtering the whole topic (keeps the common case O(1)).
_DRAWS = 8


def _draw(candidates: np.ndarray, excluded: set[int], rng: np.random.Generator) -> int | None:
    """Return a random member of ``candidates`` that is not in ``excluded``, or None."""
    if len(candidates) == 0:
        return None
    for _ in range(_DRAWS):
        pick = int(candidates[rng.integers(len(candidates))])
        if pick not in excluded:
            return pick
    allowed = [int(c) for c in candidates if int(c) not in excluded]
    return int(allowed[rng.integers(len(allowed))]) if allowed else None


def _random_rows(n_docs: int, excluded: set[int], rng: np.random.Generator) -> int:
    if len(excluded) >= n_docs:
        raise InvalidValueError(
            "A query is judged relevant to every document of the corpus, so it has no negative: hard "
            "negatives need a corpus with documents that are not relevant to the query."
        )
    pick = _draw(np.arange(n_docs), excluded, rng)
    assert pick is not None  # len(excluded) < n_docs
    return pick


def tree_negatives(
    paths: np.ndarray,
    rows: Sequence[int],
    exclude: Sequence[set[int]],
    rng: np.random.Generator,
) -> tuple[list[int], dict[str, int]]:
    """Per pair, a random document from the pair's document's leaf topic, else from the nearest topic above.

    Args:
        paths: Integer array of shape (n_documents, n_levels): each corpus row's topic id per level, coarse
            to fine (``Hierarchy.paths`` in corpus order).
        rows: The corpus row of each pair's document.
        exclude: Per pair, the corpus rows that must not be its negative (the documents judged relevant to
            its query, its own document included).
        rng: Random generator (seeded by the caller).

    Returns:
        ``(negative rows, counts)``: counts of negatives drawn at each level (``"level_<l>"``, finest first
        in preference) and at random (``"random"``: no other document anywhere up the tree).

    Example:
        >>> paths = np.array([[0, 2], [0, 2], [0, 3], [1, 4]])
        >>> tree_negatives(paths, [0], [{0}], np.random.default_rng(0))
        ([1], {'level_1': 1, 'level_0': 0, 'random': 0})

    """
    paths = np.asarray(paths)
    if paths.ndim != 2 or len(rows) != len(exclude):
        raise InvalidValueError(
            "paths must have shape (n_documents, n_levels) and rows and exclude one entry per pair. Got "
            f"paths of shape {paths.shape}, {len(rows)} rows and {len(exclude)} exclusion sets."
        )
    n_docs, n_levels = paths.shape
    members: list[dict[int, np.ndarray]] = []
    for level in range(n_levels):
        order = np.argsort(paths[:, level], kind="stable")
        topics, starts = np.unique(paths[order, level], return_index=True)
        members.append(dict(zip(topics.tolist(), np.split(order, starts[1:]), strict=True)))
    counts = {f"level_{level}": 0 for level in reversed(range(n_levels))} | {"random": 0}
    negatives: list[int] = []
    for row, excluded in zip(rows, exclude, strict=True):
        pick = None
        for level in reversed(range(n_levels)):
            pick = _draw(members[level][int(paths[row, level])], excluded, rng)
            if pick is not None:
                counts[f"level_{level}"] += 1
                break
        if pick is None:
            pick = _random_rows(n_docs, excluded, rng)
            counts["random"] += 1
        negatives.append(pick)
    return negatives, counts


def mined_negatives(
    queries: Sequence[str],
    positives: Sequence[str],
    corpus: Sequence[str],
    exclude: Sequence[set[int]],
    rng: np.random.Generator,
    *,
    model_name: str,
    max_seq_length: int = 256,
    device: str | None = None,
    show_progress: bool | None = None,
    mining_kwargs: Mapping[str, Any] | None = None,
) -> tuple[list[int], dict[str, int]]:
    """Per pair, a document the base model ranks near the query, mined by ``mine_hard_negatives``.

    The settings follow sentence-transformers' documented recipe: candidates among the 50 nearest
    documents, kept only when scoring at least 5 % below the positive (``relative_margin=0.05``, against
    unjudged relevant documents), one drawn at random. Pairs for which nothing qualifies get a random
    document that is not judged relevant (counted as ``"random"``).

    Args:
        queries: The pairs' query texts.
        positives: The pairs' positive texts.
        corpus: Every document's text, in corpus-row order.
        exclude: Per pair, corpus rows that must not be its negative.
        rng: Random generator (seeds the draw).
        model_name: The model that mines (the base model of the fine-tune).
        max_seq_length: Token limit while embedding.
        device: Torch device, or None.
        show_progress: Progress bars while embedding; ``None`` follows the ``heal_rag`` logger.
        mining_kwargs: Overrides for ``mine_hard_negatives`` (e.g. ``range_max``, ``relative_margin``,
            ``cache_folder``).

    Returns:
        ``(negative rows, counts)`` with counts ``{"mined": n, "random": m}``.

    """
    import torch
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    from heal_rag._models import load_sentence_transformer

    model = load_sentence_transformer(model_name, device=device, what="base_model")
    model.max_seq_length = max_seq_length
    settings: dict[str, Any] = {
        "range_max": 50,
        "relative_margin": 0.05,
        "sampling_strategy": "random",
        "num_negatives": 1,
        "batch_size": 64,
        "verbose": resolve_show_progress(show_progress),
    }
    settings.update(mining_kwargs or {})
    settings["range_max"] = min(int(settings["range_max"]), max(1, len(corpus) - 1))  # small corpora
    torch.manual_seed(int(rng.integers(2**31)))
    mined = mine_hard_negatives(
        Dataset.from_dict({"anchor": list(queries), "positive": list(positives)}),
        model,
        corpus=list(corpus),
        output_format="triplet",
        **settings,
    )
    # The output is regrouped by query and drops pairs without a negative: map it back by its texts.
    negative_of = {
        (a, p): n for a, p, n in zip(mined["anchor"], mined["positive"], mined["negative"], strict=True)
    }
    row_of: dict[str, int] = {}
    for row, text in enumerate(corpus):
        row_of.setdefault(text, row)
    counts = {"mined": 0, "random": 0}
    negatives: list[int] = []
    for query, positive, excluded in zip(queries, positives, exclude, strict=True):
        row = row_of.get(negative_of.get((query, positive), ""))
        if row is None or row in excluded:
            row = _random_rows(len(corpus), excluded, rng)
            counts["random"] += 1
        else:
            counts["mined"] += 1
        negatives.append(row)
    if counts["random"]:
        logger.info(
            "Hard-negative mining found nothing for %d of %d pairs; random negatives used.",
            counts["random"],
            len(negatives),
        )
    return negatives, counts

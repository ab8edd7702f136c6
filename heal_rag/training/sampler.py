"""Hierarchy-aware batch sampler for HEAL training.

With uniform random batches, two samples of the same fine topic rarely meet once the tree has more than a
few dozen leaves, so HEAL's topic levels find no positives and the loss degenerates to the flat in-batch
negatives loss. :class:`HierarchicalBatchSampler` composes every batch from a few level-0 topics, several
leaves within each and several documents per leaf, so each level has positives (same topic) and hard
negatives (same parent, other child) in every batch. It never puts two samples of one document, or two
copies of one text, in the same batch: a duplicate would be an in-batch "negative" identical to the
positive.

It works as ``torch.utils.data.DataLoader(dataset, batch_sampler=sampler)`` and, through
:func:`heal_batch_sampler`, as the ``batch_sampler`` of sentence-transformers'
``SentenceTransformerTrainingArguments``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from heal_rag.errors import InvalidValueError

logger = logging.getLogger(__name__)

# A whole-chunk fill gives up after passing over this many chunks that do not fit (bounds the cost per
# batch); the splitting fill that completes a batch scans the whole queue.
_MAX_SKIPPED_CHUNKS = 64

__all__ = ["HierarchicalBatchSampler", "batch_positive_stats", "heal_batch_sampler"]


def _as_label_array(labels: Any) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    try:
        array = np.asarray(labels)
    except ValueError as error:  # ragged rows
        raise InvalidValueError(
            "labels must be a rectangular array of shape (n_samples, L + 1): every row lists the topic ids "
            "at each level, then the document id."
        ) from error
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidValueError(
            f"labels must have shape (n_samples, L + 1) with n_samples >= 1. Got shape {array.shape} instead."
        )
    if not np.issubdtype(array.dtype, np.integer):
        if (
            np.issubdtype(array.dtype, np.floating)
            and np.all(np.isfinite(array))
            and np.all(array == np.round(array))
        ):
            array = array.astype(np.int64)
        else:
            raise InvalidValueError(
                f"labels must hold integer topic and document ids. Got dtype {array.dtype} instead."
            )
    return array.astype(np.int64, copy=False)


def _keys_of(value: Any) -> tuple[Hashable, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(value)
    return (value,)


class HierarchicalBatchSampler(Sampler[list[int]]):
    """Batches that span several topics, several leaves per topic and several documents per leaf.

    Each sample is a (query, document) pair with a label row ``[topic at level 0, ..., topic at level
    L-1, document id]`` (docs/ARCHITECTURE.md, "Training labels"). A batch of ``batch_size`` samples is
    built from ``topics_per_batch`` level-0 topics (chosen with probability proportional to their remaining
    samples, so an epoch drains all topics at the same pace); each topic's share is filled with groups of
    ``docs_per_leaf`` distinct documents of one leaf (finest topic level), taking the leaves of the topic in
    turn so that a topic's share spans several leaves. When topics run short the batch is completed from
    the others. To fill a batch exactly, a chunk may be split, which leaves a few anchors per batch without
    a same-leaf partner (about 1-2% of anchors on a balanced tree). No batch holds two samples with the same
    document id or sharing a dedup key.

    An epoch yields every sample at most once, and every sample once as far as these constraints allow
    (with ``drop_last=True`` the samples of an incomplete last batch wait for the next epoch, which is
    shuffled differently). The order is a pure function of ``(seed, epoch)``; call :meth:`set_epoch`
    between epochs (the sentence-transformers trainer does).

    With labels holding only the document column (``L = 0``) it is a shuffled no-duplicates sampler.

    Args:
        labels: Array-like of shape (n_samples, L + 1), integer ids; topic ids unique across the tree.
        batch_size: Samples per batch.
        topics_per_batch: Level-0 topics per batch; ``None`` picks ``round(sqrt(batch_size /
            docs_per_leaf))``, kept between 2 and the number of topics (e.g. 4 topics for a batch of 32).
        docs_per_leaf: Distinct documents drawn together from one leaf (>= 2 gives every leaf-level anchor
            a positive).
        drop_last: Drop the incomplete last batch of an epoch.
        seed: Seed of every random draw.
        dedup_keys: Optional sequence of length n_samples; each entry a hashable or a tuple of hashables
            (e.g. the query and document texts). Two samples sharing a key never meet in a batch.

    Raises:
        ValueError: bad labels, a batch size below the minimum for this composition (the message says the
            minimum), or fewer distinct documents than ``batch_size`` with ``drop_last=True``.

    Example:
        >>> labels = [[t, 10 + 2 * t + (d % 2), d] for t in range(3) for d in range(8 * t, 8 * t + 8)]
        >>> sampler = HierarchicalBatchSampler(labels, batch_size=8, seed=0)
        >>> batches = list(sampler)
        >>> len(batches), len(batches[0])
        (3, 8)

    """

    def __init__(
        self,
        labels: Any,
        batch_size: int,
        *,
        topics_per_batch: int | None = None,
        docs_per_leaf: int = 2,
        drop_last: bool = True,
        seed: int = 0,
        dedup_keys: Sequence[Any] | None = None,
    ) -> None:
        self.labels = _as_label_array(labels)
        n_samples, n_columns = self.labels.shape
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 2:
            raise InvalidValueError(f"batch_size must be an integer >= 2. Got {batch_size!r} instead.")
        if (
            isinstance(docs_per_leaf, bool)
            or not isinstance(docs_per_leaf, (int, np.integer))
            or docs_per_leaf < 1
        ):
            raise InvalidValueError(f"docs_per_leaf must be an integer >= 1. Got {docs_per_leaf!r} instead.")
        if dedup_keys is not None and len(dedup_keys) != n_samples:
            raise InvalidValueError(
                f"dedup_keys must have one entry per sample ({n_samples}). Got {len(dedup_keys)} instead."
            )
        self.batch_size = int(batch_size)
        self.docs_per_leaf = int(docs_per_leaf)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.epoch = 0
        self.n_levels = n_columns - 1
        self.dedup_keys = None if dedup_keys is None else [_keys_of(k) for k in dedup_keys]

        self._topic = self.labels[:, 0] if self.n_levels >= 1 else np.zeros(n_samples, dtype=np.int64)
        self._leaf = self.labels[:, self.n_levels - 1] if self.n_levels >= 1 else self._topic
        self._doc = self.labels[:, -1]
        self._topics = np.unique(self._topic)
        n_topics = len(self._topics)
        leaves_needed = 2 if self.n_levels >= 2 else 1

        if topics_per_batch is None:
            auto = int(round(float(np.sqrt(self.batch_size / self.docs_per_leaf))))
            self.topics_per_batch = int(min(max(auto, 2), n_topics))
        else:
            if isinstance(topics_per_batch, bool) or not isinstance(topics_per_batch, (int, np.integer)):
                raise InvalidValueError(
                    f"topics_per_batch must be an integer or None. Got {topics_per_batch!r}."
                )
            if not 1 <= topics_per_batch <= n_topics:
                raise InvalidValueError(
                    f"topics_per_batch must be between 1 and the number of level-0 topics ({n_topics}). "
                    f"Got {topics_per_batch} instead."
                )
            self.topics_per_batch = int(topics_per_batch)
        self.min_batch_size = self.topics_per_batch * leaves_needed * self.docs_per_leaf
        if self.batch_size < self.min_batch_size:
            raise InvalidValueError(
                f"batch_size={self.batch_size} is too small for HierarchicalBatchSampler: "
                f"{self.topics_per_batch} topics x {leaves_needed} leaves x {self.docs_per_leaf} documents "
                f"per leaf need batch_size >= {self.min_batch_size}. Increase batch_size, or lower "
                "topics_per_batch or docs_per_leaf."
            )
        n_docs = len(np.unique(self._doc))
        if self.drop_last and n_docs < self.batch_size:
            raise InvalidValueError(
                f"batch_size={self.batch_size} exceeds the number of distinct documents ({n_docs}); a batch "
                "never holds one document twice, so no full batch can be formed. Lower batch_size."
            )
        self._plan_cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (deterministic) order the next iteration yields."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        yield from (list(batch) for batch in self._plan(self.epoch))

    def __len__(self) -> int:
        return len(self._plan(self.epoch))

    # planning -----------------------------------------------------------------------------------------
    def _plan(self, epoch: int) -> list[list[int]]:
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        queues = self._topic_queues(rng)
        batches = self._assemble(queues, rng)
        self._plan_cache = (epoch, batches)
        return batches

    def _topic_queues(self, rng: np.random.Generator) -> dict[int, deque[list[int]]]:
        """Per level-0 topic, a queue of chunks (sample index lists); consecutive chunks from other leaves."""
        m = self.docs_per_leaf
        leaf_chunks: dict[int, dict[int, list[list[int]]]] = {int(t): {} for t in self._topics}
        order = np.lexsort((self._doc, self._leaf))  # deterministic grouping by leaf, then document
        leaves_sorted = self._leaf[order]
        boundaries = np.flatnonzero(np.diff(leaves_sorted)) + 1
        for members in np.split(order, boundaries):
            leaf = int(self._leaf[members[0]])
            topic = int(self._topic[members[0]])
            # Group the leaf's samples by document, shuffle, then deal one sample per document per round so
            # that the several queries of one document land in different chunks.
            docs = self._doc[members]
            doc_groups = [members[docs == d] for d in np.unique(docs)]
            doc_groups = [list(rng.permutation(g)) for g in doc_groups]
            doc_groups = [doc_groups[i] for i in rng.permutation(len(doc_groups))]
            stream: list[int] = []
            while doc_groups:
                stream.extend(int(g.pop()) for g in doc_groups)
                doc_groups = [g for g in doc_groups if g]
            chunks = [stream[i : i + m] for i in range(0, len(stream), m)]
            if len(chunks) > 1 and len(chunks[-1]) < m:
                # A short tail would leave a lone document of its leaf: merge it into the previous chunk.
                chunks[-2].extend(chunks.pop())
            leaf_chunks.setdefault(topic, {})[leaf] = chunks
        queues: dict[int, deque[list[int]]] = {}
        for topic, leaves in leaf_chunks.items():
            lists = [leaves[leaf] for leaf in sorted(leaves)]
            lists = [lists[i] for i in rng.permutation(len(lists))]
            queue: deque[list[int]] = deque()
            position = 0
            while any(position < len(chunks) for chunks in lists):
                queue.extend(chunks[position] for chunks in lists if position < len(chunks))
                position += 1
            queues[topic] = queue
        return queues

    def _assemble(self, queues: dict[int, deque[list[int]]], rng: np.random.Generator) -> list[list[int]]:
        batch_size, m = self.batch_size, self.docs_per_leaf
        remaining = {t: sum(len(c) for c in q) for t, q in queues.items()}
        topics = sorted(queues)
        batches: list[list[int]] = []
        while True:
            available = [t for t in topics if remaining[t] > 0]
            if not available:
                break
            k = min(self.topics_per_batch, len(available))
            weights = np.array([remaining[t] for t in available], dtype=float)
            chosen = [
                available[i]
                for i in rng.choice(len(available), size=k, replace=False, p=weights / weights.sum())
            ]
            batch: list[int] = []
            used: set[Any] = set()
            # Near-equal shares, in whole chunks where possible (e.g. 32 over 3 topics, m=2 -> 12, 10, 10).
            n_chunks = batch_size // m
            shares = [(n_chunks // k + (1 if i < n_chunks % k else 0)) * m for i in range(k)]
            shares[0] += batch_size - sum(shares)
            target = 0
            for topic, share in zip(chosen, shares, strict=True):
                # Whole chunks only, so a leaf's documents stay together; room a topic cannot use passes on
                # to the next topic.
                target += share
                self._fill(batch, used, queues[topic], remaining, topic, target, split=False)
            # Fill what is left: split a chunk of the chosen topics, then (topics running short) take from
            # the others, largest first.
            others = sorted((t for t in available if t not in chosen), key=lambda t: (-remaining[t], t))
            for topic, split in [(t, True) for t in chosen] + [(t, s) for s in (False, True) for t in others]:
                if len(batch) == batch_size:
                    break
                self._fill(batch, used, queues[topic], remaining, topic, batch_size, split=split)
            if not batch:
                break
            if len(batch) < batch_size:
                # Nothing left that fits without a duplicate: this is the epoch's last batch.
                if not self.drop_last:
                    batches.append(batch)
                dropped = sum(remaining.values())
                if dropped:
                    logger.debug(
                        "%d samples left out of this epoch: they repeat documents or texts.", dropped
                    )
                break
            batches.append(batch)
        return batches

    def _fill(
        self,
        batch: list[int],
        used: set[Any],
        queue: deque[list[int]],
        remaining: dict[int, int],
        topic: int,
        target: int,
        *,
        split: bool,
    ) -> None:
        """Move chunks from ``queue`` into ``batch`` until it holds ``target`` samples or nothing fits.

        A chunk's samples that clash with the batch (same document or dedup key) stay queued for a later
        batch. Without ``split`` a chunk larger than the room left is skipped whole.
        """
        kept: list[list[int]] = []
        skipped = 0
        while queue and len(batch) < target and (split or skipped < _MAX_SKIPPED_CHUNKS):
            chunk = queue.popleft()
            room = target - len(batch)
            ok: list[int] = []
            blocked: list[int] = []
            new_keys: set[Any] = set()
            for index in chunk:
                keys = self._sample_keys(index)
                if keys & used or keys & new_keys:
                    blocked.append(index)
                else:
                    ok.append(index)
                    new_keys |= keys
            if not ok or (len(ok) > room and not split):
                kept.append(chunk)
                skipped += 1
                continue
            take, rest = ok[:room], ok[room:]
            for index in take:
                batch.append(index)
                used.update(self._sample_keys(index))
            remaining[topic] -= len(take)
            if rest or blocked:
                kept.append(rest + blocked)
        # Chunks passed over keep their place at the head of the queue for the next batch.
        queue.extendleft(reversed(kept))

    def _sample_keys(self, index: int) -> set[Any]:
        keys: set[Any] = {("doc", int(self._doc[index]))}
        if self.dedup_keys is not None:
            keys.update(("key", k) for k in self.dedup_keys[index])
        return keys


def batch_positive_stats(labels: Any, batches: Sequence[Sequence[int]]) -> dict[str, list[float]]:
    """How often each anchor of a batch finds a positive other than its own document, per level.

    Args:
        labels: Array-like of shape (n_samples, L + 1), as given to :class:`HierarchicalBatchSampler`.
        batches: Lists of sample indices (e.g. ``list(sampler)``).

    Returns:
        ``{"share_with_positive": [...], "mean_positives": [...]}``, one value per label column (level 0
        first, document level last), averaged over all anchors of all batches: the share of anchors with at
        least one other sample of the batch sharing their label at that level (negative labels never
        match), and the mean number of such samples.

    Example:
        >>> batch_positive_stats([[0, 0], [0, 1], [1, 2]], [[0, 1, 2]])["share_with_positive"]
        [0.6666666666666666, 0.0]

    """
    array = _as_label_array(labels)
    n_columns = array.shape[1]
    with_positive = np.zeros(n_columns)
    positives = np.zeros(n_columns)
    anchors = 0
    for batch in batches:
        rows = array[np.asarray(batch, dtype=np.int64)]
        same = (rows[:, None, :] == rows[None, :, :]) & (rows[:, None, :] >= 0)  # (B, B, T)
        np.einsum("iit->it", same)[...] = False  # the anchor itself does not count
        counts = same.sum(axis=1)  # (B, T)
        with_positive += (counts > 0).sum(axis=0)
        positives += counts.sum(axis=0)
        anchors += len(batch)
    if anchors == 0:
        return {"share_with_positive": [0.0] * n_columns, "mean_positives": [0.0] * n_columns}
    return {
        "share_with_positive": (with_positive / anchors).tolist(),
        "mean_positives": (positives / anchors).tolist(),
    }


def heal_batch_sampler(
    *,
    label_column: str | None = "label",
    dedup_columns: Sequence[str] | None = None,
    topics_per_batch: int | None = None,
    docs_per_leaf: int = 2,
    seed: int | None = None,
    label_width: int | None = None,
) -> Callable[..., HierarchicalBatchSampler]:
    """Adapter for ``SentenceTransformerTrainingArguments(batch_sampler=heal_batch_sampler(...))``.

    sentence-transformers accepts as ``batch_sampler`` a callable taking ``(dataset, batch_size, drop_last,
    valid_label_columns, generator, seed)``; the returned callable reads each sample's label row from the
    dataset's label column and uses the dataset's text columns as dedup keys (a text never appears twice in
    a batch, whichever column it is in), then builds a :class:`HierarchicalBatchSampler`.

    Args:
        label_column: Column holding the label rows; ``None`` takes the first of the trainer's
            ``valid_label_columns`` present in the dataset.
        dedup_columns: Columns whose values must not repeat within a batch; ``None`` means every string
            column except the label column.
        topics_per_batch: See :class:`HierarchicalBatchSampler`.
        docs_per_leaf: See :class:`HierarchicalBatchSampler`.
        seed: Overrides the trainer's seed when given.
        label_width: Use only the first ``label_width`` entries of each label row (the pair's own
            ``[topic ids..., document id]``; with hard negatives the rest labels the negatives). ``None``
            uses the whole row.

    Returns:
        A factory with the signature the trainer calls.

    Example:
        >>> args = SentenceTransformerTrainingArguments(  # doctest: +SKIP
        ...     output_dir="out", per_device_train_batch_size=32, batch_sampler=heal_batch_sampler()
        ... )

    """
    return _SamplerFactory(
        label_column=label_column,
        dedup_columns=None if dedup_columns is None else tuple(dedup_columns),
        topics_per_batch=topics_per_batch,
        docs_per_leaf=docs_per_leaf,
        seed=seed,
        label_width=label_width,
    )


@dataclass(frozen=True)
class _SamplerFactory:
    """The callable that :func:`heal_batch_sampler` returns.

    A module-level class, so that the trainer can pickle it with its arguments when it saves a checkpoint
    (a closure cannot be pickled).
    """

    label_column: str | None
    dedup_columns: tuple[str, ...] | None
    topics_per_batch: int | None
    docs_per_leaf: int
    seed: int | None
    label_width: int | None

    __name__ = "heal_batch_sampler"

    def __call__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = 0,
    ) -> HierarchicalBatchSampler:
        columns = list(getattr(dataset, "column_names", None) or [])
        if not columns:
            raise InvalidValueError("heal_batch_sampler needs a datasets.Dataset with named columns.")
        column = self.label_column
        if column is None:
            column = next((c for c in (valid_label_columns or []) if c in columns), None)
        if column is None or column not in columns:
            raise InvalidValueError(
                f"heal_batch_sampler needs a label column ({self.label_column or valid_label_columns}) "
                "holding [topic ids per level..., document id] per sample; the dataset has columns "
                f"{columns}."
            )
        if self.dedup_columns is None:
            features = getattr(dataset, "features", {}) or {}
            text_columns = [
                c
                for c in columns
                if c != column and getattr(features.get(c), "dtype", None) in ("string", "large_string")
            ]
        else:
            missing = [c for c in self.dedup_columns if c not in columns]
            if missing:
                raise InvalidValueError(
                    f"dedup_columns {missing} are not in the dataset (columns: {columns})."
                )
            text_columns = list(self.dedup_columns)
        values = [dataset[c] for c in text_columns]
        keys = [tuple(row) for row in zip(*values, strict=True)] if values else None
        labels = dataset[column]
        if self.label_width is not None:
            labels = [row[: self.label_width] for row in labels]
        return HierarchicalBatchSampler(
            labels,
            batch_size,
            topics_per_batch=self.topics_per_batch,
            docs_per_leaf=self.docs_per_leaf,
            drop_last=drop_last,
            seed=self.seed if self.seed is not None else (seed if seed is not None else 0),
            dedup_keys=keys,
        )

"""HEAL: level-wise supervised contrastive loss over a topic hierarchy.

The maths lives in :func:`heal_loss`, a pure function of embeddings and labels; :class:`HEALLoss` is the
sentence-transformers loss that embeds a batch of (query, document) pairs and calls it.

Label contract (docs/ARCHITECTURE.md, "Training labels"): a sample's label row is
``[path_0, ..., path_{L-1}, doc_index]``, the source document's topic ids from the coarsest level to the
finest, then the document's identity as the finest level. Topic ids are unique across the whole tree, so the
level-``l`` column alone identifies the level-``l`` path prefix: two samples share the prefix
``labels[:, :l + 1]`` exactly when they share ``labels[:, l]``. :func:`heal_loss` relies on that by default
(one equality per level) and offers ``prefix=True`` for labels that do not follow the contract (e.g. topic
ids numbered per parent). A negative label means "unknown at this level": such a sample is neither an anchor
nor a positive at that level.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heal_rag._loss_options import LEVEL_WEIGHT_PRESETS, check_contrast
from heal_rag.errors import InvalidValueError

logger = logging.getLogger(__name__)


def preset_level_weights(preset: str, n_levels: int) -> list[float]:
    """Depth penalties λ_l for ``n_levels`` levels indexed 0 (coarsest) .. ``n_levels - 1`` (finest).

    Args:
        preset: ``"document-heavy"`` (the default of :class:`HEALLoss`): the finest level (the document)
            weighs 1 and topic level ``l`` weighs ``0.1 * 2 ** -(T - 2 - l)``, e.g. ``[0.05, 0.1, 1]`` for two
            topic levels: the topic terms shape the space without overriding the document ranking
            (topic weights comparable to the document's lowered retrieval quality in
            evals/results/bench_retrieval.*);
            ``"fine-heavy"``: ``λ_l = 2 ** (1 / (T - l))``, so the finest level (the document) weighs 2
            and the coarsest ``2 ** (1 / T)`` (the hierarchical-penalty convention of Zhang et al., CVPR
            2022); ``"coarse-heavy"``: the same values in reverse order, ``λ_l = 2 ** (1 / (l + 1))``;
            ``"uniform"``: all ones.
        n_levels: ``T``, the number of active levels (topic levels plus the document level).

    Returns:
        A list of ``n_levels`` positive floats.

    Example:
        >>> [round(w, 3) for w in preset_level_weights("fine-heavy", 3)]
        [1.26, 1.414, 2.0]

    """
    if not isinstance(n_levels, int) or n_levels < 1:
        raise InvalidValueError(f"n_levels must be a positive integer. Got {n_levels!r} instead.")
    if preset == "document-heavy":
        return [0.1 * 2.0 ** -(n_levels - 2 - level) for level in range(n_levels - 1)] + [1.0]
    if preset == "fine-heavy":
        return [2.0 ** (1.0 / (n_levels - level)) for level in range(n_levels)]
    if preset == "coarse-heavy":
        return [2.0 ** (1.0 / (level + 1)) for level in range(n_levels)]
    if preset == "uniform":
        return [1.0] * n_levels
    raise InvalidValueError(
        f"The 'level_weights' preset must be one of {LEVEL_WEIGHT_PRESETS} or a sequence of floats. "
        f"Got {preset!r} instead."
    )


def _validate_weights(weights: Sequence[float], n_levels: int, what: str = "level_weights") -> list[float]:
    values = [float(w) for w in weights]
    if len(values) != n_levels:
        raise InvalidValueError(
            f"{what} has {len(values)} entries but the labels have {n_levels} active levels "
            "(one weight per topic level, coarse to fine, then one for the document level)."
        )
    if any(not math.isfinite(w) or w < 0 for w in values) or sum(values) <= 0:
        raise InvalidValueError(
            f"{what} must be finite, non-negative and not all zero. Got {values} instead."
        )
    return values


def heal_loss(
    query_emb: Tensor,
    doc_emb: Tensor,
    labels: Tensor,
    level_weights: Sequence[float] | Tensor | None = None,
    temperature: float = 0.05,
    *,
    symmetric: bool = False,
    confidence: Tensor | None = None,
    prefix: bool = False,
    normalize_weights: bool = True,
    contrast: str = "graded",
    doc_labels: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """HEAL loss of a batch of (query, document) pairs: one supervised contrastive term per level.

    Let ``S = normalize(q) @ normalize(d).T / temperature`` (cosine similarities, shape (B, B)). At level
    ``l`` the positives of anchor (query) ``i`` are the documents ``j`` of the batch whose label path agrees
    with ``i``'s up to level ``l``; its own document is always one of them. The anchor's term is
    ``-mean_{p in P_l(i)} log_softmax(S_i)[p]``; the softmax runs over every document of the batch, as in
    MultipleNegativesRankingLoss. ``L_l`` averages that term over the anchors that have a positive at level
    ``l`` (anchors whose label is negative, i.e. unknown, contribute nothing there), and
    ``total = sum_l λ_l L_l / sum_l λ_l`` (with ``normalize_weights=True``, the default, so that the loss
    keeps the scale of a single in-batch-negatives loss whatever the number of levels or the preset;
    ``normalize_weights=False`` gives the plain ``sum_l λ_l L_l`` of the paper). Where every anchor has a
    positive at every level this is the paper's ``(1/N) sum_l λ_l sum_i L_{i,l}`` up to that constant.

    With a single level holding the document identity (distinct documents), the result equals
    sentence-transformers' ``MultipleNegativesRankingLoss(scale=1 / temperature)``.

    Everything is computed in float32 with autocast disabled (log-sum-exp over a softmax of similarities
    divided by a small temperature loses too much in half precision), vectorised over levels with a
    (T, B, B) positive mask: no Python loop over samples.

    Args:
        query_emb: Tensor of shape (B, D): the anchors (queries).
        doc_emb: Tensor of shape (B, D): their source documents, row ``i`` belonging to query ``i``.
        labels: Integer tensor of shape (B, T): per sample, the topic id at each active level (coarse to
            fine), then the document id. Negative values mean "unknown at this level".
        level_weights: λ_l, T non-negative floats (not all zero); ``None`` means uniform.
        temperature: Softmax temperature τ > 0 (``scale = 1 / τ`` in sentence-transformers terms).
        symmetric: Also add the document -> query direction (each document is an anchor over the batch's
            queries) and average the two directions per level.
        confidence: Optional float tensor of shape (B, T) or (B, T - 1) in [0, 1]: membership confidence of
            each sample's label at each level (fuzzy labels). An anchor's term is weighted by its own
            confidence and each positive by the positive's confidence. With T - 1 columns the document level
            gets confidence 1. ``None`` (default) weighs everything 1.
        prefix: Compare whole label prefixes ``labels[:, :l + 1]`` instead of the level-``l`` column alone.
            Only needed when topic ids are not unique across the tree.
        normalize_weights: Divide the weighted sum by ``sum(λ)`` (default) or not.
        contrast: What each positive is contrasted with. ``"supcon"`` (the paper's SupCon reading): the
            softmax runs over every document of the batch, so at a coarse level a query is pulled towards
            all documents of its topic *equally*, including away from its own document. ``"graded"``
            (default): positive ``p`` at level ``l`` is contrasted only with itself and the level-``l``
            negatives, ``-log(e^{s_ip} / (e^{s_ip} + sum_{a not in P_l(i)} e^{s_ia}))``; a coarse level
            then asks for "same topic above other topics" without flattening the finer ranking, so the
            levels compose into a graded order (own document > same leaf > same parent > rest). Both
            equal MNRL with the document level alone. ``"graded"`` is the default because it measured
            better (evals/results/bench_retrieval.contrast_med_quick.md). ``"soft"``: one cross-entropy
            against a target distribution over the batch's documents instead of separate terms per level
            (soft labels by tree distance, as in Bertinetto et al., "Making Better Mistakes", CVPR 2020):
            document ``j`` gets target mass ``sum_l λ_l [j in P_l(i)]``, normalised per anchor, so the
            own document gets the most, same-leaf documents less, same-parent documents less still. The
            returned ``per_level[l]`` is level ``l``'s share of that cross-entropy before λ, and ``total =
            sum_l λ_l per_level[l]`` (``normalize_weights`` does not apply: the target is normalised).
        doc_labels: Integer tensor of shape (M, T), M >= B: the labels of ``doc_emb``'s rows when
            ``doc_emb`` holds more documents than there are queries (hard negatives: rows ``B..M-1``).
            Rows ``0..B-1`` must be the pairs' own documents. ``None``: ``doc_emb`` has B rows labelled by
            ``labels``. Extra documents are candidates for every anchor; whether one is a positive at a
            level follows from its labels (a same-leaf negative is a positive at the topic levels and a
            negative at the document level).

    Returns:
        ``(total, per_level)``: the scalar loss and the unweighted per-level losses ``L_l`` (shape (T,),
        both carry gradients). A level with no anchor that has a positive gives 0.

    Raises:
        ValueError: on mismatched shapes, non-integer labels, a non-positive temperature or bad weights.

    Example:
        >>> q, d = torch.randn(4, 8), torch.randn(4, 8)
        >>> labels = torch.tensor([[0, 10], [0, 11], [1, 12], [1, 13]])
        >>> total, per_level = heal_loss(q, d, labels, level_weights=[1.0, 2.0])
        >>> per_level.shape
        torch.Size([2])

    """
    batch = query_emb.shape[0] if query_emb.ndim == 2 else -1
    n_docs = batch if doc_labels is None else (doc_emb.shape[0] if doc_emb.ndim == 2 else -1)
    if (
        query_emb.ndim != 2
        or doc_emb.ndim != 2
        or doc_emb.shape != (n_docs, query_emb.shape[1])
        or n_docs < batch
    ):
        raise InvalidValueError(
            "query_emb must have shape (batch, dim) and doc_emb (batch, dim), or (M >= batch, dim) with "
            f"doc_labels. Got {tuple(query_emb.shape)} and {tuple(doc_emb.shape)} instead."
        )
    labels = _check_labels(labels, batch, "labels")
    if doc_labels is None:
        doc_labels = labels
    else:
        doc_labels = _check_labels(doc_labels, n_docs, "doc_labels")
        if doc_labels.shape[1] != labels.shape[1]:
            raise InvalidValueError(
                f"doc_labels has {doc_labels.shape[1]} levels but labels has {labels.shape[1]}; both rows "
                "are [topic id at level 0, ..., topic id at level L-1, document id]."
            )
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise InvalidValueError(f"temperature must be a positive number. Got {temperature!r} instead.")
    check_contrast(contrast)
    n_levels = labels.shape[1]
    device = query_emb.device
    if level_weights is None:
        weights_list = [1.0] * n_levels
    elif isinstance(level_weights, Tensor):
        weights_list = _validate_weights(level_weights.detach().flatten().tolist(), n_levels)
    else:
        weights_list = _validate_weights(level_weights, n_levels)
    weights = torch.tensor(weights_list, dtype=torch.float32, device=device)
    labels = labels.to(device=device, dtype=torch.long)
    doc_labels = doc_labels.to(device=device, dtype=torch.long)

    with torch.autocast(device_type=device.type, enabled=False):
        q = F.normalize(query_emb.float(), p=2, dim=-1)
        d = F.normalize(doc_emb.float(), p=2, dim=-1)
        scores = (q @ d.T) / temperature  # (B, M): query i against document j

        # positives[l, i, j]: document j shares anchor i's label path at level l (own document included).
        cols, doc_cols = labels.T, doc_labels.T  # (T, B), (T, M)
        known, doc_known = cols >= 0, doc_cols >= 0
        positives = (cols[:, :, None] == doc_cols[:, None, :]) & known[:, :, None] & doc_known[:, None, :]
        if prefix:
            # Cumulative AND over levels: a match at level l requires matches at all coarser levels.
            positives = torch.cummin(positives.to(torch.uint8), dim=0).values.bool()

        if confidence is None:
            pos_weight = positives.float()
            anchor_weight = torch.ones(n_levels, batch, device=device)
        else:
            if n_docs != batch:
                raise InvalidValueError(
                    "confidence weights are not supported together with extra doc_labels."
                )
            conf = _check_confidence(confidence, batch, n_levels, device)  # (T, B)
            pos_weight = positives.float() * conf[:, None, :]
            anchor_weight = conf

        if contrast == "soft":
            per_level = _soft_target_terms(scores, pos_weight, weights)
            if symmetric:
                own = pos_weight[:, :, :batch].transpose(1, 2)
                per_level = 0.5 * (per_level + _soft_target_terms(scores[:, :batch].T, own, weights))
            return (weights * per_level).sum(), per_level

        per_level = _directional_terms(scores, positives, pos_weight, anchor_weight, contrast)
        if symmetric:
            # The pairs' own document j as anchor over the queries. On that (B, B) block the label relation
            # is symmetric and positive weights depend only on the positive's own confidence, so the same
            # weights apply; extra documents (hard negatives) have no query and are not anchors.
            own = positives[:, :, :batch]
            per_level = 0.5 * (
                per_level
                + _directional_terms(
                    scores[:, :batch].T, own, pos_weight[:, :, :batch], anchor_weight, contrast
                )
            )

        denominator = weights.sum() if normalize_weights else torch.ones((), device=device)
        total = (weights * per_level).sum() / denominator
    return total, per_level


def _check_labels(labels: Any, rows: int, what: str) -> Tensor:
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or labels.shape[0] != rows:
        raise InvalidValueError(
            f"{what} must have shape (batch={rows}, n_levels). Got {tuple(labels.shape)} instead. Each row "
            "is [topic id at level 0, ..., topic id at level L-1, document id]."
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise InvalidValueError(
            f"{what} must be an integer tensor (int64 topic and document ids). Got {labels.dtype}."
        )
    return labels


def _soft_target_terms(scores: Tensor, pos_weight: Tensor, weights: Tensor) -> Tensor:
    """Per-level shares (before λ) of the cross-entropy to the tree-distance target; shape (T,).

    The target of anchor ``i`` is ``t_ij = sum_l λ_l w_lij / Z_i`` with ``Z_i = sum_lj λ_l w_lij``; the
    cross-entropy ``-sum_j t_ij log p_ij`` splits by level into ``λ_l * (sum_j w_lij (-log p_ij)) / Z_i``.
    """
    log_prob = scores - torch.logsumexp(scores, dim=1, keepdim=True)  # (B, M)
    mass = (weights[:, None, None] * pos_weight).sum(dim=(0, 2))  # Z_i, (B,)
    has_target = mass > 0
    shares = -(pos_weight * log_prob[None]).sum(dim=2) / mass.clamp_min(1e-12)  # (T, B)
    n = has_target.sum().clamp_min(1)
    return (shares * has_target).sum(dim=1) / n


def _check_confidence(confidence: Tensor, batch: int, n_levels: int, device: torch.device) -> Tensor:
    conf = torch.as_tensor(confidence, device=device).float()
    if conf.ndim != 2 or conf.shape[0] != batch or conf.shape[1] not in (n_levels, n_levels - 1):
        raise InvalidValueError(
            f"confidence must have shape (batch={batch}, {n_levels}) or ({batch}, {n_levels - 1}) (document "
            f"level implied 1). Got {tuple(conf.shape)} instead."
        )
    if conf.shape[1] == n_levels - 1:
        conf = torch.cat([conf, torch.ones(batch, 1, device=device)], dim=1)
    if not torch.isfinite(conf).all() or (conf < 0).any() or (conf > 1).any():
        raise InvalidValueError("confidence values must lie in [0, 1].")
    return conf.T


def _directional_terms(
    scores: Tensor, positives: Tensor, pos_weight: Tensor, anchor_weight: Tensor, contrast: str
) -> Tensor:
    """Per-level loss for the anchors in the rows of ``scores`` (B, B).

    ``positives`` and ``pos_weight`` have shape (T, B, B), ``anchor_weight`` (T, B).
    """
    if contrast == "graded":
        # log( e^{s_ip} / (e^{s_ip} + sum over level-l negatives) ), stable: a finite fill (not -inf) keeps
        # the gradient finite when a level has no negative for an anchor (the term is then 0).
        negatives_lse = torch.logsumexp(scores[None].masked_fill(positives, -1e9), dim=2, keepdim=True)
        log_prob = scores[None] - torch.logaddexp(scores[None], negatives_lse)  # (T, B, B)
    else:
        log_prob = (scores - torch.logsumexp(scores, dim=1, keepdim=True))[None]  # (1, B, B), stable
    pos_mass = pos_weight.sum(dim=2)  # (T, B)
    has_pos = pos_mass > 0
    # Mean log-probability of the positives; anchors without positives are masked out below.
    anchor_terms = -(pos_weight * log_prob).sum(dim=2) / pos_mass.clamp_min(1e-12)
    weight = anchor_weight * has_pos
    norm = weight.sum(dim=1)
    return torch.where(norm > 0, (anchor_terms * weight).sum(dim=1) / norm.clamp_min(1e-12), 0.0)


class HEALLoss(nn.Module):
    """Hierarchical Embedding Alignment Loss (HEAL) for sentence-transformers.

    Given (query, document) pairs and, per pair, the document's topic path and identity as labels, HEAL adds
    one supervised contrastive (SupCon-style) term per level of the topic hierarchy: at level ``l`` a query
    is pulled towards every document of the batch that shares its path down to level ``l`` and pushed away
    from the others. Pairs sharing more levels are attracted more, so the embedding space mirrors the topic
    tree; the finest level, the document identity, makes a query's own document its strongest positive.

    Args:
        model: The SentenceTransformer model to train.
        level_weights: Depth penalties λ_l: a preset (``"document-heavy"`` (default), ``"fine-heavy"``,
            ``"coarse-heavy"``,
            ``"uniform"``; see :func:`preset_level_weights`) or one non-negative float per active level,
            coarse to fine (the document level last).
        temperature: Softmax temperature τ > 0 (``scale = 1 / τ``); 0.05 matches MNRL's default scale of 20.
        use_hierarchy: Use the topic levels. ``False`` keeps only the document level: the flat baseline,
            identical to MultipleNegativesRankingLoss.
        use_document_level: Use the document identity as the finest level. ``False`` trains on topics only.
        symmetric: Also add the document -> query direction.
        normalize_weights: Divide the weighted sum of the levels by ``sum(λ)`` (default), keeping the loss
            on the scale of a single in-batch-negatives loss.
        contrast: ``"graded"`` (default), ``"supcon"`` or ``"soft"`` (one cross-entropy to a tree-distance
            target): how the levels are combined (see :func:`heal_loss`).
        return_components: Return a dict of weighted per-level terms (``level_0``, ..., ``document``) whose
            sum is the loss; sentence-transformers' trainer sums them and logs each one. ``False`` returns
            the scalar total. Either way, the unweighted per-level losses of the last call are kept in
            ``last_level_losses``.

    References:
        - Bhattarai et al., "HEAL: Hierarchical Embedding Alignment Loss for Improved Retrieval and
          Representation Learning", KnowledgeNLP 2025. https://aclanthology.org/2025.knowledgenlp-1.19/
        - Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020. https://arxiv.org/abs/2004.11362

    Requirements:
        1. (anchor, positive) pairs: a query and its source document.
        2. Labels: a sequence of ints per pair, ``[topic id at level 0, ..., topic id at level L-1,
           document id]`` (topic ids unique across the tree); queries inherit their document's labels.
        3. A batch sampler that puts several documents of the same topics in a batch, e.g.
           :func:`heal_rag.training.sampler.heal_batch_sampler`; with random batches the topic levels rarely
           find positives.

    Inputs:
        +-----------------------------------+------------------------------------------+
        | Texts                             | Labels                                   |
        +===================================+==========================================+
        | (anchor, positive) pairs          | int list (L + 1,): topic path + doc id   |
        +-----------------------------------+------------------------------------------+
        | (anchor, positive, negative_1..n) | int list ((n + 1)(L + 1),): one block    |
        |                                   | per document column                      |
        +-----------------------------------+------------------------------------------+

    Relations:
        - With ``use_hierarchy=False`` (only the document level) it equals
          :class:`~sentence_transformers.sentence_transformer.losses.MultipleNegativesRankingLoss` with
          ``scale = 1 / temperature`` and cosine similarity.
        - Each topic level is a :class:`SupConLoss`-style term (Khosla et al. 2020) between queries and
          documents; ``BatchAllTripletLoss`` uses a single flat label instead.

    Example:
        ::

            from datasets import Dataset
            from sentence_transformers import (
                SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments,
            )
            from heal_rag.training.loss import HEALLoss
            from heal_rag.training.sampler import heal_batch_sampler

            model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
            train_dataset = Dataset.from_dict({
                "anchor": ["What lowers blood pressure?", "Which alloys resist creep?"],
                "positive": ["ACE inhibitors reduce ...", "Nickel superalloys keep ..."],
                "label": [[0, 2, 0], [1, 5, 1]],  # level-0 topic, level-1 topic, document id
            })
            loss = HEALLoss(model, level_weights="document-heavy", temperature=0.05)
            args = SentenceTransformerTrainingArguments(
                output_dir="out", per_device_train_batch_size=32, batch_sampler=heal_batch_sampler(),
            )
            trainer = SentenceTransformerTrainer(
                model=model, args=args, train_dataset=train_dataset, loss=loss
            )
            trainer.train()

    """

    def __init__(
        self,
        model: nn.Module,
        level_weights: str | Sequence[float] = "document-heavy",
        temperature: float = 0.05,
        use_hierarchy: bool = True,
        use_document_level: bool = True,
        symmetric: bool = False,
        normalize_weights: bool = True,
        return_components: bool = True,
        contrast: str = "graded",
    ) -> None:
        super().__init__()
        check_contrast(contrast)
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise InvalidValueError(
                f"The 'temperature' parameter of HEALLoss must be > 0. Got {temperature!r} instead."
            )
        if not (use_hierarchy or use_document_level):
            raise InvalidValueError(
                "HEALLoss needs at least one level: use_hierarchy and use_document_level cannot both be "
                "False."
            )
        if isinstance(level_weights, str):
            preset_level_weights(level_weights, 1)  # validates the preset name now, not at the first step
        else:
            values = [float(w) for w in level_weights]
            _validate_weights(values, len(values))
            if not use_hierarchy and len(values) != 1:
                raise InvalidValueError(
                    f"With use_hierarchy=False only the document level is active, so level_weights needs one "
                    f"value. Got {len(values)}."
                )
            level_weights = values
        self.model = model
        self.level_weights = level_weights
        self.temperature = float(temperature)
        self.use_hierarchy = use_hierarchy
        self.use_document_level = use_document_level
        self.symmetric = symmetric
        self.normalize_weights = normalize_weights
        self.return_components = return_components
        self.contrast = contrast
        self.last_level_losses: dict[str, float] = {}

    def active_labels(self, labels: Tensor) -> Tensor:
        """Select the label columns of the active levels from the full (B, L + 1) label tensor."""
        if labels is None:
            raise InvalidValueError(
                "HEALLoss needs labels: add a 'label' column holding [topic ids per level..., document id] "
                "to the training dataset."
            )
        if labels.ndim != 2 or labels.shape[1] < 1:
            raise InvalidValueError(
                "HEALLoss expects labels of shape (batch, L + 1) (topic ids per level, then the document "
                f"id). Got shape {tuple(labels.shape)}."
            )
        if self.use_hierarchy and self.use_document_level:
            return labels
        if self.use_hierarchy:
            if labels.shape[1] < 2:
                raise InvalidValueError(
                    "use_document_level=False needs at least one topic level, but the labels have only the "
                    "document column."
                )
            return labels[:, :-1]
        return labels[:, -1:]

    def resolve_level_weights(self, n_levels: int) -> list[float]:
        """λ for ``n_levels`` active levels (a preset is expanded; a sequence is checked)."""
        if isinstance(self.level_weights, str):
            return preset_level_weights(self.level_weights, n_levels)
        return _validate_weights(self.level_weights, n_levels)

    def level_names(self, n_levels: int) -> list[str]:
        """Names of the active levels, used as the keys of the returned components."""
        n_topic = n_levels - 1 if self.use_document_level else n_levels
        names = [f"level_{i}" for i in range(n_topic)]
        return names + ["document"] if self.use_document_level else names

    def forward(
        self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor
    ) -> Tensor | dict[str, Tensor]:
        """Embed the (query, document) columns and return the HEAL loss (or its weighted components)."""
        embeddings = _embed(self.model, list(sentence_features))
        if len(embeddings) < 2:
            raise InvalidValueError(
                "HEALLoss expects (anchor, positive[, negative_1, ...]) texts, i.e. at least 2 text columns "
                f"besides the label. Got {len(embeddings)}."
            )
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(
        self, embeddings: list[Tensor], labels: Tensor
    ) -> Tensor | dict[str, Tensor]:
        """Loss from already computed [query, document, negatives...] embeddings (see :meth:`forward`).

        With hard negatives (more than 2 columns) a label row is the pair's row followed by one row of the
        same width per negative column: ``[pair path..., doc id, negative_1 path..., its doc id, ...]``.
        """
        n_doc_columns = len(embeddings) - 1
        if n_doc_columns == 1:
            blocks = [self.active_labels(labels)]
        else:
            if labels is None or labels.ndim != 2 or labels.shape[1] % n_doc_columns:
                raise InvalidValueError(
                    f"With {n_doc_columns} document columns (positive + hard negatives) each label row must "
                    f"hold {n_doc_columns} equal blocks [topic ids..., document id]. Got labels of shape "
                    f"{None if labels is None else tuple(labels.shape)}."
                )
            width = labels.shape[1] // n_doc_columns
            blocks = [
                self.active_labels(labels[:, c * width : (c + 1) * width]) for c in range(n_doc_columns)
            ]
        active = blocks[0]
        weights = self.resolve_level_weights(active.shape[1])
        total, per_level = heal_loss(
            embeddings[0],
            torch.cat(embeddings[1:]) if n_doc_columns > 1 else embeddings[1],
            active,
            level_weights=weights,
            temperature=self.temperature,
            symmetric=self.symmetric,
            normalize_weights=self.normalize_weights,
            contrast=self.contrast,
            doc_labels=torch.cat(blocks) if n_doc_columns > 1 else None,
        )
        names = self.level_names(active.shape[1])
        values = per_level.detach().cpu().tolist()
        self.last_level_losses = dict(zip(names, values, strict=True))
        if not self.return_components:
            return total
        # the components sum to ``total``: "soft" already weighs by λ without normalising
        scale = sum(weights) if self.normalize_weights and self.contrast != "soft" else 1.0
        return {name: per_level[i] * (weights[i] / scale) for i, name in enumerate(names)}

    def get_config_dict(self) -> dict[str, Any]:
        """Return the configuration recorded in the model card."""
        return {
            "level_weights": self.level_weights,
            "temperature": self.temperature,
            "use_hierarchy": self.use_hierarchy,
            "use_document_level": self.use_document_level,
            "symmetric": self.symmetric,
            "normalize_weights": self.normalize_weights,
            "contrast": self.contrast,
        }

    @property
    def citation(self) -> str:
        """BibTeX of the HEAL paper."""
        return """
@inproceedings{bhattarai2025heal,
    title = {{HEAL}: Hierarchical Embedding Alignment Loss for Improved Retrieval and
             Representation Learning},
    author = {Bhattarai, Manish and others},
    booktitle = {Proceedings of the 4th International Workshop on Knowledge-Augmented Methods for NLP},
    year = {2025},
    url = {https://aclanthology.org/2025.knowledgenlp-1.19/},
    eprint = {2412.04661},
    archivePrefix = {arXiv},
}
"""


def _embed(model: nn.Module, features: list[dict[str, Tensor]]) -> list[Tensor]:
    """Embed each text column; one merged forward where sentence-transformers offers it (as MNRL does)."""
    try:
        from sentence_transformers.base.losses.merged_forward import embed_columns
    except ImportError:  # older sentence-transformers: one forward per column
        return [model(f)["sentence_embedding"] for f in features]
    return embed_columns(model, features)

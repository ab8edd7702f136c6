"""HEALTrainingArguments: every setting that decides what a fine-tune learns, in one validated object.

The Python engine, ``heal-rag finetune`` (whose training flags take their defaults from these fields) and
the pipeline all build one of these; ``to_dict()`` is the ``training`` block that ``heal_config.json``
records. The module imports neither torch nor LlamaIndex, so the CLI can read the defaults cheaply.
It follows ``SentenceTransformerTrainingArguments``: a dataclass validated once, at construction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from heal_rag._loss_options import LEVEL_WEIGHT_PRESETS, check_contrast, check_hard_negatives
from heal_rag.errors import InvalidTypeError, InvalidValueError

__all__ = ["HEALTrainingArguments"]

_PSEUDO_QUERY_MODES = ("auto", "title", "sentence", "both")


def _check_int(name: str, value: Any, low: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidValueError(
            f"The '{name}' parameter must be an integer >= {low}{why}. Got {value!r} instead."
        )


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise InvalidValueError(
            f"The '{name}' parameter must be one of {tuple(choices)}. Got {value!r} instead."
        )


@dataclass
class HEALTrainingArguments:
    """The training settings of a HEAL (or flat, ``use_hierarchy=False``) fine-tune.

    The defaults are the configuration chosen on a SciFact dev split (``evals/study_heal.py``): 4 epochs at
    learning rate 5e-5, the graded contrast with document-heavy level weights, and one hard negative per
    pair mined by the base model. Constructing (or ``replace``-ing) validates every field.

    Attributes:
        use_hierarchy: train with the topic levels (HEAL); ``False`` is the flat in-batch-negatives baseline
            on the same pairs.
        epochs: passes over the training pairs (ignored when ``max_steps`` is set).
        max_steps: stop after this many optimiser steps (``None``: ``epochs`` full epochs).
        batch_size: pairs per batch (at least 2: in-batch negatives).
        learning_rate: peak learning rate of the linear schedule.
        warmup_ratio: share of the steps spent warming up, in [0, 1).
        temperature: softmax temperature of the contrastive terms.
        contrast: how the levels combine (``graded``, ``supcon`` or ``soft``; see ``heal_loss``).
        level_weights: a preset name or one weight per level (topic levels coarse to fine, then the document).
        use_document_level: include the document identity as the finest level.
        hard_negatives: one extra negative per pair: ``mined`` (by the base model), ``tree`` (same leaf
            topic; needs the hierarchy) or ``none``.
        hard_negative_kwargs: overrides for the miner (e.g. ``range_max``, ``cache_folder``).
        max_seq_length: token limit while training.
        seed: seeds the hierarchy (when built by the engine), the pseudo-queries, the sampler and the trainer.
        mixed_precision: ``None``, ``"fp16"`` or ``"bf16"``.
        pseudo_query_mode: which offline pseudo-queries per document (see ``make_pseudo_queries``).
        sampler_kwargs: overrides for the hierarchy-aware batch sampler.
        on_eval_overlap: a training query that is also an evaluation query is ``"drop"``-ped or ``"raise"``-s.

    Example:
        >>> from heal_rag import HEALTrainingArguments
        >>> args = HEALTrainingArguments(epochs=2, hard_negatives="none")
        >>> args.replace(use_hierarchy=False).to_dict()["use_hierarchy"]
        False

    """

    use_hierarchy: bool = True
    epochs: int = 4
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    temperature: float = 0.05
    contrast: Literal["graded", "supcon", "soft"] = "graded"
    level_weights: str | tuple[float, ...] = "document-heavy"
    use_document_level: bool = True
    hard_negatives: Literal["mined", "tree", "none"] = "mined"
    hard_negative_kwargs: dict[str, Any] = field(default_factory=dict)
    max_seq_length: int = 256
    seed: int = 0
    mixed_precision: Literal["fp16", "bf16"] | None = None
    pseudo_query_mode: Literal["auto", "title", "sentence", "both"] = "auto"
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    on_eval_overlap: Literal["drop", "raise"] = "drop"

    def __post_init__(self) -> None:
        self.use_hierarchy = bool(self.use_hierarchy)
        self.use_document_level = bool(self.use_document_level)
        _check_int("epochs", self.epochs, 1)
        if self.max_steps is not None:
            _check_int("max_steps", self.max_steps, 1, " or None")
        _check_int("batch_size", self.batch_size, 2, " (in-batch negatives need two pairs per batch)")
        _check_int("max_seq_length", self.max_seq_length, 8)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise InvalidValueError(
                f"The 'seed' parameter must be an integer in [0, 2**32 - 1]. Got {self.seed!r}."
            )
        for name, low, high, closed_low in (
            ("learning_rate", 0.0, 1.0, False),
            ("warmup_ratio", 0.0, 1.0, True),
            ("temperature", 0.0, math.inf, False),
        ):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (low <= value if closed_low else low < value) and value < high
            if not ok:
                interval = f"{'[' if closed_low else '('}{low:g}, {high:g})"
                raise InvalidValueError(
                    f"The '{name}' parameter must be in {interval}. Got {value!r} instead."
                )
            setattr(self, name, float(value))
        check_contrast(self.contrast)
        check_hard_negatives(self.hard_negatives)
        _check_choice("mixed_precision", self.mixed_precision, (None, "fp16", "bf16"))
        _check_choice("pseudo_query_mode", self.pseudo_query_mode, _PSEUDO_QUERY_MODES)
        _check_choice("on_eval_overlap", self.on_eval_overlap, ("drop", "raise"))
        self.level_weights = self._checked_level_weights(self.level_weights)
        for name in ("hard_negative_kwargs", "sampler_kwargs"):
            value = getattr(self, name)
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise InvalidTypeError(
                    f"The '{name}' parameter must be a mapping. Got {type(value).__name__}."
                )
            setattr(self, name, dict(value))
        if self.hard_negatives == "tree" and not self.use_hierarchy:
            raise InvalidValueError(
                "hard_negatives='tree' draws negatives from the topic hierarchy, so it needs "
                "use_hierarchy=True (for the flat loss with tree negatives, give level_weights with 0 for "
                "every topic level)."
            )
        if not self.use_hierarchy and not self.use_document_level:
            raise InvalidValueError(
                "use_hierarchy=False and use_document_level=False leave no level to train on."
            )

    @staticmethod
    def _checked_level_weights(value: Any) -> str | tuple[float, ...]:
        if isinstance(value, str):
            _check_choice("level_weights", value, LEVEL_WEIGHT_PRESETS)
            return value
        try:
            weights = tuple(float(w) for w in value)
        except (TypeError, ValueError):
            raise InvalidValueError(
                f"The 'level_weights' parameter must be one of {LEVEL_WEIGHT_PRESETS} or a sequence of "
                f"numbers. Got {value!r} instead."
            ) from None
        if not weights or any(not math.isfinite(w) or w < 0 for w in weights) or not any(weights):
            raise InvalidValueError(
                "The 'level_weights' must be finite, non-negative and not all zero (one per level: topic "
                f"levels coarse to fine, then the document level). Got {value!r} instead."
            )
        return weights

    def replace(self, **changes: Any) -> HEALTrainingArguments:
        """Return a validated copy with ``changes``; an unknown name raises a TypeError listing the fields."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise InvalidTypeError(
                f"Unknown training setting(s) {unknown}; the settings are "
                f"{', '.join(f.name for f in dataclasses.fields(self))}."
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-ready values (level weights as a list)."""
        out = dataclasses.asdict(self)
        if isinstance(self.level_weights, tuple):
            out["level_weights"] = list(self.level_weights)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HEALTrainingArguments:
        """Read settings from ``to_dict()`` output (e.g. a ``heal_config.json`` ``training`` block).

        Keys that are not settings (the block also records the device, the resolved weights, ...) are
        ignored, so that an older or newer file still reads.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

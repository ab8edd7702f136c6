"""Names of the HEAL loss options, kept out of the torch-importing training package for the CLI."""

from __future__ import annotations

from heal_rag.errors import InvalidValueError

#: λ presets of :func:`heal_rag.training.loss.preset_level_weights`; the first is the default.
LEVEL_WEIGHT_PRESETS = ("document-heavy", "fine-heavy", "coarse-heavy", "uniform")
#: What a level-l positive is contrasted with (see :func:`heal_rag.training.loss.heal_loss`).
CONTRAST_MODES = ("supcon", "graded", "soft")
#: Where the extra (hard negative) documents of a training pair come from (see HEALFinetuneEngine).
HARD_NEGATIVE_SOURCES = ("none", "tree", "mined")


def check_hard_negatives(source: str) -> None:
    """Raise a ValueError naming the valid sources when ``source`` is not one of them."""
    if source not in HARD_NEGATIVE_SOURCES:
        raise InvalidValueError(
            f"The 'hard_negatives' parameter must be one of {HARD_NEGATIVE_SOURCES}. Got {source!r} instead."
        )


def check_contrast(contrast: str) -> None:
    """Raise a ValueError naming the valid modes when ``contrast`` is not one of them."""
    if contrast not in CONTRAST_MODES:
        raise InvalidValueError(
            f"The 'contrast' parameter must be one of {CONTRAST_MODES}. Got {contrast!r} instead."
        )

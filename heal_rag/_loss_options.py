"""Names of the HEAL loss options, kept out of the torch-importing training package for the CLI."""

from __future__ import annotations

#: λ presets of :func:`heal_rag.training.loss.preset_level_weights`; the first is the default.
LEVEL_WEIGHT_PRESETS = ("document-heavy", "fine-heavy", "coarse-heavy", "uniform")
#: What a level-l positive is contrasted with (see :func:`heal_rag.training.loss.heal_loss`).
CONTRAST_MODES = ("supcon", "graded")


def check_contrast(contrast: str) -> None:
    """Raise a ValueError naming the valid modes when ``contrast`` is not one of them."""
    if contrast not in CONTRAST_MODES:
        raise ValueError(
            f"The 'contrast' parameter must be one of {CONTRAST_MODES}. Got {contrast!r} instead."
        )

"""The planted-topic corpus shared by the HNMFk and hierarchy tests (a helper module, not a test module).

Three themes with two sub-themes each: every document mixes words of its sub-theme with words shared by its
theme: a known two-level answer (3 themes, 6 sub-themes).
"""

from __future__ import annotations

import numpy as np

THEMES = {
    "astro": {
        "stars": "galaxy nebula supernova pulsar quasar redshift luminosity telescope parallax cepheid",
        "planets": "orbit exoplanet mars jupiter saturn moon asteroid comet crater atmosphere",
    },
    "cook": {
        "bake": "flour oven dough yeast bread pastry butter crust knead biscuit",
        "grill": "barbecue charcoal steak skewer marinade smoke brisket sausage burger ribs",
    },
    "law": {
        "court": "judge jury verdict appeal lawsuit plaintiff defendant testimony witness attorney",
        "tax": "income deduction audit revenue taxpayer refund exemption levy invoice accountant",
    },
}
SHARED = {
    "astro": "space cosmic observe universe astronomer",
    "cook": "kitchen recipe taste chef meal",
    "law": "legal statute regulation lawyer clause",
}

# fast HNMFk settings for the tiny corpus (fewer perturbations, keep every term, no progress bar)
FAST = dict(n_perturbations=3, min_df=1, max_df=1.0, random_state=0, show_progress=False)


def planted_corpus(per_leaf=25, seed=0):
    """Return (texts, level-0 labels, level-1 labels) of ``per_leaf`` documents per sub-theme."""
    rng = np.random.default_rng(seed)
    texts, l0, l1 = [], [], []
    for theme, subs in THEMES.items():
        for sub, words in subs.items():
            vocab_sub, vocab_theme = words.split(), SHARED[theme].split()
            for _ in range(per_leaf):
                tokens = list(rng.choice(vocab_sub, 4)) + list(rng.choice(vocab_theme, 7))
                texts.append(" ".join(tokens))
                l0.append(theme)
                l1.append(f"{theme}/{sub}")
    return texts, np.array(l0), np.array(l1)

"""Names of the files and folders heal-rag writes next to a model or an index, defined once.

A light module (no torch, no LlamaIndex): the model directory, the index persistence, the embedding and
the retrieval evaluation all read these names from here.
"""

from __future__ import annotations

#: Sub-folder of a saved HEAL model directory (and of a saved index) holding ``Hierarchy.save`` output.
HIERARCHY_DIR = "heal_hierarchy"
#: File of a saved HEAL model directory recording its training configuration, metrics and versions.
MODEL_CONFIG_FILE = "heal_config.json"

__all__ = ["HIERARCHY_DIR", "MODEL_CONFIG_FILE"]

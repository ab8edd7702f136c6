"""Topic hierarchy of a corpus: NMFk (NMF with automatic k), HNMFk (hierarchical) and the Hierarchy result.

Needs only numpy, scipy and scikit-learn (torch is used for the NMF kernel only on a CUDA device).
"""

from heal_rag.hierarchy.hnmfk import HNMFk
from heal_rag.hierarchy.nmfk import NMFk
from heal_rag.hierarchy.tree import Hierarchy, Topic

__all__ = ["HNMFk", "Hierarchy", "NMFk", "Topic"]

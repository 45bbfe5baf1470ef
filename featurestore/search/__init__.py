"""Vector search: a cached float32 matrix per version, exact blocked scoring, an optional faiss HNSW index.

``Store.search`` / ``Store.build_index`` are the entry points; :class:`Matrix` is what ``FeatureSet.matrix()``
returns (a version's vectors, memory-mapped, with their keys).
"""

from featurestore.search._matrix import METRICS, Matrix

__all__ = ["METRICS", "Matrix"]

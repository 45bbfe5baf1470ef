"""Vector search: a cached float32 matrix per version, exact blocked scoring, an optional faiss HNSW index."""

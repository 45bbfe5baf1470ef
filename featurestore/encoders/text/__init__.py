"""Text encoders: sentence-transformers (torch or ONNX Runtime), static token vectors, TF-IDF+SVD, hash."""

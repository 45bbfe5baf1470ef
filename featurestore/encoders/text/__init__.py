"""Text encoders: sentence-transformers (torch or ONNX Runtime), static token vectors, TF-IDF+SVD, hash.

Nothing here imports torch, transformers, onnxruntime or scikit-learn until a model is built.
"""

from featurestore.encoders.text._hash import HashEncoder
from featurestore.encoders.text._sentence_transformers import SentenceTransformerEncoder
from featurestore.encoders.text._static import GloveEncoder, WordLlamaEncoder
from featurestore.encoders.text._tfidf_svd import TfidfSvd

__all__ = ["GloveEncoder", "HashEncoder", "SentenceTransformerEncoder", "TfidfSvd", "WordLlamaEncoder"]

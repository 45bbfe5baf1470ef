"""The encoder registry: ``get_encoder("<key>:<model>", **options)`` -> an ``Encoder``.

Built in: ``hash:<dim>`` (deterministic test vectors), ``sentence-transformers:<hub id | directory>`` (offline text
models, torch or ONNX Runtime), the static ``wordllama:l2_supercat[-<dim>]`` and ``glove:6B-50d`` (mean of token
vectors, numpy), and ``tfidf-svd:<id>``, fitted with ``TfidfSvd.fit`` and kept in a store. Importing this package
never imports torch, transformers, sentence-transformers, onnxruntime, scikit-learn or wordllama: each encoder
imports its library when it first loads a model.

    >>> enc = get_encoder("hash:8")
    >>> enc.encode(["a text", "another"]).shape
    (2, 8)
"""

from featurestore.encoders._base import Encoder
from featurestore.encoders._hash import HashEncoder
from featurestore.encoders._registry import encoder_from_spec, get_encoder, is_reproducible, list_encoders, register
from featurestore.encoders._sentence_transformers import SentenceTransformerEncoder
from featurestore.encoders._static import GloveEncoder, WordLlamaEncoder
from featurestore.encoders._tfidf_svd import TfidfSvd

__all__ = [
    "Encoder",
    "GloveEncoder",
    "HashEncoder",
    "SentenceTransformerEncoder",
    "TfidfSvd",
    "WordLlamaEncoder",
    "encoder_from_spec",
    "get_encoder",
    "is_reproducible",
    "list_encoders",
    "register",
]

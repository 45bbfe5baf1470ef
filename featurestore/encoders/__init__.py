"""The encoder registry: ``get_encoder("<key>:<model>", **options)`` -> an ``Encoder``.

Built in: ``hash:<dim>`` (deterministic test vectors) and ``sentence-transformers:<hub id | directory>``
(offline text models, torch or ONNX Runtime). Importing this package never imports torch, transformers,
sentence-transformers or onnxruntime: each encoder imports its library when it first loads a model.

    >>> enc = get_encoder("hash:8")
    >>> enc.encode(["a text", "another"]).shape
    (2, 8)
"""

from featurestore.encoders._base import Encoder
from featurestore.encoders._hash import HashEncoder
from featurestore.encoders._registry import encoder_from_spec, get_encoder, list_encoders, register
from featurestore.encoders._sentence_transformers import SentenceTransformerEncoder

__all__ = [
    "Encoder",
    "HashEncoder",
    "SentenceTransformerEncoder",
    "encoder_from_spec",
    "get_encoder",
    "list_encoders",
    "register",
]

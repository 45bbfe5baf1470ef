"""The encoder registry: ``get_encoder("<key>:<model>", **options)`` -> an ``Encoder``.

Built in: ``hash:<dim>`` (deterministic test vectors), ``sentence-transformers:<hub id | directory>`` (offline text
models, torch or ONNX Runtime), the static ``wordllama:l2_supercat[-<dim>]`` and ``glove:6B-50d`` (mean of token
vectors, numpy), ``tfidf-svd:<id>``, fitted with ``TfidfSvd.fit`` and kept in a store, and the image encoders
``torchvision:<arch>[/<tag> | /random | @<file>]`` and ``open_clip:<arch>/<tag>`` (its text tower with
``modality="text"``), whose inputs ``load_image`` decodes. Outside packages add keys through the
``featurestore.encoders`` entry-point group (see ``_registry``). Importing this package never imports torch,
transformers, sentence-transformers, onnxruntime, scikit-learn, wordllama, torchvision, open_clip or Pillow: each
encoder imports its library when it first loads a model.

    >>> enc = get_encoder("hash:8")
    >>> enc.encode(["a text", "another"]).shape
    (2, 8)
"""

from featurestore.encoders._base import Encoder
from featurestore.encoders.text._hash import HashEncoder
from featurestore.encoders.image._base import ImageEncoder
from featurestore.encoders.image._io import load_image
from featurestore.encoders.image._open_clip import OpenClipEncoder, OpenClipImageEncoder, OpenClipTextEncoder
from featurestore.encoders._registry import (
    ENTRY_POINT_GROUP, describe_encoders, encoder_from_spec, get_encoder, is_reproducible, list_encoders, register)
from featurestore.encoders.text._sentence_transformers import SentenceTransformerEncoder
from featurestore.encoders.text._static import GloveEncoder, WordLlamaEncoder
from featurestore.encoders.text._tfidf_svd import TfidfSvd
from featurestore.encoders.image._torchvision import TorchvisionEncoder
from featurestore.errors import ImageDecodeError

__all__ = [
    "ENTRY_POINT_GROUP",
    "Encoder",
    "GloveEncoder",
    "HashEncoder",
    "ImageDecodeError",
    "ImageEncoder",
    "OpenClipEncoder",
    "OpenClipImageEncoder",
    "OpenClipTextEncoder",
    "SentenceTransformerEncoder",
    "TfidfSvd",
    "TorchvisionEncoder",
    "WordLlamaEncoder",
    "describe_encoders",
    "encoder_from_spec",
    "get_encoder",
    "is_reproducible",
    "list_encoders",
    "load_image",
    "register",
]

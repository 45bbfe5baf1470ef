"""The encoder registry: ``get_encoder("<key>:<model>", **options)`` -> an ``Encoder``.

Built in: ``hash:<dim>`` (deterministic test vectors), ``sentence-transformers:<hub id | directory>`` (offline text
models, torch or ONNX Runtime), the static ``wordllama:l2_supercat[-<dim>]`` and ``glove:6B-50d`` (mean of token
vectors, numpy), ``tfidf-svd:<id>``, fitted with ``TfidfSvd.fit`` and kept in a store, and the image encoders
``torchvision:<arch>[/<tag> | /random | @<file>]`` and ``open_clip:<arch>/<tag>`` (its text tower with
``modality="text"``; a factory, ``open_clip_encoder``), whose inputs ``load_image`` decodes. Sub-packages:
``text``, ``image`` and ``runtime`` (devices, precision, caches). Outside packages add keys through the
``featurestore.encoders`` entry-point group (see ``_registry``). Importing this package never imports torch,
transformers, sentence-transformers, onnxruntime, scikit-learn, wordllama, torchvision, open_clip or Pillow: each
encoder imports its library when it first loads a model.

    >>> enc = get_encoder("hash:8")
    >>> enc.encode(["a text", "another"]).shape
    (2, 8)
"""

from featurestore.encoders._base import DTYPES, RUN_OPTIONS, TEXT_OPTIONS, Encoder
from featurestore.encoders._registry import (
    ENTRY_POINT_GROUP,
    EncoderFactory,
    describe_encoders,
    encoder_from_spec,
    get_encoder,
    is_reproducible,
    list_encoders,
    register,
    register_factory,
)
from featurestore.encoders.image._base import IMAGE_OPTIONS, ImageEncoder
from featurestore.encoders.image._io import load_image
from featurestore.encoders.image._open_clip import OpenClipImageEncoder, OpenClipTextEncoder, open_clip_encoder
from featurestore.encoders.image._torchvision import TorchvisionEncoder
from featurestore.encoders.text._hash import HashEncoder
from featurestore.encoders.text._sentence_transformers import SentenceTransformerEncoder
from featurestore.encoders.text._static import GloveEncoder, WordLlamaEncoder
from featurestore.encoders.text._tfidf_svd import TfidfSvd
from featurestore.errors import ImageDecodeError

__all__ = [
    "DTYPES",
    "ENTRY_POINT_GROUP",
    "Encoder",
    "EncoderFactory",
    "GloveEncoder",
    "HashEncoder",
    "IMAGE_OPTIONS",
    "ImageDecodeError",
    "ImageEncoder",
    "OpenClipImageEncoder",
    "OpenClipTextEncoder",
    "RUN_OPTIONS",
    "SentenceTransformerEncoder",
    "TEXT_OPTIONS",
    "TfidfSvd",
    "TorchvisionEncoder",
    "WordLlamaEncoder",
    "describe_encoders",
    "encoder_from_spec",
    "get_encoder",
    "is_reproducible",
    "list_encoders",
    "load_image",
    "open_clip_encoder",
    "register",
    "register_factory",
]

"""Batch embedding jobs: check, index the keys, screen, encode (locally or on an engine such as Ray), commit.

``embed`` / ``embed_layers`` (text), ``embed_images`` (images) and ``run_job`` (a TOML job spec) are the entry points;
they are re-exported by ``pipelines``.
"""

from pipelines.embedding import engines  # noqa: F401 - registers the engines (Ray) with the job
from pipelines.embedding._images import default_workers, embed_images
from pipelines.embedding._job import ENCODER_OPTIONS, MODEL_OUTPUT, EmbedResult, check_source_keys
from pipelines.embedding._spec import JobSpec, run_job
from pipelines.embedding._text import embed, embed_layers, layer_name, parse_layer

__all__ = ["ENCODER_OPTIONS", "MODEL_OUTPUT", "EmbedResult", "JobSpec", "check_source_keys", "default_workers",
           "embed", "embed_images", "embed_layers", "layer_name", "parse_layer", "run_job"]

"""pipelines: runnable jobs on top of the store: sources, batch embedding, job specs and the CLI.

>>> import featurestore, pipelines
>>> store = featurestore.open("./store")
>>> pipelines.embed(store, "reviews.parquet", key="id", text="text",
...                 encoder="sentence-transformers:all-MiniLM-L6-v2", name="reviews_minilm")
>>> pipelines.predict("reviews_class", store, "new_reviews.parquet", text="review")  # embeds the rows sets lack
"""

from pipelines.embedding import EmbedResult, JobSpec, embed, embed_images, embed_layers, layer_name, run_job
from pipelines.jobs import NotRecomputableWarning, predict
from pipelines.sources import ImageSource, TableSource

__all__ = ["embed", "embed_layers", "EmbedResult", "JobSpec", "run_job", "layer_name", "TableSource", "predict",
           "NotRecomputableWarning", "embed_images", "ImageSource"]

"""TOML job specs: the same embedding job as the command line flags, declared in a file.

```toml
store = "./store"
source = "reviews.parquet"
key = "id"
text = "review"
encoder = "sentence-transformers:all-MiniLM-L6-v2"
name = "reviews_minilm"
keep = ["text", "title"]  # optional: source columns stored beside the vectors (shown by search and SQL)
layers = [3, -1]          # optional: one feature set per layer, one pass; "model" is the model's own output.
                          # One layer keeps <name>; several are <name>_layer3, <name>_layer_m1 ("model": <name>)
[options]                 # optional encoder options
pooling = "mean"
batch_size = 32
[key_types]               # optional, CSV/TSV only: read these keys as numbers (every CSV column is text otherwise)
id = "int64"
```
Images (``pipelines.embed_images``): ``images = "photos/"`` (a folder or a glob such as ``"photos/**/*.jpg"``) in place
of ``source``, or ``source = "photos.parquet"`` with ``image = "file"`` (a column of paths or bytes); ``label`` names the
sub-folder column (``false``: none); ``layers`` are stage names (``["features.6", "model"]``); ``[options]`` take the
image encoder's options and ``num_workers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from featurestore.errors import ValidationError
from pipelines.embedding._images import image_job_options, parse_stage, run_image_job
from pipelines.embedding._job import ENCODER_OPTIONS
from pipelines.embedding._text import parse_layer

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser, as the tomli package (a dependency there)
    import tomli as tomllib


@dataclass
class JobSpec:
    """An embedding job. Relative paths in a spec file are relative to the file."""

    source: str
    name: str
    key: list[str] = field(default_factory=lambda: ["id"])
    text: str = "text"
    encoder: str = "sentence-transformers:all-MiniLM-L6-v2"
    store: str = "./store"
    version: str | int = "auto"
    layers: list[int | str | None] = field(default_factory=list)  # ints, or "model" / None for the model's output
    limit: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    key_types: dict[str, str] = field(default_factory=dict)
    keep: list[str] = field(default_factory=list)  # source columns stored beside the vectors
    images: bool = False  # the source is an image folder or glob (``images = "photos/"`` in a spec file)
    image: str | None = None  # a table source's column of image paths or bytes
    label: str | bool | None = "label"  # an image folder's sub-folder column; false: none

    @classmethod
    def from_toml(cls, path: str | Path) -> "JobSpec":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValidationError(f"Job spec {str(path)!r} does not exist.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValidationError(f"Job spec {str(path)!r} is not valid TOML: {exc}") from None
        return cls.from_dict(data, base=path.parent)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path | None = None) -> "JobSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(f"Unknown job spec field(s) {unknown}. Known: {sorted(known)}")
        data = dict(data)
        if isinstance(data.get("images"), str):  # an image folder or glob, in place of `source`
            if "source" in data:
                raise ValidationError("A job spec takes `source` (a table) or `images` (an image folder or glob), "
                                      "not both.")
            data["source"], data["images"] = data["images"], True
        missing = [k for k in ("source", "name") if k not in data]
        if missing:
            raise ValidationError(f"The job spec needs {missing}.")
        image_job = bool(data.get("images")) or data.get("image") is not None
        for name in ("key", "keep"):
            if isinstance(data.get(name), str):
                data[name] = [data[name]]
        if "layers" in data:
            layers = data["layers"] if isinstance(data["layers"], list) else [data["layers"]]
            try:
                data["layers"] = [parse_stage(k) if image_job else parse_layer(k) for k in layers]
            except ValueError as exc:
                raise ValidationError(f"Job spec field 'layers': {exc}") from None
        valid = image_job_options() if image_job else ENCODER_OPTIONS
        bad = sorted(set(data.get("options", {})) - set(valid))
        if bad:
            raise ValidationError(f"Unknown encoder option(s) {bad} in the job spec. Valid: {list(valid)}")
        if base is not None:
            for k in ("source", "store"):
                if k in data and not Path(data[k]).expanduser().is_absolute() and "://" not in str(data[k]):
                    data[k] = str((base / data[k]).resolve())
        return cls(**data)


def run_job(spec: JobSpec | str | Path, **overrides: Any) -> list[Any]:
    """Run a spec's embedding job (all its layers in one pass over the source); returns one result per set."""
    from pipelines.embedding._text import embed, embed_layers
    from pipelines.sources import TableSource

    spec = spec if isinstance(spec, JobSpec) else JobSpec.from_toml(spec)
    if spec.images or spec.image is not None:
        return run_image_job(spec, **overrides)
    source: Any = TableSource(spec.source, key_types=spec.key_types) if spec.key_types else spec.source
    common = dict(key=spec.key, text=spec.text, encoder=spec.encoder, version=spec.version, limit=spec.limit,
                  keep=spec.keep, **spec.options, **overrides)
    layers = [parse_layer(k) for k in spec.layers]
    if len(layers) > 1:  # one set per layer: NAME for the model's output, NAME_layer3, NAME_layer_m1 (layer_name)
        return embed_layers(spec.store, source, name=spec.name, layers=layers, **common)
    if layers == [None]:  # the model's own output: its own pooling, as in embed_layers
        common.pop("pooling", None)
    elif layers:  # one layer keeps the name the user gave
        common["layer"] = layers[0]
    return [embed(spec.store, source, name=spec.name, **common)]

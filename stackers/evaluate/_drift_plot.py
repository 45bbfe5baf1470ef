"""The picture of a drift comparison (``Store.drift``): where the two sides lie and how they differ.

Three panels, drawn from the rows the two-sample test used: both sides on the top two principal components of the
pooled rows (a person sees overlap or separation at once), both sides projected on the direction between the
centroids (the one axis along which the shift is largest, with the distance in spreads), and the norms (or, for
unit vectors, whose norms are all 1, the cosine to the pooled centroid). matplotlib is imported when a plot is
drawn (the ``stack`` extra); ``featurestore`` itself never needs it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from featurestore.errors import ValidationError
from featurestore.ops import DriftResult
from stackers.evaluate._report import _figure

_COLORS = ("#1b9e77", "#d95f02")  # side A, side B


def plot_drift(result: DriftResult, path: str | Path) -> Path:
    """Draw ``result`` (from ``Store.drift``) to the PNG ``path`` (its folder is created); returns the path."""
    if not isinstance(result, DriftResult) or result.sample_a is None or result.sample_b is None:
        raise ValidationError(f"plot_drift needs the DriftResult of Store.drift, with its tested rows. Got {result!r}.")
    path = Path(path)
    fig = _figure(14, 4.6)  # matplotlib is checked before any folder is made
    path.parent.mkdir(parents=True, exist_ok=True)
    a = result.sample_a.astype(np.float64)
    b = result.sample_b.astype(np.float64)
    pooled = np.vstack([a, b])
    centre = pooled.mean(axis=0)
    labels = [f"A: {result.a.label} ({len(a):,})", f"B: {result.b.label} ({len(b):,})"]
    axes = fig.subplots(1, 3)

    _, _, vt = np.linalg.svd(pooled - centre, full_matrices=False)
    pcs = vt[:2] if len(vt) >= 2 else np.vstack([vt, np.zeros_like(vt)])
    for rows, color, label in zip((a, b), _COLORS, labels):
        xy = (rows - centre) @ pcs.T
        axes[0].scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.35, color=color, label=textwrap.shorten(label, 60))
        c = xy.mean(axis=0)
        axes[0].scatter([c[0]], [c[1]], s=160, marker="X", color=color, edgecolor="black", linewidth=1, zorder=3)
    axes[0].set_title("top-2 principal components (X: centroids)")
    axes[0].set_xlabel("PC 1")
    axes[0].set_ylabel("PC 2")
    axes[0].legend(fontsize=7, loc="best", markerscale=2)

    direction = b.mean(axis=0) - a.mean(axis=0)
    norm = np.linalg.norm(direction)
    direction = direction / norm if norm > 0 else direction
    _histograms(axes[1], [(rows - centre) @ direction for rows in (a, b)], labels)
    axes[1].set_title(f"along the centroid difference\n(distance {result.centroid_distance:.3g} = "
                      f"{result.centroid_shift:.3f} spread; chance {result.centroid_noise:.3g})")
    axes[1].set_xlabel("position along centroid B - centroid A (fitted on these rows: small shifts look larger)")

    if result.norm_shift is None:  # unit vectors: the norms say nothing; the angle to the pooled centroid does
        unit = centre / (np.linalg.norm(centre) or 1.0)
        values = [rows @ unit / np.linalg.norm(rows, axis=1) for rows in (a, b)]
        axes[2].set_title("cosine to the pooled centroid (unit-norm vectors)")
        axes[2].set_xlabel("cosine")
    else:
        values = [np.linalg.norm(rows, axis=1) for rows in (a, b)]
        axes[2].set_title(f"L2 norms (shift {result.norm_shift:+.3f} pooled std)")
        axes[2].set_xlabel("norm")
    _histograms(axes[2], values, labels)

    test = ("no permutation test" if result.p_value is None else
            f"MMD² {result.mmd2:.3g}, permutation p = {result.p_value:.3g} ({result.permutations} permutations)")
    fig.suptitle(f"Drift: centroid cosine {result.centroid_cosine:.4f}; {test}")
    fig.savefig(path)
    return path


def _histograms(ax, values: list[np.ndarray], labels: list[str]) -> None:
    """Both sides' densities on shared bins."""
    edges = np.histogram_bin_edges(np.concatenate(values), bins=40)
    for v, color, label in zip(values, _COLORS, labels):
        ax.hist(v, bins=edges, density=True, alpha=0.45, color=color, label=textwrap.shorten(label, 60))
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="best")

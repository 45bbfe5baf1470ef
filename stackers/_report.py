"""Reports: metrics.json, a plain-text table and PNG plots (comparison with intervals, confusion, calibration).

Plots are drawn with matplotlib's object API on an Agg canvas (``matplotlib.figure.Figure``), so making a report
never changes the caller's pyplot backend or global state, and works without a display.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from featurestore._optional import import_optional
from featurestore._validation import validate_params

from ._compare import Comparison
from featurestore._validation import InstanceOf
from ._join import TrainingSet
from ._metrics import BOOTSTRAP_CONSTRAINTS, HIGHER_IS_BETTER, METRICS
from ._persist import json_default
from ._stacking import StackingClassifier

__all__ = ["report", "ReportPaths"]

_CONSTRAINTS = {
    "comparison_or_model": [InstanceOf(Comparison), InstanceOf(StackingClassifier, "a fitted StackingClassifier")],
    "data_test": [InstanceOf(TrainingSet, "a labelled TrainingSet"), None],
    "print_table": ["boolean"],
    **BOOTSTRAP_CONSTRAINTS,
}
_LABELS = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "log_loss": "Log loss", "roc_auc": "ROC-AUC (macro OVR)"}


class ReportPaths(dict):
    """The written files by name (a plain dict of Paths), plus ``.text``: the plain-text metrics table."""

    text: str = ""


def _matplotlib():
    """matplotlib's ``Figure`` and Agg canvas, imported when a report is drawn."""
    figure = import_optional("matplotlib.figure", extra="stack", what="Report plots")
    backend = import_optional("matplotlib.backends.backend_agg", extra="stack", what="Report plots")
    return figure.Figure, backend.FigureCanvasAgg


def _figure(width: float, height: float):
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot_comparison(comp: Comparison, path: Path) -> None:
    names = list(comp.results)
    fig = _figure(max(8.0, 1.1 * len(names) + 4), 7.5)
    axes = fig.subplots(2, 2).ravel()
    colors = {"probe": "#8da0cb", "concat": "#66c2a5", "stack": "#fc8d62"}
    x = np.arange(len(names))
    for ax, metric in zip(axes, METRICS):
        vals = np.array([np.nan if comp.results[n][metric]["value"] is None else comp.results[n][metric]["value"]
                         for n in names], dtype=float)
        lows = np.array([np.nan if comp.results[n][metric]["low"] is None else comp.results[n][metric]["low"]
                         for n in names], dtype=float)
        highs = np.array([np.nan if comp.results[n][metric]["high"] is None else comp.results[n][metric]["high"]
                          for n in names], dtype=float)
        err = np.vstack([np.clip(vals - lows, 0, None), np.clip(highs - vals, 0, None)])
        err = np.nan_to_num(err)
        ax.bar(x, np.nan_to_num(vals), color=[colors.get(comp.kinds.get(n, ""), "#bbbbbb") for n in names],
               yerr=err, capsize=4, edgecolor="black", linewidth=0.5)
        for xi, v in zip(x, vals):
            if np.isfinite(v):
                ax.annotate(f"{v:.3f}", (xi, v), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
        direction = "higher is better" if HIGHER_IS_BETTER[metric] else "lower is better"
        ax.set_title(f"{_LABELS[metric]} ({direction})")
        ax.set_ylabel(_LABELS[metric])
        ax.set_xticks(x, names, rotation=30, ha="right")
        if HIGHER_IS_BETTER[metric] and metric != "log_loss":
            finite = lows[np.isfinite(lows)]
            bottom = max(0.0, (finite.min() if finite.size else 0.0) - 0.05)
            ax.set_ylim(bottom, 1.02)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Held-out comparison (n={comp.n_test}, {comp.n_boot} bootstrap resamples, 95% CI); "
                 f"best: {comp.best}")
    fig.savefig(path)


def _plot_confusion(comp: Comparison, model_name: str, path: Path) -> None:
    classes = [str(c) for c in comp.classes]
    k = len(classes)
    y = np.searchsorted(comp.classes, comp.y_true)
    pred = np.argmax(comp.probas[model_name], axis=1)
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.55 * k + 3)
    fig = _figure(size + 1.2, size)
    ax = fig.subplots()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="Fraction of the true class")
    ax.set_xticks(np.arange(k), classes, rotation=45, ha="right")
    ax.set_yticks(np.arange(k), classes)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"Confusion matrix: {model_name} (n={cm.sum()}, accuracy {acc:.3f})")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rates[i, j] > 0.5 else "black")
    fig.savefig(path)


def reliability(proba: np.ndarray, y: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray | float]:
    """Top-label calibration: per confidence bin, mean confidence, accuracy and count; plus the ECE."""
    conf = proba.max(axis=1)
    correct = (np.argmax(proba, axis=1) == y).astype(float)
    bins = np.clip((conf * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(float)
    mean_conf = np.divide(np.bincount(bins, conf, n_bins), count, out=np.full(n_bins, np.nan), where=count > 0)
    acc = np.divide(np.bincount(bins, correct, n_bins), count, out=np.full(n_bins, np.nan), where=count > 0)
    ece = float(np.nansum(count / max(count.sum(), 1) * np.abs(acc - mean_conf)))
    return {"confidence": mean_conf, "accuracy": acc, "count": count, "ece": ece}


def _plot_calibration(comp: Comparison, path: Path) -> None:
    y = np.searchsorted(comp.classes, comp.y_true)
    fig = _figure(7.5, 7.0)
    ax, hist = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="Perfectly calibrated")
    for name, proba in comp.probas.items():
        r = reliability(proba, y)
        ok = r["count"] > 0
        lw = 2.5 if comp.kinds.get(name) == "stack" else 1.2
        ax.plot(r["confidence"][ok], r["accuracy"][ok], marker="o", linewidth=lw, label=f"{name} (ECE {r['ece']:.3f})")
        hist.hist(proba.max(axis=1), bins=10, range=(0, 1), histtype="step", linewidth=lw, label=name)
    ax.set_title(f"Reliability (top-label calibration) on held-out rows, n={comp.n_test}")
    ax.set_ylabel("Observed accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    hist.set_xlabel("Predicted confidence (probability of the predicted class)")
    hist.set_ylabel("Rows")
    fig.savefig(path)


def report(comparison_or_model: Any, data_test: TrainingSet | None = None, out: str | Path = "reports/", *,
           n_boot: int = 1000, random_state: int | None = 0, print_table: bool = False) -> ReportPaths:
    """Write metrics.json, table.txt and PNG plots for a ``Comparison`` (or a fitted model and a test set).

    With a model, the comparison is the stack against its own per-block probes on ``data_test``. Returns the
    written paths by name (metrics, table, comparison, confusion_matrix, calibration) in a dict whose ``.text``
    is the plain-text table; ``print_table=True`` also prints it to stdout.
    """
    validate_params({"comparison_or_model": comparison_or_model, "data_test": data_test, "n_boot": n_boot,
                     "random_state": random_state, "print_table": print_table}, _CONSTRAINTS, "report")
    _matplotlib()  # a missing matplotlib fails here, before any file is written
    if isinstance(comparison_or_model, Comparison):
        comp = comparison_or_model
    else:
        if data_test is None:
            raise ValueError("report(model, ...) needs data_test: a labelled TrainingSet the model did not train on.")
        comp = Comparison.from_model(comparison_or_model, data_test, n_boot=n_boot, random_state=random_state)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths({
        "metrics": out / "metrics.json",
        "table": out / "table.txt",
        "comparison": out / "comparison.png",
        "confusion_matrix": out / "confusion_matrix.png",
        "calibration": out / "calibration.png",
    })
    paths["metrics"].write_text(json.dumps(comp.to_dict(), indent=2, allow_nan=False, default=json_default) + "\n")
    text = paths.text = comp.to_text()
    paths["table"].write_text(text + "\n")
    _plot_comparison(comp, paths["comparison"])
    _plot_confusion(comp, "stack" if "stack" in comp.probas else comp.best, paths["confusion_matrix"])
    _plot_calibration(comp, paths["calibration"])
    if print_table:
        print(text)
    return paths

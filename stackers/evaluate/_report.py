"""Reports: metrics.json, a plain-text table and PNG plots (comparison with intervals, confusion, calibration).

Plots are drawn with matplotlib's object API on an Agg canvas (``matplotlib.figure.Figure``), so making a report
never changes the caller's pyplot backend or global state, and works without a display.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import ValidationError
from featurestore.utils import InstanceOf, import_optional, validate_params
from stackers.classify._stacking import StackingClassifier
from stackers.data._join import TrainingSet
from stackers.evaluate._compare import Comparison
from stackers.evaluate._metrics import BOOTSTRAP_CONSTRAINTS, HIGHER_IS_BETTER, METRICS
from stackers.persist._folder import json_default

__all__ = ["report", "ReportPaths"]

_CONSTRAINTS = {
    "comparison_or_model": [InstanceOf(Comparison), InstanceOf(StackingClassifier, "a fitted StackingClassifier")],
    "data_test": [InstanceOf(TrainingSet, "a labelled TrainingSet"), None],
    "data_train": [InstanceOf(TrainingSet, "a labelled TrainingSet"), None],
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


_COLORS = {"probe": "#8da0cb", "concat": "#66c2a5", "stack": "#fc8d62", "base": "#c6c6c6"}
_VERDICT_COLORS = {"beats": "#1a9850", "below": "#d73027", "none": "#555555"}


def _verdict(comp: Comparison) -> str:
    p = comp.paired
    if p is None or p["low"] is None or p["high"] is None:
        return "none"
    return "beats" if p["low"] > 0 else "below" if p["high"] < 0 else "none"


def _values(comp: Comparison, names: list[str], metric: str, part: str) -> np.ndarray:
    return np.array([np.nan if comp.results[n][metric][part] is None else comp.results[n][metric][part]
                     for n in names], dtype=float)


def _plot_paired(comp: Comparison, ax) -> None:
    """The stack's macro-F1 minus each baseline's, with paired 95% intervals; the best baseline (the headline's)
    drawn in the verdict's colour, the others in grey."""
    others = [n for n in comp.results if n != "stack" and comp.kinds.get(n) != "stack"]
    diffs = [comp.paired_difference("stack", n) for n in others]
    y = np.arange(len(others))[::-1]
    color = _VERDICT_COLORS[_verdict(comp)]
    for yi, name, d in zip(y, others, diffs):
        if d["value"] is None:
            continue
        best = name == comp.paired["baseline"]
        c = color if best else "#9e9e9e"
        if d["low"] is not None and d["high"] is not None:
            ax.errorbar(d["value"], yi, xerr=[[d["value"] - d["low"]], [d["high"] - d["value"]]], fmt="o", color=c,
                        capsize=4, markersize=7 if best else 5, linewidth=2.2 if best else 1.2)
        else:
            ax.plot(d["value"], yi, "o", color=c)
        ax.annotate(f"{d['value']:+.3f}", (d["value"], yi), textcoords="offset points", xytext=(0, 7), ha="center",
                    fontsize=8, color=c)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(y, [f"stack − {n}" for n in others])
    for label, name in zip(ax.get_yticklabels(), others):
        if name == comp.paired["baseline"]:
            label.set_fontweight("bold")
            label.set_color(color)
    ax.set_ylim(-0.7, len(others) - 0.3)
    lo, hi = ax.get_xlim()
    span = max(abs(lo), abs(hi), 0.01)
    ax.set_xlim(-span, span)  # zero in the middle: left of it the stack loses, right of it it wins
    ax.axvspan(0, span, color=_VERDICT_COLORS["beats"], alpha=0.06)
    ax.axvspan(-span, 0, color=_VERDICT_COLORS["below"], alpha=0.06)
    ax.set_xlabel("Macro-F1 of the stack minus each baseline (paired bootstrap, 95% CI; bold: the best baseline)")
    ax.grid(axis="x", alpha=0.3)


def _plot_comparison(comp: Comparison, path: Path) -> None:
    names = list(comp.results)
    has_paired = comp.paired is not None
    n_others = len(names) - 1
    fig = _figure(max(10.0, 1.1 * len(names) + 4), 7.5 + (1.6 + 0.35 * n_others if has_paired else 0))
    if has_paired:
        top, bottom = fig.subfigures(2, 1, height_ratios=[1.6 + 0.35 * n_others, 7.5])
        _plot_paired(comp, top.subplots())
        fig.suptitle(textwrap.fill(comp.headline, 100), color=_VERDICT_COLORS[_verdict(comp)], fontsize=13,
                     fontweight="bold")
    else:
        bottom = fig
    axes = bottom.subplots(2, 2).ravel()
    x = np.arange(len(names))
    best_baseline = comp.best_baseline
    for ax, metric in zip(axes, METRICS):
        vals, lows, highs = (_values(comp, names, metric, part) for part in ("value", "low", "high"))
        err = np.nan_to_num(np.vstack([np.clip(vals - lows, 0, None), np.clip(highs - vals, 0, None)]))
        bars = ax.bar(x, np.nan_to_num(vals), color=[_COLORS.get(comp.kinds.get(n, ""), "#bbbbbb") for n in names],
                      yerr=err, capsize=4, edgecolor="black", linewidth=0.5)
        for bar, n in zip(bars, names):
            if n in ("stack", best_baseline):
                bar.set_linewidth(1.8)
        for xi, v, hi in zip(x, vals, highs):
            if np.isfinite(v):  # above the whisker, where it stays readable
                ax.annotate(f"{v:.3f}", (xi, np.nanmax([v, hi])), textcoords="offset points", xytext=(0, 3),
                            ha="center", fontsize=8)
        direction = "higher is better" if HIGHER_IS_BETTER[metric] else "lower is better"
        ax.set_title(f"{_LABELS[metric]} ({direction})")
        ax.set_ylabel(_LABELS[metric])
        ax.set_xticks(x, names, rotation=30, ha="right")
        if HIGHER_IS_BETTER[metric]:
            finite = lows[np.isfinite(lows)] if np.isfinite(lows).any() else vals[np.isfinite(vals)]
            bottom_y = max(0.0, (finite.min() if finite.size else 0.0) - 0.05)
            ax.set_ylim(bottom_y, 1.02)
        else:  # room above the tallest whisker for its label
            ax.set_ylim(0, 1.12 * np.nanmax(np.r_[highs, vals, 1e-3]))
        ax.grid(axis="y", alpha=0.3)
    bottom.suptitle(f"Held-out comparison (n={comp.n_test}, {comp.n_boot} bootstrap resamples, 95% CI); "
                    f"best: {comp.best}")
    if comp.notes:  # e.g. missing baselines: said on the picture, not only in the table
        fig.supxlabel("\n".join(textwrap.fill(n, 140) for n in comp.notes), fontsize=8, color="#a50026")
    fig.savefig(path)


def _plot_confusion(comp: Comparison, model_name: str, path: Path) -> None:
    classes = [str(c) for c in comp.classes]
    k = len(classes)
    y = np.searchsorted(comp.classes, comp.y_true)
    pred = np.searchsorted(comp.classes, comp.preds[model_name])  # what the model predicts (its threshold, if any)
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
           data_train: TrainingSet | None = None, n_boot: int = 1000, random_state: int | None = 0,
           print_table: bool = False) -> ReportPaths:
    """Write metrics.json, table.txt and PNG plots for a ``Comparison`` (or a fitted model and a test set).

    With a model, the comparison is ``Comparison.from_model``: with ``data_train`` (the rows it was fitted on) the
    stack against tuned per-set probes and the concat refitted on them; without, against its own base learners only
    (and the report says the baselines are missing). Returns the written paths by name (metrics, table,
    comparison, confusion_matrix, calibration) in a dict whose ``.text`` is the plain-text table;
    ``print_table=True`` also prints it to stdout. comparison.png leads with the headline: the stack's macro-F1
    minus each baseline's, paired 95% intervals.
    """
    validate_params({"comparison_or_model": comparison_or_model, "data_test": data_test, "data_train": data_train,
                     "n_boot": n_boot, "random_state": random_state, "print_table": print_table}, _CONSTRAINTS,
                    "report")
    _matplotlib()  # a missing matplotlib fails here, before any file is written
    if isinstance(comparison_or_model, Comparison):
        comp = comparison_or_model
    else:
        if data_test is None:
            raise ValidationError("report(model, ...) needs data_test: a labelled TrainingSet the model did not train on.")
        comp = Comparison.from_model(comparison_or_model, data_test, train=data_train, n_boot=n_boot,
                                     random_state=random_state)
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

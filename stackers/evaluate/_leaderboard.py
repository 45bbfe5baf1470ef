"""An encoder leaderboard on the user's own labels: which feature set (which encoder, which layer) predicts best?

    board = stackers.leaderboard(store, ["reviews_minilm", "reviews_minilm_layer3", "reviews_tfidf"],
                                 labels="labels.parquet")
    print(board.to_text())
    board.plot("leaderboard.png")

Each set gets the tuned probe a careful user would fit by hand (``LogisticProbeCV``: C, scaling and class weights by
inner CV on macro-F1, a decision threshold for binary problems), plus the probe on all sets side by side ("concat")
and the stack (``StackingClassifier()``), all fitted on one training split and scored on the same held-out rows with
paired bootstrap intervals: this is ``stackers.compare`` on a split the leaderboard cuts itself. Sets that are layers
of one model are just sets; the table names each set's encoder and layer (from its spec) so a user sees which layer
of which encoder wins.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featurestore.errors import ValidationError
from featurestore.utils import Interval, import_optional, validate_params
from stackers.classify._stacking import StackingClassifier
from stackers.data._join import join
from stackers.evaluate._compare import PRIMARY, Comparison, compare
from stackers.evaluate._metrics import CONFIDENCE, METRICS

__all__ = ["Leaderboard", "leaderboard"]

_CONSTRAINTS = {
    "test_size": [Interval(Real, 0, 1, closed="neither")],
    "seed": [Interval(Integral, 0, None)],
    "n_boot": [Interval(Integral, 0, None)],
    "n_jobs": [Interval(Integral, None, None), None],
}
_ALL_SETS = "(all sets)"
_KIND_COLORS = {"concat": "#66c2a5", "stack": "#fc8d62"}
# Probes take their colour from their encoder, so the layers of one model read as one family on the plot.
_ENCODER_COLORS = ("#8da0cb", "#e78ac3", "#a6d854", "#ffd92f", "#e5c494", "#b3b3b3", "#80b1d3", "#bc80bd")


@dataclass
class Leaderboard:
    """Held-out scores of every set's tuned probe, the concat and the stack, best first.

    ``comparison`` holds the numbers (a ``Comparison``: per-model metrics with paired 95% intervals, the headline of
    the stack against the best baseline); ``sources`` each set's version and spec; ``heldout_keys`` the keys of the
    scored rows. ``table()`` is the sorted view.
    """

    comparison: Comparison
    sources: dict[str, dict[str, Any]]
    n_train: int
    test_size: float
    seed: int
    groups: str | None = None
    missing: dict[str, dict[str, Any]] = field(default_factory=dict)
    heldout_keys: Any = None  # a pyarrow Table: the keys of the rows every model was scored on

    # -- rows ------------------------------------------------------------------------------------------------
    def _set_of(self, model: str) -> str | None:
        return model.split(":", 1)[1] if model.startswith("probe:") else None

    def encoder_of(self, model: str) -> str:
        """The encoder that made a probe's set (its spec's ``encoder``), or "(all sets)" for the concat and stack."""
        name = self._set_of(model)
        if name is None:
            return _ALL_SETS
        return str(self.sources.get(name, {}).get("spec", {}).get("encoder") or name)

    def layer_of(self, model: str) -> Any:
        """The hidden layer a probe's set holds (its spec's ``layer``), or None (the model's output, or no layers)."""
        name = self._set_of(model)
        return None if name is None else self.sources.get(name, {}).get("spec", {}).get("layer")

    @property
    def order(self) -> list[str]:
        """Model names best first: by macro-F1, then by log loss (lower first), then as listed."""
        res = self.comparison.results
        listed = list(res)
        return sorted(listed, key=lambda n: (-_num(res[n][PRIMARY]["value"], -math.inf),
                                             _num(res[n]["log_loss"]["value"], math.inf), listed.index(n)))

    @property
    def best(self) -> str:
        return self.order[0]

    @property
    def best_set(self) -> str | None:
        """The feature set whose tuned probe scores highest (ties: by log loss, then as listed)."""
        return next((self._set_of(n) for n in self.order if self._set_of(n) is not None), None)

    @property
    def headline(self) -> str | None:
        return self.comparison.headline

    @property
    def n_test(self) -> int:
        return self.comparison.n_test

    def _gap(self, model: str) -> dict[str, float | None]:
        """``model``'s macro-F1 minus the top row's, with the paired 95% interval."""
        return self.comparison.paired_difference(model, self.best)

    def table(self) -> pd.DataFrame:
        """One row per model, best first: rank, kind, set, encoder, layer, each metric with its interval bounds,
        the threshold, and ``gap`` (macro-F1 minus the top row's, with ``gap_low``/``gap_high``, paired)."""
        comp = self.comparison
        rows = []
        for rank, name in enumerate(self.order, start=1):
            s = self._set_of(name)
            row: dict[str, Any] = {"rank": rank, "model": name, "kind": comp.kinds.get(name, ""), "set": s,
                                   "encoder": self.encoder_of(name), "layer": self.layer_of(name),
                                   "version": None if s is None else self.sources.get(s, {}).get("version")}
            for m in METRICS:
                v = comp.results[name][m]
                row[m], row[f"{m}_low"], row[f"{m}_high"] = v["value"], v["low"], v["high"]
            row["threshold"] = comp.thresholds.get(name)
            gap = self._gap(name)
            row["gap"], row["gap_low"], row["gap_high"] = gap["value"], gap["low"], gap["high"]
            rows.append(row)
        return pd.DataFrame(rows).set_index("model")

    def encoders(self) -> dict[str, list[str]]:
        """Each encoder's probes, best first: the layers of one model side by side."""
        out: dict[str, list[str]] = {}
        for name in self.order:
            if self._set_of(name) is not None:
                out.setdefault(self.encoder_of(name), []).append(name)
        return out

    # -- output ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able numbers: the sorted rows, the encoders' groups, the headline and the split."""
        comp = self.comparison.to_dict()
        rows = []
        for rank, name in enumerate(self.order, start=1):
            s = self._set_of(name)
            rows.append({"rank": rank, "model": name, "kind": self.comparison.kinds.get(name, ""), "set": s,
                         "encoder": self.encoder_of(name), "layer": self.layer_of(name),
                         "version": None if s is None else self.sources.get(s, {}).get("version"),
                         "metrics": comp["models"][name]["metrics"], "threshold": comp["models"][name]["threshold"],
                         "gap_to_best": self._gap(name)})
        return {"primary_metric": PRIMARY, "confidence": CONFIDENCE, "n_train": self.n_train, "n_test": self.n_test,
                "n_boot": self.comparison.n_boot, "test_size": self.test_size, "seed": self.seed,
                "groups": self.groups, "best": self.best, "best_set": self.best_set, "headline": self.headline,
                "paired": comp["paired"], "notes": comp["notes"], "rows": rows, "encoders": self.encoders(),
                "sources": self.sources, "stack": comp.get("stack")}

    def to_text(self) -> str:
        """The sorted table (macro-F1, accuracy, log loss with 95% intervals, the paired gap to the top row), one
        line per encoder with several layers, and the headline."""
        comp = self.comparison
        header = ["#", "model", "encoder", "layer", "macro_f1", "accuracy", "log_loss", "gap to #1"]
        lines = []
        for rank, name in enumerate(self.order, start=1):
            r = comp.results[name]
            gap = self._gap(name)
            layer = self.layer_of(name)
            lines.append([str(rank), name, self.encoder_of(name), "" if layer is None else str(layer),
                          *(_cell(r[m]) for m in ("macro_f1", "accuracy", "log_loss")),
                          "" if rank == 1 else _signed_cell(gap)])
        widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
        render = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
        out = [render(header), "  ".join("-" * w for w in widths), *(render(row) for row in lines), ""]
        for encoder, models in self.encoders().items():
            if len(models) > 1:
                parts = [f"{m}{_layer_name(self.layer_of(m))} {_fmt(comp.results[m][PRIMARY]['value'])}"
                         for m in models]
                out.append(f"{encoder}: " + " > ".join(parts))
        out.append(f"n_train={self.n_train}, n_test={self.n_test}"
                   + (f" (grouped by {self.groups!r})" if self.groups else "")
                   + f", {int(CONFIDENCE * 100)}% paired bootstrap intervals over {comp.n_boot} resamples; "
                   "sorted by macro-F1 of each model's predicted labels; gap: paired, to the top row")
        if self.headline:
            out.append(self.headline + " (best baseline picked on these test rows: conservative)")
        out.extend(comp.notes)
        return "\n".join(out)

    def plot(self, path: str | Path) -> Path:
        """A PNG: one horizontal bar per model, best at the top, macro-F1 with its 95% interval; probes coloured by
        encoder (layers of one model share a colour), the concat and the stack in their own; the headline on top."""
        from stackers.evaluate._report import _VERDICT_COLORS, _figure, _verdict

        comp = self.comparison
        order = self.order
        encoders = list(dict.fromkeys(self.encoder_of(n) for n in order if self._set_of(n) is not None))
        palette = {e: _ENCODER_COLORS[i % len(_ENCODER_COLORS)] for i, e in enumerate(encoders)}
        colors = [_KIND_COLORS.get(comp.kinds.get(n, ""), palette.get(self.encoder_of(n), "#bbbbbb")) for n in order]
        vals, lows, highs = (np.array([_num(comp.results[n][PRIMARY][p], np.nan) for n in order])
                             for p in ("value", "low", "high"))
        labels = [n + _layer_name(self.layer_of(n)) for n in order]

        fig = _figure(10.0, 1.6 + 0.45 * len(order))
        ax = fig.subplots()
        y = np.arange(len(order))[::-1]  # best at the top
        err = np.nan_to_num(np.vstack([np.clip(vals - lows, 0, None), np.clip(highs - vals, 0, None)]))
        ax.barh(y, np.nan_to_num(vals), xerr=err, color=colors, edgecolor="black", linewidth=0.5, capsize=3,
                height=0.7)
        for yi, v, hi in zip(y, vals, highs):
            if np.isfinite(v):
                ax.annotate(f"{v:.3f}", (np.nanmax([v, hi]), yi), textcoords="offset points", xytext=(4, 0),
                            va="center", fontsize=8)
        ax.set_yticks(y, labels)
        baseline = comp.best_baseline
        if baseline is not None and comp.results[baseline][PRIMARY]["value"] is not None:
            ax.axvline(comp.results[baseline][PRIMARY]["value"], color="#555555", linestyle="--", linewidth=1,
                       label=f"best baseline ({baseline})")
        finite = np.r_[lows[np.isfinite(lows)], vals[np.isfinite(vals)]]
        left = max(0.0, (finite.min() if finite.size else 0.0) - 0.05)
        ax.set_xlim(left, min(1.0, np.nanmax(np.r_[highs, vals, left + 0.1])) + 0.06)
        ax.set_xlabel(f"Macro-F1 on {self.n_test} held-out rows (95% bootstrap CI)")
        ax.grid(axis="x", alpha=0.3)
        Patch = import_optional("matplotlib.patches", extra="stack", what="Leaderboard plots").Patch
        handles = [Patch(color=palette[e], label=e) for e in encoders]
        handles += [Patch(color=_KIND_COLORS[k], label=k) for k in ("concat", "stack")
                    if k in comp.kinds.values()]
        ax.legend(handles=handles + ax.get_legend_handles_labels()[0], loc="upper left", bbox_to_anchor=(1.01, 1),
                  fontsize=8, frameon=False)
        title = f"Encoder leaderboard: best set {self.best_set}"
        ax.set_title(title, fontsize=11)
        if self.headline:
            fig.suptitle(textwrap.fill(self.headline, 100), color=_VERDICT_COLORS[_verdict(comp)], fontsize=11,
                         fontweight="bold")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        return path

    def __repr__(self) -> str:
        return (f"Leaderboard(best={self.best!r}, best_set={self.best_set!r}, models={len(self.order)}, "
                f"n_test={self.n_test})")


def _num(x: float | None, default: float) -> float:
    return default if x is None else float(x)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _cell(v: dict[str, float | None]) -> str:
    return f"{_fmt(v['value'])} [{_fmt(v['low'])}, {_fmt(v['high'])}]"


def _signed_cell(v: dict[str, float | None]) -> str:
    s = lambda x: "n/a" if x is None else f"{x:+.3f}"  # noqa: E731
    return f"{s(v['value'])} [{s(v['low'])}, {s(v['high'])}]"


def _layer_name(layer: Any) -> str:
    return "" if layer is None else f" (layer {layer})"


def leaderboard(store, sets: Sequence[str], labels: Any, *, key: str | Sequence[str] = "id", label: str = "label",
                groups: str | None = None, test_size: float = 0.25, seed: int = 0, n_boot: int = 1000,
                n_jobs: int | None = None) -> Leaderboard:
    """Rank feature sets ``sets`` of ``store`` on ``labels``: each set's tuned probe, the concat and the stack.

    ``labels`` is a table or a .parquet/.csv path with the ``key`` column(s), the ``label`` column and optionally a
    ``groups`` column. ``test_size`` of the rows are held out (whole groups when ``groups``; stratified by label),
    every model is fitted on the rest (grouped inner folds when ``groups``) and scored on the held-out rows with
    ``n_boot`` paired bootstrap resamples. ``n_jobs`` fits the probes in parallel (one thread each).
    """
    validate_params({"test_size": test_size, "seed": seed, "n_boot": n_boot, "n_jobs": n_jobs}, _CONSTRAINTS,
                    "leaderboard")
    sets = [sets] if isinstance(sets, str) else list(sets)
    data = join(store, sets, labels=labels, key=key, label=label, groups=groups)
    if data.y is None:
        raise ValidationError(f"The labels have no label column {label!r}; pass label= the column to predict.")
    train, test = data.split(test_size=test_size, random_state=seed)
    comp = compare(train, test, StackingClassifier(random_state=seed), n_boot=n_boot, random_state=seed,
                   n_jobs=n_jobs)
    return Leaderboard(comparison=comp, sources=dict(data.sources), n_train=len(train), test_size=float(test_size),
                       seed=int(seed), groups=groups, missing={k: v for k, v in data.missing.items() if v["count"]},
                       heldout_keys=test.keys)

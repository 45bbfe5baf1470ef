"""A learning curve's result: the scores of every set and the stack at each size and draw, as a table, a plot and a
summary computed from the numbers (``LearningCurve``, returned by ``learning_curve``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featurestore.errors import ValidationError

#: the ``set`` name of the stack's rows
STACK = "stack"
#: two-sided 95% t quantiles by degrees of freedom (intervals over draws); 1.96 beyond
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}

#: the stage label of a set whose spec says ``layer: null``: the model's own pooled output
OUTPUT_STAGE = "output"


def _stage_text(stage: Any) -> str:
    return "" if stage is None else str(stage)


def _stage_suffix(stage: Any) -> str:
    return "" if stage is None else f" ({stage})"


# Families' colours: each family one hue, its stages shades of it (light = early stage).
_FAMILY_CMAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")


@dataclass
class LearningCurve:
    """Every draw's held-out score of every set (``scores``, one row per set x n x draw) and what follows from them.

    ``table()`` is the mean and interval per set and n; ``summary()`` the lessons computed from the numbers;
    ``plot(path)`` the PNG; ``save(folder)`` all of them. ``train_rows[(n, draw)]`` and ``test_rows`` are row
    positions into the ``TrainingSet`` the curve was computed on, so anyone can check what each probe saw.
    """

    scores: pd.DataFrame
    train_rows: dict[tuple[int, int], np.ndarray]
    test_rows: np.ndarray
    pool_rows: np.ndarray
    metric: str
    families: dict[str, str]
    stages: dict[str, Any]
    contrast: tuple[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    seed: int = 0

    # -- numbers -----------------------------------------------------------------------------------------------
    @property
    def n_per_class(self) -> list[int]:
        return sorted(int(n) for n in self.scores["n_per_class"].unique())

    @property
    def sets(self) -> list[str]:
        """The single sets, in the order given (the stack is not one)."""
        return [s for s in dict.fromkeys(self.scores["set"]) if s != STACK]

    @property
    def n_test(self) -> int:
        return int(len(self.test_rows))

    def table(self) -> pd.DataFrame:
        """One row per (set, n): family, stage, draws, mean score, its 95% interval and which kind of interval."""
        rows = []
        for (name, n), part in self.scores.groupby(["set", "n_per_class"], sort=False):
            values = part[self.metric].to_numpy(dtype=float)
            mean = float(values.mean())
            if len(values) > 1:
                half = _T95.get(len(values) - 1, 1.96) * float(values.std(ddof=1)) / math.sqrt(len(values))
                low, high, kind = mean - half, mean + half, f"t over {len(values)} draws"
            else:
                low = float(part[f"boot_low_{self.metric}"].iloc[0])
                high = float(part[f"boot_high_{self.metric}"].iloc[0])
                kind = f"bootstrap over {self.n_test} test rows (1 draw: the whole pool)"
            low, high = max(low, 0.0), min(high, 1.0)  # both metrics live in [0, 1]
            rows.append({"set": name, "family": self.families.get(name, STACK), "stage": self.stages.get(name),
                         "n_per_class": int(n), "n_train": int(part["n_train"].iloc[0]), "draws": len(values),
                         self.metric: mean, "low": low, "high": high, "interval": kind,
                         "members": part["members"].iloc[0] if name == STACK else None})
        table = pd.DataFrame(rows)
        order = {s: i for i, s in enumerate([*self.sets, STACK])}
        return (table.assign(_o=table["set"].map(order)).sort_values(["n_per_class", "_o"]).drop(columns="_o")
                .reset_index(drop=True))

    def wide(self) -> pd.DataFrame:
        """Sets as rows, n as columns, cells "mean [low, high]": the table a person reads."""
        t = self.table()
        t["cell"] = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in zip(t[self.metric], t["low"], t["high"])]
        wide = t.pivot(index="set", columns="n_per_class", values="cell")
        wide = wide.reindex([s for s in [*self.sets, STACK] if s in wide.index])
        wide.columns = [f"n={c}" for c in wide.columns]
        wide.insert(0, "stage", [_stage_text(self.stages.get(s)) if s != STACK else f"top {self._stack_size()} sets"
                                 for s in wide.index])
        wide.insert(0, "family", [self.families.get(s, STACK) for s in wide.index])
        return wide

    def best_set(self, n: int | None = None) -> str:
        """The single set with the highest mean score at ``n`` labels per class (default: the largest n)."""
        n = self.n_per_class[-1] if n is None else n
        t = self.table()
        t = t[(t["n_per_class"] == n) & (t["set"] != STACK)]
        if t.empty:
            raise ValidationError(f"No scores at n={n}; the curve has n in {self.n_per_class}.")
        return str(t.loc[t[self.metric].idxmax(), "set"])

    def _mean(self, name: str, n: int) -> float:
        s = self.scores
        return float(s.loc[(s["set"] == name) & (s["n_per_class"] == n), self.metric].mean())

    def _family_best(self, family: str, n: int) -> str | None:
        members = [s for s in self.sets if self.families.get(s) == family]
        return max(members, key=lambda s: self._mean(s, n)) if members else None

    def _paired(self, a: str, b: str, n: int) -> tuple[float, float, float]:
        """Mean of a - b over the draws at n (same labelled rows, same test rows), with a t interval."""
        s = self.scores[self.scores["n_per_class"] == n]
        va = s[s["set"] == a].sort_values("draw")[self.metric].to_numpy(dtype=float)
        vb = s[s["set"] == b].sort_values("draw")[self.metric].to_numpy(dtype=float)
        d = va - vb
        if len(d) < 2:
            return float(d.mean()), float("nan"), float("nan")
        half = _T95.get(len(d) - 1, 1.96) * float(d.std(ddof=1)) / math.sqrt(len(d))
        return float(d.mean()), float(d.mean() - half), float(d.mean() + half)

    def _stage_or_name(self, name: str | None) -> str:
        return _stage_text(self.stages.get(name)) or str(name)

    def _stack_size(self) -> int:
        members = self.scores.loc[self.scores["set"] == STACK, "members"]
        return max((len(m.split(",")) for m in members), default=0)

    def summary(self) -> str:
        """What the curve teaches, computed from the numbers: the best set at each n, the best stage of each family,
        the gap between the ``contrast`` families at the fewest and the most labels, and where the stack helps."""
        ns, m = self.n_per_class, self.metric
        lo_n, hi_n = ns[0], ns[-1]
        lines = [f"{m} on {self.n_test} held-out rows; labelled rows drawn from a pool of {len(self.pool_rows)}."]
        best = {n: self.best_set(n) for n in ns}
        lines.append("Best single set: " + "; ".join(
            f"n={n}: {best[n]}{_stage_suffix(self.stages.get(best[n]))} {self._mean(best[n], n):.3f}" for n in ns))
        for family in dict.fromkeys(self.families.get(s) for s in self.sets):
            members = [s for s in self.sets if self.families.get(s) == family]
            if len(members) < 2:
                continue
            at_lo, at_hi = self._family_best(family, lo_n), self._family_best(family, hi_n)
            ranked = sorted(members, key=lambda s: -self._mean(s, hi_n))
            chain = " > ".join(f"{self._stage_or_name(s)} {self._mean(s, hi_n):.3f}" for s in ranked)
            same = "the same one" if at_lo == at_hi else f"{self._stage_or_name(at_lo)} at n={lo_n}"
            lines.append(f"{family}: best at n={hi_n} is {self._stage_or_name(at_hi)} ({chain}); "
                         f"{same} with few labels.")
        if self.contrast is not None:
            a, b = self.contrast
            gaps = {}
            for n in (lo_n, hi_n):
                sa, sb = self._family_best(a, n), self._family_best(b, n)
                if sa is not None and sb is not None:
                    gaps[n] = self._mean(sa, n) - self._mean(sb, n)
            if len(gaps) == 2:
                where = ("with few labels" if abs(gaps[lo_n]) > abs(gaps[hi_n]) else "with many labels")
                lines.append(f"{a} - {b} (best stage of each): {gaps[lo_n]:+.3f} at {lo_n} labels per class, "
                             f"{gaps[hi_n]:+.3f} at {hi_n}: the difference is largest {where}.")
        if STACK in set(self.scores["set"]):
            parts, helps = [], []
            for n in ns:
                d, low, high = self._paired(STACK, best[n], n)
                ci = "" if math.isnan(low) else f" [{low:+.3f}, {high:+.3f}]"
                parts.append(f"n={n}: {d:+.3f}{ci}")
                if not math.isnan(low) and low > 0:
                    helps.append(n)
            verdict = (f"the stack is ahead beyond draw-to-draw noise at n={', '.join(map(str, helps))}" if helps
                       else "nowhere beyond draw-to-draw noise")
            lines.append(f"Stack of the top {self._stack_size()} sets (picked per draw by inner CV) minus the best "
                         f"single set at that n (picked on the test rows: conservative): {'; '.join(parts)}; "
                         f"{verdict}.")
        lines.extend(self.notes)
        return "\n".join(lines)

    # -- output ------------------------------------------------------------------------------------------------
    def plot(self, path: str | Path, *, title: str | None = None) -> Path:
        """The learning curves as a PNG: x labels per class (log scale), one line per set with its 95% band; each
        family one colour (its stages shades of it), the stack black and dashed, the best set thick with a star."""
        from stackers.evaluate._report import _figure

        t = self.table()
        ns = self.n_per_class
        best = self.best_set()
        fig = _figure(10.5, 6.2)
        ax = fig.subplots()
        colors = self._colors()
        n_lines = len(self.sets) + 1
        for i, name in enumerate([*self.sets, STACK]):
            part = t[t["set"] == name].sort_values("n_per_class")
            if part.empty:
                continue
            x, y = part["n_per_class"].to_numpy(), part[self.metric].to_numpy()
            is_best = name == best
            label = name if name != STACK else f"stack (top {self._stack_size()}, per draw)"
            if name != STACK:
                stage = _stage_text(self.stages.get(name))
                label += f"  [{self.families.get(name)}{': ' + stage if stage else ''}]"
            if is_best:
                label += "  ★ best"
            color = "black" if name == STACK else colors[name]
            # each line nudged sideways (a few % on the log axis) so that the interval bars do not hide each other
            xs = x * (1 + 0.025 * (i - n_lines / 2))
            err = np.vstack([y - part["low"].to_numpy(), part["high"].to_numpy() - y]).clip(0, None)
            ax.errorbar(xs, y, yerr=err, linestyle="--" if name == STACK else "-", marker=_MARKERS[i % len(_MARKERS)],
                        color=color, linewidth=3.2 if is_best else 1.6, markersize=7 if is_best else 5, label=label,
                        zorder=3 if is_best else 2, capsize=3, elinewidth=1)
        for n in ns:  # the best single set at each n
            b = self.best_set(n)
            ax.plot([n], [self._mean(b, n)], marker="*", color="gold", markeredgecolor="black", markersize=15,
                    linestyle="none", zorder=4)
        ax.plot([], [], marker="*", color="gold", markeredgecolor="black", markersize=12, linestyle="none",
                label="best single set at that n")
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("labelled examples per class (log scale)")
        ax.set_ylabel(f"{self.metric.replace('_', '-')} on {self.n_test} held-out rows (95% interval)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
        ax.set_title(title or f"Learning curves: tuned logistic probe per feature set; best at n={ns[-1]}: {best}",
                     fontsize=11)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        return path

    def _colors(self) -> dict[str, Any]:
        from matplotlib import colormaps

        out: dict[str, Any] = {}
        families = list(dict.fromkeys(self.families.get(s) for s in self.sets))
        for f_i, family in enumerate(families):
            members = [s for s in self.sets if self.families.get(s) == family]
            cmap = colormaps[_FAMILY_CMAPS[f_i % len(_FAMILY_CMAPS)]]
            for j, s in enumerate(members):
                out[s] = cmap(0.45 + 0.5 * (j + 1) / len(members))
        return out

    def to_markdown(self) -> str:
        """The wide table as a Markdown table (no extra dependency)."""
        wide = self.wide().reset_index()
        header = "| " + " | ".join(wide.columns) + " |"
        rule = "|" + "|".join("---" for _ in wide.columns) + "|"
        body = ["| " + " | ".join(str(v) for v in row) + " |" for row in wide.itertuples(index=False)]
        return "\n".join([header, rule, *body])

    def save(self, folder: str | Path, *, title: str | None = None) -> dict[str, Path]:
        """Write ``table.csv`` (mean and interval per set and n), ``scores.csv`` (every draw), ``table.md``,
        ``learning_curves.png`` and ``summary.txt`` into ``folder``; return their paths by name."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"table": folder / "table.csv", "scores": folder / "scores.csv", "markdown": folder / "table.md",
                 "png": folder / "learning_curves.png", "summary": folder / "summary.txt"}
        self.table().to_csv(paths["table"], index=False)
        self.scores.to_csv(paths["scores"], index=False)
        paths["markdown"].write_text(self.to_markdown() + "\n")
        paths["summary"].write_text(self.summary() + "\n")
        self.plot(paths["png"], title=title)
        return paths

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the table's rows, the summary, the split sizes."""
        table = self.table().replace({np.nan: None})
        return {"metric": self.metric, "n_per_class": self.n_per_class, "n_test": self.n_test,
                "n_pool": int(len(self.pool_rows)), "best_set": self.best_set(), "rows": table.to_dict("records"),
                "summary": self.summary(), "notes": list(self.notes)}

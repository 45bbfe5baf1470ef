"""Full-catalogue ranking evaluation of a recommender: the stack and its baselines on the same users, with
bootstrap intervals over users and paired differences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stackers.recommend._generators import BASELINES


def target_ranks(scores: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """1-based rank of item ``items[i]`` in row ``rows[i]`` of ``scores``: items with a higher score, or an equal
    score and a lower index, come first (the order ``np.argsort(-s, kind="stable")`` gives)."""
    out = np.empty(len(rows))
    n = scores.shape[1]
    for lo in range(0, len(rows), 4096):
        r, it = rows[lo:lo + 4096], items[lo:lo + 4096]
        s = scores[r]
        st = s[np.arange(len(r)), it][:, None]
        before = (s > st) | ((s == st) & (np.arange(n)[None, :] < it[:, None]))
        out[lo:lo + 4096] = before.sum(axis=1) + 1
    return out


@dataclass
class RankEvaluation:
    """Full-catalogue ranking metrics of the stack and its baselines on the same users, with bootstrap intervals."""

    k: int
    rows: list[dict[str, Any]]
    per_user: dict[str, dict[str, np.ndarray]]
    n_users: int
    n_events: int
    skipped: dict[str, int]
    best_other: str
    paired: dict[str, dict[str, float]]
    seconds: float = 0.0
    candidate_recall: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "users": self.n_users, "events": self.n_events, "skipped": self.skipped,
                "models": self.rows, "best_other": self.best_other,
                "stack_minus": self.paired, "seconds": self.seconds,
                "ranker_candidate_recall": self.candidate_recall}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RankEvaluation":
        """The evaluation ``to_dict`` saved (per-user scores are not kept: enough to print and compare)."""
        return cls(k=int(d["k"]), rows=list(d["models"]), per_user={}, n_users=int(d["users"]),
                   n_events=int(d["events"]), skipped=dict(d.get("skipped") or {}), best_other=d.get("best_other", ""),
                   paired=dict(d.get("stack_minus") or {}), seconds=float(d.get("seconds") or 0.0),
                   candidate_recall=float(d.get("ranker_candidate_recall", float("nan"))))

    def beats_all(self) -> bool:
        """Whether the stack's paired interval against every other model lies above zero, for recall and NDCG."""
        return bool(self.paired) and all(d["low"] > 0 for diffs in self.paired.values() for d in diffs.values())

    def to_text(self) -> str:
        k = self.k
        head = f"{'model':<22}{'recall@' + str(k):>24}{'NDCG@' + str(k):>24}{'MRR':>10}{'coverage':>10}"
        lines = [head]
        def cell(r: dict[str, Any], label: str) -> str:
            lo, hi = r.get(f"{label}_low"), r.get(f"{label}_high")
            return f"{r[label]:.4f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")

        for r in self.rows:
            lines.append(f"{r['model']:<22}{cell(r, f'recall@{k}'):>24}{cell(r, f'ndcg@{k}'):>24}{r['mrr']:>10.4f}"
                         f"{r[f'coverage@{k}']:>10.3f}")
        for model, diffs in self.paired.items():
            lines.append(f"stack - {model:<15}" + "".join(
                f"  {metric}@{k} {d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]" for metric, d in diffs.items()))
        lines.append(f"{self.n_users} users, {self.n_events} held-out events; skipped {self.skipped}")
        return "\n".join(lines)

    def plot(self, path: Any) -> Any:
        """Recall@k and NDCG@k of every model with their intervals, as a PNG."""
        from pathlib import Path

        from stackers.evaluate._report import _figure

        fig = _figure(9, 0.35 * len(self.rows) + 1.6)
        axes = fig.subplots(1, 2, sharey=True)
        names = [r["model"] for r in self.rows]
        y = np.arange(len(names))
        for ax, metric in zip(axes, (f"recall@{self.k}", f"ndcg@{self.k}")):
            v = np.array([r[metric] for r in self.rows])
            lo = np.array([r.get(f"{metric}_low", np.nan) for r in self.rows])
            hi = np.array([r.get(f"{metric}_high", np.nan) for r in self.rows])
            colors = ["#fc8d62" if n == "stack" else "#8da0cb" if n in BASELINES else "#c6c6c6" for n in names]
            ax.barh(y, v, color=colors)
            if np.isfinite(lo).all():
                ax.errorbar(v, y, xerr=[v - lo, hi - v], fmt="none", ecolor="black", capsize=3, lw=1)
            ax.set_title(metric)
            ax.set_yticks(y, names)
        axes[0].invert_yaxis()  # the axes share y: inverting both would undo it
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        return path

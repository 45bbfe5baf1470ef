"""Train, evaluate and save a stacker on stored feature sets: what `featurestore stack train` runs.

Honest by construction: the held-out split (whole groups when groups are given) is cut before anything is fitted,
the stack and every baseline see only the training rows, and the report scores all of them on the same held-out rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import featurestore
from featurestore._names import validate_name


def train_stack(store: featurestore.Store, sets: Sequence[str], labels: Any, *, key: str | Sequence[str] = "id",
                label: str = "label", groups: str | None = None, columns: Sequence[str] | None = None,
                name: str, meta: str = "auto", cv: int = 5, test_size: float = 0.25, seed: int = 0,
                n_boot: int = 1000, out: str | Path | None = None, write_oof: bool = True) -> dict[str, Any]:
    """Join ``sets`` with ``labels``, hold out ``test_size``, fit a StackingClassifier, compare, save and report.

    The model goes to ``<store>/models/<name>``, the out-of-fold scores to feature set ``<name>_oof`` and the
    report (metrics.json, table.txt, PNG plots) to ``out`` (default ``<store>/models/<name>/report``).
    """
    import stackers

    validate_name(name, "model")
    data = stackers.join(store, list(sets), labels=labels, key=key, label=label, groups=groups,
                         columns=list(columns) if columns else None)
    train, test = data.split(test_size=test_size, random_state=seed)
    model = stackers.StackingClassifier(meta=meta, cv=cv, random_state=seed)
    model.fit(train)
    comparison = stackers.compare(train, test, model, n_boot=n_boot, random_state=seed)
    model_dir = store.models_dir / name
    model.save(model_dir, metrics=comparison.to_dict())  # replaces a previous save whole, so it goes first
    out = Path(out) if out is not None else model_dir / "report"
    paths = stackers.report(comparison, out=out)
    oof = None
    if write_oof:
        oof = stackers.write_oof(store, model, train, f"{name}_oof", version="auto")
    split = {"test_size": test_size, "seed": seed, "n_train": len(train), "n_test": len(test),
             "labels": str(labels) if isinstance(labels, (str, Path)) else "<table>", "label": label,
             "groups": groups, "columns": list(columns or [])}
    (model_dir / "split.json").write_text(json.dumps(split, indent=1))
    return {"model": str(model_dir), "report": {k: str(v) for k, v in paths.items()}, "comparison": comparison,
            "meta": model.meta_name_, "meta_scores": getattr(model, "meta_scores_", None),
            "oof_set": oof.name if oof is not None else None, "split": split, "estimator": model}

"""``featurestore models ls|show|rm``: the stackers saved in a store, under ``<store>/models/<name>/``.

A saved model is a folder with ``manifest.json`` (see ``stackers.persist``); ``stack train`` adds its split
(``split.json``), held-out rows (``heldout.parquet``) and report (``report/``). These commands read the manifest
through ``stackers.read_manifest`` (which also finishes a save that was killed half way), never load the arrays.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import click

import featurestore
from featurestore.errors import ModelNotFoundError
from pipelines.cli._common import Group, console, echo_json, json_option, print_rows, store_option, table


def _model_names(store: featurestore.Store) -> list[str]:
    """Folders under models/, and models whose save was killed between its two renames (``.NAME.tmp-*`` /
    ``.NAME.old-*`` beside no NAME: reading the manifest finishes that save)."""
    from stackers.persist import LEFTOVER

    root = store.models_dir
    if not root.is_dir():
        return []
    names = set()
    for p in root.iterdir():
        leftover = LEFTOVER.match(p.name)
        if leftover:
            names.add(leftover["name"])
        elif not p.name.startswith(".") and p.is_dir() and not p.is_symlink():
            names.add(p.name)
    return sorted(names)


def _find(store: featurestore.Store, name: str) -> Path:
    from stackers.persist import find_model

    if name.startswith(".") or "/" in name or name in ("", ".."):
        raise ModelNotFoundError(f"{name!r} is not a model name.")
    return find_model(store, name)


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def model_info(path: Path, *, full: bool = False) -> dict[str, Any]:
    """What a saved model is: class, classes, feature sets and versions, key, table columns, meta learner, its
    held-out macro-F1 (when trained with ``stack train``) and size; ``full`` adds params, blocks, every metric,
    library versions, the split and the files."""
    import json

    import stackers
    from stackers.persist import RECOMMENDER_FORMAT

    m = stackers.read_manifest(path)
    if m["format"] == RECOMMENDER_FORMAT:
        return _recommender_info(path, m, full=full)
    metrics = m.get("metrics") or {}
    primary = metrics.get("primary_metric", "macro_f1")
    stack = (metrics.get("models") or {}).get("stack", {}).get("metrics", {}).get(primary, {})
    info = {
        "name": path.name, "path": str(path), "class": m.get("class"), "created": m.get("created"),
        "classes": (m.get("classes") or {}).get("values", []),
        "sets": {name: src.get("version") for name, src in (m.get("sources") or {}).items()},
        "key": m.get("key", []), "columns": m.get("columns", []), "meta": (m.get("meta") or {}).get("name"),
        "metric": primary if stack else None, "heldout": stack.get("value"), "n_test": metrics.get("n_test"),
        "bytes": _folder_bytes(path),
    }
    if full:
        split = path / "split.json"
        info |= {
            "params": m.get("params"), "blocks": [{"name": b.get("name"), "dim": b.get("dim")} for b in m.get("blocks", [])],
            "meta_scores": (m.get("meta") or {}).get("scores"), "metrics": metrics or None,
            "sources": m.get("sources"), "versions": m.get("versions"),
            "split": json.loads(split.read_text()) if split.is_file() else None,
            "files": sorted(str(f.relative_to(path)) for f in path.rglob("*") if f.is_file()),
        }
    return info


def _recommender_info(path: Path, m: dict[str, Any], *, full: bool) -> dict[str, Any]:
    """``model_info`` of a saved ``RecommenderStack`` (manifest ``m``): its sets, ranker, the stack's recall@k."""
    metrics = m.get("metrics") or {}
    k = metrics.get("k", 10)
    stack = next((r for r in metrics.get("models") or [] if r.get("model") == "stack"), {})
    info = {
        "name": path.name, "path": str(path), "class": m.get("class"), "created": m.get("created"), "classes": [],
        "sets": {name: (src or {}).get("version") for name, src in (m.get("sources") or {}).items()},
        "key": [], "columns": [], "meta": "lambdarank", "metric": f"recall@{k}" if stack else None,
        "heldout": stack.get(f"recall@{k}"), "n_test": metrics.get("events"), "bytes": _folder_bytes(path),
    }
    if full:
        info |= {"params": m.get("params"), "metrics": metrics or None, "sources": m.get("sources"),
                 "versions": m.get("versions"),
                 "files": sorted(str(f.relative_to(path)) for f in path.rglob("*") if f.is_file())}
    return info


@click.group(name="models", cls=Group)
def models() -> None:
    """List, inspect and remove saved stackers (<store>/models/NAME)."""


@models.command(name="ls")
@store_option
@json_option
def models_ls(store_path: str, as_json: bool) -> None:
    """Saved models: classes, feature sets (with versions), meta learner, held-out macro-F1, size.

    --json gives a list, one object per model.
    """
    store = featurestore.open(store_path)
    rows = []
    for name in _model_names(store):
        try:
            rows.append(model_info(store.models_dir / name))
        except FileNotFoundError:  # a folder that is not a saved model
            continue
        except ValueError as exc:  # a damaged model must not hide the others
            rows.append({"name": name, "path": str(store.models_dir / name), "error": str(exc)})
    print_rows(rows, as_json, empty="No saved models yet. Train one with `featurestore stack train`.",
               columns=("name", "classes", "feature sets", "columns", "meta", "held-out", "created", "size"),
               cells=_ls_cells)


def _ls_cells(r: dict[str, Any]) -> tuple[str, ...]:
    if "error" in r:
        return (r["name"], f"unreadable: {r['error']}", *[""] * 6)
    score = f"{r['metric']} {r['heldout']:.3f}" if isinstance(r["heldout"], (int, float)) else "-"
    classes = str(len(r["classes"])) if r["classes"] else "-"  # a recommender ranks items: no classes
    return (r["name"], classes, ", ".join(f"{s} v{v}" for s, v in r["sets"].items()),
            ", ".join(r["columns"]) or "-", str(r["meta"]), score, str(r["created"]), f"{r['bytes']:,} B")


@models.command(name="show")
@click.argument("name")
@store_option
@json_option
def models_show(name: str, store_path: str, as_json: bool) -> None:
    """Everything about saved model NAME: params, classes, blocks, feature sets and specs, metrics, split, files.

    --json gives one object.
    """
    info = model_info(_find(featurestore.open(store_path), name), full=True)
    if as_json:
        echo_json(info)
        return
    click.echo(f"{info['name']}: {info['class']}, created {info['created']}, {info['bytes']:,} bytes at {info['path']}")
    if info["class"] == "RecommenderStack":
        _show_recommender(info)
        return
    click.echo(f"classes ({len(info['classes'])}): {', '.join(map(str, info['classes']))}")
    click.echo(f"key: {', '.join(info['key'])}; table columns: {', '.join(info['columns']) or 'none'}")
    click.echo("feature sets: " + ", ".join(f"{b['name']} (v{info['sets'].get(b['name'], '?')}, dim {b['dim']})"
                                            for b in info["blocks"]))
    scores = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in (info["meta_scores"] or {}).items())
    click.echo(f"meta learner: {info['meta']}" + (f" (inner-CV: {scores})" if scores else ""))
    click.echo("params: " + ", ".join(f"{k}={v!r}" for k, v in (info["params"] or {}).items()))
    metrics = info["metrics"] or {}
    if metrics.get("models"):
        out = table("model", *(m for m in next(iter(metrics["models"].values()))["metrics"]),
                    title=f"held-out metrics ({metrics.get('n_test')} rows, 95% bootstrap intervals)")
        for model, entry in metrics["models"].items():
            out.add_row(model, *(f"{v['value']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"
                                 if isinstance(v.get("value"), (int, float)) else str(v.get("value"))
                                 for v in entry["metrics"].values()))
        console().print(out)
    click.echo("files: " + ", ".join(info["files"]))


def _show_recommender(info: dict[str, Any]) -> None:
    from stackers import RankEvaluation

    click.echo("feature sets: " + (", ".join(f"{n} (v{v})" for n, v in info["sets"].items()) or "none"))
    click.echo("params: " + ", ".join(f"{k}={v!r}" for k, v in (info["params"] or {}).items()))
    evaluation = info["metrics"] or {}
    if evaluation.get("models"):
        click.echo(RankEvaluation.from_dict(evaluation).to_text())
    click.echo("files: " + ", ".join(info["files"]))


@models.command(name="rm")
@click.argument("names", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@store_option
@json_option
def models_rm(names: tuple[str, ...], yes: bool, store_path: str, as_json: bool) -> None:
    """Remove saved model(s) NAME... (the folder, report included). Feature sets stay, NAME_oof too.

    Asks first unless --yes (--json implies --yes). --json gives a list, one object per removed model.
    """
    store = featurestore.open(store_path)
    paths = [_find(store, n) for n in dict.fromkeys(names)]  # every name checked before anything is removed
    if not (yes or as_json):
        click.confirm(f"Remove {', '.join(p.name for p in paths)} from {store.models_dir}?", abort=True, err=True)
    from stackers.persist import leftovers

    removed = []
    for path in paths:
        size = _folder_bytes(path)
        shutil.rmtree(path)
        for leftover in leftovers(path):  # what killed saves left beside it
            shutil.rmtree(leftover, ignore_errors=True)
        removed.append({"name": path.name, "path": str(path), "bytes": size})
    if as_json:
        echo_json(removed)
    else:
        for r in removed:
            click.echo(f"removed model {r['name']} ({r['bytes']:,} bytes)")

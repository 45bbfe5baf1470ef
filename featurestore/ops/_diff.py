"""Comparing two feature set versions: specs side by side, which keys came and went, and how far the vectors moved.

Both sides are read as a reader sees them (newest row per key). Keys are matched through ``key_tokens`` (so compound
keys compare whole), in Arrow (``index_in``), never in a Python loop over rows. The cosine between a shared key's two
vectors is computed when both sides have the same dim; vectors from different encoders live in different spaces, so
it only means something when the spec is the same or close (a re-embedding with a new checkpoint, a bug fix).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.errors import ValidationError
from featurestore.query._time_travel import resolve_ref
from featurestore.storage._format import CONTENT_HASH, EMBEDDING, key_tokens, to_matrix

if TYPE_CHECKING:
    from featurestore._store import Store
    from featurestore.query._featureset import FeatureSet


@dataclass
class Diff:
    """The difference between versions ``a`` and ``b`` (labels such as ``"reviews@v1"``).

    ``spec`` holds every spec field as ``[a's value, b's value]``; ``spec_changed`` names those that differ. Key
    counts are None when the two are keyed differently. ``changed``: shared keys whose ``content_hash`` differs (new
    content or new preprocessing); ``identical``: shared keys whose vectors are bit-for-bit equal.
    """

    a: str
    b: str
    spec: dict[str, list[Any]]
    spec_changed: list[str]
    rows: list[int]
    key: list[list[str]]
    shared: int | None = None
    added: int | None = None
    removed: int | None = None
    changed: int | None = None
    identical: int | None = None
    cosine_mean: float | None = None
    cosine_min: float | None = None
    examples: dict[str, list[Any]] = field(default_factory=dict)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _label(fs: "FeatureSet") -> str:
    return f"{fs.name}@v{fs.version}" + (f" as of {fs.as_of}" if fs.as_of else "")


def _examples(table: pa.Table, key: list[str], mask: pa.Array, limit: int) -> list[Any]:
    rows = table.select(key).filter(mask).slice(0, limit).to_pylist()
    return [r[key[0]] if len(key) == 1 else tuple(r[k] for k in key) for r in rows]


def diff(store: "Store", a: Any, b: Any, *, examples: int = 5) -> Diff:
    """Compare ``a`` and ``b``: each ``"name"``, ``"name@vK"``, ``"name@<ISO time>"`` or a :class:`FeatureSet`."""
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
        raise ValidationError(f"The 'examples' parameter of Store.diff must be an int >= 0. Got {examples!r} instead.")
    fa, fb = resolve_ref(store, a), resolve_ref(store, b)
    sa, sb = fa.spec, fb.spec
    spec = {k: [sa.get(k), sb.get(k)] for k in sorted(set(sa) | set(sb))}
    out = Diff(a=_label(fa), b=_label(fb), spec=spec, spec_changed=[k for k, (x, y) in spec.items() if x != y],
               rows=[fa.count(), fb.count()], key=[fa.key, fb.key])
    if fa.key != fb.key:
        out.note = f"keyed differently ({fa.key} vs {fb.key}): keys and vectors not compared"
        return out
    key = fa.key
    ta = fa.to_arrow(columns=[CONTENT_HASH, EMBEDDING])
    tb = fb.to_arrow(columns=[CONTENT_HASH, EMBEDDING])
    ka, kb = key_tokens(ta, key), key_tokens(tb, key)
    if ka.type != kb.type:
        try:
            kb = kb.cast(ka.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            out.note = f"key types differ ({ka.type} vs {kb.type}): keys and vectors not compared"
            return out
    where = pc.index_in(kb, value_set=ka)  # each b row's position in a, null when a lacks the key
    in_a = where.is_valid()
    in_b = pc.is_in(ka, value_set=kb)
    bi = np.flatnonzero(in_a.to_numpy(zero_copy_only=False))
    ai = where.filter(in_a).to_numpy(zero_copy_only=False).astype(np.int64)
    out.shared, out.added = len(bi), tb.num_rows - len(bi)
    out.removed = ta.num_rows - int(pc.sum(in_b).as_py() or 0)
    hashes_differ = pc.not_equal(ta.column(CONTENT_HASH).take(pa.array(ai)), tb.column(CONTENT_HASH).take(pa.array(bi)))
    out.changed = int(pc.sum(hashes_differ).as_py() or 0)
    out.examples = {"added": _examples(tb, key, pc.invert(in_a), examples),
                    "removed": _examples(ta, key, pc.invert(in_b), examples),
                    "changed": _examples(tb.take(pa.array(bi)), key, hashes_differ, examples)}
    if fa.dim != fb.dim:
        out.note = f"dims differ ({fa.dim} vs {fb.dim}): no cosine between the shared keys"
        return out
    if len(bi):
        va = to_matrix(ta.column(EMBEDDING), fa.dim)[ai].astype(np.float64)
        vb = to_matrix(tb.column(EMBEDDING), fb.dim)[bi].astype(np.float64)
        out.identical = int(np.all(va == vb, axis=1).sum())
        norms = np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1)
        cos = np.einsum("ij,ij->i", va, vb) / np.where(norms > 0, norms, 1.0)
        cos = np.where(norms > 0, cos, np.nan)  # a zero vector has no direction
        if np.isfinite(cos).any():
            out.cosine_mean, out.cosine_min = float(np.nanmean(cos)), float(np.nanmin(cos))
    return out

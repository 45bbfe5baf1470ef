"""``tfidf-svd:<id>``: a TF-IDF + truncated SVD text encoder fitted on your texts, kept in the store, rebuilt from it.

``TfidfSvd.fit(texts)`` fits the classic baseline with scikit-learn: ``TfidfVectorizer(ngram_range, min_df,
sublinear_tf)`` -> ``TruncatedSVD(dim)`` -> unit length. ``save(store)`` writes the fitted state, without pickle::

    <store>/encoders/tfidf-svd/<sha256>/state.json   parameters, vocabulary (terms in column order), arrays.npz's sha256
    <store>/encoders/tfidf-svd/<sha256>/arrays.npz   idf (V,) float64, components (V, dim) float64

The folder is named by the sha256 of state.json, which records the sha256 of arrays.npz, so one digest pins every
byte; the encoder id is ``tfidf-svd:<its first 16 hex digits>``. Each load checks both digests and names the file that
differs. Saving writes a temporary folder and renames it (atomic), and the same fit always has the same bytes (the
npz members carry a fixed timestamp), so saving twice changes nothing; saving over a damaged copy repairs it.

Encoding needs numpy only. It is scikit-learn's transform, step by step: lowercase, the token pattern, word n-grams
joined by a space, counts, ``1 + log(count)`` (sublinear), times idf, unit length, times the components, unit
length. The components stay float64 as fitted: vectors then equal ``pipeline.transform`` to the last float32 bit on
2,000 reviews, where float32 components (half the file) differed by up to 6e-8 in 99.9 % of the rows.

A text with no vocabulary term gets the unit vector of the last SVD component (``"last-svd-component"`` in the
spec), where scikit-learn gives a zero vector, whose cosine is undefined (NaN in DuckDB). The last component is the
direction the training texts use least: fitted on 4,000 clothing reviews, the mean |cosine| of 2,000 others to it was
0.04 (max 0.21), while the normalised vocabulary mean, the rule of the static encoders, sat at 0.45 to them.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import numbers
import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from featurestore.encoders._base import TEXT_OPTIONS, Encoder, check_texts
from featurestore.encoders._registry import register
from featurestore.encoders.text._static import check_whole_text_options
from featurestore.errors import CorruptStoreError, EncoderNotAvailableError, ValidationError
from featurestore.storage._atomic import fsync_path
from featurestore.storage._layout import ENCODERS, encoders_dir, store_root
from featurestore.utils._optional import import_optional, library_version
from featurestore.utils._validation import Constraint, Interval, validate_params

__all__ = ["TfidfSvd", "state_dir"]

KIND = "tfidf-svd"
STATE_FILE = "state.json"
ARRAYS_FILE = "arrays.npz"
FORMAT = 1
EMPTY_VECTOR = "last-svd-component"
TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's default
_ID = re.compile(r"[0-9a-f]{16,64}")
_BLOCK_TERMS = 2048  # (text, term) pairs gathered at once: 2,048 x 128 float64 = 2 MB
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same arrays give the same npz bytes
_OWNER = "the 'tfidf-svd' encoder"


class _NgramRange(Constraint):
    def is_satisfied_by(self, value: Any) -> bool:
        return (isinstance(value, (tuple, list)) and len(value) == 2
                and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
                and 1 <= value[0] <= value[1])

    def __str__(self) -> str:
        return "a pair of ints (min_n, max_n) with 1 <= min_n <= max_n"


_FIT_CONSTRAINTS: dict[str, list] = {
    "dim": [Interval(numbers.Integral, 1, None)],
    "ngram_range": [_NgramRange()],
    "min_df": [Interval(numbers.Integral, 1, None), Interval(numbers.Real, 0, 1, closed="right")],
    "sublinear_tf": ["boolean"],
    "random_state": [Interval(numbers.Integral, 0, 2**32 - 1)],
}


def state_dir(root: str | os.PathLike[str], digest: str) -> Path:
    """Where a fitted state with this sha256 lives: ``<root>/encoders/tfidf-svd/<sha256>``."""
    return encoders_dir(Path(root)) / KIND / digest


@dataclass(frozen=True)
class _State:
    """A fitted TF-IDF + SVD: JSON-able facts, the vocabulary and two float64 arrays."""

    meta: dict[str, Any]  # everything in state.json but the vocabulary and the arrays' digest
    vocabulary: list[str]
    idf: np.ndarray  # (V,)
    components: np.ndarray  # (V, dim): row t is term t's direction

    def to_bytes(self) -> tuple[bytes, bytes]:
        """(state.json, arrays.npz), both a function of the state alone."""
        arrays = _npz_bytes({"idf": self.idf, "components": self.components})
        document = {**self.meta, "vocabulary": self.vocabulary,
                    "arrays": {"file": ARRAYS_FILE, "sha256": hashlib.sha256(arrays).hexdigest(),
                               "idf": list(self.idf.shape), "components": list(self.components.shape)}}
        text = json.dumps(document, sort_keys=True, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
        return text.encode("ascii"), arrays

    @classmethod
    def load(cls, directory: Path, digest: str) -> _State:
        """Read and verify the state saved in ``directory`` under ``digest``; errors name the file at fault."""
        state_path = directory / STATE_FILE
        raw = _read(state_path)
        got = hashlib.sha256(raw).hexdigest()
        if got != digest:
            raise CorruptStoreError(_changed(state_path, got, digest, "the digest it is saved under"))
        try:
            document = json.loads(raw)
            arrays = document.pop("arrays")
            vocabulary = document.pop("vocabulary")
            if (document.get("format"), document.get("kind"), arrays.get("file")) != (FORMAT, KIND, ARRAYS_FILE):
                raise ValidationError(f"format {document.get('format')!r} of kind {document.get('kind')!r}, "
                                 f"expected format {FORMAT} of {KIND!r} with {ARRAYS_FILE}")
            _check_analyzer(document["analyzer"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptStoreError(f"{state_path} is not a tfidf-svd state this version reads: {exc}") from None
        arrays_path = directory / ARRAYS_FILE
        raw_arrays = _read(arrays_path)
        got = hashlib.sha256(raw_arrays).hexdigest()
        if got != arrays.get("sha256"):
            raise CorruptStoreError(_changed(arrays_path, got, str(arrays.get("sha256")), f"recorded in {state_path}"))
        with np.load(io.BytesIO(raw_arrays), allow_pickle=False) as npz:
            idf, components = npz["idf"], npz["components"]
        shapes = (list(idf.shape), list(components.shape))
        if shapes != (arrays["idf"], arrays["components"]) or len(vocabulary) != len(idf):
            raise CorruptStoreError(f"{arrays_path} holds shapes {shapes} for {len(vocabulary)} terms; {state_path} "
                                    f"records {arrays['idf']} and {arrays['components']}.")
        return cls(document, vocabulary, idf.astype(np.float64, copy=False), components.astype(np.float64, copy=False))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise EncoderNotAvailableError(
            f"{path} is missing: the fitted tfidf-svd state is incomplete.\n"
            "  Help: save the fitted encoder again (TfidfSvd.save) or fit a new one (featurestore encoders fit)."
        ) from None


def _changed(path: Path, got: str, want: str, where: str) -> str:
    return (f"{path} has sha256 {got[:16]}..., not {want[:16]}... ({where}): it was changed or damaged after it was "
            "saved.\n  Help: save the fitted encoder again (TfidfSvd.save repairs the folder) or fit a new one.")


def _check_analyzer(analyzer: dict[str, Any]) -> None:
    """The encoder below implements scikit-learn's word analyzer with these settings only."""
    supported = {"lowercase": True, "strip_accents": None, "token_pattern": TOKEN_PATTERN, "ngram_joiner": " "}
    if any(analyzer.get(k, "?") != v for k, v in supported.items()) \
            or not _NgramRange().is_satisfied_by(analyzer.get("ngram_range")):
        raise ValidationError(f"unsupported analyzer {analyzer!r}")


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed .npz (what ``np.savez`` writes) whose bytes depend on the arrays only."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME), "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
    return buffer.getvalue()


def _texts_sha256(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


@register(KIND)
class TfidfSvd(Encoder):
    """TF-IDF (word n-grams) + truncated SVD, fitted here, saved in a store, rebuilt from it by id.

    >>> enc = TfidfSvd.fit(train_texts, dim=128)        # scikit-learn fits; encoding needs numpy only
    >>> enc.save(store)                                 # -> 'tfidf-svd:3f9a0c...' (16 hex digits)
    >>> get_encoder("tfidf-svd:3f9a0c...", store=store).encode(["a new review"])
    """

    options = (*TEXT_OPTIONS, "store")
    #: its state must be in the store its vectors go to: the embedding runner calls ``save(store)`` before writing
    stored_state: ClassVar[bool] = True

    def __init__(self, model: str, *, store: Any = None, **options: Any) -> None:
        # options: dtype and normalize (run-time ones are accepted and change nothing; see check_whole_text_options)
        if not isinstance(model, str) or not _ID.fullmatch(model):
            raise ValidationError(f"A fitted tfidf-svd encoder is named 'tfidf-svd:<16 to 64 lowercase hex digits>' (the "
                             f"sha256 of its saved state), as `featurestore encoders fit` prints. Got {model!r}.")
        if store is None:
            raise EncoderNotAvailableError(
                f"'tfidf-svd:{model}' is fitted: its state lives in a feature store. Pass store=... (get_encoder, "
                "encoder_from_spec); pipelines.embed passes the store it writes to.")
        root = store_root(store)
        parent = state_dir(root, "x").parent
        found = sorted(p for p in parent.glob(f"{model}*") if _ID.fullmatch(p.name)) if parent.is_dir() else []
        if len(found) != 1:
            known = sorted(f"tfidf-svd:{p.name[:16]}" for p in parent.glob("*") if _ID.fullmatch(p.name)) \
                if parent.is_dir() else []
            raise EncoderNotAvailableError(
                f"No fitted state 'tfidf-svd:{model}' in {parent}" + (f" ({len(found)} states start so: give more digits)" if found else "")
                + f". Saved there: {', '.join(known) or 'none'}.\n  Help: fit one (featurestore encoders fit "
                "tfidf-svd, or TfidfSvd.fit(...).save(store)); vectors written in another store need that store's "
                f"{ENCODERS}/ folder copied.")
        self._setup(_State.load(found[0], found[0].name), found[0].name, **options)
        self._directory: Path | None = found[0]

    @classmethod
    def fit(cls, texts: Sequence[str], *, dim: int = 128, ngram_range: tuple[int, int] = (1, 2),
            min_df: int | float = 2, sublinear_tf: bool = True, random_state: int = 0) -> TfidfSvd:
        """Fit on ``texts``: scikit-learn's TfidfVectorizer then TruncatedSVD(dim, random_state) (randomized).

        ``min_df`` is a document count (int) or a fraction of the texts (float in (0, 1]). Returns a fitted encoder;
        ``save(store)`` keeps it. Needs scikit-learn (``pip install 'featurestore[stack]'``); encoding does not.
        """
        params = {"dim": dim, "ngram_range": ngram_range, "min_df": min_df, "sublinear_tf": sublinear_tf,
                  "random_state": random_state}
        validate_params(params, _FIT_CONSTRAINTS, "TfidfSvd.fit")
        dim, random_state, sublinear_tf = int(dim), int(random_state), bool(sublinear_tf)  # JSON, not numpy, types
        min_df = int(min_df) if isinstance(min_df, numbers.Integral) else float(min_df)
        items = check_texts(texts)
        what = "Fitting a tfidf-svd encoder"
        import_optional("sklearn", extra="stack", what=what)
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        ngrams = (int(ngram_range[0]), int(ngram_range[1]))
        vectorizer = TfidfVectorizer(ngram_range=ngrams, min_df=min_df, sublinear_tf=sublinear_tf,
                                     token_pattern=TOKEN_PATTERN, lowercase=True, dtype=np.float64)
        try:
            tfidf = vectorizer.fit_transform(items)
        except ValueError as exc:  # an empty vocabulary
            raise ValidationError(f"TfidfSvd.fit keeps no term of these {len(items)} texts (min_df={min_df!r}): {exc}") \
                from None
        n_terms = tfidf.shape[1]
        if dim > n_terms:
            raise ValidationError(f"TfidfSvd.fit: dim={dim} needs at least {dim} terms; these {len(items)} texts have "
                             f"{n_terms} with min_df={min_df!r}. Lower dim, lower min_df or fit on more texts.")
        svd = TruncatedSVD(dim, algorithm="randomized", random_state=random_state).fit(tfidf)
        meta = {
            "format": FORMAT,
            "kind": KIND,
            "dim": dim,
            "analyzer": {"lowercase": True, "strip_accents": None, "token_pattern": TOKEN_PATTERN,
                         "ngram_range": list(ngrams), "ngram_joiner": " "},
            "tfidf": {"min_df": min_df, "sublinear_tf": sublinear_tf, "norm": "l2", "use_idf": True,
                      "smooth_idf": True},
            "svd": {"n_components": dim, "algorithm": "randomized", "n_iter": svd.n_iter,
                    "random_state": random_state},
            "empty_vector": EMPTY_VECTOR,
            "fitted_on": {"rows": len(items), "texts_sha256": _texts_sha256(items)},
            "fitted_with": {name: library_version(name) for name in ("scikit-learn", "scipy", "numpy")},
        }
        state = _State(meta, [str(t) for t in vectorizer.get_feature_names_out()],
                       np.ascontiguousarray(vectorizer.idf_, dtype=np.float64),
                       np.ascontiguousarray(svd.components_.T, dtype=np.float64))
        encoder = cls.__new__(cls)
        encoder._setup(state, hashlib.sha256(state.to_bytes()[0]).hexdigest())
        encoder._directory = None
        return encoder

    def _setup(self, state: _State, digest: str, **options: Any) -> None:
        self._normalize = check_whole_text_options(_OWNER, **options)
        self._dtype = options.get("dtype", "float32")
        self._state = state
        self._digest = digest
        self.name = f"{KIND}:{digest[:16]}"
        self._index = {term: column for column, term in enumerate(state.vocabulary)}
        analyzer = state.meta["analyzer"]
        self._pattern = re.compile(analyzer["token_pattern"])
        self._ngram_range = tuple(analyzer["ngram_range"])
        self._sublinear = bool(state.meta["tfidf"]["sublinear_tf"])
        self._empty = np.zeros(self.dim)
        self._empty[-1] = 1.0

    # -- identity ---------------------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self._state.components.shape[1])

    @property
    def state_sha256(self) -> str:
        """The sha256 of state.json, which names its folder in a store."""
        return self._digest

    def spec(self) -> dict[str, Any]:
        meta = self._state.meta
        return {
            "encoder": self.name,
            "library": "featurestore",
            "state_sha256": self._digest,
            "state": f"{ENCODERS}/{KIND}/{self._digest}",
            "dim": self.dim,
            "dtype": self._dtype,
            "metric": "cosine",
            "normalize": self._normalize,
            "analyzer": dict(meta["analyzer"]),
            "min_df": meta["tfidf"]["min_df"],
            "sublinear_tf": meta["tfidf"]["sublinear_tf"],
            "vocabulary_size": len(self._state.vocabulary),
            "svd_random_state": meta["svd"]["random_state"],
            "fitted_on_rows": meta["fitted_on"]["rows"],
            "empty_vector": EMPTY_VECTOR,
        }

    def provenance(self) -> dict[str, Any]:
        return {"backend": "numpy", "device": "cpu",
                "state_dir": str(self._directory) if self._directory is not None else None,
                "fitted_with": dict(self._state.meta["fitted_with"]),
                "libraries": {"numpy": library_version("numpy")}}

    # -- saving -----------------------------------------------------------------------------------------------------

    def save(self, store: Any) -> str:
        """Write the fitted state into ``store`` (a Store or the folder of an existing store) and return the encoder id.

        Atomic and idempotent: an intact copy already there is left as is; a damaged one is replaced.
        """
        root = store_root(store)
        final = state_dir(root, self._digest)
        if final.is_dir():
            try:
                _State.load(final, self._digest)
                return self.name
            except (CorruptStoreError, EncoderNotAvailableError):
                pass  # rewritten below
        final.parent.mkdir(parents=True, exist_ok=True)
        state_bytes, array_bytes = self._state.to_bytes()
        temporary = final.parent / f".tmp-{secrets.token_hex(8)}"
        temporary.mkdir()  # not tempfile.mkdtemp: its 0700 would stay on the saved folder
        damaged = final.parent / f".tmp-damaged-{self._digest[:16]}-{os.getpid()}"
        try:
            for name, data in ((ARRAYS_FILE, array_bytes), (STATE_FILE, state_bytes)):
                with open(temporary / name, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            fsync_path(temporary)
            if final.is_dir():
                os.rename(final, damaged)
            try:
                os.rename(temporary, final)
            except OSError:
                if not final.is_dir():
                    raise
                _State.load(final, self._digest)  # another process saved the same state first
            fsync_path(final.parent)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
            shutil.rmtree(damaged, ignore_errors=True)
        if self._directory is None:
            self._directory = final
        return self.name

    # -- encoding ---------------------------------------------------------------------------------------------------

    def _analyze(self, text: str) -> list[str]:
        """scikit-learn's word analyzer: lowercase, token pattern, n-grams joined by one space."""
        tokens = self._pattern.findall(text.lower())
        low, high = self._ngram_range
        terms = list(tokens) if low == 1 else []
        for n in range(max(low, 2), min(high, len(tokens)) + 1):
            terms += [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        return terms

    def _encode_list(self, texts: list[str], *, batch_size: int | None, progress: bool) -> np.ndarray:
        n, dim = len(texts), self.dim
        per_text = [self._analyze(text) for text in texts]
        lengths = np.fromiter(map(len, per_text), dtype=np.int64, count=n)
        columns = np.fromiter(map(self._index.get, itertools.chain.from_iterable(per_text), itertools.repeat(-1)),
                              dtype=np.int64, count=int(lengths.sum()))
        rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
        known = columns >= 0
        # one entry per (text, term), sorted by text then column, as scikit-learn's CSR rows are
        pairs, counts = np.unique(rows[known] * len(self._index) + columns[known], return_counts=True)
        rows, columns = np.divmod(pairs, len(self._index))
        weights = counts.astype(np.float64)
        if self._sublinear:
            weights = np.log(weights) + 1.0
        weights *= self._state.idf[columns]
        norms = np.sqrt(np.bincount(rows, weights * weights, minlength=n))
        weights /= norms[rows]
        out = np.zeros((n, dim), dtype=np.float64)
        bounds = np.searchsorted(rows, np.arange(n + 1))  # text i's pairs: bounds[i]:bounds[i + 1]
        start = 0
        while start < len(rows):  # blocks of whole texts, about _BLOCK_TERMS pairs each
            stop = int(bounds[min(n, int(rows[min(start + _BLOCK_TERMS, len(rows)) - 1]) + 1)])
            block = self._state.components[columns[start:stop]] * weights[start:stop, None]
            firsts = np.unique(rows[start:stop], return_index=True)
            out[firsts[0]] = np.add.reduceat(block, firsts[1], axis=0)
            start = stop
        empty = norms == 0
        out[empty] = self._empty
        if self._normalize:
            lengths_out = np.sqrt(np.einsum("ij,ij->i", out, out))
            out /= lengths_out[:, None]
        return out.astype(self._dtype)

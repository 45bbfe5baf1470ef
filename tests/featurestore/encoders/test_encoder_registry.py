"""The open registry: an outside package's entry point in ``featurestore.encoders`` adds an encoder key.

The package is real for ``importlib.metadata``: a module plus a ``.dist-info`` folder with ``METADATA`` and
``entry_points.txt``, written to tmp_path and put on ``sys.path``, as pip would install it.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from featurestore.encoders import (
    ENTRY_POINT_GROUP,
    _registry,
    describe_encoders,
    encoder_from_spec,
    get_encoder,
    is_reproducible,
    list_encoders,
)
from featurestore.errors import EncoderNotAvailableError, UnknownEncoderError

MODULE = '''
import numpy as np
from featurestore.encoders import Encoder


class ShoutEncoder(Encoder):
    """Outside code: 4-d vectors from the text's length and its upper-case letters."""

    options = ("scale",)

    def __init__(self, model, *, scale=1.0):
        self.name, self.scale = f"{KEY}:{model}", float(scale)

    @property
    def dim(self):
        return 4

    def spec(self):
        return {"encoder": self.name, "dim": 4, "dtype": "float32", "metric": "cosine", "scale": self.scale}

    @classmethod
    def options_from_spec(cls, spec):
        return {"scale": spec["scale"]}

    def _encode_list(self, texts, *, batch_size, progress):
        out = [[len(t), sum(c.isupper() for c in t), 1.0, self.scale] for t in texts]
        return np.asarray(out, dtype=np.float32)
'''


def _install(root: Path, dist: str, module: str, entry_points: dict[str, str], source: str) -> None:
    """Write ``module`` and a ``dist``-1.0 ``.dist-info`` whose entry points are ``entry_points`` (name -> value)."""
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {value}" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}\n")


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """Two installed outside packages: one good encoder, one whose import fails, one that is not an Encoder."""
    key = f"shout{tmp_path.name[-6:].replace('_', '').lower()}"  # unique per test: the registry is per process
    _install(tmp_path, "fs-shout-encoders", f"fs_shout_{key}", {key: f"fs_shout_{key}:ShoutEncoder"},
             MODULE.replace("{KEY}", key))
    _install(tmp_path, "fs-broken-encoders", f"fs_broken_{key}", {f"{key}-broken": f"fs_broken_{key}:Nope"},
             "raise RuntimeError('this package needs a GPU driver')\n")
    _install(tmp_path, "fs-odd-encoders", f"fs_odd_{key}", {f"{key}-odd": f"fs_odd_{key}:value"}, "value = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield key
    for k in (key, f"{key}-broken", f"{key}-odd"):
        _registry._ENCODERS.pop(k, None)
        _registry._FROM_ENTRY_POINT.pop(k, None)
    for name in [m for m in sys.modules if m.endswith(key)]:
        del sys.modules[name]


def test_an_entry_point_adds_an_encoder_loaded_on_first_use(outside):
    key = outside
    assert key in list_encoders() and key not in _registry._ENCODERS  # offered, not imported yet
    enc = get_encoder(f"{key}:v1", scale=2)
    np.testing.assert_array_equal(enc.encode(["Hi THERE", ""]), [[8, 6, 1, 2], [0, 0, 1, 2]])
    assert type(enc).key == key
    spec = enc.spec()
    assert encoder_from_spec(spec).spec() == spec and is_reproducible(spec)[0]
    with pytest.raises(ValueError, match=r"Unknown option 'device' for the .* encoder. Valid options: 'scale'"):
        get_encoder(f"{key}:v1", device="cpu")


def test_a_broken_entry_point_names_its_distribution(outside):
    key = outside
    with pytest.raises(EncoderNotAvailableError, match=rf"'{key}-broken' comes from the entry point .* of "
                                                       r"fs-broken-encoders 1\.0, which failed to load: "
                                                       r"RuntimeError: this package needs a GPU driver"):
        get_encoder(f"{key}-broken:x")
    with pytest.raises(EncoderNotAvailableError, match=r"fs-odd-encoders 1\.0 is a int, not an Encoder subclass"):
        get_encoder(f"{key}-odd:x")
    ok, reason = is_reproducible({"encoder": f"{key}-broken:x"})
    assert not ok and "fs-broken-encoders" in reason


def test_describe_lists_sources_modalities_and_usability(outside):
    key = outside
    rows = {r["key"]: r for r in describe_encoders()}
    assert rows[key]["source"] == "entry point of fs-shout-encoders 1.0" and rows[key]["usable"]
    assert rows[key]["modality"] == "text"
    broken = rows[f"{key}-broken"]
    assert not broken["usable"] and "GPU driver" in broken["detail"]
    assert broken["source"] == "entry point of fs-broken-encoders 1.0"
    assert rows["open_clip"]["modality"] == "image, text" and rows["torchvision"]["modality"] == "image"
    assert rows["hash"]["source"] == "built-in" and rows["hash"]["usable"]


def test_an_unknown_key_lists_the_entry_point_keys_too(outside):
    with pytest.raises(UnknownEncoderError, match=rf"Registered: .*'{outside}'"):
        get_encoder("surely-not-here:x")


def test_a_library_that_is_missing_makes_a_key_unusable(monkeypatch):
    monkeypatch.setitem(_registry._REQUIRES, "hash", ("fs_no_such_module_here",))
    row = next(r for r in describe_encoders() if r["key"] == "hash")
    assert not row["usable"] and row["detail"] == "missing fs_no_such_module_here"


def test_a_real_pip_install_registers_too(tmp_path, run_python):
    """The same through pip: a wheel-less source tree installed into a target folder (no network, no build deps)."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    (src / "fs_pip_shout.py").write_text(MODULE.replace("{KEY}", "pipshout"))
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "fs-pip-shout"
        version = "0.1"
        [project.entry-points."{ENTRY_POINT_GROUP}"]
        pipshout = "fs_pip_shout:ShoutEncoder"
        [tool.setuptools]
        py-modules = ["fs_pip_shout"]
    """))
    import subprocess

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(src)], check=True, capture_output=True, timeout=300)
    code = (f"import sys; sys.path.insert(0, {str(target)!r})\n"
            "from featurestore.encoders import get_encoder, describe_encoders\n"
            "print(get_encoder('pipshout:a').encode(['AB']).tolist())\n"
            "print([r['source'] for r in describe_encoders() if r['key'] == 'pipshout'])")
    out = run_python(code).stdout.splitlines()
    assert out == ["[[2.0, 2.0, 1.0, 1.0]]", "['entry point of fs-pip-shout 0.1']"]

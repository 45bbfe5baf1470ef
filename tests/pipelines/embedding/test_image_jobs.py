"""Image embedding jobs end to end: real image files, real DataLoader workers, real stores.

Every awkward image kind ends as a stored row or an error row naming the file and the reason, and the job completes;
stored vectors are the encoder's own; a rerun embeds nothing, a changed file is embedded again; a job killed with
SIGKILL resumes to exactly the source's rows; workers give the same rows as decoding in process; several stages of one
model come from one pass. Most tests use ``tiny-image`` (tests/pipelines/embedding/_images.py), an instant encoder; one uses the
real MobileNetV2 weights.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import featurestore
import pipelines
from featurestore import ValidationError
from featurestore.encoders import get_encoder
from featurestore.storage import _format as fmt
from pipelines.cli import cli

H = importlib.util.spec_from_file_location("_fs_test_images_loader", Path(__file__).with_name("_images.py"))
_loader = importlib.util.module_from_spec(H)
H.loader.exec_module(_loader)
H = _loader.load()  # the one shared instance (the encoder is registered once per process)

_crash_spec = importlib.util.spec_from_file_location("_fs_crash", Path(__file__).parents[2] / "_crash.py")
crash = importlib.util.module_from_spec(_crash_spec)
sys.modules.setdefault("_fs_crash", crash)
_crash_spec.loader.exec_module(crash)

ENC = "tiny-image:16"


@pytest.fixture
def counts():
    H.Tiny.counts.clear()
    return H.Tiny.counts


def _embed(store, source, **kwargs):
    kwargs = {"encoder": ENC, "name": "pics", "progress": False, "num_workers": 0, **kwargs}
    return pipelines.embed_images(store, source, **kwargs)


def _folder(root: Path, n: int = 10, classes=("cats", "dogs")) -> Path:
    for i in range(n):
        H.write_jpeg(root / classes[i % len(classes)] / f"{i:03d}.jpg", seed=i)
    return root


def _stored(store, name="pics", key="path") -> dict:
    table = store.get(name).to_arrow()
    return dict(zip(table.column(key).to_pylist(), fmt.to_matrix(table.column("embedding"), store.get(name).dim)))


def _errors(store, name="pics", key="path") -> dict:
    return {k: (kind, message) for k, kind, message in
            store.sql(f'select "{key}", kind, message from "{name}@errors"').fetchall()}


def _expected(paths: dict, encoder: str = ENC, **options) -> dict:
    enc = get_encoder(encoder, **options)
    keys = sorted(paths)
    return dict(zip(keys, enc.encode([str(paths[k]) for k in keys])))


def _assert_vectors(got: dict, expected: dict, rtol: float = 1e-6) -> None:
    assert sorted(got) == sorted(expected)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=rtol, atol=1e-6, err_msg=k)


# -- bad images never stop a job ------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 1])
def test_every_awkward_image_is_stored_or_an_error_row(store, tmp_path, num_workers):
    paths = H.write_kinds(tmp_path / "img")
    table = tmp_path / "img" / "images.parquet"
    pq.write_table(pa.table({"id": list(H.KINDS), "file": list(H.KINDS)}), table)  # paths relative to the table

    result = _embed(store, table, key="id", image="file", num_workers=num_workers)[0]

    fine = {n for n, outcome in H.KINDS.items() if outcome == "stored"}
    bad = {n: outcome for n, outcome in H.KINDS.items() if outcome != "stored"}
    assert (result.rows_read, result.rows_written, result.rows_failed) == (10, len(fine), len(bad))
    assert result.errors_by_reason == {"bad-image": len(bad)}
    _assert_vectors(_stored(store, key="id"), _expected({n: paths[n] for n in fine}))
    errors = _errors(store, key="id")
    assert sorted(errors) == sorted(bad)
    for name, reason in bad.items():
        kind, message = errors[name]
        assert kind == "bad-image" and message.startswith(f"{paths[name]}: ") and reason in message, message


def test_exif_orientation_is_applied_before_the_model(store, tmp_path):
    from PIL import Image

    paths = H.write_kinds(tmp_path / "img")
    pq.write_table(pa.table({"id": ["r"], "file": ["exif_rotated.jpg"]}), tmp_path / "img" / "t.parquet")
    _embed(store, tmp_path / "img" / "t.parquet", key="id", image="file")
    enc = get_encoder(ENC)
    with Image.open(paths["exif_rotated.jpg"]) as raw:
        assert raw.size == (40, 20)
        sideways = enc.encode_pixels(H.TinyPixels()(raw.convert("RGB"))[None])[0]
        upright = enc.encode_pixels(H.TinyPixels()(raw.convert("RGB").transpose(Image.Transpose.ROTATE_270))[None])[0]
    stored = _stored(store, key="id")["r"]
    np.testing.assert_allclose(stored, upright, rtol=1e-5, atol=1e-5)
    assert not np.allclose(stored, sideways, atol=1e-3)


def test_a_folder_with_bad_files_completes(store, tmp_path):
    root = _folder(tmp_path / "photos", 4)
    (root / "cats" / "zero.jpg").write_bytes(b"")
    (root / "dogs" / "half.jpg").write_bytes((root / "dogs" / "001.jpg").read_bytes()[:300])
    result = _embed(store, root)[0]
    assert (result.rows_written, result.rows_failed) == (4, 2)
    errors = _errors(store)
    assert errors["cats/zero.jpg"] == ("bad-image", f"{root / 'cats' / 'zero.jpg'}: zero-byte file")
    assert errors["dogs/half.jpg"][1].startswith(f"{root / 'dogs' / 'half.jpg'}: truncated")


def test_missing_and_null_references_in_a_table(store, tmp_path):
    H.write_jpeg(tmp_path / "a.jpg", 1)
    source = pa.table({"id": [1, 2, 3], "file": ["a.jpg", "gone.jpg", None]})
    result = _embed(store, pipelines.ImageSource(source, image="file", root=tmp_path), key="id")[0]
    assert (result.rows_written, result.rows_failed) == (1, 2)
    assert result.errors_by_reason == {"bad-image": 1, "null": 1}
    assert _errors(store, key="id")[2] == ("bad-image", f"{tmp_path / 'gone.jpg'}: missing file")


# -- what is stored -------------------------------------------------------------------------------------------------


def test_folder_rows_are_the_encoders_own_vectors_with_labels_and_file_hashes(store, tmp_path):
    root = _folder(tmp_path / "photos")
    (root / "top.jpg").write_bytes((root / "cats" / "002.jpg").read_bytes())
    result = _embed(store, root)[0]
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*.jpg")}
    assert result.rows_written == 11 and result.rows_failed == 0
    _assert_vectors(_stored(store), _expected(files))
    rows = store.sql("select path, label, content_hash from pics order by path").fetchall()
    assert [r[1] for r in rows] == ["cats"] * 5 + ["dogs"] * 5 + [None]
    spec = store.get("pics").manifest.spec
    want = {k: fmt.text_hashes([files[k].read_bytes()], fmt.spec_fingerprint(spec))[0].as_py() for k in files}
    assert {r[0]: r[2] for r in rows} == want
    assert rows[-1][2] == want["cats/002.jpg"]  # same bytes, same content hash


def test_glob_source_and_limit(store, tmp_path):
    root = _folder(tmp_path / "photos")
    result = _embed(store, str(root) + "/cats/*.jpg", limit=3)[0]  # keys: paths under the pattern's fixed folder
    assert result.rows_read == 3
    assert sorted(_stored(store)) == ["000.jpg", "002.jpg", "004.jpg"]


def test_a_table_of_bytes_gives_the_same_rows_as_the_files(store, tmp_path):
    root = _folder(tmp_path / "photos", 6)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    _embed(store, root, name="from_files")
    table = pa.table({"path": files, "jpeg": pa.array([(root / f).read_bytes() for f in files], pa.binary())})
    pq.write_table(table, tmp_path / "bytes.parquet")
    _embed(store, tmp_path / "bytes.parquet", key="path", image="jpeg", name="from_bytes")
    a, b = (store.sql(f"select path, content_hash, embedding from {n} order by path").fetchall()
            for n in ("from_files", "from_bytes"))
    assert a == b


def test_rerun_embeds_nothing_and_a_changed_file_is_embedded_again(store, tmp_path, counts):
    root = _folder(tmp_path / "photos")
    assert _embed(store, root, batch_size=4)[0].rows_written == 10 and counts["images"] == 10

    counts.clear()
    again = _embed(store, root, batch_size=4)[0]
    assert (again.rows_written, again.rows_skipped, counts.get("images", 0)) == (0, 10, 0)

    H.write_jpeg(root / "dogs" / "005.jpg", seed=99)  # new content under the same key
    third = _embed(store, root, batch_size=4)[0]
    assert (third.rows_written, third.rows_skipped, counts.get("images", 0)) == (1, 9, 1)
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*.jpg")}
    _assert_vectors(_stored(store), _expected(files))
    assert store.get("pics").count() == 10


def test_workers_give_the_same_rows_as_decoding_in_process(store, tmp_path):
    root = _folder(tmp_path / "photos", 23)
    (root / "cats" / "bad.jpg").write_bytes(b"\xff\xd8\xff" + b"junk" * 50)
    _embed(store, root, name="inproc", num_workers=0, batch_size=5)
    _embed(store, root, name="workers", num_workers=2, batch_size=5)
    a, b = (store.sql(f"select path, label, content_hash, embedding from {n} order by path").fetchall()
            for n in ("inproc", "workers"))
    assert a == b and len(a) == 23
    assert _errors(store, "inproc") == _errors(store, "workers") and len(_errors(store, "workers")) == 1


def test_stages_of_one_model_come_from_one_pass(store, tmp_path, counts):
    root = _folder(tmp_path / "photos", 6)
    results = _embed(store, root, layers=[None, "stage.1"])
    assert [r.name for r in results] == ["pics", "pics_stage_1"]
    assert counts["passes"] == 6 and counts["images"] == 12  # one pass feeds both sets
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*.jpg")}
    _assert_vectors(_stored(store, "pics_stage_1"), _expected(files, layer="stage.1"))
    _assert_vectors(_stored(store, "pics"), _expected(files))
    counts.clear()
    _embed(store, root, layers=[None, "stage.1"])
    assert counts.get("passes", 0) == 0


def test_progress_and_run_record_as_for_text(store, tmp_path):
    root = _folder(tmp_path / "photos", 7)
    (root / "dogs" / "zero.jpg").write_bytes(b"")
    seen = []
    _embed(store, root, batch_size=3, on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (8, 8) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    run = store.sql("select status, source, encoder, rows_read, rows_written, rows_skipped, rows_failed from runs "
                    "where name = 'pics'").fetchall()
    assert run == [("ok", str(root), ENC, 8, 7, 0, 1)]
    provenance = store.get("pics").manifest.provenance
    assert provenance["source"] == str(root) and provenance["source_fingerprint"]
    assert provenance["device"] == "cpu" and "torch" in provenance["libraries"]
    part = store.get("pics").manifest.partitions[0]
    kv = pq.read_schema(store.get("pics").path / part.file).metadata
    assert json.loads(kv[fmt.PROVENANCE_METADATA_KEY])["source_fingerprint"] == provenance["source_fingerprint"]


# -- a kill at any moment --------------------------------------------------------------------------------------------

KILL_POINTS = [
    ("after-2nd-partition-commit", "featurestore.storage._writer:Writer._commit", 2, "after"),
    ("before-errors-recorded", "featurestore.storage._writer:Writer.record_errors", 1, "before"),
]


@pytest.mark.parametrize("point, target, n, when", KILL_POINTS, ids=[p[0] for p in KILL_POINTS])
def test_killed_job_resumes_to_exactly_the_source(store, tmp_path, point, target, n, when):
    root = _folder(tmp_path / "photos", 30)
    (root / "cats" / "zero.jpg").write_bytes(b"")
    body = (f"import importlib.util, featurestore, pipelines\n"
            f"s = importlib.util.spec_from_file_location('h', {str(Path(__file__).with_name('_images.py'))!r})\n"
            f"m = importlib.util.module_from_spec(s); s.loader.exec_module(m); m.load()\n"
            f"pipelines.embed_images(featurestore.open({str(store.root)!r}), {str(root)!r}, encoder={ENC!r}, "
            f"name='pics', batch_size=4, partition_rows=8, num_workers=1, progress=False)\n")
    out = crash.run_code_killed(body, target, n, when)
    [run_id] = [line.split()[2] for line in out.splitlines() if line.startswith("RUN ")]

    store = featurestore.open(store.root)
    crash.assert_every_view_readable(store)
    again = _embed(store, root, batch_size=4, partition_rows=8)[0]
    if point.startswith("after-2nd"):  # two partitions held, the rest embedded now
        assert 0 < again.rows_skipped < again.rows_written + again.rows_skipped == 30, again
    else:  # every row was committed; only the error row was lost with the kill
        assert (again.rows_skipped, again.rows_written, again.rows_failed) == (30, 0, 1), again

    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*.jpg") if p.name != "zero.jpg"}
    spec = store.get("pics").manifest.spec
    hashes = {k: fmt.text_hashes([p.read_bytes()], fmt.spec_fingerprint(spec))[0].as_py() for k, p in files.items()}
    crash.assert_rows(store, "pics", None, _expected(files), key="path", hashes=hashes)
    assert set(_errors(store)) == {"cats/zero.jpg"}
    crash.assert_every_view_readable(store)
    crash.assert_clean(store)
    runs = dict(store.sql("select run_id, status from runs").fetchall())
    assert runs[run_id] == "killed" and list(runs.values()).count("ok") == 1, runs


# -- the command line and job specs ----------------------------------------------------------------------------------


def test_cli_embeds_a_folder_and_a_table_column(tmp_path):
    root = _folder(tmp_path / "photos", 4)
    store_path = tmp_path / "store"
    runner = CliRunner()
    res = runner.invoke(cli, ["embed", "--store", str(store_path), "--images", str(root), "-e", ENC, "--name", "pics",
                              "--num-workers", "0", "--json"])
    assert res.exit_code == 0, res.output
    [out] = json.loads(res.stdout)
    assert (out["name"], out["rows_written"]) == ("pics", 4)

    pq.write_table(pa.table({"id": [1, 2], "file": ["photos/cats/000.jpg", "photos/nope.jpg"]}), tmp_path / "t.parquet")
    res = runner.invoke(cli, ["embed", "--store", str(store_path), "--source", str(tmp_path / "t.parquet"),
                              "--image", "file", "-e", ENC, "--name", "tab", "--layers", "stage.2"])
    assert res.exit_code == 0, res.output
    assert "wrote 1" in res.stdout and "bad-image: 1" in res.stderr
    assert featurestore.open(store_path).get("tab").manifest.spec["layer"] == "stage.2"

    res = runner.invoke(cli, ["embed", "--store", str(store_path), "--images", str(root), "--source", "x",
                              "-e", ENC, "--name", "p"])
    assert res.exit_code == 2 and "not both" in res.output


def test_toml_spec_with_images_and_stages(tmp_path):
    _folder(tmp_path / "photos", 4)
    spec = tmp_path / "job.toml"
    spec.write_text(f'store = "store"\nimages = "photos"\nencoder = "{ENC}"\nname = "pics"\nlabel = "kind"\n'
                    'layers = ["model", "stage.3"]\n[options]\nnum_workers = 0\n')
    results = pipelines.run_job(spec, progress=False)
    assert [(r.name, r.rows_written) for r in results] == [("pics", 4), ("pics_stage_3", 4)]
    store = featurestore.open(tmp_path / "store")
    assert store.sql("select count(*) from pics where kind in ('cats', 'dogs')").fetchone() == (4,)
    with pytest.raises(ValidationError, match="not both"):
        pipelines.JobSpec.from_dict({"images": "a", "source": "b", "name": "x"})
    with pytest.raises(ValidationError, match="Unknown encoder option"):
        pipelines.JobSpec.from_dict({"images": "a", "name": "x", "options": {"max_seq_length": 3}})


# -- checks before any work ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options, match", [
    ({"encoder": "hash:16"}, "embeds text, not images"),
    ({"key": "id"}, "keyed by its relative paths"),
    ({"num_workers": -1}, "'num_workers' parameter"),
    ({"batch_size": 0}, "'batch_size' parameter"),
    ({"layers": ["a", "a"]}, "Repeated layer"),
    ({"layers": []}, "at least one layer"),
    ({"layers": ["a"], "layer": "b"}, "not `layer=`"),
    ({"max_seq_length": 8}, "Unknown option"),
    ({"name": "bad name"}, "name"),
])
def test_bad_jobs_are_refused_before_any_work(store, tmp_path, options, match):
    root = _folder(tmp_path / "photos", 2)
    with pytest.raises(ValueError, match=match):  # ValidationError is a ValueError
        _embed(store, root, **options)
    assert store.names() == []


@pytest.mark.slow
def test_real_mobilenet_vectors_and_two_stages_in_one_pass(store, tmp_path):
    root = _folder(tmp_path / "photos", 6)
    results = _embed(store, root, encoder="torchvision:mobilenet_v2", name="mob", layers=[None, "features.6"],
                     num_workers=1)
    assert [(r.name, r.rows_written) for r in results] == [("mob", 6), ("mob_features_6", 6)]
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*.jpg")}
    _assert_vectors(_stored(store, "mob"), _expected(files, "torchvision:mobilenet_v2"), rtol=1e-4)
    _assert_vectors(_stored(store, "mob_features_6"), _expected(files, "torchvision:mobilenet_v2", layer="features.6"),
                    rtol=1e-4)
    assert store.get("mob").dim == 1280 and store.get("mob_features_6").dim == 32

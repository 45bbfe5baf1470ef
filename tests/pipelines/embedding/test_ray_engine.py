"""The Ray engine writes what the local engine writes: same rows, vectors, errors, resume; a dead worker or driver
loses nothing and duplicates nothing. A local Ray with 2 CPUs is started once for the module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import featurestore
import pipelines
from featurestore.encoders.text._hash import HashEncoder
from featurestore.errors import ValidationError

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[3]


class KillOnceEncoder(HashEncoder):
    """``hash:64`` whose process dies the first time it encodes (a marker file says it already did): a worker lost
    mid-job."""

    def __init__(self, marker: str) -> None:
        super().__init__("64")
        self.marker = marker

    def _encode_list(self, texts, **options):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return super()._encode_list(texts, **options)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test encoders travel by value
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _source(path: Path, n: int) -> Path:
    texts = [f"review {i} soft cotton dress {'blue' if i % 3 else 'red'}" for i in range(n)]
    texts[5], texts[9] = None, "   "  # error rows, as the local engine records them
    pq.write_table(pa.table({"id": np.arange(n), "text": texts}), path)
    return path


def _by_key(fs: featurestore.FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    keys = fs.keys().column("id").to_numpy()
    order = np.argsort(keys)
    return keys[order], fs.to_numpy()[order]


def _partition_rows(fs: featurestore.FeatureSet) -> int:
    """Rows in every committed partition file: more than the keys means a row was written twice."""
    return sum(p.rows for p in fs.manifest.partitions)


def test_same_rows_vectors_and_errors_as_the_local_engine(cluster, tmp_path):
    source = _source(tmp_path / "t.parquet", 300)
    local = pipelines.embed(tmp_path / "local", source, encoder="hash:64", name="t", progress=False, keep=["text"])
    stage = tmp_path / "stage"
    remote = pipelines.embed(tmp_path / "ray", source.as_uri(), encoder="hash:64", name="t", progress=False,
                             keep=["text"], engine="ray", concurrency=1, chunk_rows=64, staging=stage.as_uri())
    assert list(stage.iterdir()) == []  # the staged chunks (a pyarrow filesystem URI) are removed after the job
    assert (remote.rows_written, remote.rows_failed, remote.errors_by_reason) == \
        (local.rows_written, local.rows_failed, local.errors_by_reason) == (298, 2, {"null": 1, "empty": 1})
    a, b = featurestore.open(tmp_path / "local").get("t"), featurestore.open(tmp_path / "ray").get("t")
    (ka, va), (kb, vb) = _by_key(a), _by_key(b)
    assert ka.tolist() == kb.tolist() and _partition_rows(b) == 298
    cosine = (va * vb).sum(1) / (np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1))
    assert cosine.min() >= 0.9999
    assert a.spec == b.spec
    texts = [a.to_arrow().sort_by("id").column("text"), b.to_arrow().sort_by("id").column("text")]
    assert texts[0].equals(texts[1])  # kept columns travel through the actors too
    assert b.manifest.provenance["engine"] == "ray" and b.manifest.provenance["ray_version"] == ray.__version__
    store = featurestore.open(tmp_path / "ray")
    errors = store.sql("SELECT id, kind FROM \"t@errors\" ORDER BY id").arrow().to_pylist()
    assert errors == [{"id": 5, "kind": "null"}, {"id": 9, "kind": "empty"}]
    runs = store.sql("SELECT run_id, status, rows_written FROM runs WHERE name = 't'").arrow().to_pylist()
    assert runs == [{"run_id": remote.run_id, "status": "ok", "rows_written": 298}]
    assert b.manifest.runs[0]["engine"] == "ray"
    assert store.sql("SELECT count(*) AS n FROM t").arrow().column("n")[0].as_py() == 298  # the catalog's view
    again = pipelines.embed(tmp_path / "ray", source, encoder="hash:64", name="t", progress=False, engine="ray",
                            keep=["text"])
    assert (again.rows_written, again.rows_skipped) == (0, 298)  # resume: nothing is sent to the actors


def test_the_job_runs_in_windows_of_bounded_rows(cluster, tmp_path, monkeypatch):
    """Ray Data does not hold its actors back for a slow driver: each execution gets a window of at most
    ``WINDOW_ROWS`` rows (here 3 chunks of 64), so the object store never holds the whole job's vectors."""
    from pipelines.embedding.engines import _ray as _ray_engine

    monkeypatch.setattr(_ray_engine, "WINDOW_ROWS", 150)
    windows: list[int] = []
    encoded = _ray_engine.RayEncoding._encoded

    def counting(self, fs, files):
        windows.append(sum(pq.ParquetFile(fs.open_input_file(f)).metadata.num_rows for f in files))
        yield from encoded(self, fs, files)

    monkeypatch.setattr(_ray_engine.RayEncoding, "_encoded", counting)
    source = _source(tmp_path / "t.parquet", 500)
    result = pipelines.embed(tmp_path / "ray", source, encoder="hash:64", name="t", progress=False, engine="ray",
                             concurrency=1, chunk_rows=64)
    assert windows == [192, 192, 114] and result.rows_written == 498  # 498 good rows: chunks of 64, 3 a window
    assert _partition_rows(featurestore.open(tmp_path / "ray").get("t")) == 498


@pytest.mark.slow
def test_minilm_on_ray_matches_the_local_engine(cluster, tmp_path):
    source = _source(tmp_path / "t.parquet", 50)
    model = "sentence-transformers:all-MiniLM-L6-v2"
    pipelines.embed(tmp_path / "local", source, encoder=model, name="m", progress=False)
    pipelines.embed(tmp_path / "ray", source, encoder=model, name="m", progress=False, engine="ray")
    (ka, va), (kb, vb) = (_by_key(featurestore.open(tmp_path / s).get("m")) for s in ("local", "ray"))
    assert ka.tolist() == kb.tolist() and len(ka) == 48
    assert ((va * vb).sum(1) / (np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1))).min() >= 0.9999


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.slow
def test_layers_on_ray_match_the_local_engine_in_one_pass(cluster, tmp_path):
    source = _source(tmp_path / "t.parquet", 40)
    model = "sentence-transformers:all-MiniLM-L6-v2"
    for where, engine in (("local", "local"), ("ray", "ray")):
        results = pipelines.embed_layers(tmp_path / where, source, name="m", layers=[None, 3], encoder=model,
                                         progress=False, engine=engine)
        assert [(r.name, r.rows_written, r.rows_failed) for r in results] == [("m", 38, 2), ("m_layer3", 38, 2)]
    for name in ("m", "m_layer3"):
        (ka, va), (kb, vb) = (_by_key(featurestore.open(tmp_path / s).get(name)) for s in ("local", "ray"))
        assert ka.tolist() == kb.tolist() and _cosines(va, vb).min() >= 0.9999
    assert featurestore.open(tmp_path / "ray").get("m_layer3").spec == featurestore.open(tmp_path / "local").get(
        "m_layer3").spec


@pytest.mark.slow
def test_images_on_ray_match_the_local_engine_with_their_error_rows(cluster, tmp_path):
    """The actors decode, preprocess and encode; an image that does not decode there is an error row, as locally."""
    from PIL import Image

    root = tmp_path / "photos"
    for i in range(6):
        pixels = np.random.default_rng(i).integers(0, 255, (40, 48, 3), dtype=np.uint8)
        (root / ("cats" if i % 2 else "dogs")).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / ("cats" if i % 2 else "dogs") / f"{i}.jpg")
    (root / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a real jpeg")
    model = "torchvision:mobilenet_v2"
    for where, engine in (("local", "local"), ("ray", "ray")):
        results = pipelines.embed_images(tmp_path / where, root, name="mob", encoder=model, layers=[None, "features.6"],
                                         progress=False, num_workers=0, engine=engine)
        assert [(r.name, r.rows_written, r.rows_failed) for r in results] == [("mob", 6, 1),
                                                                               ("mob_features_6", 6, 1)]
    for name in ("mob", "mob_features_6"):
        a, b = (featurestore.open(tmp_path / s).get(name) for s in ("local", "ray"))
        ta, tb = a.to_arrow().sort_by("path"), b.to_arrow().sort_by("path")
        assert ta.column("path").equals(tb.column("path")) and ta.column("label").equals(tb.column("label"))
        va, vb = (fmt_matrix(t) for t in (ta, tb))
        assert _cosines(va, vb).min() >= 0.9999
    errors = [featurestore.open(tmp_path / s).sql('SELECT path, kind FROM "mob@errors"').arrow().to_pylist()
              for s in ("local", "ray")]
    assert errors[0] == errors[1] == [{"path": "cats/broken.jpg", "kind": "bad-image"}]
    again = pipelines.embed_images(tmp_path / "ray", root, name="mob", encoder=model, progress=False, engine="ray")
    assert (again[0].rows_written, again[0].rows_skipped) == (0, 6)


def fmt_matrix(table: pa.Table) -> np.ndarray:
    from featurestore.storage import _format as fmt

    column = table.column("embedding").combine_chunks()
    return fmt.to_matrix(column, column.type.list_size).astype(np.float64)


def test_a_worker_killed_mid_job_still_ends_complete_without_duplicates(cluster, tmp_path):
    source = _source(tmp_path / "t.parquet", 400)
    marker = tmp_path / "killed"
    result = pipelines.embed(tmp_path / "s", source, encoder=KillOnceEncoder(str(marker)), name="t", progress=False,
                             engine="ray", concurrency=1, chunk_rows=50, partition_rows=100)
    assert marker.exists()  # an actor did die: Ray restarted it and retried its batch
    fs = featurestore.open(tmp_path / "s").get("t")
    keys, _ = _by_key(fs)
    assert result.rows_written == 398 and len(keys) == 398 == len(set(keys.tolist())) == _partition_rows(fs)


DRIVER = """
import sys, time, ray, pipelines
from featurestore.encoders.text._hash import HashEncoder

class Slow(HashEncoder):
    def _encode_list(self, texts, **options):
        time.sleep(0.3)
        return super()._encode_list(texts, **options)

ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
pipelines.embed(sys.argv[2], sys.argv[3], encoder=Slow("64"), name="t", progress=False, engine="ray",
                concurrency=1, chunk_rows=20, partition_rows=20)
"""


def test_a_killed_driver_resumes_with_only_what_is_missing(cluster, tmp_path):
    source = _source(tmp_path / "t.parquet", 400)
    store_dir = tmp_path / "s"
    manifest = store_dir / "sets" / "t" / "v1" / "manifest.json"
    driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(DRIVER), cluster, str(store_dir), str(source)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and driver.poll() is None:
            if manifest.exists() and featurestore.open(store_dir).get("t").manifest.partitions:
                break
            time.sleep(0.01)
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        driver.kill()  # after its first commit, mid-job
    finally:
        driver.wait(timeout=30)
    before = sum(p.rows for p in featurestore.open(store_dir).get("t").manifest.partitions)
    assert 0 < before < 398  # killed mid-job: some rows committed, not all

    result = pipelines.embed(store_dir, source, encoder="hash:64", name="t", progress=False, engine="ray")
    fs = featurestore.open(store_dir).get("t")
    keys, _ = _by_key(fs)
    assert len(keys) == 398 == len(set(keys.tolist())) == _partition_rows(fs)
    assert result.rows_skipped == before and result.rows_written == 398 - before  # only what was missing
    statuses = featurestore.open(store_dir).sql("SELECT status FROM runs ORDER BY started_at").arrow()
    assert statuses.column("status").to_pylist() == ["killed", "ok"]


def test_the_cli_runs_a_job_on_ray(cluster, tmp_path):
    from click.testing import CliRunner

    from pipelines.cli import cli

    source = _source(tmp_path / "t.parquet", 120)
    out = CliRunner().invoke(cli, ["embed", "--store", str(tmp_path / "s"), "--source", str(source), "-e", "hash:64",
                                   "--name", "t", "--engine", "ray", "--concurrency", "1", "--json"])
    assert out.exit_code == 0, out.output
    [result] = json.loads(out.stdout)
    assert (result["rows_written"], result["rows_failed"]) == (118, 2)
    assert result["provenance"] == {"backend": "hash", "device": "cpu"}  # the encoder's; the engine is the set's
    assert featurestore.open(tmp_path / "s").get("t").manifest.provenance["engine"] == "ray"


@pytest.mark.parametrize("options, message", [
    ({"engine": "spark"}, "must be 'local' or 'ray'. Got 'spark'"),
    ({"concurrency": 2}, "apply to engine='ray' only"),
    ({"engine": "ray", "concurrency": 0}, "'concurrency' parameter of embed must be an int >= 1. Got 0"),
    ({"engine": "ray", "num_gpus_per_worker": -1}, "'num_gpus_per_worker' parameter of embed must be a number >= 0"),
])
def test_engine_options_are_checked_before_any_work(tmp_path, options, message):
    source = _source(tmp_path / "t.parquet", 10)
    with pytest.raises(ValidationError, match=message):
        pipelines.embed(tmp_path / "s", source, encoder="hash:64", name="t", progress=False, **options)
    assert not (tmp_path / "s" / "sets").exists()

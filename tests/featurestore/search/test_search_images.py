"""Search across modalities: a text against stored image vectors through the other tower of the same open_clip model,
an image as the query, and a clear refusal where no such tower exists."""

from __future__ import annotations

import numpy as np
import pytest

from featurestore.errors import SpecMismatchError

open_clip = pytest.importorskip("open_clip")
Image = pytest.importorskip("PIL.Image")

@pytest.fixture(scope="module")
def clip_name(tiny_clip) -> str:
    return f"open_clip:{tiny_clip}/random"


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(12)]


def _unit(X):
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


def test_text_query_on_image_vectors_goes_through_the_text_tower(store, clip_name, images, tmp_path):
    from featurestore.encoders import get_encoder

    image_encoder = get_encoder(clip_name)
    vectors = image_encoder.encode(images)
    store.write("pics", {"id": np.arange(12), "embedding": vectors}, spec=image_encoder.spec())
    hits = store.search("pics", "a photo of a cat", k=12)
    q = get_encoder(clip_name, modality="text").encode(["a photo of a cat"])[0]
    expected = _unit(vectors.astype(np.float64)) @ _unit(q.astype(np.float64))
    assert hits.column("id").to_pylist() == np.argsort(-expected, kind="stable").tolist()
    np.testing.assert_allclose(hits.column("score").to_numpy(), np.sort(expected)[::-1], atol=1e-5)
    # An image as the query: the set's own image encoder; the image itself comes first at cosine 1.
    path = tmp_path / "q.png"
    images[5].save(path)
    by_image = store.search("pics", image=str(path), k=3)
    assert by_image.column("id")[0].as_py() == 5 and by_image.column("score")[0].as_py() == pytest.approx(1, abs=1e-5)
    batch = store.search("pics", image=[images[1], images[2]], k=1)
    assert batch.column("query").to_pylist() == [0, 1] and batch.column("id").to_pylist() == [1, 2]


def test_text_query_on_a_set_without_a_text_tower_is_refused(store, images):
    store.write("plain", {"id": np.arange(3), "embedding": np.ones((3, 4), np.float32)},
                spec={"encoder": "external:my-model", "modality": "image"})
    with pytest.raises(SpecMismatchError, match=r"Cannot encode a text query for 'plain' v1 \(image vectors"):
        store.search("plain", "a cat")
    with pytest.raises(ValueError, match="exactly one of query"):
        store.search("plain", "a cat", image=images[0])

"""Zero-shot CLIP classification: prompts through the text tower of the model that wrote the image vectors.

No pretrained CLIP weights ship offline, so the arithmetic is checked against a tiny random-init open_clip model's own
``encode_text``/``encode_image``, and the classifier's use as a baseline and as a stacker block on an encoder whose
text vectors are informative by construction.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from stackers import StackingClassifier, ZeroShotClassifier
from stackers.classify._zero_shot import DEFAULT_TEMPLATES


class _Words:
    """A text encoder whose vector for a prompt is the sum of fixed random vectors of its words."""

    def __init__(self, dim: int = 24, seed: int = 0):
        self.dim, self.rng, self.table = dim, np.random.default_rng(seed), {}
        self.calls: list[list[str]] = []

    def word(self, w: str) -> np.ndarray:
        if w not in self.table:
            self.table[w] = self.rng.standard_normal(self.dim)
        return self.table[w]

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.stack([sum(self.word(w.strip(".")) for w in t.split()) for t in texts]).astype(np.float32)


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_scores_are_scaled_cosines_to_the_mean_prompt_of_each_class():
    words = _Words()
    templates = ("a photo of a {}.", "a drawing of a {}.")
    X = np.random.default_rng(1).standard_normal((7, 24))
    zs = ZeroShotClassifier(words, class_names={0: "cat", 1: "dog"}, templates=templates, logit_scale=50.0)
    zs.fit(X, np.array([0, 1, 1, 0, 1, 0, 0]))
    assert words.calls == [["a photo of a cat.", "a drawing of a cat.", "a photo of a dog.", "a drawing of a dog."]]
    prompts = _unit(words.encode(words.calls[0]).astype(np.float64))
    classes = _unit(np.stack([prompts[:2].mean(0), prompts[2:].mean(0)]))
    expected = 50.0 * _unit(X) @ classes.T
    np.testing.assert_allclose(zs.decision_function(X), expected, rtol=1e-6)
    np.testing.assert_allclose(zs.predict_proba(X).sum(1), 1.0)
    np.testing.assert_array_equal(zs.predict(X), zs.classes_[expected.argmax(1)])
    assert list(zs.get_feature_names_out()) == ["zero_shot:0", "zero_shot:1"]


def test_labels_only_name_the_classes_nothing_is_learned_from_them():
    words = _Words()
    X = np.random.default_rng(2).standard_normal((40, 24))
    y = np.array(["cat", "dog"] * 20)
    a = ZeroShotClassifier(words).fit(X, y)
    b = ZeroShotClassifier(words).fit(X[::-1], y)  # same classes, rows and labels paired differently
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    assert list(a.prompts_[0]) == [t.format("cat") for t in DEFAULT_TEMPLATES]


def test_a_block_of_zero_shot_scores_feeds_the_stacker():
    # Image vectors near their class's text vector (as a trained CLIP's are), plus a noise block: the zero-shot
    # block alone is a strong baseline, and the stacker takes it as one block among others.
    words = _Words(dim=24, seed=3)
    names = {0: "cat", 1: "dog", 2: "bird"}
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, size=600)
    anchors = _unit(np.stack([words.word(names[c]) for c in range(3)]))
    X = anchors[y] + 0.6 * rng.standard_normal((600, 24))
    zs = ZeroShotClassifier(words, class_names=names, templates=("{}",)).fit(X[:400], y[:400])
    assert accuracy_score(y[400:], zs.predict(X[400:])) > 0.8
    blocks = {"zero_shot": zs.transform(X), "noise": rng.standard_normal((600, 8))}
    model = StackingClassifier(cv=3).fit({b: v[:400] for b, v in blocks.items()}, y[:400])
    assert accuracy_score(y[400:], model.predict({b: v[400:] for b, v in blocks.items()})) > 0.8


def test_width_mismatch_and_bad_templates_are_refused():
    with pytest.raises(ValueError, match=r"text tower gives vectors of shape \(24,\) but X has 5 features"):
        ZeroShotClassifier(_Words()).fit(np.ones((4, 5)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="templates"):
        ZeroShotClassifier(_Words(), templates=("no placeholder",)).fit(np.ones((4, 24)), [0, 1, 0, 1])


def test_for_feature_set_uses_the_text_tower_of_the_model_that_wrote_the_images(tiny_clip, store):
    pytest.importorskip("open_clip")
    from featurestore.encoders import get_encoder

    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(6)]
    encoder = get_encoder(f"open_clip:{tiny_clip}/random")
    vectors = encoder.encode(images)
    store.write("clip_images", {"id": np.arange(6), "embedding": vectors}, spec=encoder.spec())
    zs = ZeroShotClassifier.for_feature_set(store, "clip_images", class_names={0: "zero", 1: "one"},
                                            templates=("a photo of the digit {}.",))
    zs.fit(vectors, [0, 1, 0, 1, 0, 1])
    # The class vectors are the text tower's unit vectors of the prompts (one template each): the same model's
    # text tower (tested against open_clip's own encode_text in tests/featurestore/encoders/image/test_image_encoders.py).
    text = get_encoder(f"open_clip:{tiny_clip}/random", modality="text")
    prompts = ["a photo of the digit zero.", "a photo of the digit one."]
    np.testing.assert_allclose(zs.class_embeddings_, _unit(text.encode(prompts).astype(np.float64)), atol=1e-5)
    assert zs.predict_proba(vectors).shape == (6, 2)
    # A set of another encoder has no text tower to ask.
    store.write("plain", {"id": np.arange(3), "embedding": np.ones((3, 4), np.float32)},
                spec={"encoder": "external:x"})
    with pytest.raises(ValueError, match="zero-shot needs the image vectors of an open_clip model"):
        ZeroShotClassifier.for_feature_set(store, "plain")

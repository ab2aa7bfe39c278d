"""The staged extraction path (what a GPU runs: resize on the device, outputs converted to the
cache dtype there, copies one batch behind), exercised on the CPU against the plain path; the
writer threads; the decode memo."""
import hashlib

import numpy as np
import pytest
import torch

from featrank import feature_extraction as fe
from featrank.feature_cache import PREPROCESS_VERSION, CacheError, LayerCache
from helpers import build_cache, tiny_config, write_images


def test_preprocess_batch_is_preprocess_batched():
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(4)]
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    for size, interp in ((32, "bicubic"), (56, "bilinear"), (40, "bicubic")):
        one = torch.stack([fe.preprocess(im, size, mean, std, interp) for im in imgs])
        batch = fe.preprocess_batch(torch.from_numpy(np.stack(imgs)), size, mean, std, interp)
        assert batch.shape == one.shape
        assert torch.allclose(batch, one, atol=1e-5, rtol=0)


def test_capture_in_the_cache_dtype_equals_numpy_conversion():
    from featrank.backbones import build_backbone
    bb = build_backbone("vgg19", "random", 0, 32, allow_download=False)
    paths = ["features.0", "features.2"]             # conv outputs, each followed by an in-place ReLU
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        with fe.capture_layers(bb.module, paths) as store:
            plain = fe.run_captured(bb.forward, x, store)
        with fe.capture_layers(bb.module, paths, device_dtype=torch.float16) as store:
            half = fe.run_captured(bb.forward, x, store)
        x_bad = x.clone()
        x_bad[0, 0, 0, 0] = float("nan")
        with fe.capture_layers(bb.module, paths, device_dtype=torch.float16) as store:
            bad = fe.run_captured(bb.forward, x_bad, store)
    for p in paths:
        assert (plain[p] < 0).any()                  # captured before the in-place ReLU
        assert half[p].dtype == torch.float16
        assert np.array_equal(half[p].numpy(), plain[p].numpy().astype(np.float16))
        assert bool(half[p + fe.FINITE]) and not bool(bad[p + fe.FINITE])


def _arrays(root):
    import glob
    import os
    return {os.path.relpath(p, root): np.load(p) for p in glob.glob(str(root / "**" / "*.npy"), recursive=True)}


def test_staged_extraction_matches_the_plain_path(tmp_path, monkeypatch):
    user = tiny_config()
    write_images(tmp_path / "a" / "imgs")
    write_images(tmp_path / "b" / "imgs")
    assert build_cache(tmp_path / "a", layers=("6", "8"), user=user) == 0
    monkeypatch.setattr(fe, "STAGED_DEVICE_TYPES", ("cpu",))
    assert build_cache(tmp_path / "b", layers=("6", "8"), user=user) == 0
    a, b = _arrays(tmp_path / "a" / "cache"), _arrays(tmp_path / "b" / "cache")
    assert a.keys() == b.keys() and len(a) == 2 * 6
    for k in a:
        assert a[k].dtype == b[k].dtype == np.float16
        scale = np.abs(a[k].astype(np.float32)).max()
        # the batched resize adds in another order (~1e-7); float16 storage rounds both
        assert np.abs(a[k].astype(np.float32) - b[k].astype(np.float32)).max() <= 2e-3 * scale, k


def test_a_failing_write_stops_the_build_and_keeps_finished_files(tmp_path, monkeypatch):
    user = tiny_config()
    write_images(tmp_path / "imgs")
    real, calls = LayerCache.write, []

    def write(self, unit, *a, **k):
        calls.append(unit.relpath)
        if len(calls) == 3:
            raise CacheError("no space left on the device (simulated)")
        return real(self, unit, *a, **k)
    monkeypatch.setattr(LayerCache, "write", write)
    with pytest.raises(CacheError):
        fe_build(tmp_path)
    monkeypatch.setattr(LayerCache, "write", real)
    import glob
    kept = glob.glob(str(tmp_path / "cache" / "**" / "*.record.json"), recursive=True)
    assert len(kept) >= 2                          # the files finished before the failure stay
    assert build_cache(tmp_path, user=user) == 0              # and the rerun completes the rest


def fe_build(tmp_path):
    """The pipeline's build, raising instead of exiting."""
    from featrank import pipeline
    cfg = tiny_config().config
    cfg.update({"image_size": 32, "weights": "random", "dataset": str(tmp_path / "imgs"),
                "n_images_inference": 5, "n_images_evaluation": 3, "cache_dir": str(tmp_path / "cache")})
    return pipeline.build_caches(cfg, ["8"], progress=False)


def test_an_evaluation_image_is_decoded_once(tmp_path, monkeypatch):
    write_images(tmp_path / "imgs")
    seen = []
    real = fe.load_rgb
    monkeypatch.setattr(fe, "load_rgb", lambda src, size: seen.append(src) or real(src, size))
    fe_build(tmp_path)
    assert len(seen) == len(set(seen)) == 8         # 5 reference + 3 evaluation images, 5 sets each


# ------------------------------------------------------------------ the version in the cache key
# sha256 (16 hex) of preprocess on one image, per feature_cache.PREPROCESS_VERSION: a failure means
# the resize or the normalisation changed their output; bump the version (old caches then miss).

def _golden_image():
    y, x = np.mgrid[0:48, 0:48]
    rng = np.random.default_rng(0)
    base = np.stack([x * 5, y * 5, (x + y) * 2], -1) + rng.integers(0, 30, (48, 48, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


GOLDEN_PREPROCESS = {1: "c606d020fcac4378"}


def test_preprocessing_matches_its_golden_hash_for_this_version():
    x = fe.preprocess(_golden_image(), 32, torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1),
                   torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1))
    digest = hashlib.sha256(x.numpy().round(5).tobytes()).hexdigest()[:16]
    assert digest == GOLDEN_PREPROCESS[PREPROCESS_VERSION]

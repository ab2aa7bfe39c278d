"""The staged extraction path (what a GPU runs: resize on the device, outputs converted to the
cache dtype there, copies one batch behind), exercised on the CPU against the plain path; the
writer threads; the decode memo."""
import hashlib
import os

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


# ------------------------------------------------------------------ memory, before extraction

def _tiny_backbone(size=32):
    """A network whose every output shape is known by hand."""
    from featrank.backbone_spec import Backbone
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 16, 3, padding=1))
    return Backbone("tiny", net, net, None, size)


def test_forward_bytes_are_the_largest_output_and_the_captured_ones_by_hand():
    tiny = _tiny_backbone(32)
    before = {k: v.clone() for k, v in tiny.module.state_dict().items()}
    peak, captured = fe.forward_bytes(tiny, ["2", "3"])
    after = tiny.module.state_dict()        # the meta tensors were the call's alone
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # conv 8x32x32 (and the ReLU's) is the largest output; the pool gives 8x16x16, the last conv 16x16x16
    assert peak == fe.LIVE_OUTPUTS * 4 * 8 * 32 * 32
    assert captured == 4 * (8 * 16 * 16 + 16 * 16 * 16)
    from featrank import backbones
    bb = backbones.build_backbone("resnet50", "random", 0, 64)
    peak, captured = fe.forward_bytes(bb, ["layer4"])        # conv1: 64 x 32 x 32 at 64 px
    assert (peak, captured) == (fe.LIVE_OUTPUTS * 4 * 64 * 32 * 32, 4 * 2048 * 2 * 2)
    assert {t.device.type for t in [*bb.module.parameters(), *bb.module.buffers()]} == {"cpu"}


def test_the_estimate_puts_back_the_very_tensors_tied_weights_included():
    """A module reached under two names (LPIPS's lin0 and lins.0) and a buffer: after the meta
    forward pass every parameter and buffer is the same object with the same values."""
    from featrank.backbone_spec import Backbone
    head = torch.nn.Conv2d(8, 8, 1)
    net = torch.nn.Module()
    net.conv, net.bn, net.lin0 = torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), head
    net.lins = torch.nn.ModuleList([head])
    net.forward = lambda x: net.lins[0](net.bn(net.conv(x)))
    before = {n: (t, t.clone()) for n, t in [*net.named_parameters(remove_duplicate=False),
                                             *net.named_buffers(remove_duplicate=False)]}
    assert fe.forward_bytes(Backbone("tied", net, net.forward, None, 16), ["lin0"]) == \
        (fe.LIVE_OUTPUTS * 4 * 8 * 14 * 14, 4 * 8 * 14 * 14)
    after = dict([*net.named_parameters(remove_duplicate=False), *net.named_buffers(remove_duplicate=False)])
    assert after.keys() == before.keys() and "lins.0.weight" in after and "lin0.weight" in after
    for n, (t, values) in before.items():
        assert after[n] is t and not t.is_meta and torch.equal(t, values), n


def test_a_batch_that_cannot_fit_names_the_batch_size_that_does(monkeypatch):
    gib = 2 ** 30
    monkeypatch.setattr(fe, "available_memory", lambda dev: 16 * gib)
    bb = _tiny_backbone(4096)
    cpu = torch.device("cpu")
    # by hand, per image: 3 x 4 x 8 x 4096^2 (forward) + 4 x 16 x 2048^2 (captured) + 3 x 4 x 4096^2
    # (the input) + the loader's decoded image (3 x 512^2) and tensor; once: the 5 decoded images
    # a process keeps; 80 % of 16 GiB in all
    per = 12 * 8 * 4096**2 + 4 * 16 * 2048**2 + 12 * 4096**2 + 3 * 512**2 + 12 * 4096**2
    fits = int((0.8 * 16 * gib - 5 * 3 * 512**2) // per)
    assert fits == 6
    with pytest.raises(fe.UsageError) as exc:
        fe.check_memory(bb, ["3"], cpu, 16, images=5, working_size=512)
    msg = str(exc.value)
    assert msg.startswith("--batch-size 16: extracting tiny (1 layer(s)) at 4096 px")
    assert "give --batch-size 6 or fewer" in msg and "16.0 GiB is free" in msg
    fe.check_memory(bb, ["3"], cpu, 6, images=5, working_size=512)     # the batch it names fits
    monkeypatch.setattr(fe, "available_memory", lambda dev: gib // 2)
    with pytest.raises(fe.UsageError, match="even one image at a time: give a smaller --image-size"):
        fe.check_memory(bb, ["3"], cpu, 1, images=5, working_size=512)
    monkeypatch.setattr(fe, "available_memory", lambda dev: None)         # not known: no check
    fe.check_memory(bb, ["3"], cpu, 16, images=5, working_size=512)


def test_a_huge_working_size_is_refused_before_any_image_is_decoded(tmp_path, monkeypatch, capsys):
    """The decoded images a process keeps count too: 20000 px images (1.2 GB each) are refused
    by the build, one line naming the sizes, before any is decoded or any file written."""
    from featrank import cli
    write_images(tmp_path / "imgs")
    monkeypatch.setattr(fe, "available_memory", lambda dev: 8 * 2 ** 30)
    monkeypatch.setattr(fe, "load_rgb", lambda *a: pytest.fail("an image was decoded"))
    user = tiny_config()
    user.config["working_size"] = 20000
    assert cli.main(["--build-cache", "--layers", "8", "--dataset", str(tmp_path / "imgs"),
                     "--n-inference", "5", "--n-evaluation", "3", "--cache-dir", str(tmp_path / "cache"),
                     "--image-size", "32", "--weights", "random", "-q"], user=user) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "working size 20000" in err[0] and "Traceback" not in err[0]
    assert not [f for _, _, fs in os.walk(tmp_path / "cache") for f in fs if f.endswith(".npy")]


def test_folder_activations_check_memory_first(monkeypatch):
    monkeypatch.setattr(fe, "available_memory", lambda dev: 2 ** 20)
    with pytest.raises(fe.UsageError, match="--batch-size 4"):
        fe.folder_activations(_tiny_backbone(64), ["/nonexistent.png"] * 4, "3", batch_size=4,
                              device="cpu", num_workers=0, progress=False)


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

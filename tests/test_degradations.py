"""Each degradation against an independent computation, and determinism across processes."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from scipy import ndimage

import degradation_generator as dg
from config import ConfigError


@pytest.fixture
def img():
    rng = np.random.default_rng(0)
    base = ndimage.zoom(rng.integers(0, 255, (12, 12, 3)).astype(float), (6, 6, 1), order=1)
    return np.clip(base, 0, 255).astype(np.uint8)   # 72x72, smooth with edges


def test_blur_matches_direct_gaussian_convolution(img):
    sigma = 1.5
    out = dg.gaussian_blur(img, sigma)
    # independent: separable 1-D convolution with an explicitly built kernel
    r = int(4 * sigma + 0.5)
    x = np.arange(-r, r + 1)
    k = np.exp(-x ** 2 / (2 * sigma ** 2)); k /= k.sum()
    ref = img.astype(float)
    ref = ndimage.convolve1d(ref, k, axis=0, mode="reflect")
    ref = ndimage.convolve1d(ref, k, axis=1, mode="reflect")
    assert np.abs(out.astype(int) - np.clip(np.rint(ref), 0, 255)).max() <= 1


def test_blur_plus_contrast_uses_pillow_contrast(img):
    out = dg.blur_plus_contrast(img, (1.0, 0.6))
    expected = np.asarray(ImageEnhance.Contrast(Image.fromarray(dg.gaussian_blur(img, 1.0))).enhance(0.6))
    assert np.array_equal(out, expected)
    assert out.astype(float).std() < img.astype(float).std()


def test_noise_statistics(img):
    flat = np.full((200, 200, 3), 128, np.uint8)
    rng = np.random.default_rng(5)
    out = dg.gaussian_noise(flat, 10.0, rng).astype(float) - 128
    assert abs(out.mean()) < 0.2 and abs(out.std() - 10.0) < 0.2


def test_jpeg_equals_pillow_at_that_quality(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=30)
    assert np.array_equal(dg.jpeg_compression(img, 30), np.asarray(Image.open(io.BytesIO(buf.getvalue()))))


def test_downsample_upsample_and_pixelation(img):
    out = dg.downsample_upsample(img, 2.0)
    small = Image.fromarray(img).resize((36, 36), Image.Resampling.NEAREST)
    assert np.array_equal(out, np.asarray(small.resize((72, 72), Image.Resampling.BICUBIC)))
    assert np.array_equal(dg.downsample_upsample(img, 1.0), img)
    px = dg.pixelation(img, 4)
    assert np.array_equal(px[0:4, 0:4], np.broadcast_to(px[0, 0], (4, 4, 3)))


def test_fid_paper_disturbances(img):
    rng = np.random.default_rng(0)
    sp = dg.salt_and_pepper(img, 0.1, rng)
    changed = np.any(sp != img, axis=2).mean()
    assert 0.05 < changed < 0.12
    rect = dg.black_rectangles(img, 0.2, np.random.default_rng(1))
    assert (rect == 0).all(axis=2).sum() >= (0.2 * 72) ** 2
    sw = dg.swirl(img, 2.0)
    assert sw.shape == img.shape and not np.array_equal(sw, img)
    # zero strength is the identity mapping
    assert np.abs(dg.swirl(img, 1e-9).astype(int) - img).max() <= 1


def test_random_degradations_are_deterministic_across_processes(img):
    code = ("import numpy as np, degradation_generator as dg, hashlib; "
            "img = np.arange(48*48*3, dtype=np.uint64).reshape(48,48,3).astype(np.uint8); "
            "print(hashlib.sha256(dg.apply_degradation(img, 'gaussian_noise', 7, 3, 'abc').tobytes()).hexdigest())")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outs = {subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                           text=True).stdout for _ in range(2)}
    assert len(outs) == 1 and len(next(iter(outs)).strip()) == 64
    local = np.arange(48 * 48 * 3, dtype=np.uint64).reshape(48, 48, 3).astype(np.uint8)
    import hashlib
    assert hashlib.sha256(dg.apply_degradation(local, "gaussian_noise", 7, 3, "abc").tobytes()).hexdigest() \
        == next(iter(outs)).strip()
    # a different image, level or seed gives different noise
    a = dg.apply_degradation(local, "gaussian_noise", 7, 3, "abc")
    assert not np.array_equal(a, dg.apply_degradation(local, "gaussian_noise", 7, 4, "abc"))
    assert not np.array_equal(a, dg.apply_degradation(local, "gaussian_noise", 7, 3, "abd"))


@pytest.mark.parametrize("spec,needle", [
    ({"type": "gaussian_blur", "levels": [-1]}, "> 0"),
    ({"type": "jpeg_compression", "levels": [0]}, "1..100"),
    ({"type": "jpeg_compression", "levels": [101]}, "1..100"),
    ({"type": "downsample_upsample", "levels": [0.5]}, ">= 1"),
    ({"type": "gaussian_noise", "levels": [5, 2]}, "order"),
    ({"type": "warp", "levels": [1]}, "unknown type"),
    ({"type": "blur_plus_contrast", "levels": [[1, 1.5]]}, "contrast"),
])
def test_level_validation(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        dg.validate_degradations({"d": spec})


def test_default_levels_are_the_seed_levels():
    from config import CONFIG
    d = CONFIG["degradations"]
    assert d["blur"]["levels"] == [0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.3, 1.6, 2, 2.5, 3]
    assert d["noise"]["levels"] == [1, 2, 3, 5, 7, 9, 12, 15, 18, 22, 26, 30]
    assert len(d["aliasing"]["levels"]) == 9 and d["aliasing"]["levels"][0] == 1.1
    assert len(d["blur_contrast"]["levels"]) == 6
    dg.validate_degradations(d)
    dg.validate_degradations(dg.EXTRA_DEGRADATIONS)

"""Each degradation against an independent computation, and determinism across processes."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from scipy import ndimage

from featrank import degradation_generator as dg
from featrank.errors import ConfigError


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
    # pixelation at an integer factor: every f x f block is its own mean, rounded (hand-computed
    # with numpy block means, not with Pillow)
    for f in (2, 3, 4, 6):
        blocks = img.astype(float).reshape(72 // f, f, 72 // f, f, 3).mean(axis=(1, 3))
        expected = np.repeat(np.repeat(np.floor(blocks + 0.5), f, axis=0), f, axis=1)
        assert np.abs(dg.pixelation(img, f).astype(int) - expected).max() <= 1, f
        assert np.array_equal(dg.pixelation(img, f)[::f, ::f], dg.pixelation(img, f)[f - 1::f, f - 1::f])
    assert np.array_equal(dg.pixelation(img, 1), img)


def test_black_rectangles_follow_ttur_drop_rect(img, monkeypatch):
    """Rectangles of int(share x side) pixels (TTUR's drop_rect), black, anywhere inside."""
    for share, side in ((0.1, 7), (0.15, 10), (0.25, 18)):     # round() would make 0.15 -> 11
        monkeypatch.setattr(dg, "N_BLACK_RECTANGLES", 1)
        out = dg.black_rectangles(img, share, np.random.default_rng(3))
        black = np.all(out == 0, axis=2)
        rows, cols = np.nonzero(black)
        assert black.sum() == side * side and np.ptp(rows) == np.ptp(cols) == side - 1
        assert np.array_equal(out[~black], img[~black])
        monkeypatch.undo()
        five = np.all(dg.black_rectangles(img, share, np.random.default_rng(3)) == 0, axis=2)
        assert side * side < five.sum() <= 5 * side * side


def _ttur_swirl(img, strength, direction):
    """skimage.transform.swirl as TTUR's lokal_swirl calls it, then its border put back."""
    swirl = pytest.importorskip("skimage.transform").swirl
    h, w = img.shape[:2]
    ref = swirl(img.astype(np.float64), center=(w // 2, h // 2), strength=direction * strength,
                radius=min(h, w) * 25 / 32, rotation=0, order=1, mode="constant", cval=127.5,
                preserve_range=True, clip=False)
    ref[:3], ref[-4:], ref[:, :3], ref[:, -4:] = img[:3], img[-4:], img[:, :3], img[:, -4:]
    return np.clip(np.rint(ref), 0, 255)


def _direction(out, img, strength):
    """(the direction whose TTUR swirl `out` equals within 1 grey level, diffs by direction)."""
    diffs = {d: np.abs(out.astype(int) - _ttur_swirl(img, strength, d)).max() for d in (1, -1)}
    best = min(diffs, key=diffs.get)
    assert diffs[best] <= 1 and diffs[-best] > 20, diffs
    return best


def test_swirl_equals_scikit_image_swirl_as_ttur_calls_it(img):
    """TTUR FIDvsINC: skimage.transform.swirl(img, rotation=0, strength=±s, radius=25 (of 32 px),
    center=(h // 2, w // 2)), order 1, constant border; then a 3-px border (4 px bottom/right)
    put back from the original. Both directions occur, one per image at every level."""
    seen = set()
    for seed in range(6):
        for strength in (1.0, 4.0):
            seen.add(_direction(dg.swirl(img, strength, np.random.default_rng(seed)), img, strength))
    assert seen == {1, -1}
    for sha in ("ab" * 32, "cd" * 32, "ef" * 32):
        dirs = {_direction(dg.apply_degradation(img, "swirl", s, 0, sha), img, s) for s in (0.5, 2.0, 4.0)}
        assert len(dirs) == 1


def test_fid_paper_disturbances(img):
    rng = np.random.default_rng(0)
    sp = dg.salt_and_pepper(img, 0.1, rng)
    changed = np.any(sp != img, axis=2).mean()
    assert 0.05 < changed < 0.12
    hit = np.any(sp != img, axis=2)
    assert np.all((sp[hit] == 0).all(axis=1) | (sp[hit] == 255).all(axis=1))


def test_random_degradations_are_deterministic_across_processes(img):
    code = ("import numpy as np, hashlib; from featrank import degradation_generator as dg; "
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
    from featrank.user_config import default_config
    d = default_config()["degradations"]
    assert d["blur"]["levels"] == [0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.3, 1.6, 2, 2.5, 3]
    assert d["noise"]["levels"] == [1, 2, 3, 5, 7, 9, 12, 15, 18, 22, 26, 30]
    assert len(d["aliasing"]["levels"]) == 9 and d["aliasing"]["levels"][0] == 1.1
    assert len(d["blur_contrast"]["levels"]) == 6
    dg.validate_degradations(d)
    dg.validate_degradations(dg.EXTRA_DEGRADATIONS)

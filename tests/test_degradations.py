"""Each degradation against an independent computation, and determinism across processes."""
import hashlib
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
from featrank.user_config import default_config


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


# ------------------------------------------------------------------ the version in the cache key

def _golden_image():
    y, x = np.mgrid[0:48, 0:48]
    rng = np.random.default_rng(0)
    base = np.stack([x * 5, y * 5, (x + y) * 2], -1) + rng.integers(0, 30, (48, 48, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


# sha256 (16 hex) of every level of each degradation on _golden_image(), per DEGRADATION_VERSION.
# A failure means a degradation's output changed: bump DEGRADATION_VERSION (old caches then
# miss) and record the new hashes. If a library upgrade changed it, its version is already in
# the cache key: record the new hashes under the same version.
GOLDEN_DEGRADATIONS = {1: {
    "gaussian_blur": "d7c9fcaeddcf6627", "blur_plus_contrast": "3f47a43e3a75c5a3",
    "gaussian_noise": "83495d7fe15e3147", "downsample_upsample": "8b02e823380c3b7e",
    "jpeg_compression": "ec70fc586f6b45e7", "black_rectangles": "63f1a2eac7a3cc84",
    "swirl": "adac33b79f20f79c", "salt_and_pepper": "8f7ee9608ecb0efc", "pixelation": "b13bb68de9750ea9"}, 2: {
    "gaussian_blur": "d7c9fcaeddcf6627", "blur_plus_contrast": "3f47a43e3a75c5a3", "gaussian_noise": "83495d7fe15e3147",
    "downsample_upsample": "8b02e823380c3b7e", "jpeg_compression": "ec70fc586f6b45e7", "black_rectangles": "63f1a2eac7a3cc84",
    "swirl": "adac33b79f20f79c", "salt_and_pepper": "8f7ee9608ecb0efc", "pixelation": "b13bb68de9750ea9",
    "kadid_gaussian_blur": "5cc055c31f630358", "kadid_lens_blur": "34a85a07774560e5", "kadid_motion_blur": "a6817582e1ae73d8",
    "kadid_color_diffusion": "ce844c94702d244d", "kadid_color_shift": "66186c3934c2ff81", "kadid_color_quantization": "f097427d968b16b7",
    "kadid_color_saturation_1": "f6f6a15c22c8e4cd", "kadid_color_saturation_2": "aeaaf58768729116", "kadid_jpeg2000": "41fffa6fcd5d2feb",
    "kadid_jpeg": "030480bb55a8d6cf", "kadid_white_noise": "0266fe1e3251b77e", "kadid_white_noise_color": "9f11082512597a3d",
    "kadid_impulse_noise": "be6d5a4551de493d", "kadid_multiplicative_noise": "149f482573d61e07", "kadid_denoise": "5a78a18e83a9388a",
    "kadid_brighten": "3a3dbf3310c89e7d", "kadid_darken": "1313b533ec883ff4", "kadid_mean_shift": "f9361fa2a89d08fa",
    "kadid_jitter": "fc6be3a426886dfd", "kadid_non_eccentricity_patch": "c3c92f40c6f1b8b0", "kadid_pixelate": "3456917cee9b1f2f",
    "kadid_quantization": "a497c39d31459a26", "kadid_color_block": "19e1ae49ab884d11", "kadid_high_sharpen": "4d940a1f5fa21d90",
    "kadid_contrast_change": "4fba665f4936fb6b"}}
# 3: swirl and black_rectangles as TTUR's FIDvsINC makes them; every other type unchanged
GOLDEN_DEGRADATIONS[3] = {**GOLDEN_DEGRADATIONS[2], "black_rectangles": "e9e290d2e78ea0c7",
                          "swirl": "9a03d47be8f1fe97"}


def test_degradations_match_their_golden_hashes_for_this_version():
    specs = {**default_config()["degradations"], **dg.EXTRA_DEGRADATIONS,
             **(dg.KADID10K if dg.DEGRADATION_VERSION >= 2 else {})}
    got = {}
    for spec in specs.values():
        h = hashlib.sha256()
        for lv in spec["levels"]:
            h.update(dg.apply_degradation(_golden_image(), spec["type"], lv, 0, "0" * 64).tobytes())
        got[spec["type"]] = h.hexdigest()[:16]
    changed = {t for t in got if got[t] != GOLDEN_DEGRADATIONS[dg.DEGRADATION_VERSION].get(t)}
    assert not changed and set(got) == set(GOLDEN_DEGRADATIONS[dg.DEGRADATION_VERSION]), \
        f"these degradations' output changed: {sorted(changed)}; bump DEGRADATION_VERSION"

"""KADID-10k's 25 types: each against an independent computation or a defining property,
determinism across processes, and a distance from the clean image that grows with the level."""
import hashlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from featrank import degradation_generator as dg
from featrank import kadid10k as K

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def img():
    """72x72, smooth regions, edges and colour (values kept off 0 and 255)."""
    rng = np.random.default_rng(0)
    base = ndimage.zoom(rng.integers(30, 225, (12, 12, 3)).astype(float), (6, 6, 1), order=1)
    return np.clip(base, 0, 255).astype(np.uint8)


def grey(value, size=64):
    return np.full((size, size, 3), value, np.uint8)


def rng(seed=0):
    return np.random.default_rng(seed)


def lab(x):
    return K.rgb2lab(x.astype(float) / 255)


# imdist_generator.m (KADID-10k / KADIS-700k), case 1..25, copied by hand from its source
GENERATOR_TABLE = [
    [0.1, 0.5, 1, 2, 5], [1, 2, 4, 6, 8], [1, 2, 4, 6, 10], [1, 3, 6, 8, 12], [1, 3, 6, 8, 12],
    [64, 48, 32, 16, 8], [0.4, 0.2, 0.1, 0, -0.4], [1, 2, 3, 6, 9], [16, 32, 45, 120, 400],
    [43, 36, 24, 7, 4], [0.001, 0.002, 0.003, 0.005, 0.01], [0.0001, 0.0005, 0.001, 0.002, 0.003],
    [0.001, 0.005, 0.01, 0.02, 0.03], [0.001, 0.005, 0.01, 0.02, 0.05], [0.01, 0.03, 0.05, 0.1, 0.15],
    [0.1, 0.2, 0.4, 0.7, 1.1], [0.05, 0.1, 0.2, 0.4, 0.8], [0.15, 0.08, 0, -0.08, -0.15],
    [0.05, 0.1, 0.2, 0.5, 1], [20, 40, 60, 80, 100], [0.01, 0.05, 0.1, 0.2, 0.5],
    [20, 16, 13, 10, 7], [2, 4, 6, 8, 10], [1, 2, 3, 6, 12], [0.3, 0.15, 0, -0.4, -0.6]]


def test_the_table_is_the_generators_in_its_case_order():
    assert list(K.KADID10K_LEVELS.values()) == GENERATOR_TABLE
    assert set(K.KADID10K_LEVELS) == set(K.KADID10K_TYPES)
    assert len(dg.KADID10K) == 25
    dg.validate_degradations(dg.KADID10K)     # the sweep's levels are ordered mild to severe
    for t, levels in K.KADID10K_LEVELS.items():
        assert sorted(dg.KADID10K["kadid_" + t]["levels"]) == sorted(levels)


def test_mean_shift_and_contrast_are_ordered_by_what_they_change():
    # mean |T(x) - x|: a shift s clipped at 1 changes a value by s - s^2/2 on average
    for s_ in (0.08, 0.15):
        assert K.tone_change("mean_shift", s_) == pytest.approx(s_ - s_ ** 2 / 2, abs=1e-3)
        assert K.tone_change("mean_shift", -s_) == pytest.approx(K.tone_change("mean_shift", s_))
    assert dg.KADID10K["kadid_mean_shift"]["levels"] == [0, 0.08, -0.08, 0.15, -0.15]
    # the contrast curve is the identity at -0.2 and moves in proportion to |a + 0.2|
    assert K.tone_change("contrast_change", -0.2) < 1e-12
    c = {a: K.tone_change("contrast_change", a) for a in K.KADID10K_LEVELS["contrast_change"]}
    # before clipping the change is proportional to |a + 0.2|: 0 and -0.4 change values equally
    assert c[0] == pytest.approx(c[-0.4], rel=1e-9)
    assert c[0] < c[0.15] < c[-0.6] < c[0.3]
    assert dg.KADID10K["kadid_contrast_change"]["levels"] == [0, -0.4, 0.15, -0.6, 0.3]

def test_colour_conversions_against_known_values():
    # CIE L*a*b* (D65) of sRGB white, black and primaries (e.g. Bruce Lindbloom's calculator)
    np.testing.assert_allclose(K.rgb2lab(np.array([1.0, 1.0, 1.0])), [100, 0, 0], atol=0.01)
    np.testing.assert_allclose(K.rgb2lab(np.array([0.0, 0.0, 0.0])), [0, 0, 0], atol=0.01)
    np.testing.assert_allclose(K.rgb2lab(np.array([1.0, 0.0, 0.0])), [53.24, 80.09, 67.20], atol=0.05)
    np.testing.assert_allclose(K.rgb2lab(np.array([0.0, 0.0, 1.0])), [32.30, 79.19, -107.86], atol=0.05)
    x = np.random.default_rng(1).random((50, 3))
    np.testing.assert_allclose(K.lab2rgb(K.rgb2lab(x)), x, atol=1e-9)
    np.testing.assert_allclose(K.ycbcr2rgb(K.rgb2ycbcr(x)), x, atol=1e-9)
    # BT.601: white is Y 235, Cb = Cr = 128
    np.testing.assert_allclose(K.rgb2ycbcr(np.array([1.0, 1.0, 1.0])), [235, 128, 128], atol=1e-9)


# ---------------------------------------------------------------- blurs

def test_gaussian_blur_equals_explicit_kernel(img):
    for sigma in (1, 2):
        r = int(np.ceil(3 * sigma))
        x = np.arange(-r, r + 1)
        k = np.exp(-x ** 2 / (2 * sigma ** 2))
        k /= k.sum()
        ref = np.pad(img.astype(float), ((r, r), (r, r), (0, 0)), mode="edge")
        ref = np.apply_along_axis(lambda v: np.convolve(v, k, "valid"), 0, ref)
        ref = np.apply_along_axis(lambda v: np.convolve(v, k, "valid"), 1, ref)
        assert np.abs(K.gaussian_blur(img, sigma).astype(int) - np.rint(ref)).max() <= 1


def test_lens_blur_is_a_disk_of_the_level_radius(img):
    for r in (2, 4):
        k = K.disk_kernel(r)
        n = k.shape[0] // 2
        assert k.sum() == pytest.approx(1) and np.allclose(k, k.T) and np.allclose(k, k[::-1])
        yy, xx = np.mgrid[-n:n + 1, -n:n + 1]
        inside = (np.abs(yy) + 0.5) ** 2 + (np.abs(xx) + 0.5) ** 2 <= r ** 2    # cell fully inside
        outside = (np.maximum(np.abs(yy) - 0.5, 0) ** 2 + np.maximum(np.abs(xx) - 0.5, 0) ** 2) >= r ** 2
        assert np.allclose(k[inside], 1 / (np.pi * r ** 2), rtol=0.02)   # full cells: 1 / area
        assert np.all(k[outside] == 0)
    imp = grey(0, 33)
    imp[16, 16] = 255
    out = K.lens_blur(imp, 4)[..., 0].astype(float)
    k = K.disk_kernel(4)
    assert np.abs(out[12:21, 12:21] - np.rint(255 * k)).max() <= 1


def test_motion_kernel_is_matlab_fspecial_motion():
    # closed forms of fspecial('motion', len, theta): len 1 is no blur; len 2 at 0 degrees is
    # [0.25 0.5 0.25]; an odd len at 0 (90) degrees is a 1 x len (len x 1) box
    np.testing.assert_allclose(K.motion_kernel(1, 0), [[1.0]], atol=1e-12)
    np.testing.assert_allclose(K.motion_kernel(1, 57), [[1.0]], atol=1e-12)
    np.testing.assert_allclose(K.motion_kernel(2, 0), [[0.25, 0.5, 0.25]], atol=1e-12)
    np.testing.assert_allclose(K.motion_kernel(5, 0), np.full((1, 5), 0.2), atol=1e-12)
    np.testing.assert_allclose(K.motion_kernel(3, 90), np.full((3, 1), 1 / 3), atol=1e-12)
    # 45 degrees runs from bottom-left to top-right (counter-clockwise, y up)
    k = K.motion_kernel(10, 45)
    assert k.sum() == pytest.approx(1) and k.shape == (9, 9)
    anti, main = np.fliplr(k).trace(), k.trace()
    assert anti > 0.5 and main == pytest.approx(k[4, 4])
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-12)


def test_motion_blur_length_one_is_no_blur_and_length_is_the_level(img):
    # the old reading (a line of 2 * level + 1 pixels) blurred at level 1
    assert np.array_equal(K.motion_blur(img, 1, rng()), img)
    # a single bright pixel spreads along a line `length` pixels long (plus the line's width),
    # where the old reading's 2 * 6 + 1 = 13 pixels would reach further
    dot = grey(0, 41)
    dot[20, 20] = 255
    for seed in range(4):
        ys, xs = np.nonzero(K.motion_blur(dot, 6, rng(seed))[..., 0] > 0)
        assert 5 <= np.hypot(np.ptp(ys), np.ptp(xs)) <= 6 + 2

# ---------------------------------------------------------------- colour

def test_color_diffusion_multiplies_the_blurred_chroma_by_the_amount(img):
    # imcolorblur.m: a*, b* = imgaussfilt(a*, b*; 1.5 * amount + 2) .* amount
    x = img.astype(float) / 255
    for amount in (1, 3):
        expected = K.rgb2lab(x)
        sigma = 1.5 * amount + 2
        r = int(np.ceil(2 * sigma))
        t = np.arange(-r, r + 1)
        g = np.exp(-t ** 2 / (2 * sigma ** 2))
        g /= g.sum()
        for c in (1, 2):
            plane = np.pad(expected[..., c], r, mode="edge")
            plane = ndimage.correlate1d(ndimage.correlate1d(plane, g, axis=0), g, axis=1)
            expected[..., c] = plane[r:-r, r:-r] * amount
        want = np.clip(np.rint(K.lab2rgb(expected) * 255), 0, 255)
        assert np.abs(K.color_diffusion(img, amount).astype(int) - want).max() <= 1
    # the amount scales chroma: at 3 the chroma of a flat colour is three times the original
    flat = np.full((32, 32, 3), (150, 90, 60), np.uint8)
    a0 = lab(flat)[0, 0, 1:]
    a3 = lab(K.color_diffusion(flat, 1.2))[0, 0, 1:]
    np.testing.assert_allclose(a3, 1.2 * a0, rtol=0.03)

def test_color_shift_moves_only_green(img):
    out = K.color_shift(img, 6, rng())
    assert np.array_equal(out[..., 0], img[..., 0]) and np.array_equal(out[..., 2], img[..., 2])
    assert not np.array_equal(out[..., 1], img[..., 1])


def test_color_quantization_uses_at_most_n_colours(img):
    for n in (8, 32):
        assert len(np.unique(K.color_quantization(img, n).reshape(-1, 3), axis=0)) <= n


def test_color_saturation_1_changes_only_saturation(img):
    for f in (0.4, 0.1, -0.4):
        out = K.color_saturation_1(img, f).astype(int)
        assert np.abs(out.max(axis=2) - img.max(axis=2)).max() <= 1        # V = max(R, G, B)
    zero = K.color_saturation_1(img, 0).astype(int)
    assert np.abs(zero - zero[..., :1]).max() == 0                          # grey
    assert np.abs(zero[..., 0] - img.max(axis=2)).max() <= 1


def test_color_saturation_2_scales_chroma_and_keeps_lightness():
    pale = np.clip(128 + (np.random.default_rng(2).random((32, 32, 3)) - 0.5) * 30, 0, 255).astype(np.uint8)
    out = K.color_saturation_2(pale, 2)
    assert np.abs(lab(out)[..., 0] - lab(pale)[..., 0]).max() < 1.0
    ratio = np.abs(lab(out)[..., 1:]).mean() / np.abs(lab(pale)[..., 1:]).mean()
    assert ratio == pytest.approx(2, rel=0.05)


# ---------------------------------------------------------------- compression

def _pillow(img, **save):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, **save)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_jpeg_and_jpeg2000_equal_pillow(img):
    for q in K.KADID10K_LEVELS["jpeg"]:
        assert np.array_equal(K.jpeg(img, q), _pillow(img, format="JPEG", quality=q))
    for ratio in K.KADID10K_LEVELS["jpeg2000"]:
        assert np.array_equal(K.jpeg2000(img, ratio),
                              _pillow(img, format="JPEG2000", quality_mode="rates",
                                      quality_layers=[float(ratio)]))


# ---------------------------------------------------------------- noise

def test_white_noise_has_the_level_variance():
    out = K.white_noise(grey(128, 256), 0.005, rng()).astype(float) - 128
    assert out.std() == pytest.approx(np.sqrt(0.005) * 255, rel=0.03) and abs(out.mean()) < 0.5


def test_white_noise_color_is_white_noise_in_ycbcr():
    out = K.white_noise_color(grey(128, 256), 0.002, rng())
    resid = K.rgb2ycbcr(out / 255.0) - K.rgb2ycbcr(np.full(3, 128 / 255.0))
    assert np.allclose(resid.std(axis=(0, 1)), np.sqrt(0.002) * 255, rtol=0.06)


def test_impulse_noise_draws_per_array_element():
    # imnoise 'salt & pepper' draws once per element: channels are hit independently, so
    # most hit pixels have one channel changed, and the element fraction is the density
    out = K.impulse_noise(grey(128, 256), 0.03, rng())
    changed = out != 128
    assert changed.mean() == pytest.approx(0.03, rel=0.1)
    assert set(np.unique(out[changed])) <= {0, 255}
    per_pixel = changed.sum(axis=2)
    assert (per_pixel == 1).sum() > 10 * (per_pixel == 3).sum()
    assert (out[changed] == 0).mean() == pytest.approx(0.5, abs=0.05)

def test_multiplicative_noise_is_uniform_speckle():
    # imnoise 'speckle': I + sqrt(12 v) I (U - 0.5): uniform, bounded by I (1 +/- sqrt(3 v))
    v, value = 0.05, 160
    out = K.multiplicative_noise(grey(value, 256), v, rng()).astype(float)
    rel = out / value - 1
    assert rel.std() == pytest.approx(np.sqrt(v), rel=0.03)
    bound = np.sqrt(3 * v) + 1 / value
    assert np.abs(rel).max() <= bound
    # one draw per array element (imnoise draws rand(size(I)) for an M x N x 3 image): on a grey
    # image the three channels of a pixel move independently; one draw per pixel would move them
    # together (correlation 1, equal channels everywhere)
    r, g, b = (rel[..., c].ravel() for c in range(3))
    assert abs(np.corrcoef(r, g)[0, 1]) < 0.02 and abs(np.corrcoef(g, b)[0, 1]) < 0.02
    assert ((out[..., 0] == out[..., 1]) & (out[..., 1] == out[..., 2])).mean() < 0.05
    # imnoise.m's speckle line, J = I + sqrt(12*v)*I.*(rand(size(I))-.5), with the same draws,
    # on a photograph-like ramp (clipped to [0, 1], then to uint8 by rounding)
    ramp = np.broadcast_to(np.linspace(0, 255, 64).astype(np.uint8)[None, :, None], (32, 64, 3)).copy()
    u = rng(7).random(ramp.shape)
    i = ramp / 255.0
    want = np.round(np.clip(i + np.sqrt(12 * v) * i * (u - 0.5), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(K.multiplicative_noise(ramp, v, rng(7)), want)
    assert np.abs(rel).max() > 0.95 * np.sqrt(3 * v)        # Gaussian noise would exceed it
    # a flat histogram: each third of the range holds about a third of the values
    counts, _ = np.histogram(rel, bins=3, range=(-np.sqrt(3 * v), np.sqrt(3 * v)))
    np.testing.assert_allclose(counts / counts.sum(), 1 / 3, atol=0.02)
    assert np.all(K.multiplicative_noise(grey(0, 64), v, rng()) == 0)

def test_denoise_removes_part_of_the_noise_it_adds(img):
    smooth = ndimage.zoom(img, (2, 2, 1), order=1)
    noisy = K.white_noise(smooth, 0.01, rng(3))
    den = K.denoise(smooth, 0.01, rng(3))      # the same noise draws, then the Wiener filter
    err = lambda a: np.sqrt(((a.astype(float) - smooth) ** 2).mean())   # noqa: E731
    assert err(den) < 0.6 * err(noisy)


# ---------------------------------------------------------------- brightness

def test_tone_curves_pass_through_their_midpoints():
    for a in (0.1, 0.4):
        assert K._tone(np.array(0.5), 0.5 + a / 2) == pytest.approx(0.5 + a / 2)
    for value in (0, 255):
        assert np.all(K.darken(grey(value), 0.4) == value)
    mid = K.darken(grey(128), 0.4).astype(float).mean()
    assert mid == pytest.approx(255 * K._tone(np.array(128 / 255), 0.3), abs=0.6)
    assert K.brighten(grey(100), 0.4).mean() > 100


def test_mean_shift_adds_the_level(img):
    for s in K.KADID10K_LEVELS["mean_shift"]:
        expected = np.clip(np.rint(img.astype(float) + 255 * s), 0, 255)
        assert np.abs(K.mean_shift(img, s).astype(int) - expected).max() <= 1


def test_contrast_curve_is_matlab_spline_through_the_curves_knots(img):
    from scipy.interpolate import CubicSpline
    for a in K.KADID10K_LEVELS["contrast_change"]:
        knots = ([0, 0.3, 0.5, 0.7, 1], [0, 0.25 - a / 4, 0.5, 0.75 + a / 4, 1])
        curve = K.contrast_curve(a)
        for (x, y) in zip(*knots):
            assert curve(np.array(x)) == pytest.approx(min(max(y, 0), 1), abs=1e-12)
        xs = np.linspace(0, 1, 101)
        np.testing.assert_allclose(curve(xs), np.clip(CubicSpline(*knots)(xs), 0, 1), atol=1e-12)
    # the identity is at -0.2, not at 0 (knots at 0.3 / 0.7, not at 0.25 / 0.75)
    assert np.array_equal(K.contrast_change(img, -0.2), img)
    assert not np.array_equal(K.contrast_change(img, 0), img)
    std = img.astype(float).std()
    assert K.contrast_change(img, 0.3).astype(float).std() > std
    assert K.contrast_change(img, -0.6).astype(float).std() < std

# ---------------------------------------------------------------- spatial

def test_jitter_moves_pixels_but_not_a_constant_image(img):
    assert np.array_equal(K.jitter(grey(90), 1, rng()), grey(90))
    assert not np.array_equal(K.jitter(img, 0.5, rng()), img)


def test_patches_and_blocks_change_at_most_their_squares(img):
    side = K._side(K.PATCH, *img.shape[:2])
    assert side == 3                       # 16 px at 384 px: 3 px at 72 px
    out = K.non_eccentricity_patch(img, 20, rng())
    assert 0 < (out != img).any(axis=2).sum() <= 20 * side ** 2
    assert np.array_equal(K.non_eccentricity_patch(grey(77), 20, rng()), grey(77))
    base = grey(50, 384)
    out = K.color_block(base, 4, rng())
    changed = (out != base).any(axis=2)
    assert 0 < changed.sum() <= 4 * K.BLOCK ** 2
    assert len(np.unique(out[changed], axis=0)) <= 4
    # nested: the next level keeps every changed pixel of this one
    more = K.color_block(base, 6, rng())
    assert np.array_equal(more[changed], out[changed])


def test_pixelate_is_nearest_neighbour_both_ways():
    # impixelate.m: imresize(I, z, 'nearest') then imresize(., size, 'nearest'): every output
    # value is an input value (block averaging would make new ones)
    img = (np.arange(20 * 20 * 3) % 251).astype(np.uint8).reshape(20, 20, 3)
    z = K.pixelate_scale(0.5)
    assert z == pytest.approx(0.95 - 0.5 ** 0.6)
    out = K.pixelate(img, 0.5)
    assert out.shape == img.shape
    assert set(np.unique(out)) <= set(np.unique(img))
    # hand-computed MATLAB indices for a 20-pixel side: ceil(20 z) = 6 samples at
    # floor(x / z + 0.5 (1 - 1 / z) + 0.5), x = 1..6; then back up to 20 at scale 20 / 6
    lo = int(np.ceil(20 * z))
    down = [int(np.floor(x / z + 0.5 * (1 - 1 / z) + 0.5)) for x in range(1, lo + 1)]
    up = [int(np.floor(x / (20 / lo) + 0.5 * (1 - lo / 20) + 0.5)) for x in range(1, 21)]
    rows = [down[u - 1] - 1 for u in up]
    assert np.array_equal(out, img[rows][:, rows])
    # the mildest level keeps most pixels (scale 0.95 - 0.01^0.6 = 0.887)
    assert (K.pixelate(img, 0.01) == img).all(axis=2).mean() > 0.7

def test_quantization_keeps_n_evenly_spaced_values(img):
    for n in (7, 13):
        out = K.quantization(img, n)
        grid = np.rint(np.arange(n) * 255 / (n - 1))
        assert set(np.unique(out)) <= set(grid)


def test_high_sharpen_is_imsharpen_with_radius_3(img):
    # imsharpen: L + amount (L - G_sigma L), G of sigma Radius = 3 and size 2 ceil(2 Radius) + 1
    big = ndimage.zoom(img, (2, 2, 1), order=1)
    x = big.astype(float) / 255
    t = np.arange(-6, 7)
    g = np.exp(-t ** 2 / 18.0)
    g /= g.sum()
    for amount in (1, 6):
        want = K.rgb2lab(x)
        lum = want[..., 0]
        blurred = ndimage.correlate1d(ndimage.correlate1d(np.pad(lum, 6, mode="edge"), g, axis=0),
                                      g, axis=1)[6:-6, 6:-6]
        want[..., 0] = lum + amount * (lum - blurred)
        expected = np.clip(np.rint(K.lab2rgb(want) * 255), 0, 255)
        assert np.abs(K.high_sharpen(big, amount).astype(int) - expected).max() <= 1
    # sigma 1 (the old reading) gives another image
    lum = K.rgb2lab(x)[..., 0]
    narrow = K.rgb2lab(x)
    narrow[..., 0] = lum + 6 * (lum - ndimage.gaussian_filter(lum, 1.0, mode="nearest"))
    assert np.abs(K.high_sharpen(big, 6).astype(int)
                  - np.clip(np.rint(K.lab2rgb(narrow) * 255), 0, 255)).max() > 5
    assert np.array_equal(K.high_sharpen(grey(120), 6), grey(120))

# ---------------------------------------------------------------- every type

def _all_outputs(image):
    return {name: [dg.apply_degradation(image, spec["type"], lv, 0, "sha") for lv in spec["levels"]]
            for name, spec in dg.KADID10K.items()}


# Nearest-neighbour resampling both ways (impixelate.m) drops a different set of rows at each
# scale, so its RMS distance from the clean image is not monotone in the level on small images.
NOT_MONOTONE_IN_RMS = {"kadid_pixelate"}


def test_distance_from_clean_grows_with_the_level():
    from featrank.dataset import builtin_sources, load_rgb
    bad = []
    for source in builtin_sources()[:2]:
        image = load_rgb(source, 96)
        for name, outs in _all_outputs(image).items():
            if name in NOT_MONOTONE_IN_RMS:
                continue
            d = [np.sqrt(((o.astype(float) - image) ** 2).mean()) for o in outs]
            if any(b < a - 0.25 for a, b in zip(d, d[1:])) or not d[-1] > d[0]:
                bad.append((name, [round(x, 2) for x in d]))
    assert not bad, bad


def test_deterministic_across_processes(img):
    digest = hashlib.sha256(b"".join(o.tobytes() for outs in _all_outputs(img).values()
                                     for o in outs)).hexdigest()
    code = ("import hashlib, numpy as np; "
            "from test_kadid10k import _all_outputs; "
            f"img = np.frombuffer(bytes.fromhex('{img.tobytes().hex()}'), np.uint8).reshape({img.shape}); "
            "print(hashlib.sha256(b''.join(o.tobytes() for outs in _all_outputs(img).values() "
            "for o in outs)).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], cwd=os.path.join(ROOT, "tests"),
                         capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "123"},
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == digest


# ---------------------------------------------------------------- the command line

@pytest.mark.slow
def test_quick_mode_with_kadid10k_has_one_rho_column_per_type(tmp_path, monkeypatch, capsys):
    import csv

    from featrank import cli
    from helpers import tiny_args, tiny_config
    user = tiny_config()
    assert cli.main(tiny_args(tmp_path, "--mode", "quick", "--degradations", "kadid10k",
                               "--n-inference", "6", "--n-evaluation", "4"), user=user) == 0
    (run,) = (tmp_path / "results").iterdir()
    (path,) = run.glob("results_*.csv")
    with open(path) as f:
        (row,) = list(csv.DictReader(f))
    rho = [c for c in row if c.startswith("rho_") and not c.endswith(("_ci_low", "_ci_high"))]
    assert sorted(rho) == sorted(f"rho_kadid_{t}" for t in K.KADID10K_LEVELS)
    assert row["tied_with_top"] == "True" and float(row["delta_rho_top_ci_low"]) == 0.0
    assert "Statistically tied" not in capsys.readouterr().out     # one configuration only
    # combined with the seed's set: both, the seed's first (the first run's cache serves the
    # kadid10k levels again)
    assert cli.main(tiny_args(tmp_path / "b", "--mode", "quick", "--degradations", "seed,kadid10k",
                               "--n-inference", "6", "--n-evaluation", "4",
                               "--cache-dir", str(tmp_path / "cache")), user=user) == 0
    (run,) = (tmp_path / "b" / "results").iterdir()
    with open(next(run.glob("results_*.csv"))) as f:
        cols = next(csv.reader(f))
    names = [c[4:] for c in cols if c.startswith("rho_") and not c.endswith(("_ci_low", "_ci_high"))]
    assert names[:2] == ["blur", "noise"] and len(names) == 27


@pytest.mark.parametrize("value", ["kadid", "seed,seed", ","])
def test_bad_degradation_sets_are_usage_errors(tmp_path, monkeypatch, capsys, value):
    from featrank import cli
    from helpers import tiny_args, tiny_config
    user = tiny_config()
    assert cli.main(tiny_args(tmp_path, "--mode", "quick", "--degradations", value), user=user) == 2
    err = capsys.readouterr().err
    assert "seed, kadid10k, fid" in err and "Traceback" not in err


def test_preview_draws_25_rows_of_5_levels(tmp_path, monkeypatch):
    from featrank import cli
    from helpers import tiny_config
    user = tiny_config()
    assert cli.main(["--preview-degradations", "--degradations", "kadid10k", "--results-dir",
                      str(tmp_path), "-q"], user=user) == 0
    with Image.open(tmp_path / "degradation_preview.png") as im:
        w, h = im.size
    tile = 128
    assert h == 25 * (tile + 14) + 4 and w == 6 * tile + 170

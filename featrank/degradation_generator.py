"""Image degradations at increasing severity, deterministic per image and level.

Every function takes an RGB image as (H, W, 3) uint8 (0–255) and returns the
same shape and dtype. Random ones take a `numpy.random.Generator`; the pipeline
derives it from (seed, image content, degradation type, level value) with
`degradation_rng`, so the same image, type and level give the same bytes in any
process, whatever else is computed.

Implementations are library ones: scipy.ndimage (blur, swirl resampling),
Pillow (contrast, resampling, JPEG). KADID-10k's 25 types are in kadid10k.py.

Sets of degradations (`config['degradation_sets']`, `--degradations seed,kadid10k`):
"seed" is config['degradations'] (the seed's five by default), "kadid10k" KADID-10k's 25 types
at their 5 levels, "fid" the FID paper's disturbances (EXTRA_DEGRADATIONS).
"""
from __future__ import annotations

import re
import hashlib
import json
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image, ImageEnhance

from featrank import kadid10k
from featrank.errors import ConfigError
from featrank.image_ops import gaussian_noise, jpeg_compression  # noqa: F401 (part of this module's API)
from featrank.image_ops import to_uint8 as _to_uint8

# Bump when any degradation below changes its output (part of every cache key; a golden-hash
# test in tests/test_bad_input.py fails when the output changes under the same version).
DEGRADATION_VERSION = 3          # 2: KADID-10k's types follow the generator's .m files
                                 # 3: swirl and black_rectangles follow TTUR's FIDvsINC code
GAUSSIAN_TRUNCATE = 4.0            # kernel radius in sigmas (scipy's default)
N_BLACK_RECTANGLES = 5             # FID paper (Heusel et al. 2017, fig. A): 5 rectangles
DOWNSAMPLE_FILTER = Image.Resampling.NEAREST   # no prefilter: high frequencies alias
UPSAMPLE_FILTER = Image.Resampling.BICUBIC
SWIRL_RADIUS = 25 / 32             # TTUR FIDvsINC/main.py: radius 25 on 32-px images (70 on 64-px CelebA)
SWIRL_BORDER = 3                   # lokal_swirl's corr_size
SWIRL_CVAL = 127.5                 # scikit-image's constant border, 0 on TTUR's [-1, 1] scale


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of standard deviation `sigma` pixels (scipy.ndimage, reflect border)."""
    from scipy import ndimage   # imported on use: config validation needs none of it
    out = ndimage.gaussian_filter(img.astype(np.float32), sigma=(sigma, sigma, 0),
                                  mode="reflect", truncate=GAUSSIAN_TRUNCATE)
    return _to_uint8(out)


def blur_plus_contrast(img: np.ndarray, level) -> np.ndarray:
    """Blur with sigma, then contrast factor c in (0, 1] (Pillow ImageEnhance.Contrast:
    blend towards the mean grey level). `level` is the pair (sigma, c)."""
    sigma, contrast = level
    out = gaussian_blur(img, sigma) if sigma > 0 else img
    return np.asarray(ImageEnhance.Contrast(Image.fromarray(out)).enhance(contrast))


def downsample_upsample(img: np.ndarray, factor: float) -> np.ndarray:
    """Shrink by `factor` with nearest-neighbour decimation (no anti-alias filter, so
    aliasing appears), then enlarge back with bicubic interpolation (Pillow)."""
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((max(1, round(w / factor)), max(1, round(h / factor))),
                                        DOWNSAMPLE_FILTER)
    return np.asarray(small.resize((w, h), UPSAMPLE_FILTER))


def pixelation(img: np.ndarray, factor: float) -> np.ndarray:
    """Box-average down by `factor`, nearest-neighbour back up: visible square blocks."""
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((max(1, round(w / factor)), max(1, round(h / factor))),
                                        Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.NEAREST))


def black_rectangles(img: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
    """FID paper disturbance (TTUR FIDvsINC/fidutils.py `apply_mult_rect` / `drop_rect`): 5
    black rectangles of int(size × height) by int(size × width) pixels, each at a uniformly
    random top-left corner (both ends inclusive), drawn one after the other."""
    out = img.copy()
    h, w = img.shape[:2]
    rh, rw = max(1, int(size * h)), max(1, int(size * w))
    for _ in range(N_BLACK_RECTANGLES):
        y, x = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
        out[y:y + rh, x:x + rw] = 0
    return out


def salt_and_pepper(img: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """FID paper disturbance: a fraction `amount` of pixels set to black or white (half each)."""
    out = img.copy()
    hit = rng.random(img.shape[:2]) < amount
    white = rng.random(img.shape[:2]) < 0.5
    out[hit & white] = 255
    out[hit & ~white] = 0
    return out


def swirl(img: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """FID paper disturbance, as TTUR's FIDvsINC makes it (`lokal_swirl` with n_swirls=1,
    positioning="center", directions="random"): scikit-image's swirl mapping (decay length
    radius × ln 2 / 5, so the twist fades to ~1/1000 within `radius`) centred at
    (w // 2, h // 2), radius SWIRL_RADIUS × side (25 px on 32-px CIFAR-10), turning one way or
    the other at random (np.sign(rand - 0.5)); bilinear resampling with scikit-image's
    'constant' border of 0 on TTUR's [-1, 1] scale (mid grey here); then the outer
    SWIRL_BORDER rows and columns (one more at the bottom and right) are put back from the
    original. The direction is drawn once per image, so the levels differ by strength only."""
    from scipy import ndimage
    h, w = img.shape[:2]
    direction = np.sign(rng.random() - 0.5) or 1.0
    radius = SWIRL_RADIUS * min(h, w) / 5 * np.log(2)
    x0, y0 = w // 2, h // 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rho = np.hypot(xx - x0, yy - y0)
    theta = direction * strength * np.exp(-rho / radius) + np.arctan2(yy - y0, xx - x0)
    src_y, src_x = y0 + rho * np.sin(theta), x0 + rho * np.cos(theta)
    out = np.stack([ndimage.map_coordinates(img[..., c].astype(np.float64), [src_y, src_x],
                                            order=1, mode="constant", cval=SWIRL_CVAL)
                    for c in range(3)], -1)
    out = _to_uint8(out)
    b = SWIRL_BORDER
    out[:b], out[-(b + 1):] = img[:b], img[-(b + 1):]
    out[:, :b], out[:, -(b + 1):] = img[:, :b], img[:, -(b + 1):]
    return out


# Random types whose levels share one draw per image (swirl's direction), as KADID-10k's do.
SAME_DRAW_AT_EVERY_LEVEL = {"swirl"}

class DegradationType(NamedTuple):
    """One entry of the registry: what a config['degradations'] `type` names."""
    fn: Callable                 # fn(img, level[, rng]) -> degraded (H, W, 3) uint8
    needs_rng: bool              # fn takes a generator (degradation_rng) as third argument
    direction: int               # +1: a larger level is worse; -1: smaller is worse (JPEG quality)
    check: Callable              # check(level) -> None, or what a level must be


# type -> its DegradationType
DEGRADATIONS = {
    "gaussian_blur": DegradationType(gaussian_blur, False, +1,
                      lambda v: None if _num(v) and v > 0 else "sigma must be a number > 0"),
    "blur_plus_contrast": DegradationType(blur_plus_contrast, False, +1,
                           lambda v: None if (isinstance(v, (list, tuple)) and len(v) == 2
                                              and _num(v[0]) and v[0] >= 0 and _num(v[1])
                                              and 0 < v[1] <= 1)
                           else "a level is a pair [sigma >= 0, contrast in (0, 1]]"),
    "gaussian_noise": DegradationType(gaussian_noise, True, +1,
                       lambda v: None if _num(v) and v > 0 else "sigma (0-255 scale) must be > 0"),
    "downsample_upsample": DegradationType(downsample_upsample, False, +1,
                            lambda v: None if _num(v) and v >= 1 else "factor must be >= 1"),
    "jpeg_compression": DegradationType(jpeg_compression, False, -1,
                         lambda v: None if isinstance(v, int) and 1 <= v <= 100
                         else "quality must be an integer in 1..100"),
    "pixelation": DegradationType(pixelation, False, +1,
                   lambda v: None if _num(v) and v >= 1 else "factor must be >= 1"),
    "black_rectangles": DegradationType(black_rectangles, True, +1,
                         lambda v: None if _num(v) and 0 < v < 1 else "size must be in (0, 1)"),
    "salt_and_pepper": DegradationType(salt_and_pepper, True, +1,
                        lambda v: None if _num(v) and 0 < v < 1 else "amount must be in (0, 1)"),
    "swirl": DegradationType(swirl, True, +1, lambda v: None if _num(v) and v > 0 else "strength must be > 0"),
}

def _kadid_level(v):
    return None if _num(v) else "a level is a number"


for _t, (_fn, _rng) in kadid10k.KADID10K_TYPES.items():
    DEGRADATIONS["kadid_" + _t] = DegradationType(_fn, _rng, +1, _kadid_level)

# The degradation sets of --degradations; "seed" is config['degradations'] itself.
# (levels mild to severe: the generator's values, ordered by kadid10k.severity)
KADID10K = {f"kadid_{t}": {"type": f"kadid_{t}",
                           "levels": sorted(levels, key=lambda v, t=t: kadid10k.severity(t, v))}
            for t, levels in kadid10k.KADID10K_LEVELS.items()}

# Off by default; copy into config['degradations'] to use them, or select the set "fid".
EXTRA_DEGRADATIONS = {
    "rectangles": {"type": "black_rectangles", "levels": [0.05, 0.1, 0.15, 0.2, 0.25]},
    "swirl": {"type": "swirl", "levels": [0.5, 1, 2, 3, 4]},
    "salt_pepper": {"type": "salt_and_pepper", "levels": [0.005, 0.01, 0.02, 0.05, 0.1]},
    "pixelation": {"type": "pixelation", "levels": [2, 3, 4, 6, 8]},
}


DEGRADATION_SETS = ("seed", "kadid10k", "fid")


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def validate_sets(sets) -> None:
    """config['degradation_sets']: a non-empty list of DEGRADATION_SETS names."""
    if (not isinstance(sets, (list, tuple)) or not sets
            or any(s not in DEGRADATION_SETS for s in sets) or len(set(sets)) != len(sets)):
        raise ConfigError(f"degradation sets {sets!r} are not valid: give one or more of "
                          f"{', '.join(DEGRADATION_SETS)}, each once (--degradations seed,kadid10k "
                          "or config['degradation_sets'])")


def select_sets(sets, seed_degradations: dict) -> dict:
    """The degradations of `sets`, in that order: "seed" is `seed_degradations`
    (config['degradations']). Applying it to its own result gives the same result."""
    out = {}
    for name in sets:
        out.update(seed_degradations if name == "seed" else KADID10K if name == "kadid10k"
                   else EXTRA_DEGRADATIONS)
    return out


def _severity(dtype: str, level) -> tuple:
    if dtype.startswith("kadid_"):
        return kadid10k.severity(dtype[len("kadid_"):], level)
    direction = DEGRADATIONS[dtype].direction
    if dtype == "blur_plus_contrast":
        return (level[0], -level[1])
    return (direction * level,)


# names that become folder names in the cache (and nothing else)
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def validate_degradations(degradations: dict) -> None:
    """Raise ConfigError for an unknown type, an out-of-range level, or levels not
    ordered from mild to severe."""
    if not degradations:
        raise ConfigError("config['degradations'] is empty; add at least one degradation")
    for name, spec in degradations.items():
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
            raise ConfigError(f"degradation name {name!r} becomes a cache folder name: use letters, "
                              "digits, '_', '-' and '.' only (no '..', no '/'); rename it in "
                              "config['degradations']")
        if not isinstance(spec, dict):
            raise ConfigError(f"degradation {name!r} must be a dict with 'type' and 'levels'")
        dtype = spec.get("type")
        if dtype not in DEGRADATIONS:
            raise ConfigError(f"degradation {name!r}: unknown type {dtype!r}; choose one of: "
                              f"{', '.join(DEGRADATIONS)}")
        extra = set(spec) - {"type", "levels"}
        if extra:
            raise ConfigError(f"degradation {name!r}: unknown key(s) {sorted(extra)}; "
                              "a degradation has 'type' and 'levels' only")
        levels = spec.get("levels")
        if not isinstance(levels, (list, tuple)) or len(levels) < 1:
            raise ConfigError(f"degradation {name!r}: 'levels' must be a non-empty list")
        check = DEGRADATIONS[dtype].check
        for v in levels:
            err = check(v)
            if err:
                raise ConfigError(f"degradation {name!r} ({dtype}): level {v!r} is out of range: "
                                  f"{err}. Fix config['degradations'][{name!r}]['levels']")
        sev = [_severity(dtype, v) for v in levels]
        if any(not a < b for a, b in zip(sev, sev[1:])):
            order = "decreasing quality" if dtype == "jpeg_compression" else "increasing severity"
            raise ConfigError(f"degradation {name!r}: levels {list(levels)} must be in strictly "
                              f"{order} order (mild to severe): Spearman ranks them by position")


def degradation_rng(seed: int, image_sha256: str, dtype: str, level) -> np.random.Generator:
    """Generator for one (image, degradation, level), independent of processing order."""
    tag = json.dumps([seed, image_sha256, dtype, level]).encode()
    words = np.frombuffer(hashlib.sha256(tag).digest(), dtype=np.uint32)
    return np.random.default_rng(np.random.SeedSequence(words.tolist()))


def apply_degradation(img: np.ndarray, dtype: str, level, seed: int, image_sha256: str) -> np.ndarray:
    """Degrade `img` ((H, W, 3) uint8) with `dtype` at `level`; level None = clean."""
    if level is None:
        return img
    kind = DEGRADATIONS[dtype]
    if kind.needs_rng:
        # KADID-10k types draw the same random numbers at every level (one angle, one set of
        # block places, one noise field scaled by the level), so levels differ only by their
        # parameter; the seed's types keep their per-level draws (cached bytes unchanged)
        key = None if dtype.startswith("kadid_") or dtype in SAME_DRAW_AT_EVERY_LEVEL else level
        return kind.fn(img, level, degradation_rng(seed, image_sha256, dtype, key))
    return kind.fn(img, level)


def preview_collage(images, degradations: dict, seed: int, tile: int = 128) -> Image.Image:
    """A PIL image: one row per degradation (on the images in turn), the clean image then every
    level. `images` are (sha256, (H, W, 3) uint8) pairs."""
    rows = []
    for i, (name, spec) in enumerate(degradations.items()):
        sha, img = images[i % len(images)]
        rows.append((name, ["clean"] + [str(lv) for lv in spec["levels"]],
                     [img] + [apply_degradation(img, spec["type"], lv, seed, sha) for lv in spec["levels"]]))
    return collage(rows, tile)


def collage(rows, tile: int = 128) -> Image.Image:
    """A PIL image of `rows`, (name, tile captions, (H, W, 3) uint8 images): each row's name,
    then its images as `tile`-pixel squares, each under its caption."""
    from PIL import ImageDraw
    width = max(len(images) for _, _, images in rows) * tile + 170
    canvas = Image.new("RGB", (width, len(rows) * (tile + 14) + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, captions, images) in enumerate(rows):
        y = r * (tile + 14) + 14
        draw.text((4, y + tile // 2), name, fill="black")
        for c, (caption, image) in enumerate(zip(captions, images)):
            canvas.paste(Image.fromarray(image).resize((tile, tile)), (170 + c * tile, y))
            draw.text((170 + c * tile + 2, y - 12), caption, fill="black")
    return canvas

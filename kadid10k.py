"""KADID-10k's 25 distortion types, 5 levels each (Lin, Hosu & Saupe, 2019).

The parameter values are those of the KADID-10k / KADIS-700k generator (`imdist_generator.m`,
one row per type in `KADID10K` below); the operations are implemented with numpy, scipy and
Pillow from the published descriptions. Every function takes an RGB image as (H, W, 3) uint8
and returns the same; random ones take a `numpy.random.Generator` (degradation_generator
derives it from seed, image, type and level).

Where this differs from the MATLAB generator, on purpose:

* the generator stretches each input and output to [0, 1] (`mapmm`); that would alter the clean
  image too, so it is not done here;
* `mean_shift` and `contrast_change` pass through "no change" mid-range (shift 0, contrast 0);
  their levels are ordered by the size of the change (ties: the positive value first), so
  severity grows along the list: shifts 0, +0.08, -0.08, +0.15, -0.15; contrast 0, +0.15, +0.3,
  -0.4, -0.6 (positive raises contrast, negative lowers it);
* `quantization` uses evenly spaced levels (the generator uses Otsu thresholds), `denoise` a
  Wiener filter (5x5, known noise power) after the white noise, `color_quantization` Pillow's
  median cut with Floyd-Steinberg dithering (MATLAB's `rgb2ind` with dithering).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

# KADIS-700k generator levels, mild to severe (mean_shift, contrast_change reordered: above)
KADID10K_LEVELS = {
    "gaussian_blur": [0.1, 0.5, 1, 2, 5],                 # sigma, pixels
    "lens_blur": [1, 2, 4, 6, 8],                         # disk radius, pixels
    "motion_blur": [1, 2, 4, 6, 10],                      # half length, pixels
    "color_diffusion": [1, 3, 6, 8, 12],                  # chroma blur amount
    "color_shift": [1, 3, 6, 8, 12],                      # green shift, pixels
    "color_quantization": [64, 48, 32, 16, 8],            # colours
    "color_saturation_1": [0.4, 0.2, 0.1, 0, -0.4],       # HSV saturation factor
    "color_saturation_2": [1, 2, 3, 6, 9],                # Lab chroma factor
    "jpeg2000": [16, 32, 45, 120, 400],                   # compression ratio
    "jpeg": [43, 36, 24, 7, 4],                           # quality
    "white_noise": [0.001, 0.002, 0.003, 0.005, 0.01],    # variance, [0, 1] scale
    "white_noise_color": [0.0001, 0.0005, 0.001, 0.002, 0.003],   # variance in YCbCr
    "impulse_noise": [0.001, 0.005, 0.01, 0.02, 0.03],    # fraction of pixels
    "multiplicative_noise": [0.001, 0.005, 0.01, 0.02, 0.05],     # variance
    "denoise": [0.01, 0.03, 0.05, 0.1, 0.15],             # variance of the noise removed
    "brighten": [0.1, 0.2, 0.4, 0.7, 1.1],
    "darken": [0.05, 0.1, 0.2, 0.4, 0.8],
    "mean_shift": [0, 0.08, -0.08, 0.15, -0.15],          # added to [0, 1] values
    "jitter": [0.05, 0.1, 0.2, 0.5, 1],                   # displacement std, pixels
    "non_eccentricity_patch": [20, 40, 60, 80, 100],      # patches moved
    "pixelate": [0.01, 0.05, 0.1, 0.2, 0.5],              # scale 0.95 - level^0.6
    "quantization": [20, 16, 13, 10, 7],                  # levels per channel
    "color_block": [2, 4, 6, 8, 10],                      # blocks
    "high_sharpen": [1, 2, 3, 6, 12],                     # unsharp-mask amount
    "contrast_change": [0, 0.15, 0.3, -0.4, -0.6],
}
BLOCK = 32                       # color_block side, pixels of a KADID image (384 px high)
PATCH = 16                       # non-eccentricity patch side, idem
KADID_SIDE = 384                 # KADID-10k images are 512x384: sides scale with the image
JITTER_PASSES = 5


def _unit(img):
    return img.astype(np.float64) / 255.0


def _u8(x):
    return np.clip(np.rint(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)


def _per_channel(fn, x):
    return np.stack([fn(x[..., c]) for c in range(x.shape[-1])], axis=-1)


# ---------------------------------------------------------------- colour spaces (sRGB, D65)

_M_RGB2XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                       [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])
_WHITE = np.array([0.95047, 1.0, 1.08883])


def rgb2lab(rgb):
    """sRGB in [0, 1] -> CIE L*a*b* (D65), as skimage.color.rgb2lab."""
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = lin @ _M_RGB2XYZ.T / _WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab2rgb(lab):
    """Inverse of `rgb2lab`, clipped to [0, 1]."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE
    lin = xyz @ np.linalg.inv(_M_RGB2XYZ).T
    lin = np.clip(lin, 0, None)
    return np.clip(np.where(lin > 0.0031308, 1.055 * lin ** (1 / 2.4) - 0.055, 12.92 * lin), 0, 1)


_M_YCC = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
_YCC_OFFSET = np.array([16.0, 128.0, 128.0])


def rgb2ycbcr(rgb):
    """sRGB in [0, 1] -> ITU-R BT.601 YCbCr on the 0-255 scale (MATLAB's rgb2ycbcr)."""
    return rgb @ _M_YCC.T + _YCC_OFFSET


def ycbcr2rgb(ycc):
    return (ycc - _YCC_OFFSET) @ np.linalg.inv(_M_YCC).T


# ---------------------------------------------------------------- blurs

def gaussian_blur(img, sigma):
    """Gaussian kernel of std `sigma`, radius ceil(3 sigma) (MATLAB fspecial), replicate border."""
    from scipy import ndimage
    return _u8(_per_channel(lambda c: ndimage.gaussian_filter(c, sigma, mode="nearest",
                                                              truncate=np.ceil(3 * sigma) / sigma),
                            _unit(img)))


def disk_kernel(radius, oversample=32):
    """MATLAB fspecial('disk', r): each cell weighted by the area of the disk it covers
    (computed on an `oversample`^2 grid per cell), normalised to sum 1."""
    r = int(np.ceil(radius - 0.5))
    offs = (np.arange(oversample) + 0.5) / oversample - 0.5
    grid = np.arange(-r, r + 1)
    sub = (grid[:, None] + offs[None, :]).ravel()
    inside = (sub[:, None] ** 2 + sub[None, :] ** 2) <= radius ** 2
    k = inside.reshape(2 * r + 1, oversample, 2 * r + 1, oversample).mean(axis=(1, 3))
    return k / k.sum()


def _convolve(img, kernel):
    from scipy import ndimage
    return _u8(_per_channel(lambda c: ndimage.convolve(c, kernel, mode="nearest"), _unit(img)))


def lens_blur(img, radius):
    """Convolution with a disk of `radius` pixels (defocus)."""
    return _convolve(img, disk_kernel(radius))


def motion_kernel(half_length, angle, oversample=16):
    """A line of length 2*half_length + 1 pixels through the centre at `angle` radians,
    antialiased by sampling it at `oversample` points per pixel; sums to 1."""
    n = int(np.ceil(half_length)) + 1
    k = np.zeros((2 * n + 1, 2 * n + 1))
    t = np.linspace(-half_length - 0.5, half_length + 0.5, int((2 * half_length + 1) * oversample))
    ys, xs = n - t * np.sin(angle), n + t * np.cos(angle)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (1, 0, fy * (1 - fx)), (0, 1, (1 - fy) * fx),
                      (1, 1, fy * fx)):
        np.add.at(k, (y0 + dy, x0 + dx), w)
    return k / k.sum()


def motion_blur(img, half_length, rng):
    """Linear motion of 2*half_length + 1 pixels in a random direction."""
    return _convolve(img, motion_kernel(half_length, rng.uniform(0, np.pi)))


# ---------------------------------------------------------------- colour

def color_diffusion(img, amount):
    """Chroma (a*, b*) blurred with a Gaussian of std 1.5*amount + 2; lightness L* kept."""
    from scipy import ndimage
    lab = rgb2lab(_unit(img))
    sigma = 1.5 * amount + 2
    for c in (1, 2):
        lab[..., c] = ndimage.gaussian_filter(lab[..., c], sigma, mode="nearest")
    return _u8(lab2rgb(lab))


def _minmax(e):
    lo, hi = e.min(), e.max()
    return (e - lo) / (hi - lo) if hi > lo else e


def color_shift(img, amount, rng):
    """The green channel shifted by `amount` pixels in a random direction, blended in where the
    (smoothed, normalised) gradient magnitude of the grey image is high: colour fringes at edges."""
    from scipy import ndimage
    x = _unit(img)
    grey = x @ np.array([0.2989, 0.5870, 0.1140])
    e = ndimage.gaussian_filter(np.hypot(*np.gradient(grey)), 4, mode="nearest")
    e = _minmax(np.clip(_minmax(e), 0.1, 1))
    lo, hi = np.percentile(e, 1), np.percentile(e, 99)
    e = _minmax(np.clip(e, lo, hi))
    direction = rng.random(2)
    shift = np.rint(direction / np.linalg.norm(direction) * amount).astype(int)
    pad = int(np.abs(shift).max())
    g = np.pad(x[..., 1], pad, mode="symmetric")
    g = np.roll(g, tuple(shift), axis=(0, 1))[pad:pad + x.shape[0], pad:pad + x.shape[1]]
    out = x.copy()
    out[..., 1] = g * e + x[..., 1] * (1 - e)
    return _u8(out)


def color_quantization(img, colors):
    """`colors` colours (Pillow median cut) with Floyd-Steinberg dithering."""
    im = Image.fromarray(img).quantize(colors=int(colors), method=Image.Quantize.MEDIANCUT,
                                       dither=Image.Dither.FLOYDSTEINBERG)
    return np.asarray(im.convert("RGB"))


def color_saturation_1(img, factor):
    """HSV saturation multiplied by `factor` (0 = grey; negative inverts the hue); V kept."""
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
    hsv = rgb_to_hsv(_unit(img))
    hsv[..., 1] *= factor
    if factor < 0:     # matplotlib wants s >= 0: s < 0 is s > 0 at the opposite hue
        hsv[..., 1] = -hsv[..., 1]
        hsv[..., 0] = (hsv[..., 0] + 0.5) % 1.0
    return _u8(hsv_to_rgb(hsv))


def color_saturation_2(img, factor):
    """Lab chroma (a*, b*) multiplied by `factor`; L* kept (up to gamut clipping)."""
    lab = rgb2lab(_unit(img))
    lab[..., 1:] *= factor
    return _u8(lab2rgb(lab))


# ---------------------------------------------------------------- compression

def _roundtrip(img, **save):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, **save)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def jpeg2000(img, ratio):
    """JPEG2000 at compression `ratio`:1 (Pillow's OpenJPEG encoder, one quality layer)."""
    return _roundtrip(img, format="JPEG2000", quality_mode="rates", quality_layers=[float(ratio)])


def jpeg(img, quality):
    """JPEG at `quality` (Pillow, 4:2:0 chroma subsampling): the seed's jpeg_compression."""
    from degradation_generator import jpeg_compression
    return jpeg_compression(img, quality)


# ---------------------------------------------------------------- noise

def white_noise(img, variance, rng):
    """Additive white Gaussian noise of `variance` on the [0, 1] scale (MATLAB imnoise): the
    seed's gaussian_noise with sigma sqrt(variance) on the 0-255 scale."""
    from degradation_generator import gaussian_noise
    return gaussian_noise(img, 255.0 * np.sqrt(variance), rng)


def white_noise_color(img, variance, rng):
    """White Gaussian noise of `variance` (on [0, 1]) added to the YCbCr channels."""
    ycc = rgb2ycbcr(_unit(img)) / 255.0
    ycc = ycc + rng.normal(0.0, np.sqrt(variance), ycc.shape)
    return _u8(ycbcr2rgb(ycc * 255.0))


def impulse_noise(img, amount, rng):
    """Salt and pepper: a fraction `amount` of pixels set to black or white (half each)."""
    out = img.copy()
    p = rng.random(img.shape[:2])
    out[p < amount / 2] = 0
    out[p > 1 - amount / 2] = 255
    return out


def multiplicative_noise(img, variance, rng):
    """Speckle: I + n * I, n white Gaussian of `variance` (MATLAB imnoise 'speckle')."""
    x = _unit(img)
    return _u8(x + x * rng.normal(0.0, np.sqrt(variance), x.shape))


def denoise(img, variance, rng):
    """White noise of `variance`, then removed by a 5x5 Wiener filter told the noise power:
    the smeared, blotchy look of a denoiser."""
    from scipy.signal import wiener
    noisy = _unit(img) + rng.normal(0.0, np.sqrt(variance), img.shape)
    return _u8(_per_channel(lambda c: wiener(c, (5, 5), noise=variance), noisy))


# ---------------------------------------------------------------- brightness

def _tone(x, mid):
    """The quadratic tone curve through (0, 0), (0.5, mid), (1, 1)."""
    return np.clip(x + 4 * (mid - 0.5) * x * (1 - x), 0, 1)


def brighten(img, amount):
    """Tone curve through (0.5, 0.5 + amount/2), applied to RGB and to L*, averaged 2:1."""
    x = _unit(img)
    mid = 0.5 + 0.5 * amount
    lab = rgb2lab(x)
    lab[..., 0] = _tone(lab[..., 0] / 100, mid) * 100
    return _u8((2 * _tone(x, mid) + lab2rgb(lab)) / 3)


def darken(img, amount):
    """Tone curve through (0.5, 0.5 - amount/2) on RGB."""
    return _u8(_tone(_unit(img), 0.5 - amount / 2))


def mean_shift(img, shift):
    """`shift` added to every value on the [0, 1] scale, clipped."""
    return _u8(_unit(img) + shift)


# ---------------------------------------------------------------- spatial

def jitter(img, sigma, rng):
    """Five passes of a random per-pixel displacement (std `sigma` pixels), bicubic resampling."""
    from scipy import ndimage
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    x = img.astype(np.float64)
    for _ in range(JITTER_PASSES):
        dy, dx = rng.normal(0, sigma, (2, h, w))
        x = _per_channel(lambda c: ndimage.map_coordinates(c, [yy - dy, xx - dx], order=3,
                                                           mode="reflect"), x)
        x = np.clip(x, 0, 255)
    return np.rint(x).astype(np.uint8)


def non_eccentricity_patch(img, count, rng):
    """`count` square patches (16 px on a 384-px-high image) copied to a random place within
    half a patch of where they come from."""
    out = img.copy()
    h, w = img.shape[:2]
    p = r = _side(PATCH, h, w)
    if h < p + 2 * r or w < p + 2 * r:
        return out
    for _ in range(int(count)):
        y, x = rng.integers(r, h - p - r + 1), rng.integers(r, w - p - r + 1)
        dy, dx = rng.integers(-r // 2, r // 2 + 1, 2)
        out[y + dy:y + dy + p, x + dx:x + dx + p] = out[y:y + p, x:x + p].copy()
    return out


def pixelate_scale(level) -> float:
    """The generator's scale for a pixelate level: 0.95 - level^0.6."""
    return 0.95 - level ** 0.6


def pixelate(img, level):
    """Block averaging (Pillow BOX) to scale 0.95 - level^0.6, nearest-neighbour back up."""
    from degradation_generator import pixelation
    return pixelation(img, 1.0 / pixelate_scale(level))


def quantization(img, n):
    """Each channel quantised to `n` evenly spaced values."""
    return _u8(np.rint(_unit(img) * (n - 1)) / (n - 1))


def _side(n, h, w):
    return max(2, min(h, w, round(n * min(h, w) / KADID_SIDE)))


def color_block(img, count, rng):
    """`count` uniformly coloured squares of random colours at random places (32 px on a
    384-px-high image). The first blocks are drawn on top, so a level's blocks stay as they
    are at the next level, which adds its own beneath them."""
    out = img.copy()
    h, w = img.shape[:2]
    side = _side(BLOCK, h, w)
    blocks = [(rng.integers(0, h - side + 1), rng.integers(0, w - side + 1),
               rng.integers(0, 256, 3, dtype=np.uint8)) for _ in range(int(count))]
    for y, x, colour in reversed(blocks):
        out[y:y + side, x:x + side] = colour
    return out


def high_sharpen(img, amount):
    """Unsharp mask on L*: L + amount * (L - Gaussian(L, sigma 1)) (MATLAB imsharpen)."""
    from scipy import ndimage
    lab = rgb2lab(_unit(img))
    lum = lab[..., 0]
    lab[..., 0] = np.clip(lum + amount * (lum - ndimage.gaussian_filter(lum, 1.0, mode="nearest")),
                          0, 100)
    return _u8(lab2rgb(lab))


def contrast_change(img, amount):
    """Monotone tone curve (PCHIP) through (0.25, 0.25 - amount/4), (0.5, 0.5),
    (0.75, 0.75 + amount/4): amount > 0 raises contrast, < 0 lowers it, 0 is the identity."""
    from scipy.interpolate import PchipInterpolator
    curve = PchipInterpolator([0, 0.25, 0.5, 0.75, 1],
                              [0, 0.25 - amount / 4, 0.5, 0.75 + amount / 4, 1])
    return _u8(curve(_unit(img)))


# type -> (function, needs rng)
KADID10K_TYPES = {
    "gaussian_blur": (gaussian_blur, False), "lens_blur": (lens_blur, False),
    "motion_blur": (motion_blur, True), "color_diffusion": (color_diffusion, False),
    "color_shift": (color_shift, True), "color_quantization": (color_quantization, False),
    "color_saturation_1": (color_saturation_1, False), "color_saturation_2": (color_saturation_2, False),
    "jpeg2000": (jpeg2000, False), "jpeg": (jpeg, False), "white_noise": (white_noise, True),
    "white_noise_color": (white_noise_color, True), "impulse_noise": (impulse_noise, True),
    "multiplicative_noise": (multiplicative_noise, True), "denoise": (denoise, True),
    "brighten": (brighten, False), "darken": (darken, False), "mean_shift": (mean_shift, False),
    "jitter": (jitter, True), "non_eccentricity_patch": (non_eccentricity_patch, True),
    "pixelate": (pixelate, False), "quantization": (quantization, False),
    "color_block": (color_block, True), "high_sharpen": (high_sharpen, False),
    "contrast_change": (contrast_change, False),
}


def severity(dtype: str, level) -> tuple:
    """Sort key of a level, mild to severe: the parameter's size, ties positive first, and
    for the types whose parameter falls with severity, its negation."""
    falling = {"color_quantization", "color_saturation_1", "jpeg", "quantization"}
    if dtype in ("mean_shift", "contrast_change"):
        return (abs(level), level < 0)
    return (-level,) if dtype in falling else (level,)

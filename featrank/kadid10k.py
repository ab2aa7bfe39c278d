"""KADID-10k's 25 distortion types, 5 levels each (Lin, Hosu & Saupe, 2019).

The parameter values are those of the KADID-10k / KADIS-700k generator (`imdist_generator.m`,
one row per type in `KADID10K_LEVELS` below, in the generator's case order 1..25 and level
order 1..5, which is also how KADID-10k names its files: `I01_05_03.png` is reference 1, type 5,
level 3). The operations follow the generator's `distortions/*.m` files; where a type calls a
MATLAB function (`fspecial`, `imnoise`, `imresize`, `imsharpen`, `spline`) the MATLAB semantics
are ported (each function says which). Every function takes an RGB image as (H, W, 3) uint8 and
returns the same; random ones take a `numpy.random.Generator` (degradation_generator derives it
from seed, image and type).

Where this differs from the MATLAB generator, and why:

* the generator stretches each input and output to [0, 1] (`mapmm`); that would alter the clean
  image too, so it is not done here;
* `denoise` uses a Wiener filter (5x5, known noise power) after the white noise: the generator
  runs MATLAB's pretrained DnCNN, whose weights are not available here;
* `quantization` uses evenly spaced levels (the generator uses Otsu thresholds, `multithresh`);
  `color_quantization` uses Pillow's median cut with Floyd-Steinberg dithering (MATLAB's
  `rgb2ind` with dithering);
* block and patch sizes (`color_block`, `non_eccentricity_patch`) scale with the image from the
  384-px height of KADID-10k's images.

Severity order for the synthetic sweep (`severity`): `mean_shift` and `contrast_change` pass
through "no change" inside their ranges (shift 0; contrast -0.2, where the generator's curve is
the identity), so their levels are ordered by how much the operation changes a value: the mean
|T(x) - x| of their tone map over [0, 1], ties in the generator's order.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from featrank.image_ops import gaussian_noise, jpeg_compression

# imdist_generator.m's level table, case by case, in its order (not reordered: see `severity`)
KADID10K_LEVELS = {
    "gaussian_blur": [0.1, 0.5, 1, 2, 5],                 # sigma, pixels
    "lens_blur": [1, 2, 4, 6, 8],                         # disk radius, pixels
    "motion_blur": [1, 2, 4, 6, 10],                      # line length, pixels (fspecial)
    "color_diffusion": [1, 3, 6, 8, 12],                  # chroma blur amount
    "color_shift": [1, 3, 6, 8, 12],                      # green shift, pixels
    "color_quantization": [64, 48, 32, 16, 8],            # colours
    "color_saturation_1": [0.4, 0.2, 0.1, 0, -0.4],       # HSV saturation factor
    "color_saturation_2": [1, 2, 3, 6, 9],                # Lab chroma factor
    "jpeg2000": [16, 32, 45, 120, 400],                   # compression ratio
    "jpeg": [43, 36, 24, 7, 4],                           # quality
    "white_noise": [0.001, 0.002, 0.003, 0.005, 0.01],    # variance, [0, 1] scale
    "white_noise_color": [0.0001, 0.0005, 0.001, 0.002, 0.003],   # variance in YCbCr
    "impulse_noise": [0.001, 0.005, 0.01, 0.02, 0.03],    # density, per array element
    "multiplicative_noise": [0.001, 0.005, 0.01, 0.02, 0.05],     # variance (uniform)
    "denoise": [0.01, 0.03, 0.05, 0.1, 0.15],             # variance of the noise removed
    "brighten": [0.1, 0.2, 0.4, 0.7, 1.1],
    "darken": [0.05, 0.1, 0.2, 0.4, 0.8],
    "mean_shift": [0.15, 0.08, 0, -0.08, -0.15],          # added to [0, 1] values
    "jitter": [0.05, 0.1, 0.2, 0.5, 1],                   # displacement std, pixels
    "non_eccentricity_patch": [20, 40, 60, 80, 100],      # patches moved
    "pixelate": [0.01, 0.05, 0.1, 0.2, 0.5],              # scale 0.95 - level^0.6
    "quantization": [20, 16, 13, 10, 7],                  # levels per channel
    "color_block": [2, 4, 6, 8, 10],                      # blocks
    "high_sharpen": [1, 2, 3, 6, 12],                     # imsharpen Amount (Radius 3)
    "contrast_change": [0.3, 0.15, 0, -0.4, -0.6],        # curves knots 0.25 -/+ a/4
}
BLOCK = 32                       # color_block side, pixels of a KADID image (384 px high)
PATCH = 16                       # non-eccentricity patch side, idem
KADID_SIDE = 384                 # KADID-10k images are 512x384: sides scale with the image
JITTER_PASSES = 5
SHARPEN_RADIUS = 3               # imsharpenHi.m: imsharpen(I, 'Radius', 3, 'Amount', amount)
CONTRAST_KNOTS = (0.3, 0.5, 0.7)  # curves.m: x positions of the three inner knots


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


def motion_kernel(length, angle_deg):
    """MATLAB `fspecial('motion', length, angle_deg)`: a line `length` pixels long at
    `angle_deg` degrees counter-clockwise, each cell weighted by its distance to the line
    (width 1), normalised to sum 1. Length 1 is the 1x1 identity; length 2 at 0 degrees is
    [0.25, 0.5, 0.25]. A line-by-line port of fspecial.m's 'motion' branch (MATLAB's
    cos(pi/2) = 6e-17 > 0 included, so 90 degrees takes the same path as there)."""
    eps = np.finfo(np.float64).eps
    length = max(1.0, float(length))
    half = (length - 1) / 2
    phi = np.mod(angle_deg, 180) / 180 * np.pi
    cosphi, sinphi = np.cos(phi), np.sin(phi)
    xsign = np.sign(cosphi)
    linewdt = 1
    sx = np.fix(half * cosphi + linewdt * xsign - length * eps)
    sy = np.fix(half * sinphi + linewdt - length * eps)
    x, y = np.meshgrid(np.arange(0, sx + xsign / 2, xsign), np.arange(0, sy + 0.5))
    dist2line = y * cosphi - x * sinphi
    rad = np.sqrt(x ** 2 + y ** 2)
    last = (rad >= half) & (np.abs(dist2line) <= linewdt)
    with np.errstate(divide="ignore", over="ignore"):
        x2last = half - np.abs((x[last] + dist2line[last] * sinphi) / cosphi)
        dist2line[last] = np.sqrt(dist2line[last] ** 2 + x2last ** 2)
    dist2line = linewdt + eps - np.abs(dist2line)
    dist2line[dist2line < 0] = 0
    r, c = dist2line.shape
    h = np.zeros((2 * r - 1, 2 * c - 1))
    h[:r, :c] = np.rot90(dist2line, 2)
    h[r - 1:, c - 1:] = dist2line
    h /= h.sum() + eps * length * length
    return np.flipud(h) if cosphi > 0 else h


def _imfilter_replicate(x, kernel):
    """MATLAB `imfilter(x, kernel, 'replicate')` on one (H, W) plane, for an odd-sized kernel:
    correlation (not convolution) about the centre, borders replicated."""
    from scipy import ndimage
    return ndimage.correlate(x, kernel, mode="nearest")


def motion_blur(img, length, rng):
    """imblurmotion.m: `fspecial('motion', length, angle)` with a random integer angle in
    0..180 degrees (`randi([0, 180])`), applied by `imfilter(..., 'replicate')`."""
    kernel = motion_kernel(length, int(rng.integers(0, 181)))
    return _u8(_per_channel(lambda c: _imfilter_replicate(c, kernel), _unit(img)))


# ---------------------------------------------------------------- colour

def imgaussfilt(x, sigma):
    """MATLAB `imgaussfilt(x, sigma)` on one (H, W) plane: a Gaussian kernel of size
    2*ceil(2 sigma) + 1 (normalised), borders replicated."""
    from scipy import ndimage
    radius = int(np.ceil(2 * sigma))
    return ndimage.gaussian_filter(x, sigma, mode="nearest", radius=radius)


def color_diffusion(img, amount):
    """imcolordiffuse.m -> imcolorblur(I, 1.5*amount + 2, amount): in L*a*b*, the chroma planes
    a*, b* are blurred (imgaussfilt, sigma 1.5*amount + 2) and then multiplied by `amount`;
    L* is kept; back to RGB, truncated to [0, 1]."""
    lab = rgb2lab(_unit(img))
    sigma = 1.5 * amount + 2
    for c in (1, 2):
        lab[..., c] = imgaussfilt(lab[..., c], sigma) * amount
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
    return jpeg_compression(img, quality)


# ---------------------------------------------------------------- noise

def white_noise(img, variance, rng):
    """Additive white Gaussian noise of `variance` on the [0, 1] scale (MATLAB imnoise): the
    seed's gaussian_noise with sigma sqrt(variance) on the 0-255 scale."""
    return gaussian_noise(img, 255.0 * np.sqrt(variance), rng)


def white_noise_color(img, variance, rng):
    """White Gaussian noise of `variance` (on [0, 1]) added to the YCbCr channels."""
    ycc = rgb2ycbcr(_unit(img)) / 255.0
    ycc = ycc + rng.normal(0.0, np.sqrt(variance), ycc.shape)
    return _u8(ycbcr2rgb(ycc * 255.0))


def impulse_noise(img, density, rng):
    """imnoiseimpulse.m -> `imnoise(I, 'salt & pepper', d)`: one uniform draw per array element
    (each channel of each pixel on its own); below d/2 the element becomes 0, in [d/2, d) 1."""
    p = rng.random(img.shape)
    out = img.copy()
    out[p < density / 2] = 0
    out[(p >= density / 2) & (p < density)] = 255
    return out


def multiplicative_noise(img, variance, rng):
    """imnoisemultiplicative.m -> `imnoise(I, 'speckle', v)`: I + sqrt(12 v) * I * (U - 0.5),
    U uniform on [0, 1) per array element (so the noise has variance v), clipped to [0, 1]."""
    x = _unit(img)
    return _u8(x + np.sqrt(12 * variance) * x * (rng.random(x.shape) - 0.5))


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


def imresize_nearest(img, out_h, out_w, scale_h, scale_w):
    """MATLAB `imresize(..., 'nearest')`: output pixel x (1-based) reads input pixel
    floor(u + 0.5) with u = x/scale + 0.5*(1 - 1/scale), clamped to the image (imresize.m's
    `contributions` with the box kernel)."""
    def index(n_out, n_in, scale):
        u = np.arange(1, n_out + 1) / scale + 0.5 * (1 - 1 / scale)
        return np.clip(np.floor(u + 0.5).astype(int), 1, n_in) - 1
    h, w = img.shape[:2]
    return img[index(out_h, h, scale_h)][:, index(out_w, w, scale_w)]


def pixelate(img, level):
    """impixelate.m: `imresize(I, z, 'nearest')` with z = 0.95 - level^0.6 (output
    ceil(z * size)), then `imresize(., size(I), 'nearest')` back: nearest neighbour both ways."""
    z = pixelate_scale(level)
    h, w = img.shape[:2]
    lo_h, lo_w = int(np.ceil(z * h)), int(np.ceil(z * w))
    small = imresize_nearest(img, lo_h, lo_w, z, z)
    return np.ascontiguousarray(imresize_nearest(small, h, w, h / lo_h, w / lo_w))


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
    """imsharpenHi.m -> `imsharpen(I, 'Radius', 3, 'Amount', amount)`: on L* only,
    L + amount * (L - G * L) with G a Gaussian of sigma = Radius = 3 and size
    2*ceil(2*Radius) + 1 = 13 (imsharpen.m), borders replicated, threshold 0; back to RGB,
    truncated to [0, 1]."""
    from scipy import ndimage
    lab = rgb2lab(_unit(img))
    lum = lab[..., 0]
    blurred = ndimage.gaussian_filter(lum, SHARPEN_RADIUS, mode="nearest",
                                      radius=int(np.ceil(2 * SHARPEN_RADIUS)))
    lab[..., 0] = lum + amount * (lum - blurred)
    return _u8(lab2rgb(lab))


def contrast_curve(amount):
    """curves.m as imcontrastc.m calls it: MATLAB `spline` (cubic, not-a-knot) through
    (0, 0), (0.3, 0.25 - a/4), (0.5, 0.5), (0.7, 0.75 + a/4), (1, 1); the identity at a = -0.2.
    Returns a function of [0, 1] values, clipped to [0, 1]."""
    from scipy.interpolate import CubicSpline
    lo, mid, hi = CONTRAST_KNOTS
    spline = CubicSpline([0, lo, mid, hi, 1], [0, 0.25 - amount / 4, 0.5, 0.75 + amount / 4, 1],
                         bc_type="not-a-knot")
    return lambda x: np.clip(spline(x), 0, 1)


def contrast_change(img, amount):
    """imcontrastc.m: `curves(I, [0.25 - amount/4, 0.75 + amount/4])` on RGB values."""
    return _u8(contrast_curve(amount)(_unit(img)))


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


TONE_GRID = np.linspace(0.0, 1.0, 1025)       # where a tone map's change is measured


def tone_change(dtype: str, level) -> float:
    """Mean |T(x) - x| over [0, 1] of the point-wise tone map T of `mean_shift` or
    `contrast_change` at `level`: how much the operation changes a value."""
    x = TONE_GRID
    t = np.clip(x + level, 0, 1) if dtype == "mean_shift" else contrast_curve(level)(x)
    return float(np.mean(np.abs(t - x)))


def severity(dtype: str, level) -> tuple:
    """Sort key of a level, mild to severe. For most types the generator's parameter grows (or,
    for colour counts, saturation factor and quality, falls) with severity. `mean_shift` and
    `contrast_change` go through "no change" inside their range, so their key is what the
    operation does (`tone_change`, rounded to 1e-9), ties in the generator's level order."""
    falling = {"color_quantization", "color_saturation_1", "jpeg", "quantization"}
    if dtype in ("mean_shift", "contrast_change"):
        order = KADID10K_LEVELS[dtype]
        pos = order.index(level) if level in order else len(order)
        return (round(tone_change(dtype, level), 9), pos)
    return (-level,) if dtype in falling else (level,)

"""Full-reference pixel baselines (PSNR, SSIM, MS-SSIM as the IQA literature computes them and
as pytorch_msssim does) and the LPIPS / DISTS distances over their networks' layer outputs.
Pure numpy: one value per image."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d

from featrank.metric_checks import MetricInputError

# ---------------------------------------------------------------- pixel baselines
#
# Full-reference scores of each image against its own clean version, on (n, H, W, 3) pixel
# arrays (uint8 or float, `data_range` 255): one value per image. SSIM and MS-SSIM follow
# pytorch_msssim (Wang et al. 2004 / 2003): an 11-tap Gaussian window of sigma 1.5 applied
# separably with no padding, K = (0.01, 0.03), the mean SSIM per channel, then over channels;
# MS-SSIM over 5 scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), the contrast-
# structure terms of the first 4 and the SSIM of the last, negative values clipped at 0, and a
# 2 x 2 average pool (zero-padded by one on odd sides, padding counted) between scales.

PSNR_MAX_DB = 100.0         # identical images: PSNR is infinite; they score this cap
SSIM_WIN, SSIM_SIGMA, SSIM_K = 11, 1.5, (0.01, 0.03)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _pixels(x, y) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, H, W) float64 of two (n, H, W, 3) image stacks of one shape."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
        raise MetricInputError(f"pixel baselines compare (n, H, W, 3) images of one shape; got "
                               f"{x.shape} and {y.shape}")
    return x.transpose(0, 3, 1, 2), y.transpose(0, 3, 1, 2)


def psnr(x, y, data_range: float = 255.0) -> np.ndarray:
    """Per image: 10 log10(data_range^2 / MSE) over every pixel of R, G and B together, in dB
    (pyiqa's `psnr`, test_y_channel False; its `psnry` is PSNR on luminance); identical images
    score PSNR_MAX_DB."""
    x, y = _pixels(x, y)
    mse = np.mean((x - y) ** 2, axis=(1, 2, 3))
    floor = data_range ** 2 * 10 ** (-PSNR_MAX_DB / 10)
    return 10.0 * np.log10(data_range ** 2 / np.maximum(mse, floor))


def _gauss_window(size: int = SSIM_WIN, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised Gaussian window, in float64 (pytorch_msssim builds it in float32, which
    moves its SSIM by about 1e-8 and its MS-SSIM by about 3e-7)."""
    coords = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(coords ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _filter(a: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation over the last two axes (a side shorter than the window
    is left unfiltered, as pytorch_msssim does)."""
    half = len(win) // 2
    for axis in (a.ndim - 2, a.ndim - 1):
        if a.shape[axis] >= len(win):
            full = correlate1d(a, win, axis=axis, mode="constant")
            a = np.take(full, np.arange(half, a.shape[axis] - half), axis=axis)
    return a


def _ssim_cs(x, y, data_range, win, clamp_cs: bool = False):
    """Per image and channel: the mean SSIM map and the mean contrast-structure map
    (`clamp_cs`: that map clamped at 0 first, as pyiqa's ssim does)."""
    c1, c2 = (SSIM_K[0] * data_range) ** 2, (SSIM_K[1] * data_range) ** 2
    mu1, mu2 = _filter(x, win), _filter(y, win)
    s11 = _filter(x * x, win) - mu1 ** 2
    s22 = _filter(y * y, win) - mu2 ** 2
    s12 = _filter(x * y, win) - mu1 * mu2
    cs_map = (2 * s12 + c2) / (s11 + s22 + c2)
    if clamp_cs:
        cs_map = np.maximum(cs_map, 0.0)
    ssim_map = ((2 * mu1 * mu2 + c1) / (mu1 ** 2 + mu2 ** 2 + c1)) * cs_map
    n, c = x.shape[:2]
    return ssim_map.reshape(n, c, -1).mean(-1), cs_map.reshape(n, c, -1).mean(-1)


def ssim_rgb(x, y, data_range: float = 255.0) -> np.ndarray:
    """Per image: SSIM on R, G and B, the mean over channels of the mean SSIM map
    (pytorch_msssim.ssim with size_average=False). Not the IQA literature's SSIM (`ssim`)."""
    x, y = _pixels(x, y)
    return _ssim_cs(x, y, data_range, _gauss_window())[0].mean(axis=1)


def _avg_pool2(a: np.ndarray) -> np.ndarray:
    """torch's avg_pool2d(kernel 2, stride 2, padding = side % 2), zero padding counted."""
    ph, pw = a.shape[-2] % 2, a.shape[-1] % 2
    a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(ph, ph), (pw, pw)])
    h, w = a.shape[-2] // 2 * 2, a.shape[-1] // 2 * 2
    a = a[..., :h, :w]
    return a.reshape(*a.shape[:-2], h // 2, 2, w // 2, 2).mean(axis=(-3, -1))


def ms_ssim_min_size(win: int = SSIM_WIN) -> int:
    """The smallest side MS-SSIM's four downsamplings allow."""
    return (win - 1) * 2 ** 4 + 1


def ms_ssim_rgb(x, y, data_range: float = 255.0) -> np.ndarray:
    """Per image: multi-scale SSIM on R, G and B (pytorch_msssim.ms_ssim with
    size_average=False). Not the IQA literature's MS-SSIM (`ms_ssim`)."""
    x, y = _pixels(x, y)
    if min(x.shape[-2:]) < ms_ssim_min_size():
        raise MetricInputError(f"ms_ssim_rgb needs images of at least {ms_ssim_min_size()} px a side "
                               f"(four downsamplings of an 11-px window); these are "
                               f"{x.shape[-1]} px: raise config['working_size']")
    win, mcs = _gauss_window(), []
    for i in range(len(MS_SSIM_WEIGHTS)):
        s, cs = _ssim_cs(x, y, data_range, win)
        if i < len(MS_SSIM_WEIGHTS) - 1:
            mcs.append(np.maximum(cs, 0.0))
            x, y = _avg_pool2(x), _avg_pool2(y)
    stack = np.stack(mcs + [np.maximum(s, 0.0)])                  # (5, n, C)
    w = np.asarray(MS_SSIM_WEIGHTS)[:, None, None]
    return np.prod(stack ** w, axis=0).mean(axis=1)



# The IQA literature's SSIM and MS-SSIM as the field's tables compute them: pyiqa's calibrated
# `create_metric("ssim")` and `("ms_ssim")` with their default options (pyiqa/archs/ssim_arch.py,
# default_model_configs.py: downsample=False, test_y_channel=True, color_space "yiq"; the SSIM
# behind pyiqa's benchmark tables, TID2013 SRCC 0.627; ResultsCalibra's official MATLAB values
# are reproduced to 4e-4):
# * luminance only: Y = 0.299 R + 0.587 G + 0.114 B (YIQ's Y, MATLAB's rgb2gray weights),
#   rounded to an integer as pyiqa's preprocess_rgb does; data range 255;
# * no automatic downsampling: ssim.m's f = max(1, round(min(H, W) / 256)) box filter is not
#   applied (pyiqa's default; with it, TID2013's I03 would score 0.6435 instead of the
#   official 0.6993);
# * fspecial('gaussian', 11, 1.5), filter2(..., 'valid'), K = (0.01, 0.03), the mean of the
#   map; pyiqa clamps the contrast-structure map at 0 (ssim.m does not: on heavy noise or
#   strong blur the two differ by up to 1e-3);
# * MS-SSIM (msssim.m, no automatic downsampling): 5 scales, weights (0.0448, 0.2856, 0.3001,
#   0.2363, 0.1333), prod(mcs(1:4) .^ w(1:4)) * ssim(5) ^ w(5), a 2 x 2 average pool between
#   scales, as msssim.m on even sides; on an odd side pyiqa pads a zero on both ends (counted
#   in the mean) where msssim.m mirrors the last pixel (up to 7e-3 apart on a 341 px side).
LUMA = (0.299, 0.587, 0.114)
MS_SSIM_MIN_SIDE = SSIM_WIN * 2 ** (len(MS_SSIM_WEIGHTS) - 1)   # msssim.m: min(M, N) / 16 >= 11


def luminance(x) -> np.ndarray:
    """(n, 1, H, W) float64 integer-valued luma of an (n, H, W, 3) stack of 0-255 pixels."""
    x = np.asarray(x, np.float64)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise MetricInputError(f"luminance needs (n, H, W, 3) images; got {x.shape}")
    return np.round(x @ np.asarray(LUMA))[:, None]


def _check_pixels(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
        raise MetricInputError(f"pixel baselines compare (n, H, W, 3) images of one shape; got "
                               f"{x.shape} and {y.shape}")
    return luminance(x), luminance(y)


def ssim(x, y) -> np.ndarray:
    """Per image: the IQA literature's SSIM (Wang et al.'s on luminance, as pyiqa's calibrated
    `ssim` computes it by default: no automatic downsampling; see the notes above) of
    (n, H, W, 3) 0-255 images."""
    x, y = _check_pixels(x, y)
    if min(x.shape[-2:]) < SSIM_WIN:
        raise MetricInputError(f"ssim needs images of at least {SSIM_WIN} px a side; these are "
                               f"{x.shape[-1]} px: raise config['working_size']")
    return _ssim_cs(x, y, 255.0, _gauss_window(), clamp_cs=True)[0][:, 0]


def ms_ssim(x, y) -> np.ndarray:
    """Per image: the IQA literature's MS-SSIM (Wang et al.'s msssim.m on luminance, as pyiqa's
    `ms_ssim` computes it; see the notes above) of (n, H, W, 3) 0-255 images."""
    x, y = _check_pixels(x, y)
    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        raise MetricInputError(f"ms_ssim needs images of at least {MS_SSIM_MIN_SIDE} px a side "
                               f"(msssim.m: 5 scales of an 11-px window); these are "
                               f"{x.shape[-1]} px: raise config['working_size']")
    win, mcs = _gauss_window(), []
    for i in range(len(MS_SSIM_WEIGHTS)):
        s, cs = _ssim_cs(x, y, 255.0, win, clamp_cs=True)
        if i < len(MS_SSIM_WEIGHTS) - 1:
            mcs.append(cs[:, 0])
            x, y = _avg_pool2(x), _avg_pool2(y)
    w = np.asarray(MS_SSIM_WEIGHTS)
    return np.prod(np.stack(mcs) ** w[:-1, None], axis=0) * s[:, 0] ** w[-1]


# ------------------------------------------------------- network baselines (LPIPS, DISTS)
# The networks run in perceptual.py; these are the distances over their layer outputs,
# each list a network's layers, float (n, C, h, w) per layer (DISTS's first is the image).

LPIPS_EPS = 1e-10            # lpips.normalize_tensor
DISTS_C1 = DISTS_C2 = 1e-6   # DISTS_pytorch.DISTS.forward


def lpips_from_features(fx: list, fy: list, lin: list) -> np.ndarray:
    """Per image: LPIPS (Zhang et al. 2018) as lpips.LPIPS.forward computes it: each position's
    channel vector divided by its L2 norm (+1e-10), the squared difference weighted by the
    layer's linear weights `lin[k]` (a 1x1 convolution without bias), averaged over positions,
    summed over layers."""
    total = 0.0
    for a, b, w in zip(fx, fy, lin, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != len(w):
            raise MetricInputError(f"lpips: layer outputs {a.shape} and {b.shape} do not match "
                                   f"{len(w)} linear weights")
        inv_a = 1.0 / (np.sqrt(np.einsum("nchw,nchw->nhw", a, a)) + LPIPS_EPS)
        inv_b = 1.0 / (np.sqrt(np.einsum("nchw,nchw->nhw", b, b)) + LPIPS_EPS)
        d = a * inv_a[:, None]              # one temporary, squared in place
        d -= b * inv_b[:, None]
        d *= d
        total = total + np.einsum("nchw,c->n", d, np.asarray(w, np.float64)) / (a.shape[2] * a.shape[3])
    return np.asarray(total, dtype=np.float64)


def dists_from_features(fx: list, fy: list, alpha, beta) -> np.ndarray:
    """Per image: DISTS (Ding et al. 2020) as DISTS_pytorch.DISTS.forward computes it: per layer
    and channel, a structure term (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1) weighted by alpha
    and a texture term (2 cov_xy + c2) / (var_x + var_y + c2) weighted by beta (population
    moments over positions; alpha and beta divided by their joint sum); DISTS = 1 - the sum."""
    alpha, beta = np.asarray(alpha, np.float64).ravel(), np.asarray(beta, np.float64).ravel()
    w_sum = alpha.sum() + beta.sum()
    dist1 = dist2 = 0.0
    start = 0
    for a, b in zip(fx, fy, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        c = a.shape[1]
        if a.shape != b.shape or a.ndim != 4 or start + c > alpha.size:
            raise MetricInputError(f"dists: layer outputs {a.shape} and {b.shape} do not match "
                                   f"{alpha.size} weights")
        al, be = alpha[start:start + c] / w_sum, beta[start:start + c] / w_sum
        start += c
        xm, ym = a.mean(axis=(2, 3)), b.mean(axis=(2, 3))
        s1 = (2 * xm * ym + DISTS_C1) / (xm ** 2 + ym ** 2 + DISTS_C1)
        dist1 = dist1 + s1 @ al
        xv = ((a - xm[:, :, None, None]) ** 2).mean(axis=(2, 3))
        yv = ((b - ym[:, :, None, None]) ** 2).mean(axis=(2, 3))
        cov = (a * b).mean(axis=(2, 3)) - xm * ym
        s2 = (2 * cov + DISTS_C2) / (xv + yv + DISTS_C2)
        dist2 = dist2 + s2 @ be
    if start != alpha.size:
        raise MetricInputError(f"dists: {start} channels for {alpha.size} weights")
    return 1.0 - (dist1 + dist2)


"""Gaussian statistics of a folder, and the FID between two of them, as pytorch-fid's CLI does.

    python main.py --save-stats FOLDER OUT.npz      # python -m pytorch_fid --save-stats FOLDER OUT.npz
    python main.py --fid-stats A B                  # python -m pytorch_fid A B

A and B are `.npz` files holding `mu` and `sigma` (ours or pytorch-fid's) or folders of images.
The network defaults to `inception_fid` (pytorch-fid's FID Inception-V3, pool3, 2048-d); any
backbone and one layer can be given instead (`--backbone dinov2_vitl14` takes its `norm` CLS
token, FD-DINOv2's feature). Images are read as they are (no working-size crop, no
degradation; the files pytorch-fid reads, decoded as it decodes them), resized and
normalised by the backbone's own rule, and the layer's output is
pooled (GAP; tokens by the spec's `vit_pool`) in float32, then the statistics in float64:
mu = mean, sigma = np.cov(rowvar=False), as pytorch-fid computes them.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from featrank.errors import UsageError
from featrank.run_plan import (ExtractionSettings, check_input_size, check_output_file,
                      layers_of, spec_of)

log = logging.getLogger("iqm")

DEFAULT_BACKBONE = "inception_fid"
# pytorch_fid.fid_score.IMAGE_EXTENSIONS: the files it reads, directly in the folder
PYTORCH_FID_EXTENSIONS = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")


def image_files(folder: str) -> list[str]:
    """The files pytorch-fid reads (`path.glob("*.ext")`): directly in `folder`, not in
    subfolders, with its lower-case extensions; sorted. What it leaves out is warned about."""
    entries = sorted(os.listdir(folder))
    names = [n for n in entries if n.endswith(PYTORCH_FID_EXTENSIONS)
             and os.path.isfile(os.path.join(folder, n))]
    upper = [n for n in entries if n.lower().endswith(PYTORCH_FID_EXTENSIONS) and n not in names]
    if upper:
        log.warning("%d file(s) in %s are not read, as pytorch-fid does not read them (an "
                    "upper-case extension or a folder), e.g. %s; rename them to compare with it",
                    len(upper), folder, upper[0])
    if any(os.path.isdir(os.path.join(folder, n)) for n in entries):
        log.warning("%s has subfolders; their images are not read (as pytorch-fid does)", folder)
    return [os.path.join(folder, n) for n in names]


@dataclass
class Statistics:
    """mu (d,) and sigma (d, d) of `n` images' features, and where they came from."""
    mu: np.ndarray
    sigma: np.ndarray
    n: int
    backbone: str
    layer: str
    weights: str


def folder_statistics(ext: ExtractionSettings, folder: str, backbone: str = DEFAULT_BACKBONE,
                      layer=None, progress: bool = True) -> Statistics:
    """Statistics of the images in `folder` (`image_files`) at `layer` (an index or a module
    path; default the spec's statistics layer) of `backbone`, with the extraction settings
    `ext` (run_plan.ExtractionSettings)."""
    from featrank.backbones import build_backbone, resolve_weights
    from featrank.dataset import DatasetError
    from featrank.distance_metrics import gaussian_stats
    from featrank.cache_fill import check_module_paths
    from featrank.feature_extraction import folder_activations
    from featrank.representations import gap, prefix_tokens
    spec = spec_of(backbone)
    check_input_size(backbone, ext.image_size)
    path, vit_pool = spec.stats
    if layer is not None:
        path, vit_pool = layers_of(backbone, [layer])[0][1], "mean"
    if path is None:
        raise UsageError(f"{backbone} has no default statistics layer; pass one with --layers "
                         f"(python main.py --list-layers {backbone})")
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder!r} is not a folder; pass a folder of images or a .npz of "
                           "statistics")
    files = image_files(folder)
    if len(files) < 2:
        raise DatasetError(f"{len(files)} image(s) ({', '.join(PYTORCH_FID_EXTENSIONS)}) in "
                           f"{folder!r}; statistics need at least two")
    prov = resolve_weights(backbone, ext.weights, ext.seed)
    bb = build_backbone(backbone, ext.weights, ext.seed, ext.image_size, provenance=prov)
    check_module_paths(backbone, [(None, path)], ext.image_size, bb.module)
    act = folder_activations(bb, files, path, batch_size=ext.batch_size, device=ext.device,
                             num_workers=ext.num_workers, threads=ext.extraction_threads,
                             progress=progress)
    prefix = prefix_tokens(act.shape[1:], bb.input_size, spec.patch)
    mu, sigma = gaussian_stats(gap(act, vit_pool, prefix))
    log.info("statistics of %d images in %s: %s %s (%d-d), weights %s", len(files), folder,
             backbone, path, mu.size, prov.label)
    return Statistics(mu, sigma, len(files), backbone, path, prov.label)


def save_stats(ext: ExtractionSettings, folder: str, out: str, backbone: str = DEFAULT_BACKBONE,
               layer=None, progress: bool = True) -> Statistics:
    """Write pytorch-fid's `.npz` (mu, sigma) of `folder` to `out`."""
    check_output_file(out, "--save-stats output", ".npz")    # numpy would add .npz otherwise
    stats = folder_statistics(ext, folder, backbone, layer, progress)
    tmp = out[:-4] + ".tmp.npz"
    np.savez_compressed(tmp, mu=stats.mu, sigma=stats.sigma)
    os.replace(tmp, out)
    return stats


def load_stats(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of a `.npz` written by --save-stats or by pytorch-fid, checked: numeric,
    finite, mu a vector, sigma square, symmetric and positive semi-definite (to rounding)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            mu, sigma = f["mu"][:], f["sigma"][:]
    except KeyError:
        raise UsageError(f"{path!r} holds no 'mu' and 'sigma'; give a .npz written by "
                         "--save-stats or `python -m pytorch_fid --save-stats`") from None
    except Exception as exc:
        raise UsageError(f"cannot read statistics {path!r} ({type(exc).__name__}); give a .npz "
                         "written by --save-stats, or a folder of images") from None
    check_stats(path, mu, sigma)
    return mu.astype(np.float64), sigma.astype(np.float64)


def check_stats(path: str, mu: np.ndarray, sigma: np.ndarray) -> None:
    """UsageError naming the file and what is wrong with its (mu, sigma)."""
    def bad(what):
        return UsageError(f"statistics {path!r}: {what}; give a .npz written by --save-stats or "
                          "`python -m pytorch_fid --save-stats`")
    if mu.dtype.kind not in "fiu" or sigma.dtype.kind not in "fiu":
        raise bad(f"mu and sigma must be numeric arrays (found {mu.dtype} and {sigma.dtype})")
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise bad(f"mu must be a vector and sigma its square covariance (found {mu.shape} and {sigma.shape})")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise bad("mu or sigma holds NaN or inf")
    sigma = sigma.astype(np.float64)
    scale = max(float(np.abs(sigma).max()), 1e-300)
    if np.abs(sigma - sigma.T).max() > 1e-6 * scale:
        raise bad("sigma is not symmetric")
    if np.linalg.eigvalsh((sigma + sigma.T) / 2).min() < -1e-6 * scale:
        raise bad("sigma is not positive semi-definite (a covariance has no negative eigenvalue)")


def fid_between(ext: ExtractionSettings, a: str, b: str, backbone: str = DEFAULT_BACKBONE,
                layer=None, progress: bool = True) -> float:
    """FID between `a` and `b`, each a statistics `.npz` or a folder of images."""
    from featrank.distance_metrics import MetricInputError, frechet_distance

    def stats(p):
        if os.path.isfile(p):
            return load_stats(p)
        if os.path.isdir(p):
            s = folder_statistics(ext, p, backbone, layer, progress)
            return s.mu, s.sigma
        raise UsageError(f"--fid-stats {p!r}: no such file or folder; give a .npz of statistics "
                         "or a folder of images")
    (mu1, s1), (mu2, s2) = stats(a), stats(b)
    try:
        return frechet_distance(mu1, s1, mu2, s2)
    except MetricInputError as exc:
        raise UsageError(f"--fid-stats {a} {b}: {exc}; compute both with the same backbone and "
                         "layer") from None


def command(ext: ExtractionSettings, save=None, between=None, backbone=None, layers=None,
            progress=True) -> str:
    """`--save-stats FOLDER OUT.npz` (save) or `--fid-stats A B` (between) for `backbone` (default inception_fid)
    and at most one of `layers` (default its stats layer): the line main.py prints."""
    if layers and len(layers) != 1:
        raise UsageError(f"--save-stats/--fid-stats take one layer, got --layers {' '.join(layers)}")
    net = {"backbone": backbone or DEFAULT_BACKBONE, "layer": (layers or [None])[0]}
    if save:
        s = save_stats(ext, *save, net["backbone"], net["layer"], progress=progress)
        return (f"wrote {save[1]}: mu {s.mu.shape}, sigma {s.sigma.shape} of {s.n} images "
                f"({s.backbone} {s.layer}; weights: {s.weights})")
    return f"FID: {fid_between(ext, *between, **net, progress=progress)}"

"""The metrics' vocabulary: every metric's row in one table, `METRICS` (what it needs, which
way it points, its parameters and the factory of its reference object), and the paired
feature-space distances. Pure numpy.

The maths lives one family a module, below this one:
  two_sample_metrics  FID, KID, CMMD, RBF-MMD, Mahalanobis, negative log-likelihood, and their
                      forms over linear kernel blocks (Gram spaces of wide layers)
  neighbour_metrics   precision, recall, density, coverage, realism, energy distance, sliced
                      Wasserstein, FD-infinity
  pixel_metrics       the pixel baselines (PSNR, SSIM, MS-SSIM) and the LPIPS/DISTS distances
  metric_checks       the input checks and MetricInputError
Their public names are re-exported here, so `distance_metrics.fid(ref, ev)` is the one call a
user needs. Adding a metric is a function (or a `*Reference` class with `prepare` and
`score_prepared`) in its family's module and a row in METRICS; evaluation.py only looks the row
up (`reference`), and config validation, the grid and the CSV read the table.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np

from featrank.metric_checks import MetricInputError, check_features, positive
from featrank.neighbour_metrics import (
    CDIST_MAX_DIM, DENSITY_COVERAGE_K, FD_INF_POINTS, PRDC_K, PRECISION_RECALL_K, REALISM_EPS,
    REALISM_K, REALISM_PERCENTILE, SW_PROJECTIONS, EnergyReference, FDInfReference, Geometry,
    PRDCReference, RealismReference, SlicedWassersteinReference, density_coverage,
    energy_distance, euclidean, fd_inf, kth_neighbour, precision_recall, random_projections,
    realism_scores, sliced_wasserstein)
from featrank.pixel_metrics import (
    DISTS_C1, DISTS_C2, LPIPS_EPS, LUMA, MS_SSIM_MIN_SIDE, MS_SSIM_WEIGHTS, PSNR_MAX_DB, SSIM_K,
    SSIM_SIGMA, SSIM_WIN, dists_from_features, lpips_from_features, luminance, ms_ssim,
    ms_ssim_min_size, ms_ssim_rgb, psnr, ssim, ssim_rgb)
from featrank.two_sample_metrics import (
    CMMD_SCALE, CMMD_SIGMA, KID_COEF0, KID_DEGREE, KID_SUBSET_SIZE, CMMDReference, FIDReference,
    KernelReference, KIDReference, MMDRBFReference, ModelMetricReference, cmmd, cmmd_from_kernel,
    fid, fid_from_kernel, frechet_distance, gaussian_stats, kid, kid_from_kernel, mahalanobis,
    median_bandwidth, mmd_rbf, mmd_rbf_from_kernel, neg_loglik, unit_kernel, unit_rows)


@dataclass(frozen=True)
class ReferenceInputs:
    """What a metric's reference object is built from, for one feature space (evaluation.py
    makes one per space and metric): explicit reference `rows` (n_ref, d), or the space's linear
    kernel `kernel_rr` (n_ref, n_ref) when it is held as kernel blocks (then `rows` is None);
    the space's width `dim`; the fitted distribution `model` (model metrics); the `seed` of any
    sampling; `params`, the metric's parameters (its row's defaults with config's overrides);
    and `geometry()`, the space's shared neighbour_metrics.Geometry."""
    rows: np.ndarray | None
    kernel_rr: np.ndarray | None
    dim: int
    model: object
    seed: int
    params: dict
    geometry: Callable[[], Geometry]


def _kernel_or(explicit):
    """The factory of a two-sample metric: KernelReference on a kernel space, else `explicit`."""
    def make(metric: str, x: ReferenceInputs):
        if x.kernel_rr is None:
            return explicit(x)
        p = x.params
        return KernelReference(metric, x.kernel_rr, x.dim, kid_degree=p.get("degree", KID_DEGREE),
                               kid_gamma=p.get("gamma"), kid_coef0=p.get("coef0", KID_COEF0),
                               cmmd_sigma=p.get("sigma", CMMD_SIGMA), cmmd_scale=p.get("scale", CMMD_SCALE),
                               kid_subsets=p.get("subsets"),
                               kid_subset_size=p.get("subset_size", KID_SUBSET_SIZE), seed=x.seed)
    return make


_fid_reference = _kernel_or(lambda x: FIDReference(x.rows))


def _prdc(metric: str, x: ReferenceInputs):
    return PRDCReference(metric, geometry=x.geometry())


# What each metric needs, as data (evaluation.py builds the grid and the feasibility
# report from it):
#   model       needs a fitted distribution model (distribution_modeling.MODELS)
#   covariance  the model must define a covariance (a Mahalanobis distance)
#   forms       the feature forms it runs on: explicit rows and/or linear kernel blocks
#   unit_rows   the pipeline scores L2-normalised rows (CMMD: the reference embeds images
#               on the unit sphere, and its sigma = 10 is set for that scale)
#   per_image   it gives every evaluation image a score of its own (its prepared state is
#               the per-image values, and the set's score is their mean)
#   paired      it compares each evaluation image with its own clean version (full-reference)
#   higher_is_better  the score rises as the sets agree (precision, recall, density,
#               coverage); the ranking turns rho around so that positive always means "the
#               score worsens as the images do"
#   geometry    it reads Euclidean distances to the reference rows: one Geometry of a space
#               serves every such metric (its k-NN radii and distances computed once)
#   params      its parameters and their published defaults (config['kid'|'cmmd'] override
#               them; `metric_params`)
#   reference   the factory of its reference object, (metric, ReferenceInputs) -> an object
#               with prepare(evaluation input) and score_prepared(state, idx=None); None for
#               the pixel baselines, which baselines.py and perceptual.py compute
#   pixels      a pixel baseline's per-image function over (n, H, W, 3) images (pixel_metrics)
_TWO = {"model": False, "covariance": False, "forms": ("explicit", "kernel"), "per_image": False,
        "unit_rows": False, "paired": False, "higher_is_better": False, "geometry": False,
        "params": {}, "reference": None, "pixels": None}
_MODEL = {**_TWO, "model": True, "per_image": True,
          "reference": lambda metric, x: ModelMetricReference(x.model, metric)}
_FIDELITY = {**_TWO, "higher_is_better": True, "geometry": True, "reference": _prdc}
_PAIRED = {**_TWO, "per_image": True, "paired": True,
           "reference": lambda metric, x: PairedReference(metric)}
_PIXELS = {**_PAIRED, "forms": ("pixels",), "reference": None}
METRICS = {
    "fid": {**_TWO, "reference": _fid_reference},
    "kid": {**_TWO, "params": {"subsets": None, "subset_size": KID_SUBSET_SIZE, "degree": KID_DEGREE,
                               "gamma": None, "coef0": KID_COEF0},
            "reference": _kernel_or(lambda x: KIDReference(
                x.rows, x.params["subsets"], x.params["subset_size"], x.params["degree"],
                x.params["gamma"], x.params["coef0"], x.seed))},
    "cmmd": {**_TWO, "unit_rows": True, "params": {"sigma": CMMD_SIGMA, "scale": CMMD_SCALE},
             "reference": _kernel_or(lambda x: CMMDReference(x.rows, x.params["sigma"],
                                                             x.params["scale"]))},
    "mmd_rbf": {**_TWO, "reference": _kernel_or(lambda x: MMDRBFReference(x.rows))},
    "mahalanobis": {**_MODEL, "covariance": True},
    "neg_loglik": _MODEL,
    "precision": _FIDELITY,
    "recall": _FIDELITY,
    "density": _FIDELITY,
    "coverage": _FIDELITY,
    "fd_inf": {**_TWO, "reference": lambda metric, x: FDInfReference(_fid_reference("fid", x), x.seed)},
    "energy": {**_TWO, "geometry": True,
               "reference": lambda metric, x: EnergyReference(geometry=x.geometry())},
    "sliced_wasserstein": {**_TWO, "forms": ("explicit",),
                           "reference": lambda metric, x: SlicedWassersteinReference(x.rows, seed=x.seed)},
    "paired_l2": _PAIRED,
    "paired_cosine": _PAIRED,
    "realism": {**_TWO, "per_image": True, "higher_is_better": True, "geometry": True,
                "reference": lambda metric, x: RealismReference(geometry=x.geometry())},
    # full-reference baselines on the pixels (baselines.py computes them; config['baselines'])
    "psnr": {**_PIXELS, "higher_is_better": True, "pixels": psnr},
    "ssim": {**_PIXELS, "higher_is_better": True, "pixels": ssim},
    "ms_ssim": {**_PIXELS, "higher_is_better": True, "pixels": ms_ssim},
    "ssim_rgb": {**_PIXELS, "higher_is_better": True, "pixels": ssim_rgb},
    "ms_ssim_rgb": {**_PIXELS, "higher_is_better": True, "pixels": ms_ssim_rgb},
    # with networks of their own (perceptual.py runs them; the distances are below)
    "lpips": _PIXELS,
    "dists": _PIXELS,
    "stlpips_vgg": _PIXELS,          # shift-tolerant LPIPS (Ghildyal & Liu 2022), lpips_from_features
    "stlpips_alex": _PIXELS,
}


class MetricNames(Sequence):
    """The names of the METRICS rows that `test` accepts, in the table's order, read when used:
    a row added to METRICS (a new metric, a test's fixture) is in every list it belongs to."""

    def __init__(self, test: Callable[[dict], bool]):
        self._test = test

    def _names(self) -> tuple:
        return tuple(m for m, r in METRICS.items() if self._test(r))

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __eq__(self, other) -> bool:
        return isinstance(other, (tuple, list, MetricNames)) and tuple(self) == tuple(other)

    __hash__ = None

    def __repr__(self) -> str:
        return repr(self._names())


PIXEL_METRICS = MetricNames(lambda r: r["forms"] == ("pixels",))
FEATURE_METRICS = MetricNames(lambda r: r["forms"] != ("pixels",))
TWO_SAMPLE_METRICS = MetricNames(lambda r: not r["model"])
MODEL_METRICS = MetricNames(lambda r: r["model"])
# the metrics that read Euclidean distances to the reference rows (one Geometry a space)
GEOMETRY_METRICS = MetricNames(lambda r: r["geometry"])
# The parameters of config['kid'] and config['cmmd'] and their published defaults (the rows'
# `params`); config.py's sections hold only what a user overrides (`metric_params`).
METRIC_DEFAULTS = {m: r["params"] for m, r in METRICS.items() if r["params"]}
METRIC_PARAMS = {section: tuple(d) for section, d in METRIC_DEFAULTS.items()}
PIXEL_FUNCTIONS = {m: r["pixels"] for m, r in METRICS.items() if r["pixels"] is not None}

NEEDS_COORDINATES = {       # why a metric with forms ("explicit",) does not run on kernel blocks
    "sliced_wasserstein": "sliced_wasserstein projects rows on random directions and needs "
                          "coordinates; this space is held as kernel blocks",
}


def orientation(metric: str) -> int:
    """+1 when the score grows as the evaluation set departs from the reference (distances),
    -1 when it falls (precision, recall, density, coverage): rho times this is "worsens"."""
    return -1 if METRICS[metric]["higher_is_better"] else 1


def metric_params(section: str, overrides: dict) -> dict:
    """config['kid'|'cmmd'] (the keys a user sets) over the row's published defaults: every
    parameter."""
    return {**METRICS[section]["params"], **overrides}


def reference_for(metric: str, inputs: ReferenceInputs):
    """The reference object of `metric` over one feature space: its row's factory."""
    make = METRICS[metric]["reference"]
    if make is None:
        raise MetricInputError(f"{metric} is a pixel baseline: baselines.py scores it on images")
    return make(metric, inputs)


def validate_metric_params(section: str, params: dict) -> None:
    """Raise MetricInputError naming an unknown key or a bad value of config['kid'|'cmmd']
    (defaults filled in for the keys it leaves out)."""
    if not isinstance(params, dict):
        raise MetricInputError(f"config['{section}'] = {params!r} must be a dict of parameters "
                               f"({', '.join(METRIC_PARAMS[section])}); {{}} keeps the defaults")
    extra = set(params) - set(METRIC_PARAMS[section])
    if extra:
        raise MetricInputError(f"config['{section}'] has unknown key(s) {sorted(extra)}; valid keys: "
                               f"{', '.join(METRIC_PARAMS[section])}")
    p = metric_params(section, params)
    if section == "kid":
        if p.get("subsets") is not None and (not isinstance(p["subsets"], int) or p["subsets"] < 1):
            raise MetricInputError(f"kid subsets = {p['subsets']!r} must be None or an integer >= 1")
        if not isinstance(p.get("subset_size"), int) or p["subset_size"] < 2:
            raise MetricInputError(f"kid subset_size = {p.get('subset_size')!r} must be an integer >= 2")
        if not isinstance(p.get("degree"), int) or p["degree"] < 1:
            raise MetricInputError(f"kid degree = {p.get('degree')!r} must be an integer >= 1")
        if p.get("gamma") is not None and not positive(p["gamma"]):
            raise MetricInputError(f"kid gamma = {p['gamma']!r} must be None (1/dim) or a positive number")
        if not (isinstance(p.get("coef0"), (int, float)) and np.isfinite(p["coef0"])):
            raise MetricInputError(f"kid coef0 = {p.get('coef0')!r} must be a number")
    else:
        for key in ("sigma", "scale"):
            if not positive(p.get(key)):
                raise MetricInputError(f"config['cmmd']['{key}'] = {p.get(key)!r} must be a positive number")


class PerImage:
    """A score with one value per evaluation image: `prepare` gives the values, the set's score
    is their mean (over the rows `idx` when resampled)."""

    def prepare(self, values):
        return np.asarray(values, np.float64)

    def score_prepared(self, state, idx=None) -> float:
        return float(np.mean(state if idx is None else state[idx]))

    def score(self, values) -> float:
        return self.score_prepared(self.prepare(values))


@dataclass
class PairedKernel:
    """The paired metrics' input on a space held as kernel blocks, per image: its row's squared
    norm, its clean row's, and the inner product of the two."""
    ev_sq: np.ndarray
    clean_sq: np.ndarray
    cross: np.ndarray


class PairedReference(PerImage):
    """Full-reference distance of each evaluation image to its own clean version, in the
    feature space: `paired_l2` the Euclidean distance of the rows (on Gram rows the Frobenius
    distance of the Gram matrices, the style loss of Gatys et al.), `paired_cosine` one minus
    their cosine. Per-image values; the set's score is their mean. `prepare` takes (rows,
    clean rows) of the same images in the same order, or a PairedKernel."""

    def __init__(self, metric: str):
        if metric not in ("paired_l2", "paired_cosine"):
            raise MetricInputError(f"{metric} is not a paired metric")
        self.metric = metric

    def prepare(self, pair):
        if isinstance(pair, PairedKernel):
            return self._from_kernel(pair)
        ev, clean = pair
        ev, clean = check_features(ev, "evaluation", 1), check_features(clean, "clean evaluation", 1)
        if ev.shape != clean.shape:
            raise MetricInputError(f"paired metrics need the same images degraded and clean: "
                                   f"{ev.shape} vs {clean.shape}")
        if self.metric == "paired_l2":
            return np.sqrt(np.sum((ev - clean) ** 2, axis=1))
        norms = np.linalg.norm(ev, axis=1) * np.linalg.norm(clean, axis=1)
        if np.any(norms == 0):
            raise MetricInputError("paired_cosine: some rows are all zeros")
        return 1.0 - np.sum(ev * clean, axis=1) / norms

    def _from_kernel(self, k: PairedKernel) -> np.ndarray:
        ev_sq, clean_sq, cross = (np.asarray(v, np.float64) for v in (k.ev_sq, k.clean_sq, k.cross))
        if not (ev_sq.shape == clean_sq.shape == cross.shape) or ev_sq.ndim != 1:
            raise MetricInputError(f"paired metrics need one value per image: {ev_sq.shape}, "
                                   f"{clean_sq.shape}, {cross.shape}")
        if self.metric == "paired_l2":    # |a - b|^2 = |a|^2 + |b|^2 - 2 <a, b>, >= 0 exactly
            return np.sqrt(np.maximum(ev_sq + clean_sq - 2.0 * cross, 0.0))
        norms = np.sqrt(ev_sq * clean_sq)
        if np.any(norms == 0):
            raise MetricInputError("paired_cosine: some rows are all zeros")
        return 1.0 - cross / norms


def paired_l2(ev, clean) -> float:
    """Mean Euclidean distance between each row of `ev` and the same row of `clean`."""
    return PairedReference("paired_l2").score((ev, clean))


def paired_cosine(ev, clean) -> float:
    """Mean of 1 - cos(row of `ev`, same row of `clean`)."""
    return PairedReference("paired_cosine").score((ev, clean))


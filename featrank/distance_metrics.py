"""Distances between a reference feature set and an evaluation set. Pure numpy.

All functions take `(n, d)` float arrays, reference first, compute in float64 and
return a Python float. Scoring many evaluation sets against one reference is the
common case (every degradation level), so each metric has a `*Reference` class
that precomputes the reference side once; `fid(ref, ev)` etc. are the one-shot
forms and give identical results.

The `*_from_kernel` functions compute the same two-sample metrics from linear
kernel blocks (K_rr = R R^T, K_re = R E^T, K_ee = E E^T): the sample-space route
for features too large to hold explicitly (Gram matrices of wide layers, where
<G_i, G_j> = ||F_i^T F_j||_F^2 needs no C x C matrix).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.ndimage import correlate1d
from scipy.spatial.distance import cdist

CMMD_SIGMA = 10.0     # RBF bandwidth used by the CMMD reference (Jayasumana et al., CVPR 2024)
CMMD_SCALE = 1000.0   # the CMMD reference reports MMD^2 x 1000
KID_DEGREE, KID_COEF0 = 3, 1.0   # Binkowski et al. 2018 (KID), torch-fidelity defaults
KID_SUBSET_SIZE = 1000
PRECISION_RECALL_K = 3      # Kynkaanniemi et al. 2019
DENSITY_COVERAGE_K = 5      # Naeem et al. 2020 (the prdc package's recommended k)
SW_PROJECTIONS = 50         # POT's sliced_wasserstein_distance default
FD_INF_POINTS = 15          # Chong & Forsyth 2020 (and dgm-eval's compute_FD_infinity)
REALISM_K = 3               # Kynkaanniemi et al. 2019's realism score: nhood_sizes=[3]
REALISM_PERCENTILE = 50     # its reference balls above this percentile of radii are pruned
REALISM_EPS = 1e-5          # ManifoldEstimator's eps
PRDC_K = {"precision": PRECISION_RECALL_K, "recall": PRECISION_RECALL_K,
          "density": DENSITY_COVERAGE_K, "coverage": DENSITY_COVERAGE_K, "realism": REALISM_K}
# The parameters of config['kid'] and config['cmmd'] and their defaults, the published values
# above; config.py's sections hold only what a user overrides (`metric_params`).
METRIC_DEFAULTS = {"kid": {"subsets": None, "subset_size": KID_SUBSET_SIZE, "degree": KID_DEGREE,
                           "gamma": None, "coef0": KID_COEF0},
                   "cmmd": {"sigma": CMMD_SIGMA, "scale": CMMD_SCALE}}
METRIC_PARAMS = {section: tuple(d) for section, d in METRIC_DEFAULTS.items()}


# The metrics that read Euclidean distances to the reference rows: one Geometry of a space serves
# them all (its k-NN radii and each evaluation set's distances computed once).
GEOMETRY_METRICS = ("precision", "recall", "density", "coverage", "realism", "energy")


class MetricInputError(ValueError):
    """Features unusable for a metric (NaN, too few rows, mismatched dims …)."""


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
_TWO = {"model": False, "covariance": False, "forms": ("explicit", "kernel"), "per_image": False,
        "unit_rows": False, "paired": False, "higher_is_better": False}
_MODEL = {**_TWO, "model": True, "per_image": True}
_FIDELITY = {**_TWO, "higher_is_better": True}
_PAIRED = {**_TWO, "per_image": True, "paired": True}
METRICS = {
    "fid": _TWO,
    "kid": _TWO,
    "cmmd": {**_TWO, "unit_rows": True},
    "mmd_rbf": _TWO,
    "mahalanobis": {**_MODEL, "covariance": True},
    "neg_loglik": _MODEL,
    "precision": _FIDELITY,
    "recall": _FIDELITY,
    "density": _FIDELITY,
    "coverage": _FIDELITY,
    "fd_inf": _TWO,
    "energy": _TWO,
    "sliced_wasserstein": {**_TWO, "forms": ("explicit",)},
    "paired_l2": _PAIRED,
    "paired_cosine": _PAIRED,
    "realism": {**_TWO, "per_image": True, "higher_is_better": True},
    # full-reference baselines on the pixels (baselines.py computes them; config['baselines'])
    "psnr": {**_PAIRED, "forms": ("pixels",), "higher_is_better": True},
    "ssim": {**_PAIRED, "forms": ("pixels",), "higher_is_better": True},
    "ms_ssim": {**_PAIRED, "forms": ("pixels",), "higher_is_better": True},
    "ssim_rgb": {**_PAIRED, "forms": ("pixels",), "higher_is_better": True},
    "ms_ssim_rgb": {**_PAIRED, "forms": ("pixels",), "higher_is_better": True},
    # with networks of their own (perceptual.py runs them; the distances are below)
    "lpips": {**_PAIRED, "forms": ("pixels",)},
    "dists": {**_PAIRED, "forms": ("pixels",)},
}
PIXEL_METRICS = tuple(m for m, r in METRICS.items() if r["forms"] == ("pixels",))
FEATURE_METRICS = tuple(m for m in METRICS if m not in PIXEL_METRICS)
NEEDS_COORDINATES = {       # why a metric with forms ("explicit",) does not run on kernel blocks
    "sliced_wasserstein": "sliced_wasserstein projects rows on random directions and needs "
                          "coordinates; this space is held as kernel blocks",
}


def orientation(metric: str) -> int:
    """+1 when the score grows as the evaluation set departs from the reference (distances),
    -1 when it falls (precision, recall, density, coverage): rho times this is "worsens"."""
    return -1 if METRICS[metric]["higher_is_better"] else 1
TWO_SAMPLE_METRICS = tuple(m for m, r in METRICS.items() if not r["model"])
MODEL_METRICS = tuple(m for m, r in METRICS.items() if r["model"])


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0


def metric_params(section: str, overrides: dict) -> dict:
    """config['kid'|'cmmd'] (the keys a user sets) over METRIC_DEFAULTS: every parameter."""
    return {**METRIC_DEFAULTS[section], **overrides}


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
        if p.get("gamma") is not None and not _positive(p["gamma"]):
            raise MetricInputError(f"kid gamma = {p['gamma']!r} must be None (1/dim) or a positive number")
        if not (isinstance(p.get("coef0"), (int, float)) and np.isfinite(p["coef0"])):
            raise MetricInputError(f"kid coef0 = {p.get('coef0')!r} must be a number")
    else:
        for key in ("sigma", "scale"):
            if not _positive(p.get(key)):
                raise MetricInputError(f"config['cmmd']['{key}'] = {p.get(key)!r} must be a positive number")


def check_features(x, name: str = "features", min_rows: int = 2) -> np.ndarray:
    """float64 (n, d) copy-free view of `x`, or MetricInputError saying what is wrong."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise MetricInputError(f"{name}: expected a 2-D (n, d) array, got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise MetricInputError(f"{name}: {x.shape[0]} row(s); at least {min_rows} are needed")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise MetricInputError(f"{name}: {bad} row(s) contain NaN or inf")
    return x


def _check_pair(ref, ev):
    ref, ev = check_features(ref, "reference"), check_features(ev, "evaluation")
    if ref.shape[1] != ev.shape[1]:
        raise MetricInputError(f"dimension mismatch: reference has {ref.shape[1]} features, "
                               f"evaluation has {ev.shape[1]}")
    return ref, ev


def _check_dim(ev, dim: int) -> np.ndarray:
    ev = check_features(ev, "evaluation")
    if ev.shape[1] != dim:
        raise MetricInputError(f"dimension mismatch: reference has {dim} features, "
                               f"evaluation has {ev.shape[1]}")
    return ev


# ---------------------------------------------------------------------------- FID

def gaussian_stats(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (np.cov, ddof=1) of (n, d) rows."""
    x = check_features(x)
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def _cov_factor(x: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """A (d, r) with A A^T = cov(x, ddof=1), r = min(n - 1, d) columns at most."""
    n, d = x.shape
    xc = (x - mu).T / np.sqrt(n - 1)               # (d, n): xc xc^T = cov
    if n - 1 <= d:
        return xc
    w, v = linalg.eigh(xc @ xc.T)
    return v * np.sqrt(np.clip(w, 0.0, None))


def _psd_factor(sigma: np.ndarray) -> np.ndarray:
    w, v = linalg.eigh(sigma)
    return v * np.sqrt(np.clip(w, 0.0, None))


def _frechet(dmu_sq: float, tr1: float, tr2: float, nuclear: float) -> float:
    """||mu1-mu2||^2 + tr S1 + tr S2 - 2 tr (S1 S2)^{1/2}, with tr (S1 S2)^{1/2} = ||A^T B||_*
    for any S1 = A A^T, S2 = B B^T (the eigenvalues of S1 S2 are the squared singular
    values of A^T B), so no matrix square root and no complex numbers are needed.
    The result is >= 0 mathematically; rounding below zero is clipped when it is within
    1e-9 of the traces."""
    value = dmu_sq + tr1 + tr2 - 2.0 * nuclear
    if value < 0:
        if value < -1e-9 * max(tr1 + tr2, 1e-300):
            raise ArithmeticError(f"Fréchet distance {value} is negative beyond rounding")
        value = 0.0
    return float(value)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6),
    exact for singular covariances. For pytorch-fid `.npz` statistics."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise MetricInputError(f"statistics shapes differ: mu {mu1.shape} vs {mu2.shape}, "
                               f"sigma {s1.shape} vs {s2.shape}")
    a, b = _psd_factor(s1), _psd_factor(s2)
    nuclear = linalg.svdvals(a.T @ b).sum()
    return _frechet(float(np.sum((mu1 - mu2) ** 2)), float(np.trace(s1)), float(np.trace(s2)), nuclear)


class FIDReference:
    """Reference side of FID, precomputed once: mean, a covariance factor A, tr S1."""

    def __init__(self, ref):
        ref = check_features(ref, "reference")
        self.dim = ref.shape[1]
        self.mu = ref.mean(axis=0)
        self.factor = _cov_factor(ref, self.mu)
        self.trace = float(np.sum(self.factor ** 2))

    def prepare(self, ev):
        """Per-evaluation-set state: the inner products of the rows relative to the reference
        mean (n2, n2), and their projection on the reference factor (r, n2): all that FID
        needs, also for resampled rows, whatever the dimension."""
        ev = _check_dim(ev, self.dim)
        z = ev - self.mu
        return z @ z.T, self.factor.T @ z.T

    def score_prepared(self, state, idx=None) -> float:
        """FID of the evaluation rows `idx` (all when None; repeats allowed)."""
        zz, pz = state
        if idx is not None:
            zz, pz = zz[np.ix_(idx, idx)], pz[:, idx]
        n2 = len(zz)
        m_sq = float(zz.mean())                  # |mu2 - mu1|^2
        tr2 = (float(np.trace(zz)) - n2 * m_sq) / (n2 - 1)
        proj = (pz - pz.mean(axis=1, keepdims=True)) / np.sqrt(n2 - 1)   # A^T B
        nuclear = linalg.svdvals(proj).sum()
        return _frechet(max(m_sq, 0.0), self.trace, max(tr2, 0.0), nuclear)

    def score(self, ev) -> float:
        return self.score_prepared(self.prepare(ev))


def fid(ref, ev) -> float:
    """Fréchet Inception Distance between the rows of `ref` (n1, d) and `ev` (n2, d),
    with np.cov (ddof=1) statistics, exact in float64 (also when n < d)."""
    ref, ev = _check_pair(ref, ev)
    return FIDReference(ref).score(ev)


# ---------------------------------------------------------------------------- MMDs

def _mmd2_unbiased(k_xx_offdiag_sum, k_yy, k_xy, n: int) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3): within-set terms exclude the diagonal."""
    m = k_yy.shape[0]
    return float(k_xx_offdiag_sum / (n * (n - 1))
                 + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
                 - 2.0 * k_xy.sum() / (n * m))


def _poly(a, b, gamma, degree, coef0):
    return (a @ b.T * gamma + coef0) ** degree


class KIDReference:
    """Kernel Inception Distance (Binkowski et al. 2018): polynomial-kernel MMD^2,
    k(x, y) = (gamma x.y + coef0)^degree, gamma = 1/d by default.

    subsets=None: the deterministic unbiased estimate over the full sets.
    subsets=k: torch-fidelity's convention: k subsets of min(n1, n2, subset_size) rows,
    drawn without replacement by numpy.random.RandomState(seed), alternately from the
    reference and the evaluation set; the mean of the subset estimates."""

    def __init__(self, ref, subsets=None, subset_size=KID_SUBSET_SIZE, degree=KID_DEGREE,
                 gamma=None, coef0=KID_COEF0, seed=0):
        self.ref = check_features(ref, "reference")
        self.dim = self.ref.shape[1]
        self.gamma = 1.0 / self.dim if gamma is None else float(gamma)
        self.degree, self.coef0, self.subsets, self.subset_size, self.seed = \
            degree, coef0, subsets, subset_size, seed
        if subsets is None:
            k = _poly(self.ref, self.ref, self.gamma, degree, coef0)
            self.k_rr_offdiag = float(k.sum() - np.trace(k))

    def _kern(self, a, b):
        return _poly(a, b, self.gamma, self.degree, self.coef0)

    def prepare(self, ev):
        ev = _check_dim(ev, self.dim)
        if self.subsets is not None:
            return ev
        return self._kern(self.ref, ev), self._kern(ev, ev)

    def score_prepared(self, state, idx=None) -> float:
        if self.subsets is None:
            k_re, k_ee = state
            if idx is not None:
                k_re, k_ee = k_re[:, idx], k_ee[np.ix_(idx, idx)]
            return _mmd2_unbiased(self.k_rr_offdiag, k_ee, k_re, len(self.ref))
        ev = state if idx is None else state[idx]
        m = min(len(self.ref), len(ev), self.subset_size)
        rng = np.random.RandomState(self.seed)
        values = []
        for _ in range(self.subsets):
            r = self.ref[rng.choice(len(self.ref), m, replace=False)]
            e = ev[rng.choice(len(ev), m, replace=False)]
            k_rr = self._kern(r, r)
            values.append(_mmd2_unbiased(k_rr.sum() - np.trace(k_rr), self._kern(e, e),
                                         self._kern(r, e), m))
        return float(np.mean(values))

    def score(self, ev) -> float:
        return self.score_prepared(self.prepare(ev))


def kid(ref, ev, subsets=None, subset_size=KID_SUBSET_SIZE, degree=KID_DEGREE, gamma=None,
        coef0=KID_COEF0, seed=0) -> float:
    """KID between `ref` (n1, d) and `ev` (n2, d); see KIDReference."""
    ref, ev = _check_pair(ref, ev)
    return KIDReference(ref, subsets, subset_size, degree, gamma, coef0, seed).score(ev)


def _sq_dists(a, b, a_sq, b_sq):
    """Squared Euclidean distances between the rows of a and b, given their squared norms."""
    return np.maximum(a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T), 0.0)


class _RBFReference:
    """Shared by CMMD and RBF-MMD: the Gaussian kernel blocks of an evaluation set."""

    def prepare(self, ev):
        ev = _check_dim(ev, self.ref.shape[1])
        ev_sq = np.sum(ev ** 2, axis=1)
        return (np.exp(-self.gamma * _sq_dists(self.ref, ev, self.ref_sq, ev_sq)),
                np.exp(-self.gamma * _sq_dists(ev, ev, ev_sq, ev_sq)))

    @staticmethod
    def _resampled(state, idx):
        k_re, k_ee = state
        return (k_re, k_ee) if idx is None else (k_re[:, idx], k_ee[np.ix_(idx, idx)])

    def score(self, ev) -> float:
        return self.score_prepared(self.prepare(ev))


class CMMDReference(_RBFReference):
    """CMMD (Jayasumana et al., CVPR 2024): Gaussian RBF kernel exp(-||x-y||^2 / (2 sigma^2)),
    the biased MMD^2 estimator with diagonal terms kept, times `scale`. Rows are used as
    given: the reference feeds L2-normalised CLIP embeddings; normalising is the
    representation's job, not the metric's."""

    def __init__(self, ref, sigma=CMMD_SIGMA, scale=CMMD_SCALE):
        self.ref = check_features(ref, "reference")
        self.gamma, self.scale = 1.0 / (2.0 * sigma ** 2), scale
        self.ref_sq = np.sum(self.ref ** 2, axis=1)
        self.k_rr = float(np.exp(-self.gamma * _sq_dists(self.ref, self.ref, self.ref_sq, self.ref_sq)).mean())

    def score_prepared(self, state, idx=None) -> float:
        k_re, k_ee = self._resampled(state, idx)
        return float(self.scale * (self.k_rr + k_ee.mean() - 2.0 * k_re.mean()))


def cmmd(ref, ev, sigma=CMMD_SIGMA, scale=CMMD_SCALE) -> float:
    """CMMD between `ref` (n1, d) and `ev` (n2, d); see CMMDReference."""
    ref, ev = _check_pair(ref, ev)
    return CMMDReference(ref, sigma, scale).score(ev)


def median_bandwidth(sq_dists: np.ndarray) -> float:
    """Median heuristic: the median of the pairwise distances among distinct reference rows."""
    iu = np.triu_indices(sq_dists.shape[0], k=1)
    sigma = float(np.sqrt(np.median(sq_dists[iu])))
    if sigma <= 0:
        raise MetricInputError("median heuristic: the reference rows are (mostly) identical, "
                               "bandwidth 0; give a numeric sigma")
    return sigma


class MMDRBFReference(_RBFReference):
    """Unbiased RBF-kernel MMD^2 with bandwidth from the median heuristic on the
    *reference* rows, so every evaluation set is measured on the same scale."""

    def __init__(self, ref, sigma="median"):
        self.ref = check_features(ref, "reference")
        self.ref_sq = np.sum(self.ref ** 2, axis=1)
        d_rr = _sq_dists(self.ref, self.ref, self.ref_sq, self.ref_sq)
        self.sigma = median_bandwidth(d_rr) if sigma == "median" else float(sigma)
        self.gamma = 1.0 / (2.0 * self.sigma ** 2)
        k = np.exp(-self.gamma * d_rr)
        self.k_rr_offdiag = float(k.sum() - np.trace(k))

    def score_prepared(self, state, idx=None) -> float:
        k_re, k_ee = self._resampled(state, idx)
        return _mmd2_unbiased(self.k_rr_offdiag, k_ee, k_re, len(self.ref))


def mmd_rbf(ref, ev, sigma="median") -> float:
    """RBF-MMD^2 between `ref` (n1, d) and `ev` (n2, d); see MMDRBFReference."""
    ref, ev = _check_pair(ref, ev)
    return MMDRBFReference(ref, sigma).score(ev)


# ---------------------------------------------------------------- model-based metrics

class ModelMetricReference:
    """mahalanobis or neg_loglik under a fitted model: per-row values, then their mean.
    `prepare` takes explicit rows (n, d) or a distribution_modeling.KernelQuery."""

    def __init__(self, model, metric: str):
        self.model, self.metric = model, metric

    def prepare(self, ev):
        if isinstance(ev, np.ndarray) or not hasattr(ev, "k_xr"):
            ev = check_features(ev, "evaluation", min_rows=1)
        if self.metric == "mahalanobis":
            values = self.model.mahalanobis(ev)
        else:
            values = -self.model.log_density(ev)
        return np.asarray(values, dtype=np.float64)

    def score_prepared(self, state, idx=None) -> float:
        return float(np.mean(state if idx is None else state[idx]))

    def score(self, ev) -> float:
        return self.score_prepared(self.prepare(ev))


def mahalanobis(model, ev) -> float:
    """Mean over rows of the Mahalanobis distance of `ev` (n, d) to a fitted model
    (distribution_modeling): for a Gaussian sqrt((x-mu)^T S^-1 (x-mu)); for a GMM the
    responsibility-weighted distance to its components."""
    return ModelMetricReference(model, "mahalanobis").score(ev)


def neg_loglik(model, ev) -> float:
    """Minus the mean log-density of the rows of `ev` (n, d) under a fitted model."""
    return ModelMetricReference(model, "neg_loglik").score(ev)


# ---------------------------------------------------------------- unit rows

def unit_rows(x) -> np.ndarray:
    """Each row divided by its L2 norm (CMMD's embedding space)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise MetricInputError(f"{int(np.sum(norms == 0))} row(s) are all zeros and cannot be "
                               "L2-normalised")
    return x / norms


def unit_kernel(k_ab, a_sq, b_sq) -> np.ndarray:
    """The linear kernel of L2-normalised rows from the kernel of the rows:
    K_ab / sqrt(|a|^2 |b|^2)."""
    a_sq, b_sq = np.asarray(a_sq, np.float64), np.asarray(b_sq, np.float64)
    if np.any(a_sq <= 0) or np.any(b_sq <= 0):
        raise MetricInputError("some rows are all zeros and cannot be L2-normalised")
    return np.asarray(k_ab, np.float64) / np.sqrt(a_sq[:, None] * b_sq[None, :])


# ---------------------------------------------------------------- from linear kernels

class KernelReference:
    """Two-sample metrics from linear kernel blocks, reference side precomputed once:
    `KernelReference(metric, K_rr, dim)`, then `prepare((K_re, K_ee))` per evaluation set and
    `score_prepared(state, idx)`. Equal to the explicit metrics on the rows behind the kernels,
    KID subsets included (the same subsets as KIDReference, drawn from the same seed)."""

    def __init__(self, metric: str, k_rr, dim: int, sigma="median", kid_degree=KID_DEGREE,
                 kid_gamma=None, kid_coef0=KID_COEF0, cmmd_sigma=CMMD_SIGMA, cmmd_scale=CMMD_SCALE,
                 kid_subsets=None, kid_subset_size=KID_SUBSET_SIZE, seed=0):
        self.metric, self.k_rr, self.n = metric, np.asarray(k_rr, np.float64), len(k_rr)
        self.r_sq = np.diag(self.k_rr).copy()
        if metric == "fid":
            row = self.k_rr.mean(axis=0)
            self.row_mean, self.all_mean = row, self.k_rr.mean()
            self.tr1 = float(np.trace(self.k_rr) - self.n * self.all_mean) / (self.n - 1)
        elif metric == "kid":
            g = 1.0 / dim if kid_gamma is None else kid_gamma
            self.kern = lambda k: (k * g + kid_coef0) ** kid_degree  # noqa: E731
            self.subsets, self.subset_size, self.seed = kid_subsets, kid_subset_size, seed
            self.p_rr = self.kern(self.k_rr)
            self.offdiag = float(self.p_rr.sum() - np.trace(self.p_rr))
        elif metric in ("cmmd", "mmd_rbf"):
            d_rr = _sq_from_kernel(self.k_rr, self.r_sq, self.r_sq)
            if metric == "cmmd":
                self.gamma, self.scale = 1.0 / (2.0 * cmmd_sigma ** 2), cmmd_scale
                self.k_rr_mean = float(np.exp(-self.gamma * d_rr).mean())
            else:
                s = median_bandwidth(d_rr) if sigma == "median" else float(sigma)
                self.gamma = 1.0 / (2.0 * s ** 2)
                k = np.exp(-self.gamma * d_rr)
                self.offdiag = float(k.sum() - np.trace(k))
        else:
            raise MetricInputError(f"{metric} is not a two-sample metric")

    def prepare(self, blocks):
        k_re, k_ee = (np.asarray(b, np.float64) for b in blocks)
        if self.metric == "fid":
            return k_re, k_ee
        if self.metric == "kid":
            return self.kern(k_re), self.kern(k_ee)
        e_sq = np.diag(k_ee)
        return (np.exp(-self.gamma * _sq_from_kernel(k_re, self.r_sq, e_sq)),
                np.exp(-self.gamma * _sq_from_kernel(k_ee, e_sq, e_sq)))

    def _kid_subsets(self, p_re, p_ee) -> float:
        """KIDReference's subset estimate on kernel blocks: the same draws from the same seed."""
        n_e = p_ee.shape[0]
        m = min(self.n, n_e, self.subset_size)
        rng = np.random.RandomState(self.seed)
        values = []
        for _ in range(self.subsets):
            r = rng.choice(self.n, m, replace=False)
            e = rng.choice(n_e, m, replace=False)
            k_rr = self.p_rr[np.ix_(r, r)]
            values.append(_mmd2_unbiased(k_rr.sum() - np.trace(k_rr), p_ee[np.ix_(e, e)],
                                         p_re[np.ix_(r, e)], m))
        return float(np.mean(values))

    def score_prepared(self, state, idx=None) -> float:
        a, b = state
        if idx is not None:
            a, b = a[:, idx], b[np.ix_(idx, idx)]
        if self.metric == "kid" and self.subsets is not None:
            return self._kid_subsets(a, b)
        if self.metric == "kid" or self.metric == "mmd_rbf":
            return _mmd2_unbiased(self.offdiag, b, a, self.n)
        if self.metric == "cmmd":
            return float(self.scale * (self.k_rr_mean + b.mean() - 2.0 * a.mean()))
        # FID: ||A^T B||_* with A, B the centred rows / sqrt(n-1) is the nuclear norm of the
        # doubly centred cross-kernel
        n2 = b.shape[0]
        e_row = b.mean(axis=0)
        col = a.mean(axis=0)                       # mean over reference rows, per evaluation row
        kre_c = a - a.mean(axis=1, keepdims=True) - col[None, :] + a.mean()
        dmu_sq = self.all_mean + b.mean() - 2.0 * a.mean()
        tr2 = float(np.trace(b) - n2 * e_row.mean()) / (n2 - 1)
        nuclear = linalg.svdvals(kre_c).sum() / np.sqrt((self.n - 1) * (n2 - 1))
        return _frechet(max(float(dmu_sq), 0.0), self.tr1, tr2, float(nuclear))

    def score(self, blocks) -> float:
        return self.score_prepared(self.prepare(blocks))


def fid_from_kernel(k_rr, k_re, k_ee) -> float:
    """FID from linear kernel blocks (n1 x n1, n1 x n2, n2 x n2): equal to `fid` on the rows
    that produced them."""
    return KernelReference("fid", k_rr, 1).score((k_re, k_ee))


def kid_from_kernel(k_rr, k_re, k_ee, dim: int, degree=KID_DEGREE, gamma=None, coef0=KID_COEF0) -> float:
    """Deterministic (full-set) KID from linear kernel blocks; `dim` sets gamma = 1/dim."""
    return KernelReference("kid", k_rr, dim, kid_degree=degree, kid_gamma=gamma,
                           kid_coef0=coef0).score((k_re, k_ee))


def _sq_from_kernel(k_ab, a_sq, b_sq):
    return np.maximum(a_sq[:, None] + b_sq[None, :] - 2.0 * k_ab, 0.0)


def cmmd_from_kernel(k_rr, k_re, k_ee, sigma=CMMD_SIGMA, scale=CMMD_SCALE) -> float:
    return KernelReference("cmmd", k_rr, 1, cmmd_sigma=sigma, cmmd_scale=scale).score((k_re, k_ee))


def mmd_rbf_from_kernel(k_rr, k_re, k_ee, sigma="median") -> float:
    return KernelReference("mmd_rbf", k_rr, 1, sigma=sigma).score((k_re, k_ee))


# ---------------------------------------------------------------- nearest neighbours and distances
#
# Precision, recall, density, coverage, the realism score and the energy distance need Euclidean
# distances: from explicit rows directly when they are narrow (scipy's cdist, exact to
# rounding), else by one GEMM as |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, the formula of sklearn's
# euclidean_distances that the prdc package uses (cdist does not use BLAS: on 51,360-dim Gram
# rows it took 48 of a 600-image run's 54 scoring seconds); from linear kernel blocks the same way.
# The reference-side quantities (k-NN radii, the mean distance) are computed in row blocks, so
# no n_ref x n_ref matrix is formed for explicit rows; a kernel space already holds K_rr.

_BLOCK = 256
CDIST_MAX_DIM = 64          # narrower rows: scipy's cdist; wider: the GEMM formula


def euclidean(a: np.ndarray, b: np.ndarray, a_sq=None, b_sq=None, same: bool = False) -> np.ndarray:
    """Euclidean distances between the rows of `a` and `b` (see the note above); `same`: a is
    b, so the diagonal is exactly 0."""
    if a.shape[1] <= CDIST_MAX_DIM:
        return cdist(a, b)
    a_sq = np.einsum("ij,ij->i", a, a) if a_sq is None else a_sq
    b_sq = np.einsum("ij,ij->i", b, b) if b_sq is None else b_sq
    d = _dists(a @ b.T, a_sq, b_sq)
    if same:
        np.fill_diagonal(d, 0.0)
    return d


def _dists(k_ab, a_sq, b_sq) -> np.ndarray:
    """Euclidean distances from the inner products and squared norms (sklearn's formula)."""
    return np.sqrt(_sq_from_kernel(k_ab, a_sq, b_sq))


def kth_neighbour(d: np.ndarray, k: int) -> np.ndarray:
    """Per row of a distance block whose rows include the point itself: the distance to its
    k-th nearest neighbour (the (k+1)-th smallest value, as the prdc package computes it)."""
    if d.shape[1] < k + 1:
        raise MetricInputError(f"k = {k} nearest neighbours need at least {k + 1} rows; got {d.shape[1]}")
    return np.partition(d, k, axis=1)[:, k]


class Geometry:
    """The reference rows (or their kernel K_rr) and what every distance needs from them. One
    geometry may serve every distance-based scorer of a space (`geometry=`): the k-NN radii of
    the reference rows are computed once per k, and the distances of an evaluation set once
    for the same input object (the last one is kept), whichever scorer asks first."""

    def __init__(self, ref=None, k_rr=None):
        if k_rr is not None:
            self.k_rr = np.asarray(k_rr, np.float64)
            self.r_sq, self.ref = np.diag(self.k_rr).copy(), None
        else:
            self.ref = check_features(ref, "reference")
            self.r_sq, self.k_rr = np.sum(self.ref ** 2, axis=1), None
        self.n = len(self.r_sq)
        self._radii, self._last = {}, None

    def radii(self, k: int) -> np.ndarray:
        """Each reference row's distance to its k-th nearest reference row."""
        if k not in self._radii:
            out = np.empty(self.n)
            for s, d in self.ref_blocks():
                out[s:s + len(d)] = kth_neighbour(d, k)
            self._radii[k] = out
        return self._radii[k]

    def ref_blocks(self):
        """(start, distances of reference rows start.. to every reference row), in blocks."""
        for s in range(0, self.n, _BLOCK):
            e = min(s + _BLOCK, self.n)
            d = (_dists(self.k_rr[s:e], self.r_sq[s:e], self.r_sq) if self.k_rr is not None
                 else euclidean(self.ref[s:e], self.ref, self.r_sq[s:e], self.r_sq))
            d[np.arange(e - s), np.arange(s, e)] = 0.0      # each row to itself
            yield s, d

    def cross(self, ev):
        """D_re of an evaluation set: rows (n, d), or kernel blocks (K_re, K_ee)."""
        if self._last is not None and self._last[0] is ev:
            return self._last[1][0]
        if self.k_rr is not None:
            k_re, k_ee = (np.asarray(b, np.float64) for b in ev)
            return _dists(k_re, self.r_sq, np.diag(k_ee).copy())
        return euclidean(self.ref, _check_dim(ev, self.ref.shape[1]), self.r_sq)

    def blocks(self, ev):
        """(D_re, D_ee) of an evaluation set: rows (n, d), or kernel blocks (K_re, K_ee)."""
        if self._last is not None and self._last[0] is ev:
            return self._last[1]
        if self.k_rr is not None:
            k_re, k_ee = (np.asarray(b, np.float64) for b in ev)
            e_sq = np.diag(k_ee).copy()
            out = _dists(k_re, self.r_sq, e_sq), _dists(k_ee, e_sq, e_sq)
        else:
            rows = _check_dim(ev, self.ref.shape[1])
            e_sq = np.einsum("ij,ij->i", rows, rows)
            out = (euclidean(self.ref, rows, self.r_sq, e_sq),
                   euclidean(rows, rows, e_sq, e_sq, same=True))
        self._last = (ev, out)
        return out


def _resample(state, idx):
    d_re, d_ee = state
    return (d_re, d_ee) if idx is None else (d_re[:, idx], d_ee[np.ix_(idx, idx)])


class PRDCReference:
    """One of precision, recall (Kynkaanniemi et al. 2019), density or coverage (Naeem et al.
    2020), as the authors' package `prdc.compute_prdc` defines them: a k-NN ball around every
    reference row (radius: its k-th nearest reference row) and around every evaluation row.
    precision: evaluation rows inside some reference ball; recall: reference rows inside some
    evaluation ball; density: reference balls holding each evaluation row, / k, averaged;
    coverage: reference balls holding some evaluation row. `ref` rows, or `k_rr` kernel blocks
    (then `prepare` takes (K_re, K_ee))."""

    def __init__(self, which: str, ref=None, k=None, k_rr=None, geometry: Geometry | None = None):
        if which not in ("precision", "recall", "density", "coverage"):
            raise MetricInputError(f"{which} is not one of precision, recall, density, coverage")
        self.which = which
        self.k = k or PRDC_K[which]
        self.geo = geometry or Geometry(ref, k_rr)
        self.radii = self.geo.radii(self.k)

    def prepare(self, ev):
        return self.geo.blocks(ev)

    def score_prepared(self, state, idx=None) -> float:
        d_re, d_ee = _resample(state, idx)
        inside = d_re < self.radii[:, None]               # (reference ball, evaluation row)
        if self.which == "precision":
            return float(inside.any(axis=0).mean())
        if self.which == "density":
            return float(inside.sum(axis=0).mean() / self.k)
        if self.which == "coverage":
            return float((d_re.min(axis=1) < self.radii).mean())
        return float((d_re < kth_neighbour(d_ee, self.k)[None, :]).any(axis=1).mean())

    def score(self, ev) -> float:
        return self.score_prepared(self.prepare(ev))


class RealismReference:
    """The realism score of each evaluation image (Kynkaanniemi et al. 2019, section 5), as the
    authors' code computes it (kynkaat/improved-precision-and-recall-metric:
    ManifoldEstimator(real, nhood_sizes=[3], clamp_to_percentile=50).evaluate(x,
    return_realism=True)): D_r, the squared distance from each reference row r to its k-th
    nearest reference row, set to 0 where above the 50th percentile of all D_r (pruned balls);
    then R(x) = max_r D_r / (|x - r|^2 + 1e-5). Higher is more real (R >= 1 inside an unpruned
    ball). The set's score is the mean R; the per-image values are its prepared state. `ref`
    rows, or `k_rr` kernel blocks (then `prepare` takes (K_re, K_ee))."""

    def __init__(self, ref=None, k: int = REALISM_K, k_rr=None, geometry: Geometry | None = None):
        self.k = k
        self.geo = geometry or Geometry(ref, k_rr)
        sq = self.geo.radii(k) ** 2
        sq[sq > np.percentile(sq, REALISM_PERCENTILE)] = 0.0
        self.radii_sq = sq

    def prepare(self, ev) -> np.ndarray:
        d_re = self.geo.cross(ev)
        return np.max(self.radii_sq[:, None] / (d_re ** 2 + REALISM_EPS), axis=0)

    def score_prepared(self, state, idx=None) -> float:
        return float(np.mean(state if idx is None else state[idx]))

    def score(self, ev) -> float:
        return self.score_prepared(self.prepare(ev))


def realism_scores(ref, ev, k: int = REALISM_K) -> np.ndarray:
    """The realism score of every row of `ev` (n2, d) against `ref` (n1, d); see RealismReference."""
    ref, ev = _check_pair(ref, ev)
    return RealismReference(ref, k).prepare(ev)


def precision_recall(ref, ev, k: int = PRECISION_RECALL_K) -> tuple[float, float]:
    """(precision, recall) of `ev` (n2, d) against `ref` (n1, d) with k-NN balls; see PRDCReference."""
    ref, ev = _check_pair(ref, ev)
    return tuple(PRDCReference(w, ref, k).score(ev) for w in ("precision", "recall"))


def density_coverage(ref, ev, k: int = DENSITY_COVERAGE_K) -> tuple[float, float]:
    """(density, coverage) of `ev` (n2, d) against `ref` (n1, d); see PRDCReference."""
    ref, ev = _check_pair(ref, ev)
    return tuple(PRDCReference(w, ref, k).score(ev) for w in ("density", "coverage"))


class EnergyReference:
    """Energy distance (Szekely & Rizzo), the V-statistic that dcor.energy_distance computes:
    2 E|X - Y| - E|X - X'| - E|Y - Y'|, every mean over all pairs (self-pairs included). `ref`
    rows, or `k_rr` kernel blocks (then `prepare` takes (K_re, K_ee))."""

    def __init__(self, ref=None, k_rr=None, geometry: Geometry | None = None):
        self.geo = geometry or Geometry(ref, k_rr)
        self.mean_rr = sum(float(d.sum()) for _, d in self.geo.ref_blocks()) / self.geo.n ** 2

    def prepare(self, ev):
        return self.geo.blocks(ev)

    def score_prepared(self, state, idx=None) -> float:
        d_re, d_ee = _resample(state, idx)
        return float(2.0 * d_re.mean() - d_ee.mean() - self.mean_rr)

    def score(self, ev) -> float:
        return self.score_prepared(self.prepare(ev))


def energy_distance(ref, ev) -> float:
    """Energy distance between the rows of `ref` (n1, d) and `ev` (n2, d); see EnergyReference."""
    ref, ev = _check_pair(ref, ev)
    return EnergyReference(ref).score(ev)


_PROJECTION_ROWS = 1 << 14     # rows of random_projections drawn and squared at a time


def random_projections(dim: int, n_projections: int = SW_PROJECTIONS, seed: int = 0) -> np.ndarray:
    """(dim, n_projections) unit columns from numpy.random.RandomState(seed).randn, the
    directions POT's get_random_projections draws for the same integer seed, bit for bit.
    Drawn in blocks of rows into one array and normalised in place: a Gram space of 2048
    channels has 2,098,176 dimensions, and one (dim, P) array of 0.8 GB is the peak, where
    POT's expression holds two at once. RandomState continues its normal stream from block to block,
    and each column's sum of squares runs over the rows in order as numpy's does."""
    rs = np.random.RandomState(seed)
    p = np.empty((dim, n_projections))
    sq = np.zeros((1, n_projections))
    for start in range(0, dim, _PROJECTION_ROWS):
        block = p[start:start + _PROJECTION_ROWS]
        block[...] = rs.randn(*block.shape)
        sq = np.sum(np.concatenate((sq, block ** 2)), axis=0, keepdims=True)
    p /= np.sqrt(sq)
    return p


def _w2_sq_1d(u_sorted: np.ndarray, v_sorted: np.ndarray) -> np.ndarray:
    """Squared 2-Wasserstein distance per column between two sorted uniform samples (n, P) and
    (m, P), through their quantile functions (POT's wasserstein_1d, p = 2)."""
    n, m = len(u_sorted), len(v_sorted)
    u_cw = np.cumsum(np.full(n, 1.0 / n))
    v_cw = np.cumsum(np.full(m, 1.0 / m))
    qs = np.sort(np.concatenate((u_cw, v_cw)))
    u_q = u_sorted[np.clip(np.searchsorted(u_cw, qs), 0, n - 1)]
    v_q = v_sorted[np.clip(np.searchsorted(v_cw, qs), 0, m - 1)]
    delta = np.diff(np.concatenate(([0.0], qs)))
    return np.sum(delta[:, None] * (u_q - v_q) ** 2, axis=0)


class SlicedWassersteinReference:
    """Sliced 2-Wasserstein distance: the root of the mean over random unit directions of the
    squared 1-D W2 between the projected sets (POT's sliced_wasserstein_distance, p = 2).
    Directions come from `seed` (or are given as `projections`, (d, P)). Explicit rows only: a
    projection needs coordinates, which kernel blocks do not give."""

    def __init__(self, ref, n_projections: int = SW_PROJECTIONS, seed: int = 0, projections=None):
        ref = check_features(ref, "reference")
        self.projections = (random_projections(ref.shape[1], n_projections, seed)
                            if projections is None else np.asarray(projections, np.float64))
        self.ref_sorted = np.sort(ref @ self.projections, axis=0)

    def prepare(self, ev):
        return _check_dim(ev, len(self.projections)) @ self.projections

    def score_prepared(self, state, idx=None) -> float:
        proj = np.sort(state if idx is None else state[idx], axis=0)
        return float(np.sqrt(np.mean(_w2_sq_1d(self.ref_sorted, proj))))

    def score(self, ev) -> float:
        return self.score_prepared(self.prepare(ev))


def sliced_wasserstein(ref, ev, n_projections: int = SW_PROJECTIONS, seed: int = 0,
                       projections=None) -> float:
    """Sliced W2 between `ref` (n1, d) and `ev` (n2, d); see SlicedWassersteinReference."""
    ref, ev = _check_pair(ref, ev)
    return SlicedWassersteinReference(ref, n_projections, seed, projections).score(ev)


class FDInfReference:
    """FD-infinity (Chong & Forsyth, CVPR 2020), as dgm-eval's compute_FD_infinity: FID of the
    reference against random subsets of the evaluation set at `num_points` sizes evenly spaced
    from max(n // 10, 2) (at most 5000) to n, drawn without replacement by
    numpy.random.default_rng(seed); a least-squares line of FID against 1/N, read at 1/N = 0.
    `fid_reference` is a FIDReference (rows) or a KernelReference('fid') (kernel blocks)."""

    def __init__(self, fid_reference, seed: int = 0, num_points: int = FD_INF_POINTS):
        self.fid, self.seed, self.num_points = fid_reference, seed, num_points

    def prepare(self, ev):
        return self.fid.prepare(ev)

    def sizes(self, n: int) -> np.ndarray:
        return np.linspace(min(5000, max(n // 10, 2)), n, self.num_points).astype(np.int32)

    def score_prepared(self, state, idx=None) -> float:
        rows = np.arange(_n_rows(state)) if idx is None else np.asarray(idx)
        rng = np.random.default_rng(self.seed)
        sizes = self.sizes(len(rows))
        fds = [self.fid.score_prepared(state, rng.choice(rows, int(s), replace=False)) for s in sizes]
        slope, intercept = np.polyfit(1.0 / sizes, fds, 1)
        return float(intercept)

    def score(self, ev) -> float:
        return self.score_prepared(self.prepare(ev))


def _n_rows(state) -> int:
    """Evaluation rows in a FID state: (Z Z^T, A^T Z^T) of FIDReference or (K_re, K_ee) of
    KernelReference; the second block has one column per evaluation row in both."""
    return state[1].shape[1]


def fd_inf(ref, ev, seed: int = 0, num_points: int = FD_INF_POINTS) -> float:
    """FD-infinity between `ref` (n1, d) and `ev` (n2, d); see FDInfReference."""
    ref, ev = _check_pair(ref, ev)
    return FDInfReference(FIDReference(ref), seed, num_points).score(ev)


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


# ---------------------------------------------------------------- pytorch-fid interop

def save_fid_stats(path: str, ref) -> None:
    """Write `mu`, `sigma` of `ref` (n, d) as a pytorch-fid compatible .npz."""
    mu, sigma = gaussian_stats(ref)
    np.savez(path, mu=mu, sigma=sigma)


def load_fid_stats(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        if "mu" not in f or "sigma" not in f:
            raise MetricInputError(f"{path}: a pytorch-fid statistics file holds 'mu' and "
                                   f"'sigma'; found {sorted(f.files)}")
        return f["mu"].astype(np.float64), f["sigma"].astype(np.float64)


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



# The IQA literature's SSIM and MS-SSIM: Wang et al.'s MATLAB code (ssim.m and msssim.m) as
# pyiqa ports it and calibrates it against the MATLAB outputs (pyiqa/archs/ssim_arch.py,
# ResultsCalibra: SSIM within 4e-4 of ssim.m on TID2013 images). pyiqa's `ssim` and `ms_ssim`:
# * luminance only: Y = 0.299 R + 0.587 G + 0.114 B (YIQ's Y), rounded to an integer as
#   MATLAB's uint8 rgb2gray is; data range 255;
# * ssim.m's automatic downsampling, f = max(1, round(min(H, W) / 256)), as pyiqa's
#   SSIM(downsample=True) does it: an f x f average pool. For f = 2 (the databases' 384-639 px
#   images, even sides) that is exactly ssim.m's imfilter(ones(f)/f^2, 'symmetric') and
#   every f-th pixel; for f >= 3 ssim.m centres the box, and at exact halves (a 640 px side)
#   Python's round gives f = 2 where MATLAB's gives 3;
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


def ssim_downsampling(height: int, width: int) -> int:
    """ssim.m's factor max(1, round(min(H, W) / 256)), with Python's round as pyiqa has it."""
    return max(1, round(min(height, width) / 256))


def _avg_pool(a: np.ndarray, f: int) -> np.ndarray:
    """torch's avg_pool2d(kernel f, stride f), no padding, over the last two axes."""
    if f == 1:
        return a
    h, w = a.shape[-2] // f * f, a.shape[-1] // f * f
    a = a[..., :h, :w]
    return a.reshape(*a.shape[:-2], h // f, f, w // f, f).mean(axis=(-3, -1))


def _check_pixels(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
        raise MetricInputError(f"pixel baselines compare (n, H, W, 3) images of one shape; got "
                               f"{x.shape} and {y.shape}")
    return luminance(x), luminance(y)


def ssim(x, y) -> np.ndarray:
    """Per image: the IQA literature's SSIM (Wang et al.'s ssim.m on luminance, with its
    automatic downsampling, as pyiqa's `ssim` computes it; see the notes above) of
    (n, H, W, 3) 0-255 images."""
    x, y = _check_pixels(x, y)
    f = ssim_downsampling(*x.shape[-2:])
    x, y = _avg_pool(x, f), _avg_pool(y, f)
    if min(x.shape[-2:]) < SSIM_WIN:
        raise MetricInputError(f"ssim needs images of at least {SSIM_WIN} px a side after its "
                               f"downsampling; these are {x.shape[-1]} px: raise config['working_size']")
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


PIXEL_FUNCTIONS = {"psnr": psnr, "ssim": ssim, "ms_ssim": ms_ssim, "ssim_rgb": ssim_rgb,
                   "ms_ssim_rgb": ms_ssim_rgb}

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


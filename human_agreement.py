"""Agreement of a configuration's scores with human opinion scores. Pure numpy / scipy.

A rated database (rated_database.py) is a complete design: G groups (distortion type x level),
each holding one image of every one of R references, in reference order. Its opinions arrive
here as `Ratings.quality`, a (G, R) array oriented so that higher means better quality.

Every score of this pipeline is oriented "higher = worse" (a distance, a negative
log-likelihood). So agreement means a score that rises as quality falls, and every criterion
below is signed so that positive means agreement:

* SRCC and KRCC: Spearman's rho / Kendall's tau-b between the score and the badness (-MOS);
* PLCC: Pearson's r between the MOS and the VQEG 4-parameter logistic of the score fitted to it
  (`fit_logistic`, as pyiqa's `fit_curve`), with the sign of the fitted trend: negative when the
  fitted curve rises with the score. When the fit fails (no convergence, a constant score) the
  PLCC is the linear Pearson r of score and badness, and `plcc_fit` says "linear".

Set level: each group is scored like an evaluation set; its MOS is the mean of its images'.
Image level: for configurations with a score per image (a model metric: each image's
Mahalanobis distance or negative log-likelihood under the reference model), over all G * R images.

Uncertainty: a bootstrap over references (clusters): a resample draws R reference positions
with replacement, and every group takes the images of those references, so all distorted
versions of a reference stay together (`cluster_indices`). Group scores are recomputed from the
metric's prepared state on those positions, group MOS likewise.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit

LOGISTIC_MAXFEV = 10000          # pyiqa's fit_curve


@dataclass(frozen=True)
class Ratings:
    """Opinion scores of a complete design, aligned with the evaluation units.

    keys:    the G group keys, (type, level position), as the feature spaces name eval sets
    quality: (G, R) float64, higher = better (flipped for databases where higher is worse)
    """
    keys: tuple
    quality: np.ndarray

    @property
    def group_mos(self) -> np.ndarray:
        return self.quality.mean(axis=1)

    def types(self) -> list[str]:
        return list(dict.fromkeys(k[0] for k in self.keys))


# ------------------------------------------------------------------ correlations

def _constant(x) -> bool:
    return np.ptp(np.asarray(x, dtype=np.float64)) == 0


def srcc(score, badness) -> float:
    """Spearman's rho (ties averaged); 0 when either side is constant."""
    if _constant(score) or _constant(badness):
        return 0.0
    return float(stats.spearmanr(score, badness).statistic)


def krcc(score, badness) -> float:
    """Kendall's tau-b; 0 when either side is constant."""
    if _constant(score) or _constant(badness):
        return 0.0
    return float(stats.kendalltau(score, badness).statistic)


def logistic4(x, b1, b2, b3, b4):
    """VQEG's 4-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / b4)) + b2."""
    with np.errstate(over="ignore"):
        return (b1 - b2) / (1 + np.exp(-(x - b3) / b4)) + b2


def fit_logistic(score, mos) -> np.ndarray | None:
    """The parameters of `logistic4` fitted to map `score` to `mos` (scipy curve_fit from
    pyiqa's start [max(mos), min(mos), mean(score), std(score) / 4], maxfev 10000), or None
    when the fit fails or gives non-finite values."""
    x, y = np.asarray(score, np.float64), np.asarray(mos, np.float64)
    if _constant(x) or _constant(y):
        return None
    p0 = [np.max(y), np.min(y), np.mean(x), np.std(x) / 4.0]
    try:
        with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
            # the parameters' covariance is not used; an inestimable one is not a failure
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(logistic4, x, y, p0=p0, maxfev=LOGISTIC_MAXFEV)
    except (RuntimeError, ValueError, OverflowError):
        return None
    if not np.all(np.isfinite(params)) or not np.all(np.isfinite(logistic4(x, *params))):
        return None
    return params


def plcc(score, mos) -> tuple[float, str, np.ndarray | None]:
    """(oriented PLCC, "logistic4" or "linear", fitted parameters or None); see the module."""
    x, y = np.asarray(score, np.float64), np.asarray(mos, np.float64)
    if _constant(x) or _constant(y):
        return 0.0, "linear", None
    params = fit_logistic(x, y)
    if params is not None:
        fitted = logistic4(x, *params)
        if not _constant(fitted):
            falling = (params[0] - params[1]) / params[3] < 0
            r = float(stats.pearsonr(fitted, y).statistic)
            return (r if falling else -r), "logistic4", params
    return float(stats.pearsonr(x, -y).statistic), "linear", None


def criteria(score, quality) -> dict:
    """SRCC, KRCC and PLCC of scores (higher = worse) against opinions (higher = better)."""
    score, quality = np.asarray(score, np.float64), np.asarray(quality, np.float64)
    p, how, params = plcc(score, quality)
    return {"srcc": srcc(score, -quality), "krcc": krcc(score, -quality), "plcc": p,
            "plcc_fit": how, "logistic": None if params is None else [float(v) for v in params]}


# ------------------------------------------------------------------ a configuration

def set_level(group_scores, ratings: Ratings) -> dict:
    """The set-level criteria over all groups, and SRCC per type (across its levels)."""
    s = np.asarray(group_scores, np.float64)
    mos = ratings.group_mos
    out = criteria(s, mos)
    per_type = {}
    for t in ratings.types():
        sel = [i for i, k in enumerate(ratings.keys) if k[0] == t]
        per_type[t] = srcc(s[sel], -mos[sel]) if len(sel) > 1 else None
    out["srcc_per_type"] = per_type
    return out


def image_level(image_scores, ratings: Ratings) -> dict:
    """The criteria over every image: `image_scores` is (G, R), aligned with `quality`."""
    s = np.asarray(image_scores, np.float64).ravel()
    return criteria(s, ratings.quality.ravel())


# ------------------------------------------------------------------ bootstrap

def cluster_indices(n_references: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, R) reference positions drawn with replacement; every group is indexed by
    the same row, so a reference's distorted images are resampled together."""
    return rng.integers(0, n_references, size=(n_resamples, n_references))


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of a against the same row of b, both (B, G); 0 where a row
    is constant."""
    ra, rb = stats.rankdata(a, axis=1), stats.rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt(np.sum(ra ** 2, axis=1) * np.sum(rb ** 2, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.sum(ra * rb, axis=1) / denom
    return np.where(denom > 0, rho, 0.0)


def bootstrap_srcc(scores: np.ndarray, ratings: Ratings, idx: np.ndarray) -> np.ndarray:
    """The set-level SRCC of each resample: `scores` (B, G) are the groups' scores on the
    reference positions of each row of `idx` (B, R) (from `cluster_indices`); the groups' MOS
    are recomputed on the same positions."""
    mos = np.stack([ratings.quality[:, i].mean(axis=1) for i in idx])
    return spearman_rows(scores, -mos)


def interval(values, confidence: float) -> list[float]:
    alpha = (1 - confidence) / 2
    return [float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))]

"""Two-sample metrics between a reference feature set and an evaluation set: FID, KID, CMMD,
RBF-MMD, and the model-based Mahalanobis distance and negative log-likelihood. Pure numpy.

All functions take `(n, d)` float arrays, reference first, compute in float64 and return a
Python float. Scoring many evaluation sets against one reference is the common case (every
degradation level), so each metric has a `*Reference` class that precomputes the reference side
once; `fid(ref, ev)` etc. are the one-shot forms and give identical results.

The `*_from_kernel` functions and `KernelReference` compute the same metrics from linear kernel
blocks (K_rr = R R^T, K_re = R E^T, K_ee = E E^T): the sample-space route for features too large
to hold explicitly (Gram matrices of wide layers, where <G_i, G_j> = ||F_i^T F_j||_F^2 needs no
C x C matrix).
"""
from __future__ import annotations

import numpy as np
from scipy import linalg

from featrank.metric_checks import MetricInputError, check_dim, check_features, check_pair

CMMD_SIGMA = 10.0     # RBF bandwidth used by the CMMD reference (Jayasumana et al., CVPR 2024)
CMMD_SCALE = 1000.0   # the CMMD reference reports MMD^2 x 1000
KID_DEGREE, KID_COEF0 = 3, 1.0   # Binkowski et al. 2018 (KID), torch-fidelity defaults
KID_SUBSET_SIZE = 1000


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
        ev = check_dim(ev, self.dim)
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
    ref, ev = check_pair(ref, ev)
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
        ev = check_dim(ev, self.dim)
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
    ref, ev = check_pair(ref, ev)
    return KIDReference(ref, subsets, subset_size, degree, gamma, coef0, seed).score(ev)


def _sq_dists(a, b, a_sq, b_sq):
    """Squared Euclidean distances between the rows of a and b, given their squared norms."""
    return np.maximum(a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T), 0.0)


class _RBFReference:
    """Shared by CMMD and RBF-MMD: the Gaussian kernel blocks of an evaluation set."""

    def prepare(self, ev):
        ev = check_dim(ev, self.ref.shape[1])
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
    ref, ev = check_pair(ref, ev)
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
    ref, ev = check_pair(ref, ev)
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
            d_rr = sq_from_kernel(self.k_rr, self.r_sq, self.r_sq)
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
        return (np.exp(-self.gamma * sq_from_kernel(k_re, self.r_sq, e_sq)),
                np.exp(-self.gamma * sq_from_kernel(k_ee, e_sq, e_sq)))

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


def sq_from_kernel(k_ab, a_sq, b_sq):
    return np.maximum(a_sq[:, None] + b_sq[None, :] - 2.0 * k_ab, 0.0)


def cmmd_from_kernel(k_rr, k_re, k_ee, sigma=CMMD_SIGMA, scale=CMMD_SCALE) -> float:
    return KernelReference("cmmd", k_rr, 1, cmmd_sigma=sigma, cmmd_scale=scale).score((k_re, k_ee))


def mmd_rbf_from_kernel(k_rr, k_re, k_ee, sigma="median") -> float:
    return KernelReference("mmd_rbf", k_rr, 1, sigma=sigma).score((k_re, k_ee))


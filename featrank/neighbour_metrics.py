"""Metrics over Euclidean distances to the reference rows: precision and recall (Kynkaanniemi
et al. 2019), density and coverage (Naeem et al. 2020), the realism score, the energy distance,
sliced Wasserstein and FD-infinity. Pure numpy; explicit rows or linear kernel blocks."""
from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from featrank.metric_checks import MetricInputError, check_dim, check_features, check_pair
from featrank.two_sample_metrics import FIDReference, sq_from_kernel

PRECISION_RECALL_K = 3      # Kynkaanniemi et al. 2019
DENSITY_COVERAGE_K = 5      # Naeem et al. 2020 (the prdc package's recommended k)
SW_PROJECTIONS = 50         # POT's sliced_wasserstein_distance default
FD_INF_POINTS = 15          # Chong & Forsyth 2020 (and dgm-eval's compute_FD_infinity)
REALISM_K = 3               # Kynkaanniemi et al. 2019's realism score: nhood_sizes=[3]
REALISM_PERCENTILE = 50     # its reference balls above this percentile of radii are pruned
REALISM_EPS = 1e-5          # ManifoldEstimator's eps
PRDC_K = {"precision": PRECISION_RECALL_K, "recall": PRECISION_RECALL_K,
          "density": DENSITY_COVERAGE_K, "coverage": DENSITY_COVERAGE_K, "realism": REALISM_K}

# The metrics that read Euclidean distances to the reference rows: one Geometry of a space serves
# them all (its k-NN radii and each evaluation set's distances computed once).
GEOMETRY_METRICS = ("precision", "recall", "density", "coverage", "realism", "energy")

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
    return np.sqrt(sq_from_kernel(k_ab, a_sq, b_sq))


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
        return euclidean(self.ref, check_dim(ev, self.ref.shape[1]), self.r_sq)

    def blocks(self, ev):
        """(D_re, D_ee) of an evaluation set: rows (n, d), or kernel blocks (K_re, K_ee)."""
        if self._last is not None and self._last[0] is ev:
            return self._last[1]
        if self.k_rr is not None:
            k_re, k_ee = (np.asarray(b, np.float64) for b in ev)
            e_sq = np.diag(k_ee).copy()
            out = _dists(k_re, self.r_sq, e_sq), _dists(k_ee, e_sq, e_sq)
        else:
            rows = check_dim(ev, self.ref.shape[1])
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
    ref, ev = check_pair(ref, ev)
    return RealismReference(ref, k).prepare(ev)


def precision_recall(ref, ev, k: int = PRECISION_RECALL_K) -> tuple[float, float]:
    """(precision, recall) of `ev` (n2, d) against `ref` (n1, d) with k-NN balls; see PRDCReference."""
    ref, ev = check_pair(ref, ev)
    return tuple(PRDCReference(w, ref, k).score(ev) for w in ("precision", "recall"))


def density_coverage(ref, ev, k: int = DENSITY_COVERAGE_K) -> tuple[float, float]:
    """(density, coverage) of `ev` (n2, d) against `ref` (n1, d); see PRDCReference."""
    ref, ev = check_pair(ref, ev)
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
    ref, ev = check_pair(ref, ev)
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
        return check_dim(ev, len(self.projections)) @ self.projections

    def score_prepared(self, state, idx=None) -> float:
        proj = np.sort(state if idx is None else state[idx], axis=0)
        return float(np.sqrt(np.mean(_w2_sq_1d(self.ref_sorted, proj))))

    def score(self, ev) -> float:
        return self.score_prepared(self.prepare(ev))


def sliced_wasserstein(ref, ev, n_projections: int = SW_PROJECTIONS, seed: int = 0,
                       projections=None) -> float:
    """Sliced W2 between `ref` (n1, d) and `ev` (n2, d); see SlicedWassersteinReference."""
    ref, ev = check_pair(ref, ev)
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
    ref, ev = check_pair(ref, ev)
    return FDInfReference(FIDReference(ref), seed, num_points).score(ev)


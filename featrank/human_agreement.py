"""Agreement of a configuration's scores with human opinion scores. Pure numpy / scipy.

A rated database (rated_database.py) is G groups: (distortion type x level) of a full-reference
database, or MOS-quantile bins of a no-reference set. In a complete design every group holds one
image of every one of R references, in reference order (KADID-10k, TID2013); in an incomplete one
(CSIQ, LIVE, PIPAL) a group holds some references; a no-reference set has no references.
Opinions arrive here as `Ratings.quality`, one array per group, oriented so that higher means
better quality (a complete design's also as the (G, R) `matrix`).

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
Mahalanobis distance or negative log-likelihood under the reference model, the realism score,
a paired distance, a baseline), over every rated image (`image_keys`: the scored groups and
those too small to be scored as sets).

Uncertainty: a bootstrap over references (clusters): a resample draws R reference positions
with replacement, and every group takes the images of those references, so all distorted
versions of a reference stay together (`cluster_indices` for a complete design; `resamples`
for an incomplete one, where a group takes each of its images once per draw of its reference).
A no-reference set's bins are resampled each on its own (stratified), the reference set too.
Group scores are recomputed from the metric's prepared state on those rows, group MOS likewise;
a group that a resample leaves with fewer than 2 images has no score there.
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
    """Opinion scores of a rated database, aligned with the evaluation units.

    keys:        the G scored group keys, (type, level position), as the feature spaces name
                 evaluation sets
    quality:     per group, its images' opinions, float64, higher = better (flipped for
                 databases where higher is worse); a (G, R) array for a complete design
    clusters:    per group, the reference (cluster) index of each image; None for a
                 no-reference set (its bins are resampled each on its own)
    n_clusters:  R, the references
    image_keys, image_quality: every group with per-image criteria (scored ones first, then
                 those too small to be scored as sets), and their opinions
    paired:      the images have clean versions (a full-reference database)
    complete:    every group is one image of every reference, in reference order
    n_clean:     the clean set's images (a no-reference set's reference images)
    pairs:       pairwise judgments (None for opinion scores): (P, 2) positions of the two
                 images of each pair in the concatenation of `image_quality`
    prefer_b:    per pair, the fraction of people who chose its second image
    pair_clusters: per pair, its reference content (the bootstrap's clusters)
    scaled:      the opinions are scaled from the pairs (Bradley-Terry) on a connected graph;
                 False: only the 2AFC agreement means something
    """
    keys: tuple
    quality: object
    clusters: tuple | None = None
    n_clusters: int = 0
    image_keys: tuple = ()
    image_quality: tuple = ()
    paired: bool = True
    complete: bool = True
    n_clean: int = 0
    pairs: np.ndarray | None = None
    prefer_b: np.ndarray | None = None
    pair_clusters: np.ndarray | None = None
    scaled: bool = True

    def __post_init__(self):
        q = self.quality
        if isinstance(q, np.ndarray) and q.ndim == 2:        # a complete design as (G, R)
            object.__setattr__(self, "quality", np.asarray(q, np.float64))
            object.__setattr__(self, "clusters", tuple(np.arange(q.shape[1]) for _ in q))
            object.__setattr__(self, "n_clusters", q.shape[1])
            object.__setattr__(self, "complete", True)
        else:
            object.__setattr__(self, "quality", tuple(np.asarray(r, np.float64) for r in q))
        if not self.image_keys:
            object.__setattr__(self, "image_keys", tuple(self.keys))
            object.__setattr__(self, "image_quality", tuple(self.rows))

    @property
    def rows(self) -> tuple:
        """Each group's opinions (one array per group)."""
        return tuple(self.quality)

    @property
    def matrix(self) -> np.ndarray:
        """(G, R) opinions of a complete design."""
        return np.stack(self.rows)

    @property
    def group_mos(self) -> np.ndarray:
        return np.array([q.mean() for q in self.rows])

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
    if _constant(x) or _constant(y) or len(x) < 5:   # 4 parameters need 5 points to be a fit
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
            with warnings.catch_warnings():        # a nearly flat fit is still a correlation
                warnings.simplefilter("ignore", stats.NearConstantInputWarning)
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
    """The criteria over every image: `image_scores` holds one array per group of
    `ratings.image_keys` (a (G, R) array for a complete design), aligned with `image_quality`."""
    s = np.concatenate([np.asarray(v, np.float64).ravel() for v in image_scores])
    q = np.concatenate(ratings.image_quality)
    if len(s) != len(q):
        raise ValueError(f"{len(s)} per-image scores for {len(q)} rated images")
    return criteria(s, q)


# ------------------------------------------------------------------ pairwise judgments

def agreement_2afc(score, pairs, prefer_b) -> float:
    """LPIPS's 2AFC score (Zhang et al. 2018, lpips `score_2afc_dataset`): the mean over pairs
    of the fraction of people who chose the image the metric prefers, a metric tie counting
    1/2. `score` is per image, higher = worse (the metric prefers the lower); `pairs` (P, 2)
    positions into `score`; `prefer_b` the fraction who chose each pair's second image."""
    s = np.asarray(score, np.float64)
    pairs, p = np.asarray(pairs, np.intp).reshape(-1, 2), np.asarray(prefer_b, np.float64)
    if not len(pairs):
        return float("nan")
    a, b = s[pairs[:, 0]], s[pairs[:, 1]]
    return float(np.mean(np.where(a < b, 1.0 - p, np.where(b < a, p, 0.5))))


def pair_resamples(clusters, n_resamples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per resample, the pair positions of a bootstrap over clusters (reference contents): the
    clusters drawn with replacement, each bringing all its pairs."""
    clusters = np.asarray(clusters)
    ids, inverse = np.unique(clusters, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(ids))]
    out = []
    for _ in range(n_resamples):
        draw = rng.integers(0, len(ids), len(ids))
        out.append(np.concatenate([members[c] for c in draw]))
    return out


def comparison_components(n_items: int, wins: np.ndarray) -> list[np.ndarray]:
    """The connected components of the comparison graph (an edge wherever two items were
    compared), largest first: scaling puts items on one scale only within a component."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components
    n, labels = connected_components(csr_matrix((wins + wins.T) > 0), directed=False)
    comps = [np.flatnonzero(labels == c) for c in range(n)]
    return sorted(comps, key=lambda c: (-len(c), c[0]))


BT_ALPHA = 1e-3      # the L2 penalty when a plain maximum-likelihood estimate does not exist


def bradley_terry(wins: np.ndarray) -> tuple[np.ndarray, float]:
    """Bradley-Terry quality of n items from `wins` (n, n), wins[i, j] the (possibly
    fractional) number of times i was chosen over j: the maximum-likelihood log-strengths of
    choix's ILSR (Maystre & Grossglauser 2015), mean 0, higher = preferred. The plain MLE exists
    when the directed graph of wins is strongly connected (Ford 1957); otherwise (an item never
    chosen, or never beaten) the estimate is choix's L2-penalised one with alpha BT_ALPHA.
    Returns (quality, alpha used). Call it on one connected component."""
    import choix
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components
    wins = np.asarray(wins, np.float64)
    n_strong, _ = connected_components(csr_matrix(wins > 0), directed=True, connection="strong")
    alpha = 0.0 if n_strong == 1 else BT_ALPHA
    theta = choix.ilsr_pairwise_dense(wins, alpha=alpha, max_iter=1000, tol=1e-10)
    return theta - theta.mean(), alpha


# ------------------------------------------------------------------ bootstrap

def cluster_indices(n_references: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, R) reference positions drawn with replacement; every group is indexed by
    the same row, so a reference's distorted images are resampled together."""
    return rng.integers(0, n_references, size=(n_resamples, n_references))


def resamples(ratings: Ratings, n_resamples: int, rng: np.random.Generator, clean: tuple) -> list:
    """For a design that is not complete: per resample, {set key: its rows in that resample}.
    A full-reference database draws R references with replacement (its clean set, whose key is
    `clean`, takes those positions, each group each of its images once per draw of its
    reference); a no-reference set resamples its clean (reference) set and each bin on its own."""
    out = []
    for _ in range(n_resamples):
        if ratings.clusters is not None:
            draw = rng.integers(0, ratings.n_clusters, ratings.n_clusters)
            counts = np.bincount(draw, minlength=ratings.n_clusters)
            rows = {clean: draw}
            for key, cl in zip(ratings.keys, ratings.clusters):
                rows[key] = np.repeat(np.arange(len(cl)), counts[cl])
        else:
            rows = {clean: rng.integers(0, ratings.n_clean, ratings.n_clean)}
            for key, q in zip(ratings.keys, ratings.rows):
                rows[key] = rng.integers(0, len(q), len(q))
        out.append(rows)
    return out


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of a against the same row of b, both (B, G); 0 where a row
    is constant. Columns where either side is NaN (a group a resample left empty) are left
    out of that row; NaN when fewer than 3 remain."""
    bad = np.isnan(a) | np.isnan(b)
    if bad.any():
        out = np.empty(len(a))
        for i in range(len(a)):
            keep = ~bad[i]
            out[i] = (spearman_rows(a[i:i + 1, keep], b[i:i + 1, keep])[0] if keep.sum() >= 3
                      else np.nan)
        return out
    ra, rb = stats.rankdata(a, axis=1), stats.rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt(np.sum(ra ** 2, axis=1) * np.sum(rb ** 2, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.sum(ra * rb, axis=1) / denom
    return np.where(denom > 0, rho, 0.0)


def bootstrap_srcc(scores: np.ndarray, ratings: Ratings, idx) -> np.ndarray:
    """The set-level SRCC of each resample: `scores` (B, G) are the groups' scores on the rows
    of each resample, `idx` the resamples: a (B, R) array of reference positions for a
    complete design (`cluster_indices`), else the list of `resamples`. The groups' MOS are
    recomputed on the same rows (NaN where a group is left empty)."""
    if isinstance(idx, np.ndarray):
        matrix = ratings.matrix
        mos = np.stack([matrix[:, i].mean(axis=1) for i in idx])
    else:
        mos = np.array([[ratings.rows[g][rows[k]].mean() if len(rows[k]) else np.nan
                         for g, k in enumerate(ratings.keys)] for rows in idx])
    return spearman_rows(scores, -mos)


def interval(values, confidence: float) -> list[float]:
    """The percentile interval of the finite values (a resample can leave a statistic undefined)."""
    alpha = (1 - confidence) / 2
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return [float("nan"), float("nan")]
    return [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))]

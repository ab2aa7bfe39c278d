"""Models of the reference feature distribution, for mahalanobis and neg_loglik.

`fit_distribution(space, spec, seed)` takes the reference side of a feature space and a
config entry. A space is either explicit rows `(n, d)` or a `KernelRows` (linear kernel
K_rr = R R^T and the dimension d of the rows behind it): the Gram matrices of wide layers
have millions of dimensions and are held as kernels only (representations.py).

* ``{"type": "gaussian", "reg": 1e-6}`` — mean and unbiased covariance S (ddof=1). The ridge
  ``reg * trace(S) / d`` is added **only when S is singular**: rank(S) < d, the rank counted
  as numpy's `matrix_rank` does (eigenvalues above ``max eigenvalue * max(n, d) * eps``).
  That is always the case when n - 1 < d. Otherwise S is used as it is (exact). The fitted
  model records the ridge it used (`ridge`, 0.0 when none).
  When d <= n - 1 the covariance is factorised directly (Cholesky); when d > n - 1 (or the
  space is a kernel) everything is computed in the span of the centred reference rows,
  from the n x n centred kernel (Woodbury identity): no d x d matrix is formed, and the
  result equals the explicit d-dimensional model.
* ``{"type": "gmm", "covariance_type": diag|full|tied|spherical, "n_components": k}``
  — scikit-learn's GaussianMixture, `random_state=seed`, `reg_covar` (default 1e-6) on every
  covariance's diagonal. Full and tied covariances are rotation-invariant: when d > n - 1 or
  the space is a kernel they are fitted on the exact span coordinates of the reference rows
  (`SpanCoordinates`), which gives the same mixture as the d-dimensional rows without any
  d x d matrix. Diag and spherical ones need explicit rows.
* ``{"type": "kde", "bandwidth": "auto" | h}`` — Gaussian kernel density. ``auto`` is Scott's
  rule on the pooled standard deviation: h = n^(-1/(d+4)) * sqrt(trace(S) / d) (an isotropic
  rule of thumb, deterministic and cheap). Evaluated densely, from explicit rows or kernels.

`MODELS` declares, as data, what each model type needs; evaluation.py builds the grid and
reports infeasible configurations from it (`model_feasibility`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import linalg
from scipy.special import logsumexp

GAUSSIAN_REG = 1e-6          # relative ridge of the Gaussian model, used only when S is singular
GMM_REG_COVAR = 1e-6         # scikit-learn's default
GMM_MAX_ITER = 200
LOG_2PI = float(np.log(2 * np.pi))

# What each model needs, as data:
#   forms        feature forms it can be fitted on: "explicit" rows and/or "kernel" blocks
#   covariance   whether it defines a Mahalanobis distance (kde has no covariance)
#   params       accepted keys of a config entry, with their defaults
MODELS = {
    "gaussian": {"forms": ("explicit", "kernel"), "covariance": True,
                 "params": {"reg": GAUSSIAN_REG}},
    "gmm": {"forms": ("explicit", "kernel"), "covariance": True,
            "params": {"covariance_type": "full", "n_components": 1, "reg_covar": GMM_REG_COVAR}},
    "kde": {"forms": ("explicit", "kernel"), "covariance": False,
            "params": {"bandwidth": "auto"}},
}
GMM_COVARIANCES = ("diag", "full", "tied", "spherical")


class ModelError(ValueError):
    """A model cannot be fitted or used as asked; the message says why and what to change."""


@dataclass(frozen=True)
class ModelSpec:
    """One config['distribution_models'] entry, validated: its name, its type (a key of
    MODELS) and every parameter of the type, defaults filled in."""
    name: str
    type: str
    params: dict = field(default_factory=dict, hash=False)

    @classmethod
    def of(cls, entry, where: str = "a distribution model") -> "ModelSpec":
        """The record of a config entry {"name", "type", key: value, ...}; ModelError when invalid."""
        if isinstance(entry, ModelSpec):
            return entry
        validate_model(entry, where)
        return cls(entry.get("name", entry["type"]), entry["type"], _params(entry))


def _params(entry: dict) -> dict:
    return {**MODELS[entry["type"]]["params"], **{k: v for k, v in entry.items()
                                                  if k not in ("name", "type")}}


def validate_model(spec: dict, where: str) -> None:
    """Raise ModelError naming the bad key or value of one config['distribution_models'] entry."""
    kind = spec.get("type")
    if kind not in MODELS:
        raise ModelError(f"{where}: type = {kind!r} is not valid; choose one of: {', '.join(MODELS)}")
    extra = set(spec) - {"name", "type"} - set(MODELS[kind]["params"])
    if extra:
        raise ModelError(f"{where}: unknown key(s) {sorted(extra)} for a {kind} model; valid keys: "
                         f"name, type, {', '.join(MODELS[kind]['params'])}")
    p = _params(spec)
    if kind == "gaussian" and not (_number(p["reg"]) and p["reg"] >= 0):
        raise ModelError(f"{where}: reg = {p['reg']!r} must be a number >= 0")
    if kind == "gmm":
        if p["covariance_type"] not in GMM_COVARIANCES:
            raise ModelError(f"{where}: covariance_type = {p['covariance_type']!r} is not valid; "
                             f"choose one of: {', '.join(GMM_COVARIANCES)}")
        if not isinstance(p["n_components"], int) or isinstance(p["n_components"], bool) \
                or p["n_components"] < 1:
            raise ModelError(f"{where}: n_components = {p['n_components']!r} must be an integer >= 1")
        if not (_number(p["reg_covar"]) and p["reg_covar"] >= 0):
            raise ModelError(f"{where}: reg_covar = {p['reg_covar']!r} must be a number >= 0")
    if kind == "kde":
        bw = p["bandwidth"]
        if bw != "auto" and not (_number(bw) and bw > 0):
            raise ModelError(f"{where}: bandwidth = {bw!r} must be 'auto' or a positive number")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def model_feasibility(spec, form: str, dim: int, n_ref: int) -> str | None:
    """None when the model `spec` (a ModelSpec or its config entry) can be fitted on this space,
    else the rule that forbids it."""
    spec = ModelSpec.of(spec)
    kind = spec.type
    if form not in MODELS[kind]["forms"]:
        return f"a {kind} model needs explicit feature rows; this space is held as kernel blocks"
    if kind == "gmm":
        p = spec.params
        if form == "kernel" and p["covariance_type"] in ("diag", "spherical"):
            return (f"a {p['covariance_type']}-covariance GMM is not rotation-invariant, so it needs "
                    f"explicit rows; this space ({dim} dims) is held as exact kernel blocks, its rows "
                    "exceeding a quarter of config['max_representation_bytes'] (add use_pca to the "
                    "transform, or use covariance_type full or tied)")
        if p["n_components"] > n_ref:
            return (f"a GMM with {p['n_components']} components needs at least as many reference "
                    f"images (here {n_ref})")
    return None


# ---------------------------------------------------------------- inputs

@dataclass
class KernelRows:
    """Rows known through their linear kernel: `k` (n, n) = R R^T, `dim` = d of the rows."""
    k: np.ndarray
    dim: int


@dataclass
class KernelQuery:
    """Evaluation rows known through their kernel with the reference rows:
    `k_xr` (m, n) = X R^T and their squared norms `sq` (m,) = diag(X X^T)."""
    k_xr: np.ndarray
    sq: np.ndarray


def _centring(k_rr: np.ndarray):
    row = k_rr.mean(axis=0)
    return row, float(k_rr.mean())


def _singular_tol(eigenvalues: np.ndarray, n: int, d: int) -> float:
    """numpy.linalg.matrix_rank's tolerance on a symmetric PSD matrix's eigenvalues."""
    return float(max(eigenvalues.max(initial=0.0), 0.0) * max(n, d) * np.finfo(np.float64).eps)


def in_span(space) -> bool:
    """Are the models of this space (Gaussian, full/tied GMM) computed in the span of the
    reference rows? Yes for kernels and for rows with more dimensions than n - 1."""
    return isinstance(space, KernelRows) or space.shape[1] > space.shape[0] - 1


class SpanCoordinates:
    """Exact coordinates of rows in the span of the centred reference rows, from explicit rows
    or from a kernel alone: with the centred reference kernel Kc = V W V^T (W > 0 on r <= n - 1
    components), the reference rows are `ref` = V W^1/2 (n, r), and any row x has coordinates
    z = W^-1/2 V^T kc(x) and squared distance |x - mu|^2 to the reference mean, of which
    |x - mu|^2 - |z|^2 lies outside the span. Distances and inner products are preserved, so
    every rotation-invariant model fitted on `ref` is the model of the rows themselves."""

    def __init__(self, space):
        if isinstance(space, KernelRows):
            k, self.dim = space.k, space.dim
            self.n = len(k)
            self._row_mean, self._all_mean = _centring(k)
            kc = k - self._row_mean[:, None] - self._row_mean[None, :] + self._all_mean
            self._rows_c = None
        else:
            self.n, self.dim = space.shape
            self.mean = space.mean(axis=0)
            self._rows_c = space - self.mean
            kc = self._rows_c @ self._rows_c.T
        w, v = linalg.eigh(kc)
        keep = w > _singular_tol(w, self.n, self.dim)
        self.w, v = w[keep], v[:, keep]
        self.rank = int(keep.sum())
        self.ref = v * np.sqrt(self.w)
        self._proj = v / np.sqrt(self.w)
        self.trace = float(np.trace(kc))
        self._last = None

    def query(self, x):
        """(z (m, r), |x - mu|^2 (m,)) for explicit rows (m, d) or a KernelQuery. The last
        query is remembered: every model of a space asks for the same evaluation set in turn."""
        if self._last is not None and self._last[0] is x:
            return self._last[1]
        out = self._query(x)
        self._last = (x, out)
        return out

    def _query(self, x):
        if isinstance(x, KernelQuery):
            kc = (x.k_xr - x.k_xr.mean(axis=1, keepdims=True) - self._row_mean[None, :]
                  + self._all_mean)
            sq = np.maximum(x.sq - 2.0 * x.k_xr.mean(axis=1) + self._all_mean, 0.0)
        else:
            xc = x - self.mean
            kc = xc @ self._rows_c.T
            sq = np.sum(xc * xc, axis=1)
        return kc @ self._proj, sq


# ---------------------------------------------------------------- Gaussian

class GaussianModel:
    """N(mu, S + ridge * I), ridge = reg * trace(S) / d only when S is singular (see module doc).

    Explicit rows with d <= n - 1: Cholesky of the d x d covariance. Otherwise the span form:
    with the centred reference kernel Kc = V W V^T (W > 0 on r components), the covariance's
    non-zero eigenvalues are s = W / (n - 1) and an evaluation row x has span coordinates
    z = W^-1/2 V^T kc(x) and an orthogonal residual |x - mu|^2 - |z|^2, so
    (x-mu)^T (S + ridge I)^-1 (x-mu) = sum z^2 / (s + ridge) + residual / ridge
    and log det(S + ridge I) = sum log(s + ridge) + (d - r) log ridge."""

    def __init__(self, space, reg: float = GAUSSIAN_REG, span=None):
        self.reg = reg
        if in_span(space):
            self._fit_span(span or SpanCoordinates(space))
            return
        x = space
        n, d = x.shape
        self.dim, self.n = d, n
        self.mean = x.mean(axis=0)
        self.form = "covariance"
        cov = np.cov(x, rowvar=False, ddof=1).reshape(d, d)
        w = linalg.eigvalsh(cov)
        self.rank = int(np.sum(w > _singular_tol(w, n, d)))
        self.ridge = reg * float(np.trace(cov)) / d if self.rank < d else 0.0
        self._check_ridge(n, d)
        self.covariance = cov + np.eye(d) * self.ridge
        self._chol = linalg.cholesky(self.covariance, lower=True)
        self._logdet = 2.0 * float(np.sum(np.log(np.diag(self._chol))))
        self._chol_inv = linalg.solve_triangular(self._chol, np.eye(d), lower=True)

    def _check_ridge(self, n, d):
        if self.rank < d and self.ridge <= 0:
            raise ModelError(f"the reference covariance ({n} images, {d} dims) is singular (rank "
                             f"{self.rank}); use reg > 0 in the gaussian model, PCA, or more images")

    def _fit_span(self, span: "SpanCoordinates"):
        self.form, self.span, self.dim, self.n, self.rank = "span", span, span.dim, span.n, span.rank
        d, n = span.dim, span.n
        s = span.w / (n - 1)
        self.ridge = self.reg * span.trace / (n - 1) / d if self.rank < d else 0.0
        self._check_ridge(n, d)
        self._inv = 1.0 / (s + self.ridge)
        self._logdet = float(np.sum(np.log(s + self.ridge))
                             + ((d - self.rank) * np.log(self.ridge) if self.rank < d else 0.0))

    # squared Mahalanobis distance of each row
    def _sq_mahalanobis(self, x):
        if self.form == "covariance":
            z = (x - self.mean) @ self._chol_inv.T
            return np.sum(z * z, axis=1)
        z, sq = self.span.query(x)
        inside = np.sum(z * z, axis=1)
        out = np.sum(z * z * self._inv, axis=1)
        if self.ridge > 0:
            out = out + np.maximum(sq - inside, 0.0) / self.ridge
        return out

    def mahalanobis(self, x):
        return np.sqrt(self._sq_mahalanobis(x))

    def log_density(self, x):
        return -0.5 * (self._sq_mahalanobis(x) + self._logdet + self.dim * LOG_2PI)


class GMMModel:
    """scikit-learn's GaussianMixture. A full or tied covariance (+ reg_covar I) is rotation-
    invariant, so when d > n - 1 (or the space is a kernel) it is fitted on the reference rows'
    exact span coordinates (SpanCoordinates, r <= n - 1 dims): the same EM, k-means init and
    result as on the d-dimensional rows, since the d - r dimensions outside the span carry
    reg_covar alone and add the same term to every component. A diag or spherical covariance
    is not rotation-invariant and needs explicit rows."""

    def __init__(self, space, covariance_type: str, n_components: int, seed: int,
                 reg_covar: float = GMM_REG_COVAR, span=None):
        from sklearn.mixture import GaussianMixture
        kernel = isinstance(space, KernelRows)
        n, d = (len(space.k), space.dim) if kernel else space.shape
        if n_components > n:
            raise ModelError(f"GMM with {n_components} components needs at least as many "
                             f"reference images; got {n}. Lower n_components or use more images")
        self.span = None
        rows = space
        if covariance_type in ("full", "tied") and in_span(space):
            self.span = span or SpanCoordinates(space)
            rows = self.span.ref
            self.outside = d - self.span.rank
            if self.outside > 0 and reg_covar <= 0:
                raise ModelError(f"a {covariance_type}-covariance GMM in {d} dimensions from {n} images "
                                 "needs reg_covar > 0 (its covariance is singular outside the "
                                 "reference span)")
        elif kernel:
            raise ModelError(f"a {covariance_type}-covariance GMM needs explicit rows")
        self.gmm = GaussianMixture(n_components=n_components, covariance_type=covariance_type,
                                   reg_covar=reg_covar, random_state=seed,
                                   max_iter=GMM_MAX_ITER).fit(rows)
        self.covariance_type = covariance_type
        self.ridge = reg_covar

    def _rows(self, x):
        """Rows the fitted mixture sees, and the squared distance outside the span / reg_covar."""
        if self.span is None:
            return x, 0.0
        z, sq = self.span.query(x)
        return z, np.maximum(sq - np.sum(z * z, axis=1), 0.0) / self.ridge if self.outside else 0.0

    def log_density(self, x):
        z, out = self._rows(x)
        extra = 0.0 if self.span is None else self.outside * np.log(2 * np.pi * self.ridge)
        return self.gmm.score_samples(z) - 0.5 * (out + extra)

    def _component_sq_mahalanobis(self, x):
        """(n, k) squared Mahalanobis distances, from the fitted precision Cholesky factors."""
        g = self.gmm
        out = np.empty((len(x), g.n_components))
        for j in range(g.n_components):
            diff = x - g.means_[j]
            if self.covariance_type in ("full", "tied"):
                pc = g.precisions_cholesky_[j] if self.covariance_type == "full" else g.precisions_cholesky_
                y = diff @ pc
                out[:, j] = np.sum(y * y, axis=1)
            elif self.covariance_type == "diag":
                out[:, j] = np.sum(diff ** 2 / g.covariances_[j], axis=1)
            else:  # spherical
                out[:, j] = np.sum(diff ** 2, axis=1) / g.covariances_[j]
        return out

    def mahalanobis(self, x):
        z, out = self._rows(x)
        resp = self.gmm.predict_proba(z)
        sq = self._component_sq_mahalanobis(z) + np.asarray(out).reshape(-1, 1)
        return np.sum(resp * np.sqrt(sq), axis=1)


class KDEModel:
    """Gaussian KDE: log p(x) = logsumexp_i(-|x - x_i|^2 / 2h^2) - log n - d/2 log(2 pi h^2),
    the density of scikit-learn's KernelDensity(kernel='gaussian'), evaluated densely (exact;
    sklearn's trees are slow in hundreds of dimensions), from rows or kernels."""

    ridge = 0.0

    def __init__(self, space, bandwidth):
        if isinstance(space, KernelRows):
            k, d = space.k, space.dim
            n = len(k)
            self._ref_sq = np.diag(k).copy()
            _, all_mean = _centring(k)
            trace = float(np.trace(k) - n * all_mean) / (n - 1)
            self._rows = None
        else:
            n, d = space.shape
            self._rows = space
            self._ref_sq = np.sum(space * space, axis=1)
            trace = float(np.sum(np.var(space, axis=0, ddof=1)))
        if bandwidth == "auto":
            spread = np.sqrt(max(trace, 0.0) / d)
            if spread <= 0:
                raise ModelError("KDE bandwidth 'auto': the reference rows are all identical")
            bandwidth = n ** (-1.0 / (d + 4)) * spread
        self.bandwidth, self.n, self.dim = float(bandwidth), n, d

    def log_density(self, x):
        if isinstance(x, KernelQuery):
            sq = x.sq[:, None] + self._ref_sq[None, :] - 2.0 * x.k_xr
        else:
            sq = np.sum(x * x, axis=1)[:, None] + self._ref_sq[None, :] - 2.0 * x @ self._rows.T
        h2 = self.bandwidth ** 2
        return (logsumexp(-np.maximum(sq, 0.0) / (2 * h2), axis=1) - np.log(self.n)
                - 0.5 * self.dim * np.log(2 * np.pi * h2))

    def mahalanobis(self, x):
        raise ModelError("mahalanobis needs a covariance: use a gaussian or gmm model, "
                         "not kde (a KDE has none of its own)")


def fit_distribution(space, spec, seed: int = 0, span: SpanCoordinates | None = None):
    """Fit the model `spec` (a ModelSpec or its config['distribution_models'] entry) to the
    reference side of a space: explicit rows (n, d) or a KernelRows. `span`, the space's
    SpanCoordinates when already computed, is shared by the models that use one."""
    spec = ModelSpec.of(spec)
    kind, p = spec.type, spec.params
    if not isinstance(space, KernelRows):
        from featrank.distance_metrics import check_features
        space = check_features(space, "reference")
    if kind == "gaussian":
        return GaussianModel(space, p["reg"], span)
    if kind == "gmm":
        return GMMModel(space, p["covariance_type"], p["n_components"], seed, p["reg_covar"], span)
    return KDEModel(space, p["bandwidth"])

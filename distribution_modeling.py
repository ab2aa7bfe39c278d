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
  — scikit-learn's GaussianMixture on explicit rows, `random_state=seed`, `reg_covar`
  (default 1e-6) on every covariance's diagonal.
* ``{"type": "kde", "bandwidth": "auto" | h}`` — Gaussian kernel density. ``auto`` is Scott's
  rule on the pooled standard deviation: h = n^(-1/(d+4)) * sqrt(trace(S) / d) (an isotropic
  rule of thumb, deterministic and cheap). Evaluated densely, from explicit rows or kernels.

`MODELS` declares, as data, what each model type needs; evaluation.py builds the grid and
reports infeasible configurations from it (`model_feasibility`).
"""
from __future__ import annotations

from dataclasses import dataclass

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
    "gmm": {"forms": ("explicit",), "covariance": True,
            "params": {"covariance_type": "full", "n_components": 1, "reg_covar": GMM_REG_COVAR}},
    "kde": {"forms": ("explicit", "kernel"), "covariance": False,
            "params": {"bandwidth": "auto"}},
}
GMM_COVARIANCES = ("diag", "full", "tied", "spherical")


class ModelError(ValueError):
    """A model cannot be fitted or used as asked; the message says why and what to change."""


def model_params(spec: dict) -> dict:
    """The spec's parameters with the type's defaults filled in."""
    return {**MODELS[spec["type"]]["params"], **{k: v for k, v in spec.items()
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
    p = model_params(spec)
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


def model_feasibility(spec: dict, form: str, dim: int, n_ref: int) -> str | None:
    """None when the model can be fitted on this space, else the rule that forbids it."""
    kind = spec["type"]
    if form not in MODELS[kind]["forms"]:
        return (f"a {kind} model needs explicit feature rows; this space ({dim} dims) is held "
                "as exact linear kernel blocks, its rows exceeding a quarter of "
                "config['max_representation_bytes'] (add use_pca to the transform)")
    if kind == "gmm":
        p = model_params(spec)
        if p["covariance_type"] in ("full", "tied") and dim > n_ref - 1:
            return (f"a {p['covariance_type']}-covariance GMM needs at most n_ref - 1 = {n_ref - 1} "
                    f"dimensions (here {dim}): its covariance would be singular; use PCA or diag")
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


# ---------------------------------------------------------------- Gaussian

class GaussianModel:
    """N(mu, S + ridge * I), ridge = reg * trace(S) / d only when S is singular (see module doc).

    Explicit rows with d <= n - 1: Cholesky of the d x d covariance. Otherwise the span form:
    with the centred reference kernel Kc = V W V^T (W > 0 on r components), the covariance's
    non-zero eigenvalues are s = W / (n - 1) and an evaluation row x has span coordinates
    z = W^-1/2 V^T kc(x) and an orthogonal residual |x - mu|^2 - |z|^2, so
    (x-mu)^T (S + ridge I)^-1 (x-mu) = sum z^2 / (s + ridge) + residual / ridge
    and log det(S + ridge I) = sum log(s + ridge) + (d - r) log ridge."""

    def __init__(self, space, reg: float = GAUSSIAN_REG):
        self.reg = reg
        if isinstance(space, KernelRows):
            self._fit_span(space.k, space.dim)
            return
        x = space
        n, d = x.shape
        self.dim, self.n = d, n
        self.mean = x.mean(axis=0)
        if d > n - 1:
            xc = x - self.mean
            self._rows_c = xc
            self._fit_span(None, d, kc=xc @ xc.T)
            return
        self.form = "covariance"
        cov = np.cov(x, rowvar=False, ddof=1).reshape(d, d)
        w = linalg.eigvalsh(cov)
        tol = _singular_tol(w, n, d)
        self.rank = int(np.sum(w > tol))
        self.ridge = reg * float(np.trace(cov)) / d if self.rank < d else 0.0
        if self.rank < d and self.ridge <= 0:
            raise ModelError(f"the reference covariance ({n} images, {d} dims) is singular (rank "
                             f"{self.rank}); use reg > 0 in the gaussian model, PCA, or more images")
        self.covariance = cov + np.eye(d) * self.ridge
        self._chol = linalg.cholesky(self.covariance, lower=True)
        self._logdet = 2.0 * float(np.sum(np.log(np.diag(self._chol))))
        self._chol_inv = linalg.solve_triangular(self._chol, np.eye(d), lower=True)

    def _fit_span(self, k_rr, d, kc=None):
        self.form, self.dim = "span", d
        if kc is None:
            self.n = len(k_rr)
            self._row_mean, self._all_mean = _centring(k_rr)
            kc = k_rr - self._row_mean[:, None] - self._row_mean[None, :] + self._all_mean
        n = len(kc)
        w, v = linalg.eigh(kc)
        tol = _singular_tol(w, n, d)
        keep = w > tol
        self.rank = int(keep.sum())
        self._v, self._w = v[:, keep], w[keep]
        s = self._w / (n - 1)
        trace = float(np.trace(kc)) / (n - 1)
        self.ridge = reg_ridge = self.reg * trace / d if self.rank < d else 0.0
        if self.rank < d and reg_ridge <= 0:
            raise ModelError(f"the reference covariance ({n} images, {d} dims) is singular (rank "
                             f"{self.rank}); use reg > 0 in the gaussian model, PCA, or more images")
        self._inv = 1.0 / (s + reg_ridge)
        self._logdet = float(np.sum(np.log(s + reg_ridge))
                             + ((d - self.rank) * np.log(reg_ridge) if self.rank < d else 0.0))
        self._proj = self._v / np.sqrt(self._w)          # kc(x) @ proj = span coordinates

    # squared Mahalanobis distance of each row
    def _sq_mahalanobis(self, x):
        if self.form == "covariance":
            z = (x - self.mean) @ self._chol_inv.T
            return np.sum(z * z, axis=1)
        if isinstance(x, KernelQuery):
            kc = (x.k_xr - x.k_xr.mean(axis=1, keepdims=True) - self._row_mean[None, :]
                  + self._all_mean)
            sq = np.maximum(x.sq - 2.0 * x.k_xr.mean(axis=1) + self._all_mean, 0.0)
        else:
            xc = x - self.mean
            kc = xc @ self._rows_c.T
            sq = np.sum(xc * xc, axis=1)
        z = kc @ self._proj
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
    def __init__(self, x: np.ndarray, covariance_type: str, n_components: int, seed: int,
                 reg_covar: float = GMM_REG_COVAR):
        from sklearn.mixture import GaussianMixture
        n, d = x.shape
        if n_components > n:
            raise ModelError(f"GMM with {n_components} components needs at least as many "
                             f"reference images; got {n}. Lower n_components or use more images")
        self.gmm = GaussianMixture(n_components=n_components, covariance_type=covariance_type,
                                   reg_covar=reg_covar, random_state=seed,
                                   max_iter=GMM_MAX_ITER).fit(x)
        self.covariance_type = covariance_type
        self.ridge = reg_covar

    def log_density(self, x):
        return self.gmm.score_samples(x)

    def _component_sq_mahalanobis(self, x):
        g, n = self.gmm, len(x)
        k = g.n_components
        out = np.empty((n, k))
        for j in range(k):
            diff = x - g.means_[j]
            if self.covariance_type in ("full", "tied"):
                cov = g.covariances_[j] if self.covariance_type == "full" else g.covariances_
                z = linalg.solve_triangular(linalg.cholesky(cov, lower=True), diff.T, lower=True)
                out[:, j] = np.sum(z * z, axis=0)
            elif self.covariance_type == "diag":
                out[:, j] = np.sum(diff ** 2 / g.covariances_[j], axis=1)
            else:  # spherical
                out[:, j] = np.sum(diff ** 2, axis=1) / g.covariances_[j]
        return out

    def mahalanobis(self, x):
        resp = self.gmm.predict_proba(x)
        return np.sum(resp * np.sqrt(self._component_sq_mahalanobis(x)), axis=1)


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
            row, all_mean = _centring(k)
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


def fit_distribution(space, spec: dict, seed: int = 0):
    """Fit the model described by `spec` (a config['distribution_models'] entry) to the
    reference side of a space: explicit rows (n, d) or a KernelRows."""
    kind = spec.get("type")
    if kind not in MODELS:
        raise ModelError(f"unknown distribution model type {kind!r}; choose one of: {', '.join(MODELS)}")
    p = model_params(spec)
    if not isinstance(space, KernelRows):
        from distance_metrics import check_features
        space = check_features(space, "reference")
    elif "kernel" not in MODELS[kind]["forms"]:
        raise ModelError(f"a {kind} model needs explicit rows")
    if kind == "gaussian":
        return GaussianModel(space, p["reg"])
    if kind == "gmm":
        return GMMModel(space, p["covariance_type"], p["n_components"], seed, p["reg_covar"])
    return KDEModel(space, p["bandwidth"])

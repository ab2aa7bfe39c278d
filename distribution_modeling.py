"""Models of the reference feature distribution, for mahalanobis and neg_loglik.

`fit_distribution(x, spec, seed)` takes the rows of the reference set (n, d) and a
config entry:

* ``{"type": "gaussian", "reg": 1e-6}`` — mean and unbiased covariance (ddof=1),
  plus a ridge of ``reg * trace(S) / d`` on the diagonal so that the inverse exists
  when n <= d (set reg to 0 for the plain sample covariance).
* ``{"type": "gmm", "covariance_type": diag|full|tied|spherical, "n_components": k}``
  — scikit-learn's GaussianMixture, `random_state=seed`, `reg_covar` (default 1e-6)
  added to every covariance's diagonal keeps full covariances positive definite.
* ``{"type": "kde", "bandwidth": "auto" | h}`` — scikit-learn's KernelDensity with a
  Gaussian kernel. ``auto`` is Scott's rule on the pooled standard deviation:
  h = n^(-1/(d+4)) * sqrt(mean per-dimension variance) (an isotropic rule of thumb,
  no cross-validation, so it is deterministic and cheap).

Each fitted model has `log_density(x) -> (n,)` and `mahalanobis(x) -> (n,)`
(a GMM gives the responsibility-weighted distance to its components; a KDE has
no covariance of its own and raises `ModelError`).
"""
from __future__ import annotations

import numpy as np
from scipy import linalg

GAUSSIAN_REG = 1e-6          # relative ridge of the Gaussian model
GMM_REG_COVAR = 1e-6         # scikit-learn's default
GMM_MAX_ITER = 200
# Beyond this dimension a full/tied GMM costs O(k d^3) per EM step and is
# ill-posed with a few hundred images: reduce with PCA first.
GMM_FULL_MAX_DIM = 512
# A Gaussian model holds a d x d covariance: 8192 dims is 512 MiB in float64.
GAUSSIAN_MAX_DIM = 8192


class ModelError(ValueError):
    """A model cannot be fitted or used as asked; the message says why and what to change."""


class GaussianModel:
    def __init__(self, x: np.ndarray, reg: float = GAUSSIAN_REG):
        n, d = x.shape
        if d > GAUSSIAN_MAX_DIM:
            raise ModelError(f"a Gaussian model in {d} dimensions needs a {d}x{d} covariance "
                             f"(limit {GAUSSIAN_MAX_DIM}); add use_pca with a smaller pca_dim")
        self.mean = x.mean(axis=0)
        cov = np.cov(x, rowvar=False, ddof=1).reshape(d, d)
        self.covariance = cov + np.eye(d) * (reg * np.trace(cov) / d)
        try:
            self._chol = linalg.cholesky(self.covariance, lower=True)
        except linalg.LinAlgError:
            raise ModelError(f"the reference covariance ({n} images, {d} dims) is singular; "
                             "use reg > 0 in the gaussian model, PCA, or more images") from None
        self._logdet = 2.0 * np.sum(np.log(np.diag(self._chol)))
        # L^-1 once, so every evaluation set costs one matrix product
        self._chol_inv = linalg.solve_triangular(self._chol, np.eye(d), lower=True)

    def _sq_mahalanobis(self, x):
        z = (x - self.mean) @ self._chol_inv.T
        return np.sum(z * z, axis=1)

    def mahalanobis(self, x):
        return np.sqrt(self._sq_mahalanobis(x))

    def log_density(self, x):
        d = x.shape[1]
        return -0.5 * (self._sq_mahalanobis(x) + self._logdet + d * np.log(2 * np.pi))


class GMMModel:
    def __init__(self, x: np.ndarray, covariance_type: str, n_components: int, seed: int,
                 reg_covar: float = GMM_REG_COVAR):
        from sklearn.mixture import GaussianMixture
        n, d = x.shape
        if n_components > n:
            raise ModelError(f"GMM with {n_components} components needs at least as many "
                             f"reference images; got {n}. Lower n_components or use more images")
        if covariance_type in ("full", "tied") and d > GMM_FULL_MAX_DIM:
            raise ModelError(f"a {covariance_type}-covariance GMM in {d} dimensions is too large "
                             f"(limit {GMM_FULL_MAX_DIM}); add use_pca with a smaller pca_dim")
        self.gmm = GaussianMixture(n_components=n_components, covariance_type=covariance_type,
                                   reg_covar=reg_covar, random_state=seed,
                                   max_iter=GMM_MAX_ITER).fit(x)
        self.covariance_type = covariance_type

    def log_density(self, x):
        return self.gmm.score_samples(x)

    def _component_sq_mahalanobis(self, x):
        g, n = self.gmm, len(x)
        k = g.n_components
        out = np.empty((n, k))
        for j in range(k):
            diff = x - g.means_[j]
            if self.covariance_type == "full":
                z = linalg.solve_triangular(linalg.cholesky(g.covariances_[j], lower=True),
                                            diff.T, lower=True)
                out[:, j] = np.sum(z * z, axis=0)
            elif self.covariance_type == "tied":
                z = linalg.solve_triangular(linalg.cholesky(g.covariances_, lower=True),
                                            diff.T, lower=True)
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
    def __init__(self, x: np.ndarray, bandwidth):
        from sklearn.neighbors import KernelDensity
        n, d = x.shape
        if bandwidth == "auto":
            spread = np.sqrt(np.mean(np.var(x, axis=0, ddof=1)))
            if spread <= 0:
                raise ModelError("KDE bandwidth 'auto': the reference rows are all identical")
            bandwidth = n ** (-1.0 / (d + 4)) * spread
        self.bandwidth = float(bandwidth)
        self.kde = KernelDensity(kernel="gaussian", bandwidth=self.bandwidth).fit(x)
        self._data = x
        self._data_sq = np.sum(x * x, axis=1)

    def log_density(self, x):
        """The fitted KernelDensity's log-density, evaluated densely: sklearn's trees are exact
        (rtol = atol = 0) but slow in hundreds of dimensions; the sum itself is the same."""
        from scipy.special import logsumexp
        n, d = self._data.shape
        h = self.bandwidth
        sq = np.maximum(np.sum(x * x, axis=1)[:, None] + self._data_sq[None, :] - 2 * x @ self._data.T, 0)
        return logsumexp(-sq / (2 * h * h), axis=1) - np.log(n) - 0.5 * d * np.log(2 * np.pi * h * h)

    def mahalanobis(self, x):
        raise ModelError("mahalanobis needs a covariance: use a gaussian or gmm model, "
                         "not kde (a KDE has none of its own)")


def fit_distribution(x, spec: dict, seed: int = 0):
    """Fit the model described by `spec` (a config['distribution_models'] entry) to the
    reference rows `x` (n, d) float."""
    from distance_metrics import check_features
    x = check_features(x, "reference")
    kind = spec.get("type")
    if kind == "gaussian":
        return GaussianModel(x, spec.get("reg", GAUSSIAN_REG))
    if kind == "gmm":
        return GMMModel(x, spec.get("covariance_type", "full"), spec.get("n_components", 1), seed,
                        spec.get("reg_covar", GMM_REG_COVAR))
    if kind == "kde":
        return KDEModel(x, spec.get("bandwidth", "auto"))
    raise ModelError(f"unknown distribution model type {kind!r}; choose gaussian, gmm or kde")

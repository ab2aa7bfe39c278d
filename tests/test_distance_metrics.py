"""Metrics against independent peers and closed forms."""
import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from featrank import distance_metrics as dm
from featrank import representations as rp


def _cases():
    rng = np.random.default_rng(0)
    full = (rng.normal(size=(300, 16)), rng.normal(0.3, 1.2, size=(250, 16)))
    singular = (rng.normal(size=(40, 64)), rng.normal(0.2, 1.0, size=(30, 64)))   # n < d
    # ill-conditioned: condition number ~1e10 on the covariance
    basis = np.linalg.qr(rng.normal(size=(12, 12)))[0]
    scales = np.logspace(0, -5, 12)
    ill = (rng.normal(size=(500, 12)) * scales @ basis.T,
           rng.normal(size=(400, 12)) * scales @ basis.T + 0.01)
    return {"full-rank": full, "singular": singular, "ill-conditioned": ill}


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_fid_matches_pytorch_fid(case):
    from pytorch_fid.fid_score import calculate_frechet_distance
    ref, ev = CASES[case]
    ours = dm.fid(ref, ev)
    mu1, s1 = np.mean(ref, 0), np.cov(ref, rowvar=False)
    mu2, s2 = np.mean(ev, 0), np.cov(ev, rowvar=False)
    peer = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert np.isreal(ours) and ours >= 0
    assert ours == pytest.approx(peer, rel=1e-5)
    assert dm.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ours, rel=1e-7)


def test_fid_closed_forms():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 200))            # n < d: pytorch-fid's sqrtm goes complex here
    shift = rng.normal(size=200)
    # equal covariances (a translated copy): FID = ||delta mu||^2 exactly
    assert dm.fid(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-10)
    assert dm.fid(x, x) == pytest.approx(0.0, abs=1e-9 * 2 * np.trace(np.cov(x, rowvar=False)))
    assert dm.fid(x, x) >= 0.0
    # one-dimensional Gaussians: (m1-m2)^2 + (s1-s2)^2
    a, b = rng.normal(size=(500, 1)), rng.normal(size=(400, 1)) * 3 + 2
    s1, s2 = a.std(ddof=1), b.std(ddof=1)
    assert dm.fid(a, b) == pytest.approx((a.mean() - b.mean()) ** 2 + (s1 - s2) ** 2, rel=1e-10)


def test_fid_reference_precomputed_equals_one_shot():
    ref, ev = CASES["singular"]
    r = dm.FIDReference(ref)
    for k in range(3):
        e = ev + k
        assert r.score(e) == dm.fid(ref, e)
    big_ref, big_ev = CASES["full-rank"]
    assert dm.FIDReference(big_ref).score(big_ev) == dm.fid(big_ref, big_ev)


def _kid_torch_fidelity(ref, ev, subsets, subset_size, seed=0):
    import torch
    from torch_fidelity.metric_kid import kid_features_to_metric, KEY_METRIC_KID_MEAN
    out = kid_features_to_metric(torch.from_numpy(ref), torch.from_numpy(ev),
                                 kid_subsets=subsets, kid_subset_size=subset_size,
                                 kid_degree=3, kid_gamma=None, kid_coef0=1, rng_seed=seed,
                                 verbose=False, kid_kernel="poly")
    return out[KEY_METRIC_KID_MEAN]


@pytest.mark.parametrize("case", list(CASES))
def test_kid_matches_torch_fidelity(case):
    ref, ev = CASES[case]
    n = min(len(ref), len(ev))
    ref, ev = ref[:n], ev[:n]
    # a single subset of all rows is the full-set estimate
    assert dm.kid(ref, ev) == pytest.approx(_kid_torch_fidelity(ref, ev, 1, n), abs=1e-6, rel=1e-6)
    # the subset convention, same seed
    m = n // 2
    ours = dm.kid(ref, ev, subsets=7, subset_size=m, seed=3)
    assert ours == pytest.approx(_kid_torch_fidelity(ref, ev, 7, m, seed=3), abs=1e-6, rel=1e-6)


def _mmd2_unbiased_by_loops(x, y, kernel):
    """Gretton et al. 2012, eq. 3, term by term: the unbiased MMD^2 of samples of any sizes."""
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    m, n = len(x), len(y)
    sxx = sum(kxx[i, j] for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(kyy[i, j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return sxx + syy - 2 * kxy.sum() / (m * n)


def test_full_set_kid_of_unequal_sets_equals_the_unbiased_estimator():
    """The pipeline's KID (subsets=None: every reference row against every evaluation row,
    also when the sizes differ) against the estimator written out with scikit-learn's
    polynomial kernel (gamma 1/d, coef0 1, degree 3); its bootstrap path (a resample of the
    evaluation rows, repeats included) against the estimator on the resampled rows."""
    from sklearn.metrics.pairwise import polynomial_kernel
    rng = np.random.default_rng(11)
    ref, ev = rng.normal(size=(60, 7)), rng.normal(0.2, 1.1, size=(23, 7))

    def poly(a, b):
        return polynomial_kernel(a, b, degree=3, gamma=1.0 / 7, coef0=1.0)
    assert dm.kid(ref, ev) == pytest.approx(_mmd2_unbiased_by_loops(ref, ev, poly), rel=1e-10)
    r = dm.KIDReference(ref)
    idx = rng.integers(0, 23, 23)
    assert r.score_prepared(r.prepare(ev), idx) == pytest.approx(
        _mmd2_unbiased_by_loops(ref, ev[idx], poly), rel=1e-10)


def test_kid_does_not_touch_global_rng():
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    ref, ev = CASES["full-rank"]
    dm.kid(ref, ev, subsets=3, subset_size=50)
    assert np.random.random() == before


def test_cmmd_matches_direct_formula():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(40, 8)); ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    ev = rng.normal(0.2, 1, size=(30, 8)); ev /= np.linalg.norm(ev, axis=1, keepdims=True)
    g = 1 / (2 * 10.0 ** 2)

    def k(a, b):
        return np.array([[np.exp(-g * np.sum((x - y) ** 2)) for y in b] for x in a])
    direct = 1000 * (k(ref, ref).mean() + k(ev, ev).mean() - 2 * k(ref, ev).mean())
    assert dm.cmmd(ref, ev) == pytest.approx(direct, rel=1e-9, abs=1e-12)


def test_mmd_rbf_median_heuristic_by_hand():
    rng = np.random.default_rng(3)
    ref, ev = rng.normal(size=(25, 4)), rng.normal(0.5, 1, size=(20, 4))
    d = np.array([[np.sum((a - b) ** 2) for b in ref] for a in ref])
    sigma = np.sqrt(np.median(d[np.triu_indices(25, 1)]))
    kern = lambda a, b: np.exp(-np.array([[np.sum((x - y) ** 2) for y in b] for x in a]) / (2 * sigma ** 2))  # noqa
    krr, kee, kre = kern(ref, ref), kern(ev, ev), kern(ref, ev)
    expected = ((krr.sum() - 25) / (25 * 24) + (kee.sum() - 20) / (20 * 19) - 2 * kre.mean())
    assert dm.mmd_rbf(ref, ev) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("case", ["full-rank", "singular"])
def test_kernel_forms_equal_explicit_forms(case):
    ref, ev = CASES[case]
    krr, kre, kee = ref @ ref.T, ref @ ev.T, ev @ ev.T
    assert dm.fid_from_kernel(krr, kre, kee) == pytest.approx(dm.fid(ref, ev), rel=1e-8)
    assert dm.kid_from_kernel(krr, kre, kee, ref.shape[1]) == pytest.approx(dm.kid(ref, ev), rel=1e-9)
    assert dm.cmmd_from_kernel(krr, kre, kee) == pytest.approx(dm.cmmd(ref, ev), rel=1e-9)
    assert dm.mmd_rbf_from_kernel(krr, kre, kee) == pytest.approx(dm.mmd_rbf(ref, ev), rel=1e-9)


def test_fid_stats_npz_roundtrip(tmp_path):
    ref, ev = CASES["full-rank"]
    np.savez(tmp_path / "ref.npz", mu=ref.mean(axis=0), sigma=np.cov(ref, rowvar=False))
    from pytorch_fid.fid_score import calculate_frechet_distance
    from featrank.fid_stats import load_stats
    mu, sigma = load_stats(str(tmp_path / "ref.npz"))
    mu2, s2 = dm.gaussian_stats(ev)
    assert dm.frechet_distance(mu, sigma, mu2, s2) == pytest.approx(
        calculate_frechet_distance(mu, sigma, mu2, s2), rel=1e-5)
    assert dm.frechet_distance(mu, sigma, mu2, s2) == pytest.approx(dm.fid(ref, ev), rel=1e-9)


@pytest.mark.parametrize("bad,match", [
    (np.full((5, 3), np.nan), "NaN"),
    (np.ones((1, 3)), "at least 2"),
    (np.ones((5, 4)), "dimension mismatch"),
])
def test_bad_inputs_raise_clear_errors(bad, match):
    good = np.random.default_rng(0).normal(size=(10, 3))
    for fn in (dm.fid, dm.kid, dm.cmmd, dm.mmd_rbf):
        with pytest.raises(dm.MetricInputError, match=match):
            fn(good, bad)


@pytest.mark.parametrize("make", [
    lambda r: dm.FIDReference(r), lambda r: dm.KIDReference(r), lambda r: dm.CMMDReference(r),
    lambda r: dm.MMDRBFReference(r), lambda r: dm.KIDReference(r, subsets=3, subset_size=20)])
def test_resampled_scores_equal_scores_of_resampled_rows(make):
    """The bootstrap path (prepare once, score index sets) gives the same number as
    scoring the resampled rows from scratch."""
    ref, ev = CASES["full-rank"]
    r = make(ref)
    state = r.prepare(ev[:40])
    idx = np.random.default_rng(0).integers(0, 40, 40)
    assert r.score_prepared(state) == pytest.approx(r.score(ev[:40]), rel=1e-12)
    if isinstance(r, dm.FIDReference):   # FID of a resample with repeated rows
        assert r.score_prepared(state, idx) == pytest.approx(dm.fid(ref, ev[:40][idx]), rel=1e-9)
    else:   # full-set KID, subset KID, CMMD and RBF-MMD: the estimate on the resampled rows
        assert r.score_prepared(state, idx) == pytest.approx(r.score(ev[:40][idx]), rel=1e-9)


def test_mahalanobis_gaussian_matches_scipy():
    """Exact when the covariance is invertible (no ridge, even at condition ~1e10); the ridge
    reg * trace / d only when it is singular (n < d), and the model records it."""
    from featrank.distribution_modeling import fit_distribution
    for case in ("full-rank", "singular", "ill-conditioned"):
        ref, ev = CASES[case]
        model = fit_distribution(ref, {"type": "gaussian"})
        cov = np.cov(ref, rowvar=False, ddof=1)
        d = cov.shape[0]
        expected_ridge = 1e-6 * np.trace(cov) / d if case == "singular" else 0.0
        assert model.ridge == pytest.approx(expected_ridge, rel=1e-12, abs=0)
        vi = np.linalg.inv(cov + expected_ridge * np.eye(d))
        expected = np.mean([scipy_mahalanobis(x, ref.mean(0), vi) for x in ev])
        assert dm.mahalanobis(model, ev) == pytest.approx(expected, rel=1e-6)


def test_mahalanobis_exact_at_condition_1e9_in_512_dims():
    """An invertible 512-d covariance of condition >= 1e9 from 1000 rows: equal to scipy's
    mahalanobis with the exact inverse (the old default ridge moved it by 26 %)."""
    from featrank.distribution_modeling import fit_distribution
    rng = np.random.default_rng(7)
    d = 512
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    scales = np.logspace(0, -5, d)
    ref = rng.normal(size=(1000, d)) * scales @ basis.T
    ev = rng.normal(size=(50, d)) * scales @ basis.T + 1e-3
    cov = np.cov(ref, rowvar=False)
    assert np.linalg.cond(cov) >= 1e9
    model = fit_distribution(ref, {"type": "gaussian"})
    assert model.ridge == 0.0
    vi = np.linalg.inv(cov)
    expected = np.mean([scipy_mahalanobis(x, ref.mean(0), vi) for x in ev])
    assert dm.mahalanobis(model, ev) == pytest.approx(expected, rel=1e-6)


def test_gaussian_span_form_equals_the_d_dimensional_model():
    """n - 1 < d: computed in the reference span (Woodbury), from rows or from kernels alone,
    equal to the d x d model with its ridge, for Mahalanobis and log-likelihood."""
    from scipy.stats import multivariate_normal
    from featrank.distribution_modeling import KernelQuery, KernelRows, fit_distribution
    ref, ev = CASES["singular"]                     # 40 rows, 64 dims
    spec = {"type": "gaussian", "reg": 1e-3}
    rows = fit_distribution(ref, spec)
    kern = fit_distribution(KernelRows(ref @ ref.T, ref.shape[1]), spec)
    cov = np.cov(ref, rowvar=False) + rows.ridge * np.eye(64)
    assert rows.ridge > 0 and kern.ridge == pytest.approx(rows.ridge, rel=1e-12)
    vi = np.linalg.inv(cov)
    direct = np.array([scipy_mahalanobis(x, ref.mean(0), vi) for x in ev])
    q = KernelQuery(ev @ ref.T, np.sum(ev * ev, axis=1))
    assert np.allclose(rows.mahalanobis(ev), direct, rtol=1e-7)
    assert np.allclose(kern.mahalanobis(q), direct, rtol=1e-7)
    logpdf = multivariate_normal(ref.mean(0), cov).logpdf(ev)
    assert np.allclose(rows.log_density(ev), logpdf, rtol=1e-9)
    assert np.allclose(kern.log_density(q), logpdf, rtol=1e-9)


def test_kde_from_kernels_equals_kde_from_rows():
    from featrank.distribution_modeling import KernelQuery, KernelRows, fit_distribution
    ref, ev = CASES["singular"]
    rows = fit_distribution(ref, {"type": "kde"})
    kern = fit_distribution(KernelRows(ref @ ref.T, ref.shape[1]), {"type": "kde"})
    assert kern.bandwidth == pytest.approx(rows.bandwidth, rel=1e-12)
    q = KernelQuery(ev @ ref.T, np.sum(ev * ev, axis=1))
    assert np.allclose(kern.log_density(q), rows.log_density(ev), rtol=1e-10)


def test_neg_loglik_gaussian_matches_scipy():
    from scipy.stats import multivariate_normal
    from featrank.distribution_modeling import fit_distribution
    ref, ev = CASES["full-rank"]
    model = fit_distribution(ref, {"type": "gaussian", "reg": 0.0})
    assert model.ridge == 0.0 and np.allclose(model.covariance, np.cov(ref, rowvar=False, ddof=1))
    expected = -np.mean(multivariate_normal(ref.mean(0), np.cov(ref, rowvar=False)).logpdf(ev))
    assert dm.neg_loglik(model, ev) == pytest.approx(expected, rel=1e-9)


def test_gmm_and_kde_models():
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import KernelDensity
    from featrank.distribution_modeling import fit_distribution, ModelError
    ref, ev = CASES["full-rank"]
    for cov in ("diag", "full", "tied", "spherical"):
        model = fit_distribution(ref, {"type": "gmm", "covariance_type": cov, "n_components": 3}, seed=0)
        peer = GaussianMixture(3, covariance_type=cov, random_state=0, max_iter=200).fit(ref)
        assert dm.neg_loglik(model, ev) == pytest.approx(-peer.score(ev), rel=1e-9)
        assert dm.mahalanobis(model, ev) > 0
    # one spherical component with unit variance: weighted distance = Euclidean distance
    m = fit_distribution(ref, {"type": "gmm", "covariance_type": "full", "n_components": 1})
    g = m.gmm
    expected = np.mean([scipy_mahalanobis(x, g.means_[0], np.linalg.inv(g.covariances_[0])) for x in ev])
    assert dm.mahalanobis(m, ev) == pytest.approx(expected, rel=1e-6)
    kde = fit_distribution(ref, {"type": "kde", "bandwidth": 0.7})
    # exact: mean over reference rows of N(x; x_i, h^2 I), evaluated directly with scipy
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal
    direct = [logsumexp([multivariate_normal(r, 0.49 * np.eye(ref.shape[1])).logpdf(x) for r in ref])
              - np.log(len(ref)) for x in ev[:15]]
    assert np.allclose(kde.log_density(ev[:15]), direct, rtol=1e-12, atol=1e-12)
    # and scikit-learn's tree evaluation of the same density (approximate to ~1e-6)
    assert dm.neg_loglik(kde, ev) == pytest.approx(
        -KernelDensity(bandwidth=0.7).fit(ref).score_samples(ev).mean(), rel=1e-5)
    with pytest.raises(ModelError, match="covariance"):
        dm.mahalanobis(kde, ev)
    with pytest.raises(ModelError, match="components"):
        fit_distribution(ref[:4], {"type": "gmm", "covariance_type": "diag", "n_components": 5})


@pytest.mark.parametrize("metric", ["fid", "kid", "cmmd", "mmd_rbf"])
def test_kernel_reference_resamples_equal_explicit_resamples(metric):
    ref, ev = CASES["singular"]
    explicit = {"fid": dm.FIDReference, "kid": dm.KIDReference, "cmmd": dm.CMMDReference,
                "mmd_rbf": dm.MMDRBFReference}[metric](ref)
    kern = dm.KernelReference(metric, ref @ ref.T, ref.shape[1])
    k_state = kern.prepare((ref @ ev.T, ev @ ev.T))
    e_state = explicit.prepare(ev)
    idx = np.random.default_rng(1).integers(0, len(ev), len(ev))
    assert kern.score_prepared(k_state) == pytest.approx(explicit.score_prepared(e_state), rel=1e-8)
    assert kern.score_prepared(k_state, idx) == pytest.approx(explicit.score_prepared(e_state, idx), rel=1e-8)


def test_kid_subsets_from_kernels_equal_explicit_subsets():
    ref, ev = CASES["singular"]
    explicit = dm.KIDReference(ref, subsets=5, subset_size=20, seed=3)
    kern = dm.KernelReference("kid", ref @ ref.T, ref.shape[1], kid_subsets=5, kid_subset_size=20, seed=3)
    k_state, e_state = kern.prepare((ref @ ev.T, ev @ ev.T)), explicit.prepare(ev)
    idx = np.random.default_rng(2).integers(0, len(ev), len(ev))
    assert kern.score_prepared(k_state) == pytest.approx(explicit.score_prepared(e_state), rel=1e-9)
    assert kern.score_prepared(k_state, idx) == pytest.approx(explicit.score_prepared(e_state, idx), rel=1e-9)


def test_config_defaults_are_the_published_constants():
    """The defaults of KID and CMMD are the published values, written out here from their
    sources (torch-fidelity's KID defaults / Binkowski et al.; the CMMD reference's _SIGMA and
    _SCALE); config.py's sections hold only overrides, and a run's settings record every value."""
    from featrank import run_plan
    from featrank import user_config
    from helpers import tiny_config
    assert dm.metric_params("cmmd", {}) == {"sigma": 10.0, "scale": 1000.0}
    assert dm.metric_params("kid", {}) == {"subsets": None, "subset_size": 1000, "degree": 3,
                                           "gamma": None, "coef0": 1.0}
    user = tiny_config()
    user = user.replace(config={**user.config, "kid": {"subsets": 7}})
    cfg = user_config.resolve_settings(user, {}, "quick")
    assert cfg["kid"] == {**dm.metric_params("kid", {}), "subsets": 7}
    assert cfg["cmmd"] == {"sigma": 10.0, "scale": 1000.0}


@pytest.mark.parametrize("cov", ["full", "tied"])
def test_full_and_tied_gmm_in_the_reference_span_equal_sklearn_on_the_rows(cov):
    """d = 64 > n - 1 = 39: fitted on the span coordinates (from rows, or kernels alone), the
    mixture equals scikit-learn's fitted on the 64-dim rows: log-density and Mahalanobis."""
    from sklearn.mixture import GaussianMixture
    from featrank.distribution_modeling import KernelQuery, KernelRows, fit_distribution
    ref, ev = CASES["singular"]
    spec = {"type": "gmm", "covariance_type": cov, "n_components": 3, "reg_covar": 1e-2}
    peer = GaussianMixture(3, covariance_type=cov, reg_covar=1e-2, random_state=0, max_iter=200).fit(ref)
    rows = fit_distribution(ref, spec, seed=0)
    kern = fit_distribution(KernelRows(ref @ ref.T, ref.shape[1]), spec, seed=0)
    assert rows.span is not None and rows.span.rank == 39
    q = KernelQuery(ev @ ref.T, np.sum(ev * ev, axis=1))
    np.testing.assert_allclose(rows.log_density(ev), peer.score_samples(ev), rtol=1e-6)
    np.testing.assert_allclose(kern.log_density(q), peer.score_samples(ev), rtol=1e-6)
    covs = peer.covariances_ if cov == "full" else [peer.covariances_] * 3
    resp = peer.predict_proba(ev)
    direct = sum(resp[:, j] * np.array([scipy_mahalanobis(x, peer.means_[j], np.linalg.inv(covs[j]))
                                        for x in ev]) for j in range(3))
    np.testing.assert_allclose(rows.mahalanobis(ev), direct, rtol=1e-6)
    np.testing.assert_allclose(kern.mahalanobis(q), direct, rtol=1e-6)


def test_zero_rows_are_refused_with_their_count():
    x = np.ones((4, 3))
    x[[1, 3]] = 0
    with pytest.raises(dm.MetricInputError, match="^2 row\\(s\\) are all zeros"):
        dm.unit_rows(x)
    assert np.allclose(dm.unit_rows(np.ones((2, 4))), 0.5)
    with pytest.raises(dm.MetricInputError, match="all zeros"):
        dm.unit_kernel(np.ones((2, 2)), [1.0, 1.0], [1.0, 0.0])
    with pytest.raises(dm.MetricInputError, match="all zeros"):
        dm.unit_kernel(np.ones((2, 2)), [0.0, 1.0], [1.0, 1.0])
    with pytest.raises(dm.MetricInputError, match="all zeros"):
        rp.l2_normalize(x)


def test_float32_and_integer_inputs_are_computed_in_float64():
    """Rows and norms given as float32 or integers give the float64 result exactly."""
    rng = np.random.default_rng(3)
    x64 = rng.normal(size=(5, 4)).astype(np.float32).astype(np.float64)
    assert dm.unit_rows(x64.astype(np.float32)).dtype == np.float64
    np.testing.assert_array_equal(dm.unit_rows(x64.astype(np.float32)), dm.unit_rows(x64))
    k, sq = x64 @ x64.T, np.sum(x64 ** 2, axis=1)
    got = dm.unit_kernel(k.astype(np.float32), sq.astype(np.float32), sq.astype(np.float32))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, dm.unit_kernel(k, sq, sq), rtol=1e-6)
    ints = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(rp.gap(ints[:, :, None, None].repeat(2, 2).repeat(2, 3)), ints)
    np.testing.assert_allclose(rp.gap(np.array([[[1, 2], [4, 7]]]), "mean", prefix_tokens=0), [[2.5, 4.5]])


def test_rbf_mmd_and_cmmd_with_a_numeric_bandwidth_by_hand():
    """k(x, y) = exp(-|x - y|^2 / (2 sigma^2)); unbiased MMD^2 written out term by term."""
    rng = np.random.default_rng(4)
    ref, ev = rng.normal(size=(7, 3)), rng.normal(0.5, 1, size=(5, 3))

    def k(a, b, s):
        return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * s * s))

    def mmd2(s):
        kxx, kyy, kxy = k(ref, ref, s), k(ev, ev, s), k(ref, ev, s)
        return ((kxx.sum() - np.trace(kxx)) / (7 * 6) + (kyy.sum() - np.trace(kyy)) / (5 * 4)
                - 2 * kxy.mean())
    assert dm.mmd_rbf(ref, ev, sigma=0.8) == pytest.approx(mmd2(0.8), rel=1e-12)
    d = np.sqrt(((ref[:, None] - ref[None]) ** 2).sum(-1))[np.triu_indices(7, 1)]
    assert dm.mmd_rbf(ref, ev) == pytest.approx(mmd2(np.median(d)), rel=1e-12)
    with pytest.raises(dm.MetricInputError, match="median heuristic"):
        dm.mmd_rbf(np.zeros((4, 2)), ev[:, :2])
    # CMMD (Jayasumana et al. 2024): the biased MMD^2 with sigma 10, times 1000
    u, v = dm.unit_rows(ref), dm.unit_rows(ev)
    kxx, kyy, kxy = k(u, u, 10.0), k(v, v, 10.0), k(u, v, 10.0)
    assert dm.cmmd(u, v) == pytest.approx(1000 * (kxx.mean() + kyy.mean() - 2 * kxy.mean()), rel=1e-9)


def test_gaussian_with_a_rank_deficient_covariance_from_more_rows_than_dims():
    """n > d but a repeated column: the covariance is singular, so the ridge reg * trace / d
    is added (explicit route), and the span route at full rank adds none; both against scipy."""
    from scipy.spatial.distance import mahalanobis
    from scipy.stats import multivariate_normal

    from featrank.distribution_modeling import KernelQuery, KernelRows, fit_distribution
    rng = np.random.default_rng(6)
    ref = rng.normal(size=(30, 3))
    ref = np.column_stack([ref, ref[:, 0]])          # 4 dims, rank 3
    ev = rng.normal(size=(5, 4))
    m = fit_distribution(ref, {"type": "gaussian", "reg": 1e-3})
    cov = np.cov(ref, rowvar=False)
    ridge = 1e-3 * np.trace(cov) / 4
    assert m.rank == 3 and m.ridge == pytest.approx(ridge, rel=1e-12)
    full = cov + ridge * np.eye(4)
    vi = np.linalg.inv(full)
    np.testing.assert_allclose(m.mahalanobis(ev), [mahalanobis(x, ref.mean(0), vi) for x in ev], rtol=1e-8)
    np.testing.assert_allclose(m.log_density(ev), multivariate_normal(ref.mean(0), full).logpdf(ev), rtol=1e-9)
    # kernels of 3 full-rank dims from 30 rows: the span form at full rank, no ridge
    x = ref[:, :3]
    k = fit_distribution(KernelRows(x @ x.T, 3), {"type": "gaussian", "reg": 1e-3})
    q = KernelQuery(ev[:, :3] @ x.T, np.sum(ev[:, :3] ** 2, axis=1))
    assert k.rank == 3 and k.ridge == 0.0
    cov3 = np.cov(x, rowvar=False)
    np.testing.assert_allclose(k.log_density(q), multivariate_normal(x.mean(0), cov3).logpdf(ev[:, :3]), rtol=1e-9)
    np.testing.assert_allclose(k.mahalanobis(q), [mahalanobis(e, x.mean(0), np.linalg.inv(cov3)) for e in ev[:, :3]],
                               rtol=1e-8)


def test_kde_auto_bandwidth_is_scotts_rule_on_the_mean_variance():
    """h = n^(-1/(d+4)) x sqrt(mean per-dimension variance) (Scott's factor, isotropic), from
    rows or kernels; the density is scikit-learn's KernelDensity at that h."""
    from sklearn.neighbors import KernelDensity

    from featrank.distribution_modeling import KernelQuery, KernelRows, fit_distribution
    rng = np.random.default_rng(7)
    ref, ev = rng.normal(size=(25, 3)) * [1, 2, 3], rng.normal(size=(4, 3)) * 0.01  # near the mean
    h = 25 ** (-1 / 7) * np.sqrt(np.mean(np.var(ref, axis=0, ddof=1)))
    rows = fit_distribution(ref, {"type": "kde", "bandwidth": "auto"})
    kern = fit_distribution(KernelRows(ref @ ref.T, 3), {"type": "kde", "bandwidth": "auto"})
    assert rows.bandwidth == pytest.approx(h, rel=1e-12) and kern.bandwidth == pytest.approx(h, rel=1e-12)
    expected = KernelDensity(bandwidth=h).fit(ref).score_samples(ev)
    np.testing.assert_allclose(rows.log_density(ev), expected, rtol=1e-10)
    q = KernelQuery(ev @ ref.T, np.sum(ev * ev, axis=1))
    np.testing.assert_allclose(kern.log_density(q), expected, rtol=1e-8)
    # a query on a reference row: squared distance 0 (rounding may make it slightly negative)
    np.testing.assert_allclose(rows.log_density(ref[:2]), KernelDensity(bandwidth=h).fit(ref).score_samples(ref[:2]),
                               rtol=1e-10)


def test_span_form_for_rows_inside_the_reference_span():
    """n - 1 < d, evaluation rows that are affine combinations of reference rows: their residual
    outside the span is zero (up to rounding, clipped at 0), so only the span term counts."""
    from scipy.spatial.distance import mahalanobis

    from featrank.distribution_modeling import fit_distribution
    rng = np.random.default_rng(8)
    ref = rng.normal(size=(6, 12))
    w = rng.dirichlet(np.ones(6), size=4)
    ev = w @ ref                                      # inside the affine span of the references
    m = fit_distribution(ref, {"type": "gaussian", "reg": 1e-2})
    assert m.form == "span" and m.ridge > 0
    vi = np.linalg.inv(np.cov(ref, rowvar=False) + m.ridge * np.eye(12))
    np.testing.assert_allclose(m.mahalanobis(ev), [mahalanobis(x, ref.mean(0), vi) for x in ev], rtol=1e-6)


def test_kid_with_other_kernel_parameters_rows_and_kernels():
    """KID's polynomial kernel (gamma x.y + coef0)^degree with non-default parameters, from
    rows and from linear kernel blocks, against the unbiased MMD^2 written out."""
    rng = np.random.default_rng(9)
    ref, ev = rng.normal(size=(9, 3)), rng.normal(0.4, 1, size=(6, 3))

    def poly(a, b):
        return (0.37 * a @ b.T + 0.5) ** 2
    kxx, kyy, kxy = poly(ref, ref), poly(ev, ev), poly(ref, ev)
    expected = ((kxx.sum() - np.trace(kxx)) / 72 + (kyy.sum() - np.trace(kyy)) / 30 - 2 * kxy.mean())
    assert dm.kid(ref, ev, degree=2, gamma=0.37, coef0=0.5) == pytest.approx(expected, rel=1e-12)
    assert dm.kid_from_kernel(ref @ ref.T, ref @ ev.T, ev @ ev.T, 3, degree=2, gamma=0.37, coef0=0.5) == \
        pytest.approx(expected, rel=1e-10)


def test_frechet_distance_refuses_mismatched_statistics():
    mu, s3, s4 = np.zeros(3), np.eye(3), np.eye(4)
    for args in ((mu, s3, mu, s4), (mu, s3, np.zeros(4), s3), (mu, s4, mu, s4)):
        with pytest.raises(dm.MetricInputError, match="shapes differ"):
            dm.frechet_distance(*args)
    assert dm.frechet_distance(mu, s3, mu + 1, s3) == pytest.approx(3.0, rel=1e-12)


def test_every_metric_points_the_way_the_literature_defines_it():
    """dm.orientation, checked once against the written table (tests/helpers.WORSENS), which the
    other tests use instead of the code: every metric has a row, and the two agree."""
    from helpers import WORSENS
    assert set(WORSENS) == set(dm.METRICS)
    assert {m: dm.orientation(m) for m in dm.METRICS} == WORSENS

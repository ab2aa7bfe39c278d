"""Edges of the numeric core that the mutation run (tests/mutation.sh) found untested: the
post-processing chain against scikit-learn, the PCA size limits, zero-row guards, numeric
bandwidths, float32 inputs and the pooling of tokens without a CLS token."""
import numpy as np
import pytest

import distance_metrics as dm
import representations as rp


def _same_up_to_sign(a, b, tol):
    signs = np.sign(np.sum(a * b, axis=0))
    np.testing.assert_allclose(a * signs, b, atol=tol)


@pytest.mark.parametrize("l2,standardize,whiten", [(False, True, True), (True, True, False),
                                                   (True, False, True), (False, True, False)])
def test_postprocess_chain_equals_scikit_learn(l2, standardize, whiten):
    """L2 rows -> z-scores (ddof 1) -> PCA (whitened by the components' standard deviations),
    fitted on the reference rows, against sklearn's Normalizer, a ddof-1 scaler and PCA."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import Normalizer
    rng = np.random.default_rng(0)
    for n, d in ((40, 6), (5, 9)):           # n > d (SVD) and n < d (the n x n Gram route)
        ref = rng.normal(size=(n, d)) * np.arange(1, d + 1) + 3
        ev = rng.normal(size=(7, d)) * 2
        k = min(3, n - 1)
        pp = rp.PostProcess(ref, l2=l2, standardize=standardize, pca_dim=k, whiten=whiten)
        x, y = ref, ev
        if l2:
            norm = Normalizer().fit(x)
            x, y = norm.transform(x), norm.transform(y)
        if standardize:
            mu, sd = x.mean(0), x.std(0, ddof=1)
            x, y = (x - mu) / sd, (y - mu) / sd
        pca = PCA(n_components=k, whiten=whiten, svd_solver="full").fit(x)
        _same_up_to_sign(pp.apply(ev), pca.transform(y), 1e-8)
        _same_up_to_sign(pp.apply(ref), pca.transform(x), 1e-8)


def test_pca_dimension_limits():
    """pca_dim may reach min(n_ref - 1, dim), not beyond; kernel PCA n_ref - 1."""
    rng = np.random.default_rng(1)
    wide, tall = rng.normal(size=(6, 10)), rng.normal(size=(30, 4))
    assert rp.PostProcess(wide, pca_dim=5).apply(wide).shape == (6, 5)
    assert rp.PostProcess(tall, pca_dim=4).apply(tall).shape == (30, 4)
    for x, k, limit in ((wide, 6, 5), (tall, 5, 4)):
        with pytest.raises(dm.MetricInputError, match=f"exceeds min\\(n_ref - 1, dim\\) = {limit}"):
            rp.PostProcess(x, pca_dim=k)
    assert rp.KernelPCA(wide @ wide.T, 5).transform(wide @ wide.T).shape == (6, 5)
    with pytest.raises(dm.MetricInputError, match="exceeds n_ref - 1 = 5"):
        rp.KernelPCA(wide @ wide.T, 6)
    # rank 2 rows: a third component has no variance, in every route
    flat = rng.normal(size=(8, 2)) @ rng.normal(size=(2, 5))
    with pytest.raises(dm.MetricInputError, match="whiten"):
        rp.PostProcess(flat, pca_dim=3, whiten=True)
    with pytest.raises(dm.MetricInputError, match="fewer non-zero components"):
        rp.PostProcess(flat[:4], pca_dim=3)        # n < d: through the n x n Gram
    with pytest.raises(dm.MetricInputError, match="fewer non-zero components"):
        rp.KernelPCA(flat @ flat.T, 3)


def test_kernel_pca_projects_new_rows_like_explicit_pca():
    """Centring of a new row's kernel uses the reference means (K_xr - row mean - column mean
    + grand mean): equal to explicit PCA on rows far from the reference mean."""
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(20, 5)) * np.arange(1, 6) + 10      # a large mean: centring matters
    ev = rng.normal(size=(6, 5)) * 3 - 4
    kp = rp.KernelPCA(ref @ ref.T, 3, whiten=True)
    explicit = rp.PostProcess(ref, pca_dim=3, whiten=True)
    _same_up_to_sign(kp.transform(ev @ ref.T), explicit.apply(ev), 1e-8)


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


def test_token_pooling_without_a_cls_token():
    tokens = np.arange(2 * 4 * 3, dtype=float).reshape(2, 4, 3)
    np.testing.assert_array_equal(rp.gap(tokens, "mean", prefix_tokens=0), tokens.mean(axis=1))
    for pool in ("cls", "cls_mean"):
        with pytest.raises(dm.MetricInputError, match=pool):
            rp.gap(tokens, pool, prefix_tokens=0)
    with pytest.raises(dm.MetricInputError, match="shape"):
        rp.gap(np.zeros((2, 3, 4, 5, 6)))


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

    from distribution_modeling import KernelQuery, KernelRows, fit_distribution
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

    from distribution_modeling import KernelQuery, KernelRows, fit_distribution
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

    from distribution_modeling import fit_distribution
    rng = np.random.default_rng(8)
    ref = rng.normal(size=(6, 12))
    w = rng.dirichlet(np.ones(6), size=4)
    ev = w @ ref                                      # inside the affine span of the references
    m = fit_distribution(ref, {"type": "gaussian", "reg": 1e-2})
    assert m.form == "span" and m.ridge > 0
    vi = np.linalg.inv(np.cov(ref, rowvar=False) + m.ridge * np.eye(12))
    np.testing.assert_allclose(m.mahalanobis(ev), [mahalanobis(x, ref.mean(0), vi) for x in ev], rtol=1e-6)


def test_spearman_rows_of_two_columns():
    """One level and the clean set: rho is +1, -1 or 0 (a constant row), as scipy's."""
    import evaluation as ev
    got = ev._spearman_rows(np.array([[1.0, 2.0], [2.0, 1.0], [1.0, 1.0]]))
    np.testing.assert_array_equal(got, [1.0, -1.0, 0.0])


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

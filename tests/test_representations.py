"""Representations against the course notes' formulas and explicit computations."""
import tracemalloc

import numpy as np
import pytest

from featrank import distance_metrics as dm
from featrank import representations as rp


def test_gram_matches_course_notes_definition():
    rng = np.random.default_rng(0)
    act = rng.normal(size=(3, 5, 4, 6))
    rows = rp.gram_upper(act)
    for i in range(3):
        f = act[i].reshape(5, 24)
        g = f @ f.T / (5 * 4 * 6)                     # compute_gram_matrix in the notes
        iu = np.triu_indices(5)
        assert np.allclose(rows[i][iu[0] == iu[1]], np.diag(g))
        # Euclidean geometry of rows = Frobenius geometry of the matrices
        assert np.isclose(rows[i] @ rows[i], np.sum(g * g))


def test_gram_tokens_act_as_positions():
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(2, 7, 4))               # (n, T, D)
    f = tokens[0].T                                   # (D, T)
    g = f @ f.T / (4 * 7)
    assert np.isclose(rp.gram_upper(tokens)[0] @ rp.gram_upper(tokens)[0], np.sum(g * g))


def test_gram_kernel_equals_explicit_inner_products():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(4, 16, 3, 3)), rng.normal(size=(5, 16, 3, 3))
    explicit = rp.gram_upper(a) @ rp.gram_upper(b).T
    assert np.allclose(rp.gram_kernel(a, b), explicit, rtol=1e-10)


def test_gram_kernel_2048_channels_without_channel_squared_memory():
    """A 2048-channel layer: <G_a, G_b> without any 2048 x 2048 matrix. With one
    position, G = f f^T / C, so <G_a, G_b> = (f_a . f_b)^2 / C^2 exactly."""
    rng = np.random.default_rng(3)
    c = 2048
    a, b = rng.normal(size=(6, c, 1, 1)), rng.normal(size=(5, c, 1, 1))
    tracemalloc.start()
    k = rp.gram_kernel(a, b)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    fa, fb = a.reshape(6, c), b.reshape(5, c)
    assert np.allclose(k, (fa @ fb.T) ** 2 / c ** 2, rtol=1e-10)
    assert peak < c * c * 8 / 4, f"peak {peak} bytes: something allocated a C x C matrix"
    # and with several positions (7x7, as resnet50 layer4), still no C x C matrix
    a = rng.normal(size=(3, c, 7, 7)).astype(np.float32)
    tracemalloc.start()
    k = rp.gram_kernel(a, a)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < c * c * 8 / 4
    # against the definition, one image pair at a time (a 2048 x 2048 Gram per image here)
    f = a.astype(np.float64).reshape(3, c, 49)
    for i in range(3):
        gi = f[i] @ f[i].T / (c * 49)
        for j in range(i, 3):
            gj = f[j] @ f[j].T / (c * 49)
            assert k[i, j] == pytest.approx(np.sum(gi * gj), rel=1e-10)
            assert k[j, i] == k[i, j]


def test_fid_on_gram_through_kernel_equals_explicit():
    rng = np.random.default_rng(4)
    ref, ev = rng.normal(size=(12, 10, 2, 2)), rng.normal(0.3, 1, size=(9, 10, 2, 2))
    x, y = rp.gram_upper(ref), rp.gram_upper(ev)
    k_rr, k_re, k_ee = rp.gram_kernel(ref, ref), rp.gram_kernel(ref, ev), rp.gram_kernel(ev, ev)
    assert dm.fid_from_kernel(k_rr, k_re, k_ee) == pytest.approx(dm.fid(x, y), rel=1e-7)


def test_kernel_pca_equals_explicit_pca_up_to_sign():
    rng = np.random.default_rng(5)
    ref, ev = rng.normal(size=(30, 8)) * np.arange(1, 9), rng.normal(size=(10, 8))
    explicit = rp.PostProcess(ref, pca_dim=3, whiten=True)
    kp = rp.KernelPCA(ref @ ref.T, 3, whiten=True)
    a, b = explicit.apply(ev), kp.transform(ev @ ref.T)
    assert np.allclose(np.abs(a), np.abs(b), atol=1e-9)


def test_vit_pooling_options():
    tokens = np.arange(2 * 5 * 3, dtype=float).reshape(2, 5, 3)
    assert np.array_equal(rp.gap(tokens, "cls"), tokens[:, 0])
    assert np.allclose(rp.gap(tokens, "mean"), tokens[:, 1:].mean(1))
    both = rp.gap(tokens, "cls_mean")
    assert both.shape == (2, 6)
    np.testing.assert_array_equal(both[:, :3], tokens[:, 0])
    np.testing.assert_array_equal(both[:, 3:], tokens[:, 1:].mean(1))
    # with 4 prefix tokens (CLS + 3 registers), the mean skips them all
    np.testing.assert_array_equal(rp.gap(tokens, "mean", prefix_tokens=4), tokens[:, 4])


def test_postprocess_fits_on_reference_only_and_rejects_constant_columns():
    rng = np.random.default_rng(6)
    ref = rng.normal(size=(20, 4))
    pp = rp.PostProcess(ref, standardize=True)
    assert np.allclose(pp.apply(ref).mean(0), 0) and np.allclose(pp.apply(ref).std(0, ddof=1), 1)
    ref[:, 2] = 1.0
    with pytest.raises(dm.MetricInputError, match="constant"):
        rp.PostProcess(ref, standardize=True)


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


def test_token_pooling_without_a_cls_token():
    tokens = np.arange(2 * 4 * 3, dtype=float).reshape(2, 4, 3)
    np.testing.assert_array_equal(rp.gap(tokens, "mean", prefix_tokens=0), tokens.mean(axis=1))
    for pool in ("cls", "cls_mean"):
        with pytest.raises(dm.MetricInputError, match=pool):
            rp.gap(tokens, pool, prefix_tokens=0)
    with pytest.raises(dm.MetricInputError, match="shape"):
        rp.gap(np.zeros((2, 3, 4, 5, 6)))

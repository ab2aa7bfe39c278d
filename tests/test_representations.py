"""Representations against the course notes' formulas and explicit computations."""
import tracemalloc

import numpy as np
import pytest

import distance_metrics as dm
import representations as rp


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

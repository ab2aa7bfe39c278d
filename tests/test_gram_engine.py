"""The Gram engine (representations.gram_kernel_blocks, gram_rows) against Gram matrices built
directly in float64 numpy: G = F F^T / (C P) per image, the kernel <G_a, G_b>_F."""
import numpy as np
import pytest

from featrank import gram_engine as ge
from featrank import representations as rp

pytest.importorskip("torch")


def _grams(act):
    """(n, C, C) float64 Gram matrices, straight from the definition."""
    f = np.asarray(act, dtype=np.float64)
    f = f.reshape(len(f), f.shape[1], -1)
    return np.einsum("ncp,ndp->ncd", f, f) / (f.shape[1] * f.shape[2])


def _kernel(a, b):
    return np.einsum("icd,jcd->ij", _grams(a), _grams(b))


def _data(seed, n_ref, n_eval, n_units, shape, dtype=np.float64):
    rng = np.random.default_rng(seed)
    ref = [rng.normal(0.3, 1, size=(n, *shape)).astype(dtype) for n in (n_ref // 2, n_ref - n_ref // 2)]
    evals = [rng.normal(0.1 * u, 1 + 0.2 * u, size=(n_eval, *shape)).astype(dtype) for u in range(n_units)]
    return ref, evals


@pytest.mark.parametrize("route", ["rows", "samples"])
def test_kernel_blocks_equal_float64_grams_with_many_evaluation_images(route):
    """37 evaluation images per set and a small budget: the samples route splits each set into
    ranges of 3 images, so the off-diagonal (transposed) blocks of K_ee are exercised, and the
    rows route splits the channels into several row blocks."""
    ref, evals = _data(0, 11, 37, 2, (6, 3, 3))
    kr, kre, kee, kpair = ge.gram_kernel_blocks(ref, evals, route=route, precision="float64",
                                                budget_bytes=2**14, pair_with=1)
    r = np.concatenate(ref)
    np.testing.assert_allclose(kr, _kernel(r, r), rtol=1e-12)
    np.testing.assert_allclose(kre, _kernel(r, np.concatenate(evals)), rtol=1e-12)
    for u, e in enumerate(evals):
        np.testing.assert_allclose(kee[u], _kernel(e, e), rtol=1e-12)
        assert not np.allclose(kee[u][:3, 3:6], kee[u][:3, 3:6].T)   # the blocks are not symmetric
        # each image with the same image of set 1 (the paired metrics' clean set)
        np.testing.assert_allclose(kpair[u], np.diag(_kernel(e, evals[1])), rtol=1e-12)


def test_tokens_layout_equals_float64_grams():
    """(n, T, D) token activations: the Gram is over the D channels, positions are the tokens."""
    rng = np.random.default_rng(1)
    ref, ev = [rng.normal(size=(7, 5, 4))], [rng.normal(size=(9, 5, 4))]
    kr, kre, kee, _ = ge.gram_kernel_blocks(ref, ev, route="samples", precision="float64", budget_bytes=2**12)
    as_chw = [a.transpose(0, 2, 1) for a in (ref[0], ev[0])]
    np.testing.assert_allclose(kre, _kernel(*as_chw), rtol=1e-12)
    np.testing.assert_allclose(kee[0], _kernel(as_chw[1], as_chw[1]), rtol=1e-12)


def test_samples_route_accumulates_in_float64():
    """float32 GEMMs over 256 positions: the sum of the 65,536 squared products per pair, kept
    in float64, is within 3e-8 of the float64 kernel (8.7e-9 measured); summed in float32 it is
    off by ~5e-7."""
    ref, evals = _data(2, 5, 4, 1, (8, 16, 16), dtype=np.float32)
    kr, kre, _, _ = ge.gram_kernel_blocks(ref, evals, route="samples", precision="float32")
    r = np.concatenate(ref)
    np.testing.assert_allclose(kr, _kernel(r, r), rtol=3e-8)
    np.testing.assert_allclose(kre, _kernel(r, evals[0]), rtol=3e-8)


def test_gram_rows_and_gram_upper_are_the_isometric_upper_triangle():
    """Both explicit forms hold the upper triangle with off-diagonal entries x sqrt(2), so the
    dot product of two rows is <G_a, G_b>_F exactly."""
    rng = np.random.default_rng(3)
    act = rng.normal(size=(6, 5, 2, 3))
    g = _grams(act)
    iu = np.triu_indices(5)
    expected = g[:, iu[0], iu[1]] * np.where(iu[0] == iu[1], 1.0, np.sqrt(2.0))
    np.testing.assert_allclose(rp.gram_upper(act), expected, rtol=1e-12)
    np.testing.assert_allclose(ge.gram_rows(act, precision="float64"), expected, rtol=1e-12)
    np.testing.assert_allclose(ge.gram_rows(act.astype(np.float32)), expected, rtol=0,
                               atol=1e-6 * np.abs(expected).max())
    rows = ge.gram_rows(act, precision="float64")
    np.testing.assert_allclose(rows @ rows.T, _kernel(act, act), rtol=1e-12)
    np.testing.assert_allclose(rp.gram_kernel(act, act), _kernel(act, act), rtol=1e-12)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_gram_rows_are_the_same_bits_in_blocks_of_any_size(monkeypatch, precision):
    """gram_rows computes a block of images per GEMM in buffers it uses again: 17 images in
    blocks of 1, 5 (a partial last block) or 16 give the same bits, and the closed-form rows;
    a budget below one image's products still computes one image at a time. No warning: torch
    warns when it has to resize a buffer given as `out`."""
    import warnings
    act = np.random.default_rng(4).normal(size=(17, 12, 3, 2)).astype(np.float32)
    g = _grams(act.astype(np.float64))
    iu = np.triu_indices(12)
    expected = g[:, iu[0], iu[1]] * np.where(iu[0] == iu[1], 1.0, np.sqrt(2.0))
    one_image = 12 * 12 * (4 if precision == "float32" else 8)
    out = {}
    for images in (0.5, 1, 5, 16):
        monkeypatch.setattr(ge, "_ROWS_BLOCK_BYTES", int(images * one_image))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out[images] = ge.gram_rows(act, precision=precision)
        np.testing.assert_allclose(out[images], expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    assert all(np.array_equal(out[1], o) for o in out.values())

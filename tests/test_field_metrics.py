"""The field's other scores against their authors' packages and closed forms: precision, recall,
density, coverage (prdc), energy distance (dcor), sliced Wasserstein (POT), FD-infinity (its
definition on Gaussians of known Frechet distance), paired distances (by hand); kernel forms
against explicit forms; orientation in the ranking."""
import glob
import os

import numpy as np
import pytest
from scipy import linalg

from featrank import distance_metrics as dm
from featrank import neighbour_metrics
from featrank import evaluation as ev
from featrank import representations as rp
from featrank.feature_spaces import FeatureSpace, explicit_kernel
from featrank.user_config import default_config

prdc = pytest.importorskip("prdc")
dcor = pytest.importorskip("dcor")
ot = pytest.importorskip("ot")


def _random_sets(seed=0, n_ref=60, n_ev=37, d=12):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_ref, d)), rng.normal(size=(n_ev, d)) * 1.3 + 0.4


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """GAP rows of a real cache: random-init resnet50 layer4 of 20 reference and 8 evaluation
    images (x 5 sets) at 32 px."""
    from helpers import build_cache, write_images
    root = tmp_path_factory.mktemp("cached")
    write_images(root / "imgs", n=30)
    assert build_cache(root, "--n-inference", "20", "--n-evaluation", "8") == 0
    return _cached_sets(root)


def _cached_sets(root):
    arrays = {f: np.load(f) for f in glob.glob(str(root / "cache" / "**" / "*.npy"), recursive=True)}
    ref = next(v for k, v in arrays.items() if "chunk_000" in os.path.basename(k))
    evs = [v for k, v in sorted(arrays.items()) if "level_" in os.path.basename(k)]
    return rp.gap(ref), rp.gap(np.concatenate(evs))


def _peer_prdc(ref, e, k):
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):      # compute_prdc prints the counts
        return prdc.compute_prdc(ref, e, k)


def _check_prdc(ref, e):
    for k in (3, 5):
        want = _peer_prdc(ref, e, k)
        p, r = dm.precision_recall(ref, e, k)
        d, c = dm.density_coverage(ref, e, k)
        for name, got in (("precision", p), ("recall", r), ("density", d), ("coverage", c)):
            assert got == pytest.approx(float(want[name]), abs=1e-12), (name, k)


def test_prdc_equals_the_authors_package_on_random_rows():
    _check_prdc(*_random_sets())
    _check_prdc(*_random_sets(seed=3, n_ref=25, n_ev=80, d=3))


def test_prdc_equals_the_authors_package_on_cached_features(cached):
    ref, e = cached
    assert len(ref) == 20 and len(e) == 40
    _check_prdc(ref, e)
    _check_prdc(ref, e[:8])


def test_one_geometry_serves_every_distance_metric_of_a_space():
    """The scorers of one space share its dm.Geometry (evaluation.scorer_for): wide rows (the
    GEMM route), two evaluation sets of one shape given in turn, each time a new object (and a
    set given again): every score equals the peer packages' (prdc, dcor) and a scorer of its own."""
    rng = np.random.default_rng(11)
    ref = rng.normal(size=(40, 90))
    sets = [rng.normal(size=(30, 90)) * s + m for s, m in ((1.0, 0.0), (1.4, 0.3))]
    space = FeatureSpace.rows(ref, {("blur", 1): sets[0], ("blur", 2): sets[1]})
    geometries = {}
    shared = {m: ev.scorer_for(m, space, None, 0, geometries)
              for m in dm.GEOMETRY_METRICS}
    (geo,) = geometries.values()
    assert all(s.geo is geo for s in shared.values()) and geo.radii(3) is geo.radii(3)
    for e in (sets[0], sets[1], sets[0].copy()):
        want = _peer_prdc(ref, e, 3) | {f"{k}_5": v for k, v in _peer_prdc(ref, e, 5).items()}
        peers = {"precision": want["precision"], "recall": want["recall"],
                 "density": want["density_5"], "coverage": want["coverage_5"],
                 "energy": dcor.energy_distance(ref, e)}
        for m, scorer in shared.items():
            got = scorer.score(e)
            own = ev.scorer_for(m, space, None, 0).score(e)
            assert got == own, m
            if m in peers:
                assert got == pytest.approx(float(peers[m]), abs=1e-9), m


def test_swapping_ref_and_eval_swaps_precision_and_recall():
    a, b = _random_sets(seed=1)
    p_ab, r_ab = dm.precision_recall(a, b)
    p_ba, r_ba = dm.precision_recall(b, a)
    assert (p_ab, r_ab) == (r_ba, p_ba)
    assert p_ab != r_ab                   # the check would be empty if they were equal


def test_energy_distance_equals_dcor():
    for ref, e in (_random_sets(), _random_sets(seed=7, n_ref=300, n_ev=20, d=40)):
        assert dm.energy_distance(ref, e) == pytest.approx(dcor.energy_distance(ref, e), abs=1e-9)


def test_energy_and_sliced_wasserstein_on_cached_features_equal_the_peers(cached):
    ref, e = cached
    assert dm.energy_distance(ref, e) == pytest.approx(dcor.energy_distance(ref, e), abs=1e-9)
    proj = dm.random_projections(ref.shape[1], 50, seed=0)
    want = ot.sliced_wasserstein_distance(ref, e, projections=proj)
    assert dm.sliced_wasserstein(ref, e, projections=proj) == pytest.approx(want, abs=1e-9)


def test_reference_blocks_cover_references_wider_than_one_block(monkeypatch):
    """The reference radii and mean distance are computed in row blocks (no n x n matrix)."""
    monkeypatch.setattr(neighbour_metrics, "_BLOCK", 7)
    ref, e = _random_sets(n_ref=30)
    _check_prdc(ref, e)
    assert dm.energy_distance(ref, e) == pytest.approx(dcor.energy_distance(ref, e), abs=1e-9)


def test_sliced_wasserstein_equals_pot_with_the_same_projections():
    for ref, e in (_random_sets(), _random_sets(seed=2, n_ref=17, n_ev=90, d=5)):
        proj = dm.random_projections(ref.shape[1], 64, seed=11)
        want = ot.sliced_wasserstein_distance(ref, e, projections=proj, p=2)
        assert dm.sliced_wasserstein(ref, e, projections=proj) == pytest.approx(want, abs=1e-9)
        # the same seed draws POT's directions
        want = ot.sliced_wasserstein_distance(ref, e, n_projections=30, seed=4)
        assert dm.sliced_wasserstein(ref, e, n_projections=30, seed=4) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("rows", [7, 1 << 14])
def test_random_projections_are_pots_bit_for_bit_in_blocks_with_one_array_at_peak(monkeypatch, rows):
    """Drawn in blocks of `rows` rows (7: many blocks and a partial last one), the directions are
    POT's get_random_projections for the same seed, equal to the last bit; and the peak memory is
    one (dim, P) array plus a block, where POT's expression holds two at once."""
    import tracemalloc
    from ot.sliced import get_random_projections
    monkeypatch.setattr(neighbour_metrics, "_PROJECTION_ROWS", rows)
    for dim, n_proj, seed in ((1, 50, 0), (7, 3, 1), (50, 50, 2), (1000, 13, 3)):
        got = dm.random_projections(dim, n_proj, seed)
        assert got.dtype == np.float64 and got.shape == (dim, n_proj)
        assert np.array_equal(got, get_random_projections(dim, n_proj, seed))
    dim, n_proj = 60_000, 50
    tracemalloc.start()
    got = dm.random_projections(dim, n_proj, 5)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(got, get_random_projections(dim, n_proj, 5))
    assert peak < got.nbytes + 3 * rows * n_proj * 8 + (1 << 20)      # POT's: 2 x nbytes and more


def _true_fd(mu1, s1, mu2, s2):
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("d,n", [(16, 50), (64, 500)])
def test_fd_inf_is_closer_to_the_true_distance_than_fid(d, n):
    """Gaussian rows of known Frechet distance: FID's small-N bias is removed by the
    extrapolation to 1/N = 0 (Chong & Forsyth), in every one of five draws. The method assumes
    FID_N linear in 1/N, which holds once N exceeds the dimension: at N = 50 and d = 64 (the
    issue's example) FID_N is concave in 1/N over the subset sizes 5..50, and the reference
    method's FD-infinity lands farther from the truth than FID (31 vs 28 off, true 4.27)."""
    wins = 0
    rng = np.random.default_rng(0)
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    s2 = 0.5 * np.eye(d) + a @ a.T * 0.5
    mu2 = np.full(d, 0.1)
    true = _true_fd(np.zeros(d), np.eye(d), mu2, s2)
    for draw in range(5):
        r = np.random.default_rng(100 + draw)
        ref = r.normal(size=(20000, d))
        e = r.multivariate_normal(mu2, s2, size=n)
        fid, fdi = dm.fid(ref, e), dm.fd_inf(ref, e, seed=draw)
        wins += abs(fdi - true) < abs(fid - true)
    assert wins == 5


def test_fd_inf_follows_its_definition():
    """The line through (1/N, FID_N) of the subsets the seeded generator draws, read at 0."""
    ref, e = _random_sets(n_ref=80, n_ev=40, d=6)
    rng = np.random.default_rng(9)
    sizes = np.linspace(min(5000, max(40 // 10, 2)), 40, 15).astype(np.int32)
    fds = [dm.fid(ref, e[rng.choice(40, int(s), replace=False)]) for s in sizes]
    slope, intercept = np.polyfit(1 / sizes, fds, 1)
    assert dm.fd_inf(ref, e, seed=9) == pytest.approx(intercept, rel=1e-9)
    assert dm.fd_inf(ref, e, seed=9) == dm.fd_inf(ref, e, seed=9)


def test_paired_distances_by_hand():
    e = np.array([[3.0, 4.0], [1.0, 0.0]])
    clean = np.array([[0.0, 0.0 + 4.0], [0.0, 2.0]])
    assert dm.paired_l2(e, clean) == pytest.approx((3.0 + np.sqrt(5.0)) / 2)
    assert dm.paired_cosine(e, clean) == pytest.approx(((1 - 16 / 20)) / 2 + 1 / 2)
    # on Gram rows the paired L2 is the Frobenius distance of the Gram matrices (style loss)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 5, 3, 3)), rng.normal(size=(2, 5, 3, 3))
    fro = [np.linalg.norm(_gram(x[i]) - _gram(y[i])) for i in range(2)]
    assert dm.paired_l2(rp.gram_upper(x), rp.gram_upper(y)) == pytest.approx(np.mean(fro), rel=1e-12)


def _gram(a):
    f = a.reshape(a.shape[0], -1)
    return f @ f.T / f.size


@pytest.mark.parametrize("metric", ["precision", "recall", "density", "coverage", "energy", "fd_inf"])
def test_kernel_forms_equal_the_explicit_forms(metric):
    ref, e = _random_sets(n_ref=40, n_ev=25, d=9)
    space = FeatureSpace.rows(ref, {("clean", 0): e})
    kspace = FeatureSpace.kernels(explicit_kernel(ref, {("clean", 0): e}))
    a = ev.scorer_for(metric, space, None, seed=3)
    b = ev.scorer_for(metric, kspace, None, seed=3)
    sa = a.prepare(ev._evaluation_input(metric, space, ("clean", 0)))
    sb = b.prepare(ev._evaluation_input(metric, kspace, ("clean", 0)))
    idx = np.random.default_rng(1).integers(0, 25, 25)
    assert b.score_prepared(sb) == pytest.approx(a.score_prepared(sa), abs=1e-6)
    assert b.score_prepared(sb, idx) == pytest.approx(a.score_prepared(sa, idx), abs=1e-6)


@pytest.mark.parametrize("metric", ["paired_l2", "paired_cosine"])
@pytest.mark.parametrize("unit", [False, True])
def test_paired_kernel_forms_equal_the_explicit_forms(metric, unit):
    """Each image against its own clean version from kernel blocks (norms and the paired inner
    products), raw and L2-normalised, equals the explicit rows' values."""
    ref, e = _random_sets(n_ref=12, n_ev=9, d=7)
    d = e + np.random.default_rng(5).normal(scale=0.3, size=e.shape)
    evals = {("clean", 0): e, ("d", 1): d}
    space, kspace = FeatureSpace.rows(ref, evals), FeatureSpace.kernels(explicit_kernel(ref, evals))
    if unit:
        space, kspace = space.unit(), kspace.unit()
    a, b = ev.scorer_for(metric, space, None, 0), ev.scorer_for(metric, kspace, None, 0)
    for key in evals:
        va = a.prepare(ev._evaluation_input(metric, space, key))
        vb = b.prepare(ev._evaluation_input(metric, kspace, key))
        np.testing.assert_allclose(vb, va, rtol=1e-9, atol=1e-7)
    assert np.all(va > 0)


def test_resampled_scores_equal_the_scores_of_the_resampled_rows():
    ref, e = _random_sets(n_ref=40, n_ev=25, d=9)
    idx = np.random.default_rng(2).integers(0, 25, 25)
    want = _peer_prdc(ref, e[idx], 3)
    for name in ("precision", "recall"):
        s = dm.PRDCReference(name, ref)
        assert s.score_prepared(s.prepare(e), idx) == pytest.approx(float(want[name]), abs=1e-12)
    s = dm.EnergyReference(ref)
    assert s.score_prepared(s.prepare(e), idx) == pytest.approx(dcor.energy_distance(ref, e[idx]), abs=1e-9)
    s = dm.SlicedWassersteinReference(ref, seed=5)
    want = ot.sliced_wasserstein_distance(ref, e[idx], projections=s.projections)
    assert s.score_prepared(s.prepare(e), idx) == pytest.approx(want, abs=1e-9)


# ------------------------------------------------------------------ orientation in the ranking

def _score(metric, ref, evals, degs):
    conf = ev.Configuration("x", {"name": "l", "layers": [0], "paths": ["p"]}, {"name": "raw"}, None, metric)
    (res,) = ev.score_group([conf], lambda: FeatureSpace.rows(ref, evals), degs, seed=0)
    return res


def _modes(rng, centres, n):
    return centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.05, (n, centres.shape[1]))


def test_higher_is_better_scores_are_turned_around_in_the_ranking():
    """A set that drifts off the reference manifold: precision and density fall; a set that
    loses modes: recall and coverage fall. Either way the oriented rho is positive (the score
    worsens as the images do), as it is for the distances."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (8, 6))
    ref = _modes(rng, centres, 400)
    drift = {("clean", 0): _modes(rng, centres, 80)}
    lose = {("clean", 0): drift[("clean", 0)]}
    for p in range(1, 5):
        drift[("d", p)] = _modes(rng, centres, 80) + rng.normal(0, 0.025 * p, (80, 6))
        lose[("d", p)] = _modes(rng, centres[: max(8 - 2 * p, 1)], 80)    # 6, 4, 2, 1 modes left
    degs = {"d": {"type": "gaussian_blur", "levels": [1, 2, 3, 4]}}
    for metric in ("precision", "density"):
        r = _score(metric, ref, drift, degs)
        scores = r.per_degradation["d"]["scores"]
        assert scores[-1] < scores[0] and r.mean_spearman > 0.8, (metric, scores)
    for metric in ("recall", "coverage"):
        r = _score(metric, ref, lose, degs)
        scores = r.per_degradation["d"]["scores"]
        assert scores[-1] < scores[0] and r.mean_spearman > 0.8, (metric, scores)
    r = _score("precision", ref, lose, degs)            # the lost modes' images stay faithful
    assert min(r.per_degradation["d"]["scores"]) > 0.8      # recall ends near 1/8
    for metric in ("fid", "energy", "sliced_wasserstein", "fd_inf"):
        assert _score(metric, ref, lose, degs).mean_spearman > 0.8, metric
    clean = drift[("clean", 0)]
    noisy = {("clean", 0): clean, **{("d", p): clean + rng.normal(0, 0.1 * p, clean.shape) for p in range(1, 5)}}
    for metric in ("paired_l2", "paired_cosine"):
        assert _score(metric, ref, noisy, degs).mean_spearman == pytest.approx(1.0), metric


# ------------------------------------------------------------------ pixel baselines

def _image_pairs(seed=0, shape=(3, 190, 170, 3)):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    y = np.clip(x + rng.normal(0, 25, shape), 0, 255).astype(np.uint8)
    return x, y


def _torch_pixels(a):
    import torch
    return torch.from_numpy(a.astype(np.float64)).permute(0, 3, 1, 2)


def test_ssim_takes_images_of_one_window_and_refuses_smaller_ones():
    """Wang's SSIM needs one 11 x 11 window: an 11-px image is scored (identical images give 1,
    an image against its negative far less), a side of 10 is refused, whichever side it is."""
    x, y = _image_pairs(5, (2, 11, 11, 3))
    assert dm.ssim(x, x) == pytest.approx([1.0, 1.0], abs=1e-12)
    assert (dm.ssim(x, 255 - x) < 0.5).all()
    for shape in ((1, 10, 30, 3), (1, 30, 10, 3)):
        a, b = _image_pairs(6, shape)
        with pytest.raises(dm.MetricInputError, match="at least 11 px a side"):
            dm.ssim(a, b)


def test_the_realism_score_of_each_row_by_hand():
    """realism_scores: per evaluation row, max over the kept reference balls of D_r / (|x - r|^2
    + eps), the radii (squared distance to the k-th neighbour) above their median dropped."""
    ref = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    ev = np.array([[0.5], [4.0]])
    # k = 1: squared radii 1, 1, 4, 9, 16; the median is 4, so 9 and 16 are dropped (set to 0)
    kept = np.array([1.0, 1.0, 4.0, 0.0, 0.0])
    d2 = (ev - ref.T) ** 2
    want = np.max(kept[None] / (d2 + 1e-5), axis=1)
    np.testing.assert_allclose(neighbour_metrics.realism_scores(ref, ev, k=1), want, rtol=1e-12)
    assert want[0] == pytest.approx(1 / 0.25, rel=1e-4) and want[1] == pytest.approx(4 / 1, rel=1e-4)


def test_rgb_ssim_and_ms_ssim_equal_pytorch_msssim():
    """ssim_rgb and ms_ssim_rgb are pytorch_msssim's (on R, G, B)."""
    pm = pytest.importorskip("pytorch_msssim")
    for seed, shape in ((0, (3, 190, 170, 3)), (1, (2, 161, 200, 3))):   # odd sides: padded pooling
        x, y = _image_pairs(seed, shape)
        want = pm.ssim(_torch_pixels(x), _torch_pixels(y), data_range=255, size_average=False).numpy()
        np.testing.assert_allclose(dm.ssim_rgb(x, y), want, rtol=0, atol=1e-6)
        want = pm.ms_ssim(_torch_pixels(x), _torch_pixels(y), data_range=255, size_average=False).numpy()
        np.testing.assert_allclose(dm.ms_ssim_rgb(x, y), want, rtol=0, atol=1e-6)
    # an image against its negative: the contrast-structure map is negative almost everywhere,
    # and pytorch_msssim's SSIM keeps it so (no clamp at 0, unlike pyiqa's): a negative score
    x = _image_pairs(2, (2, 64, 48, 3))[0]
    want = pm.ssim(_torch_pixels(x), _torch_pixels(255 - x), data_range=255, size_average=False).numpy()
    assert (want < -0.5).all(), want
    np.testing.assert_allclose(dm.ssim_rgb(x, 255 - x), want, rtol=0, atol=1e-6)
    small = _image_pairs(shape=(1, 40, 40, 3))
    want = pm.ssim(_torch_pixels(small[0]), _torch_pixels(small[1]), data_range=255, size_average=False)
    np.testing.assert_allclose(dm.ssim_rgb(*small), want.numpy(), atol=1e-6)
    with pytest.raises(dm.MetricInputError, match="161 px"):
        dm.ms_ssim_rgb(*small)
    assert dm.ssim_rgb(small[0], small[0]) == pytest.approx([1.0])


def _photographs():
    """The built-in source photographs and two of scikit-image's, at sizes where ssim.m
    downsamples by 1 and by 2, odd sides included."""
    import skimage.data
    from PIL import Image
    from featrank.dataset import _photo_paths
    sizes = ((256, 256), (300, 451), (384, 512))
    for path, (h, w) in zip(_photo_paths(), sizes):
        img = Image.open(path).convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
        yield np.asarray(img)
    yield skimage.data.chelsea()                   # 300 x 451, as published
    yield skimage.data.coffee()                    # 400 x 600: f = 2


DISTORTIONS = [("gaussian_blur", 1.0), ("gaussian_blur", 3.0), ("gaussian_noise", 10),
               ("gaussian_noise", 50), ("jpeg_compression", 10), ("jpeg_compression", 50),
               ("downsample_upsample", 3), ("blur_plus_contrast", [2.0, 0.6])]


def test_every_ssim_of_flat_images_is_the_luminance_term_in_closed_form():
    """Two flat images of grey levels a and b have no variance: the contrast-structure term is
    (0 + C2) / (0 + C2) = 1 at every scale, and SSIM is the luminance term alone,
    (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 255)^2 = 6.5025 (Wang et al. 2004, eq. 13);
    MS-SSIM is that term at the coarsest scale to the power 0.1333 (Wang et al. 2003, eq. 7).
    Dark levels, where C1 weighs: grey has the same luminance (0.299 + 0.587 + 0.114 = 1)."""
    c1 = (0.01 * 255) ** 2
    for a, b in ((0, 3), (2, 7), (40, 50), (9, 9)):
        x, y = (np.full((1, 192, 192, 3), v, np.uint8) for v in (a, b))
        term = (2 * a * b + c1) / (a * a + b * b + c1)
        for name, f in (("ssim", dm.ssim), ("ssim_rgb", dm.ssim_rgb)):
            assert f(x, y) == pytest.approx([term], rel=1e-12), (name, a, b)
        for name, f in (("ms_ssim", dm.ms_ssim), ("ms_ssim_rgb", dm.ms_ssim_rgb)):
            assert f(x, y) == pytest.approx([term ** 0.1333], rel=1e-12), (name, a, b)
    assert (2 * 0 * 3 + c1) / (0 + 9 + c1) == pytest.approx(0.41945, abs=1e-5)


def test_ssim_and_ms_ssim_are_the_literatures_as_pyiqa_computes_them():
    """`ssim` and `ms_ssim` (Wang et al.'s SSIM and MS-SSIM on luminance, no automatic
    downsampling) equal pyiqa's ssim and ms_ssim functions with the options of its calibrated
    metrics (downsample=False, YIQ's Y), on photographs and their distortions; the RGB reading
    differs."""
    import torch
    pyiqa_ssim = pytest.importorskip("pyiqa.archs.ssim_arch")
    from pyiqa.archs.func_util import preprocess_rgb
    from featrank.degradation_generator import apply_degradation

    def t(a):      # SSIM.forward's preprocessing; float32, as its float64 conv2d takes 20 s here
        x = torch.from_numpy(np.array(a, np.float32)).permute(0, 3, 1, 2) / 255
        return preprocess_rgb(x, test_y_channel=True, data_range=255, color_space="yiq")

    def ref_ssim(x, y):
        return pyiqa_ssim.ssim(x, y, data_range=255, downsample=False)

    def ref_ms(x, y):
        return pyiqa_ssim.ms_ssim(x, y, data_range=255, downsample=False, is_prod=True)
    worst, rgb_gap = 0.0, 0.0
    for ref in _photographs():
        dist = np.stack([apply_degradation(ref, d, lv, 0, "x") for d, lv in DISTORTIONS])
        refs = np.repeat(ref[None], len(dist), axis=0)
        with torch.no_grad():
            want_s = ref_ssim(t(dist), t(refs)).numpy()
            want_m = ref_ms(t(dist), t(refs)).numpy()
        got_s, got_m = dm.ssim(dist, refs), dm.ms_ssim(dist, refs)
        worst = max(worst, np.abs(got_s - want_s).max(), np.abs(got_m - want_m).max())
        if rgb_gap == 0.0:
            rgb_gap = np.abs(dm.ssim_rgb(dist, refs) - got_s).max()
    assert worst < 1e-4, worst
    assert rgb_gap > 1e-3                       # the RGB reading is another number


def test_ssim_does_not_downsample_and_reads_luminance():
    """Hand-built cases: a one-pixel checkerboard of +-20 grey levels on a flat 512 px image
    vanishes under ssim.m's 2 x 2 box downsampling (SSIM 1) but not in the field's SSIM, which
    sees it (well below 1); only luminance counts (a colour change that keeps 0.299 R + 0.587 G +
    0.114 B leaves SSIM at 1); MS-SSIM needs its 176 px."""
    flat = np.full((1, 512, 512, 3), 128, np.uint8)
    board = flat.astype(np.int16)
    yy, xx = np.mgrid[0:512, 0:512]
    board[0] += np.where((yy + xx) % 2 == 0, 20, -20)[..., None].astype(np.int16)
    board = board.astype(np.uint8)
    assert dm.ssim(board, flat)[0] < 0.5
    assert board.reshape(1, 256, 2, 256, 2, 3).mean(axis=(2, 4)).max() == 128   # what f = 2 would see
    grey = np.full((1, 64, 64, 3), 100, np.uint8)
    tinted = grey.copy()
    tinted[..., 0], tinted[..., 2] = 100 + 38, 100 - 100       # +0.299*38 - 0.114*100 = 0 in Y
    assert dm.luminance(tinted)[0, 0, 0, 0] == dm.luminance(grey)[0, 0, 0, 0] == 100
    assert dm.ssim(tinted, grey) == pytest.approx([1.0])
    assert dm.ssim_rgb(tinted, grey)[0] < 0.9
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (2, 170, 170, 3)).astype(np.uint8)
    with pytest.raises(dm.MetricInputError, match="176 px"):
        dm.ms_ssim(small[:1], small[1:])


def test_ssim_and_ms_ssim_equal_pyiqas_calibrated_metrics():
    """pyiqa's own `create_metric("ssim")` and `("ms_ssim")`, default options, float64: the
    metrics behind its calibration table and benchmark numbers, on crops of the built-in
    photographs and their distortions (1e-4)."""
    pyiqa = pytest.importorskip("pyiqa")
    import torch
    from featrank.degradation_generator import apply_degradation
    metrics = {name: pyiqa.create_metric(name, device="cpu", as_loss=False) for name in ("ssim", "ms_ssim")}
    ours = {"ssim": dm.ssim, "ms_ssim": dm.ms_ssim}
    for ref in list(_photographs())[:3]:
        ref = np.ascontiguousarray(ref[:192, :224])
        dist = np.stack([apply_degradation(ref, d, lv, 0, "x") for d, lv in DISTORTIONS[::2]])
        refs = np.repeat(ref[None], len(dist), axis=0)
        t = (lambda a: torch.from_numpy(np.array(a, np.float32)).permute(0, 3, 1, 2) / 255)
        for name, metric in metrics.items():
            with torch.no_grad():
                want = metric(t(dist), t(refs)).double().numpy().ravel()
            np.testing.assert_allclose(ours[name](dist, refs), want, atol=1e-4, err_msg=name)


def test_psnr_in_closed_form():
    x = np.zeros((2, 4, 4, 3), np.uint8)
    y = x.copy()
    y[0, 0, 0, 0] = 255                                   # one channel of one pixel, off by 255
    y[1] = 10                                              # every value off by 10
    mse = np.array([255.0 ** 2 / 48, 100.0])
    np.testing.assert_allclose(dm.psnr(x, y), 10 * np.log10(255.0 ** 2 / mse), rtol=1e-12)
    assert list(dm.psnr(x, x)) == [dm.PSNR_MAX_DB, dm.PSNR_MAX_DB]


def test_baselines_are_ranked_rows_and_psnr_follows_the_seed_degradations(tmp_path, capsys):
    """On the built-in data, PSNR falls with every one of the seed's five degradations: its
    oriented mean rho is above 0.9. The rows are labelled baseline:<name>; --no-baselines drops
    them; the summary compares the best feature space with the best baseline."""
    from featrank import cli
    import pandas as pd
    from helpers import tiny_args, tiny_config
    user = tiny_config(working_size=176, degradations=default_config()["degradations"],
                       distance_metrics=["fid", "paired_l2"])
    args = tiny_args(tmp_path, "--mode", "medium", "--layers", "0", "--n-inference", "6",
                     "--n-evaluation", "5")
    assert cli.main(args, user=user) == 0
    out = capsys.readouterr().out
    (run,) = (tmp_path / "results").iterdir()
    df = pd.read_csv(next(run.glob("results_*.csv"))).set_index("label")
    assert {"baseline:psnr", "baseline:ssim", "baseline:ms_ssim"} <= set(df.index)
    assert df.loc["baseline:psnr", "mean_spearman"] > 0.9
    # SSIM and MS-SSIM are similarities (higher = better): turned around, they rise with the
    # seed's degradations as PSNR does; read on the wrong side, their rho would be near -1
    print(df.loc[["baseline:psnr", "baseline:ssim", "baseline:ms_ssim"], "mean_spearman"])
    assert df.loc["baseline:ssim", "mean_spearman"] > 0.9
    assert df.loc["baseline:ms_ssim", "mean_spearman"] > 0.9
    assert set(df.filter(like="rho_", axis=1).columns) >= {f"rho_{d}" for d in user.config["degradations"]}
    baselines = [i for i in df.index if i.startswith("baseline:")]
    assert len(baselines) == 3 and (df.loc[baselines, "status"] == "scored").all()
    assert "vs best baseline (baseline:" in out and "paired interval" in out
    assert cli.main(args + ["--no-baselines"], user=user) == 0
    newest = max((tmp_path / "results").iterdir(), key=lambda p: p.stat().st_mtime)
    df = pd.read_csv(next(newest.glob("results_*.csv")))
    assert not df.label.str.startswith("baseline").any()


def test_baseline_values_are_cached_and_a_bad_file_is_recomputed(tmp_path, monkeypatch):
    from featrank import baselines
    from featrank.dataset import select_images
    from featrank.feature_cache import evaluation_units
    ev_records, _ = select_images("builtin", 3, 2, 0)
    degs = {"blur": {"type": "gaussian_blur", "levels": [1.0, 2.0]}}
    units = evaluation_units(ev_records, degs)
    first, reasons, _ = baselines.baseline_values(["psnr", "ssim"], units, 48, 0, str(tmp_path))
    assert not reasons and set(first["psnr"]) == {("clean", 0), ("blur", 1), ("blur", 2)}
    files = sorted((tmp_path / "baselines").rglob("*.npy"))
    assert len(files) == 2 * 3
    calls = []
    real = dict(dm.PIXEL_FUNCTIONS)
    monkeypatch.setitem(dm.PIXEL_FUNCTIONS, "psnr", lambda x, y: calls.append(1) or real["psnr"](x, y))
    again, _, _ = baselines.baseline_values(["psnr", "ssim"], units, 48, 0, str(tmp_path))
    assert calls == []                                      # every value read back
    for name in first:
        for key in first[name]:
            np.testing.assert_array_equal(again[name][key], first[name][key])
    files[0].write_bytes(files[0].read_bytes()[:-8])       # truncated: recomputed, equal
    third, _, _ = baselines.baseline_values(["psnr", "ssim"], units, 48, 0, str(tmp_path))
    for name in first:
        for key in first[name]:
            np.testing.assert_array_equal(third[name][key], first[name][key])
    # another working size, or another seed, is another key: each writes its own three files
    baselines.baseline_values(["psnr"], units, 40, 0, str(tmp_path))
    assert len(list((tmp_path / "baselines" / "psnr").glob("*.npy"))) == 6
    baselines.baseline_values(["psnr"], units, 48, 1, str(tmp_path))
    assert len(list((tmp_path / "baselines" / "psnr").glob("*.npy"))) == 9
    key = baselines.value_key
    clean, blur = units[0], units[1]
    base = key("psnr", blur, clean, 48, 0)
    assert base == key("psnr", blur, clean, 48, 0)
    others = [key("ssim", blur, clean, 48, 0), key("psnr", blur, clean, 40, 0),
              key("psnr", blur, clean, 48, 1), key("psnr", units[2], clean, 48, 0),
              key("psnr", blur, clean, 48, 0, network={"trunk": "x"})]
    assert len({base, *others}) == 6
    # the fields, named as the cache has always named them (a renamed field would orphan every
    # stored value): written out here, hashed by the one function that builds every key
    from featrank.degradation_generator import DEGRADATION_VERSION
    from featrank.feature_cache import cache_key
    assert (blur.degradation, blur.level) == ("gaussian_blur", 1.0)     # the type, not the name
    assert base == cache_key({
        "kind": "baseline", "name": "psnr", "version": baselines.BASELINE_VERSION,
        "degradations": DEGRADATION_VERSION, "working_size": 48, "seed": 0, "degradation": "gaussian_blur",
        "level": 1.0, "images": [r.sha256 for r in blur.records],
        "clean": [r.sha256 for r in clean.records]})
    assert key("lpips", blur, clean, 48, 0, network={"trunk": "x"}) == cache_key({
        "kind": "baseline", "name": "lpips", "version": baselines.BASELINE_VERSION,
        "degradations": DEGRADATION_VERSION, "working_size": 48, "seed": 0, "degradation": "gaussian_blur",
        "level": 1.0, "images": [r.sha256 for r in blur.records],
        "clean": [r.sha256 for r in clean.records], "network": {"trunk": "x"}})


# ------------------------------------------------------------------ constants and ties, written out

def test_density_and_coverage_default_to_naeem_et_als_k_and_precision_recall_to_kynkaanniemis():
    """Naeem et al. 2020 (sec. 4, and the prdc package's README): density and coverage with
    k = 5; Kynkaanniemi et al. 2019: precision and recall with k = 3. The defaults, through the
    functions and through the scorers the sweep builds, equal the authors' package at those k,
    on data where another k gives other numbers."""
    ref, e = _random_sets(seed=11, n_ref=50, n_ev=40, d=6)
    at5, at3 = _peer_prdc(ref, e, 5), _peer_prdc(ref, e, 3)
    assert at5["density"] != at3["density"] and at5["coverage"] != at3["coverage"]
    assert at5["precision"] != at3["precision"] or at5["recall"] != at3["recall"]
    d, c = dm.density_coverage(ref, e)
    p, r = dm.precision_recall(ref, e)
    assert (d, c) == (pytest.approx(float(at5["density"]), abs=1e-12),
                      pytest.approx(float(at5["coverage"]), abs=1e-12))
    assert (p, r) == (pytest.approx(float(at3["precision"]), abs=1e-12),
                      pytest.approx(float(at3["recall"]), abs=1e-12))
    space = FeatureSpace.rows(ref, {("clean", 0): e})
    kspace = FeatureSpace.kernels(explicit_kernel(ref, {("clean", 0): e}))
    want = {"density": at5, "coverage": at5, "precision": at3, "recall": at3}
    for metric, peer in want.items():
        for s in (space, kspace):
            scorer = ev.scorer_for(metric, s, None, 0)
            got = scorer.score(ev._evaluation_input(metric, s, ("clean", 0)))
            assert got == pytest.approx(float(peer[metric]), abs=1e-9), (metric, s.form)


def test_a_row_exactly_on_a_balls_radius_is_outside_it():
    """prdc counts a point inside a k-NN ball when its distance is strictly below the radius.
    Integer points on a line make distances exact: reference 0..6 (k = 3 radii 3, 2, 2, 2, 2,
    2, 3); the evaluation row at -3 lies exactly on the ball of 0, the one at 8 inside the ball
    of 6 (the other three are in no ball). By hand: precision 1/5, density 1/15, coverage 1/7. Explicit rows and kernel blocks
    both, and the authors' package."""
    ref = np.array([[x, 0.0] for x in range(7)])
    e = np.array([[-3.0, 0.0], [8.0, 0.0], [3.0, 4.0], [10.0, 0.0], [0.0, 7.0]])
    peer = _peer_prdc(ref, e, 3)
    hand = {"precision": 1 / 5, "density": 1 / 15, "coverage": 1 / 7}
    kr = explicit_kernel(ref, {("clean", 0): e})
    for which, value in hand.items():
        assert float(peer[which]) == pytest.approx(value, abs=1e-12)
        a = dm.PRDCReference(which, ref, k=3)
        b = dm.PRDCReference(which, k=3, k_rr=kr.rr)
        assert a.score(e) == pytest.approx(value, abs=1e-12), which
        assert b.score((kr.re[("clean", 0)], kr.ee[("clean", 0)])) == pytest.approx(value, abs=1e-12)
    # recall: which references the evaluation rows' k = 3 balls hold, strictly, as the package
    ra = dm.PRDCReference("recall", ref, k=3)
    assert ra.score(e) == pytest.approx(float(peer["recall"]), abs=1e-12)
    # the roles swapped: the line is now the evaluation set, and the row at -3 lies exactly on
    # the evaluation ball of 0, so recall (the reference rows in some evaluation ball) is 1/5
    swapped = _peer_prdc(e, ref, 3)
    assert float(swapped["recall"]) == pytest.approx(1 / 5, abs=1e-12)
    assert dm.PRDCReference("recall", e, k=3).score(ref) == pytest.approx(1 / 5, abs=1e-12)
    ks = explicit_kernel(e, {("clean", 0): ref})
    kb = dm.PRDCReference("recall", k=3, k_rr=ks.rr)
    assert kb.score((ks.re[("clean", 0)], ks.ee[("clean", 0)])) == pytest.approx(1 / 5, abs=1e-12)
    # the realism score's balls: |x - r|^2 + eps below D_r, not "at or below" (no change here:
    # R is a ratio); its pruning keeps radii at the 50th percentile and drops those above
    rs = dm.RealismReference(ref, k=3)
    radii_sq = np.array([9, 4, 4, 4, 4, 4, 9], float)
    kept = np.where(radii_sq > np.percentile(radii_sq, 50), 0.0, radii_sq)
    d2 = ((e[:, None, :] - ref[None]) ** 2).sum(-1)
    np.testing.assert_allclose(rs.prepare(e), np.max(kept[None] / (d2 + 1e-5), axis=1), rtol=1e-12)


def _every_metric_space(form):
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(40, 6))
    clean = rng.normal(size=(24, 6)) * 1.1 + 0.2
    evals = {("clean", 0): clean, ("d", 1): clean + rng.normal(scale=0.6, size=clean.shape)}
    if form == "kernel":
        return FeatureSpace.kernels(explicit_kernel(ref, evals)), evals, ref
    return FeatureSpace.rows(ref, evals), evals, ref


@pytest.mark.parametrize("form", ["explicit", "kernel"])
def test_every_scorer_scores_a_resample_as_the_resampled_rows(form):
    """For every feature metric (with each model of a model metric): the score of a bootstrap
    resample `idx` from the prepared state equals the score of a space whose sets are the
    resampled rows (each paired image with its resampled clean image), so a bootstrap cannot
    ignore its indices. KID is run without random subsets (one subset of all rows), as its
    subsets are drawn from the rows there are."""
    from featrank.distribution_modeling import MODELS
    space, evals, ref = _every_metric_space(form)
    idx = np.random.default_rng(9).integers(0, 24, 24)
    assert len(set(idx)) < 24
    resampled_evals = {k: v[idx] for k, v in evals.items()}
    resampled = (FeatureSpace.kernels(explicit_kernel(ref, resampled_evals)) if form == "kernel"
                 else FeatureSpace.rows(ref, resampled_evals))
    cfg = default_config()
    cfg["kid"] = {"subsets": 1, "subset_size": 24}
    degs = {"d": {"levels": [1.0]}}
    metrics = [m for m in dm.FEATURE_METRICS if form in dm.METRICS[m]["forms"]]
    confs = []
    for m in metrics:
        if dm.METRICS[m]["model"]:
            confs += [ev.Configuration("x", {"name": "l", "layers": [0], "paths": ["p"]},
                                       {"name": "raw"}, {"name": t, "type": t}, m)
                      for t in MODELS if t != "kde" or m == "neg_loglik"]
        else:
            confs.append(ev.Configuration("x", {"name": "l", "layers": [0], "paths": ["p"]},
                                          {"name": "raw"}, None, m))
    full = ev.score_group(confs, lambda: space, degs, seed=0, kid=cfg["kid"], cmmd=cfg["cmmd"])
    again = ev.score_group(confs, lambda: resampled, degs, seed=0, kid=cfg["kid"], cmmd=cfg["cmmd"])
    checked = set()
    for a, b in zip(full, again):
        assert a.status == b.status == "scored", (a.conf.metric, a.reason, b.reason)
        moved = []
        for p, key in enumerate([("clean", 0), ("d", 1)]):
            got = a.scorer.score_prepared(a.prepared[key], idx)
            want = b.per_degradation["d"]["scores"][p]
            assert got == pytest.approx(want, rel=1e-7, abs=1e-9), (a.conf.metric, a.conf.model, key)
            moved.append(a.scorer.score_prepared(a.prepared[key]) != pytest.approx(want, rel=1e-7))
        assert any(moved), a.conf.metric          # the resample is not the whole set's score
        checked.add(a.conf.metric)
    assert checked == set(metrics)

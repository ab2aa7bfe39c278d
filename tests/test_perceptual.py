"""LPIPS and DISTS baselines against the authors' packages (lpips.LPIPS, DISTS_pytorch.DISTS),
with the same stand-in VGG16 trunk: pretrained weights cannot be downloaded here, so a
random VGG16 is written into a temporary torch.hub cache, where backbones.resolve_weights finds
it as it would find torchvision's file; the peers get the same network. The heads (LPIPS's
linear layers, DISTS's alpha and beta) are the ones the installed packages ship."""
import numpy as np
import pytest
import torch
import torchvision

from featrank import distance_metrics as dm
from featrank import perceptual
from featrank.dataset import builtin_sources, load_rgb
from featrank.degradation_generator import apply_degradation

lpips = pytest.importorskip("lpips")
DISTS_pt = pytest.importorskip("DISTS_pytorch.DISTS_pt")


@pytest.fixture(scope="module")
def stand_in_vgg(tmp_path_factory):
    """A random VGG16 (seed 3) whose `features` are saved where torch.hub keeps torchvision's
    VGG16 checkpoint; returns (TORCH_HOME, the model)."""
    home = tmp_path_factory.mktemp("torch_home")
    torch.manual_seed(3)
    model = torchvision.models.vgg16(weights=None).eval()
    ckpt = home / "hub" / "checkpoints" / "vgg16-397923af.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in model.features.state_dict().items()}, ckpt)
    return str(home), model


@pytest.fixture
def images():
    """Three builtin images at 64 px, and each one blurred and noised (uint8 (n, 64, 64, 3))."""
    clean, degraded = [], []
    for i, src in enumerate(builtin_sources()[:3]):
        img = load_rgb(src, 64)
        clean += [img, img]
        degraded += [apply_degradation(img, "gaussian_blur", 1.0 + i, 0, "x"),
                     apply_degradation(img, "gaussian_noise", 5.0 + 5 * i, 0, f"{i:064x}")]
    return np.stack(degraded), np.stack(clean)


def _tensor(x):
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0


@pytest.fixture
def wide_images(images):
    """The same images made 64 x 96 (a third of each appended on the right): non-square maps
    at every layer, where pooling over the wrong axes, or dividing by one side squared, shows."""
    x, y = images
    return tuple(np.ascontiguousarray(np.concatenate([a, a[:, :, :32]], axis=2)) for a in (x, y))


@pytest.mark.parametrize("which", ["images", "wide_images"])
def test_lpips_equals_lpips_package(stand_in_vgg, which, request, monkeypatch):
    images = request.getfixturevalue(which)
    home, model = stand_in_vgg
    monkeypatch.setenv("TORCH_HOME", home)
    monkeypatch.setattr(lpips.pretrained_networks.tv, "vgg16", lambda *a, **k: model)
    net = perceptual.build("lpips", "auto", 0)
    assert net.provenance.source == "pretrained" and not net.provenance.random_init
    x, y = images
    ours = net.score(x, y)
    peer = lpips.LPIPS(net="vgg", version="0.1", verbose=False)(_tensor(x), _tensor(y), normalize=True)
    peer = peer.detach().double().numpy().reshape(-1)
    print("lpips max |ours - peer|", np.abs(ours - peer).max(), ours)
    assert np.abs(ours - peer).max() < 1e-6, (ours, peer)
    assert np.all(ours > 0)
    assert np.allclose(net.score(y, y), 0.0, atol=1e-12)         # an image against itself


@pytest.mark.parametrize("which", ["images", "wide_images"])
def test_dists_equals_dists_package(stand_in_vgg, which, request, monkeypatch):
    images = request.getfixturevalue(which)
    home, model = stand_in_vgg
    monkeypatch.setenv("TORCH_HOME", home)
    monkeypatch.setattr(DISTS_pt.models, "vgg16", lambda *a, **k: model)
    net = perceptual.build("dists", "auto", 0)
    x, y = images
    ours = net.score(x, y)
    peer = DISTS_pt.DISTS(load_weights=False)
    shipped = torch.load(perceptual.dists_head_file(), map_location="cpu", weights_only=True)
    peer.alpha.data, peer.beta.data = shipped["alpha"], shipped["beta"]
    with torch.no_grad():
        want = peer.eval()(_tensor(x), _tensor(y)).double().numpy().reshape(-1)
    print("dists max |ours - peer|", np.abs(ours - want).max(), ours)
    assert np.abs(ours - want).max() < 1e-6, (ours, want)
    assert np.allclose(net.score(y, y), 0.0, atol=1e-9)


def test_distances_are_zero_for_equal_features_and_grow_with_the_difference():
    """Closed forms: LPIPS of a one-layer, one-position pair with unit weights is the squared
    distance of the unit vectors; DISTS with equal features is 0."""
    a = np.zeros((1, 2, 1, 1)); a[0, 0] = 3.0
    b = np.zeros((1, 2, 1, 1)); b[0, 1] = 0.5
    assert dm.lpips_from_features([a], [b], [np.ones(2)])[0] == pytest.approx(2.0, abs=1e-9)
    rng = np.random.default_rng(0)
    f = [rng.random((2, 3, 4, 4)), rng.random((2, 5, 2, 2))]
    w = rng.random(8)
    assert np.allclose(dm.dists_from_features(f, f, w, w), 0.0, atol=1e-12)
    g = [f[0], f[1] + rng.random((2, 5, 2, 2))]
    assert np.all(dm.dists_from_features(f, g, w, w) > 0)
    with pytest.raises(dm.MetricInputError):
        dm.dists_from_features(f, f, w[:7], w[:7])
    # layers that do not pair up are refused, not truncated or broadcast
    with pytest.raises(ValueError):
        dm.dists_from_features(f, f[:1], w, w)
    with pytest.raises(ValueError):
        dm.lpips_from_features(f, f[:1], [np.ones(3), np.ones(5)])
    wider = [f[0], rng.random((2, 5, 2, 3))]
    with pytest.raises(dm.MetricInputError):
        dm.dists_from_features(f, wider, w, w)
    with pytest.raises(dm.MetricInputError):
        dm.lpips_from_features(f, wider, [np.ones(3), np.ones(5)])


def test_pooling_on_non_square_maps_equals_the_packages_functions():
    """On (N, C, 3, 7) and (N, C, 5, 2) maps: LPIPS as lpips.LPIPS.forward pools, with the
    package's own normalize_tensor (eps 1e-10) and spatial_average (mean over H and W); DISTS
    as DISTS_pt.DISTS.forward writes it out (c1 = c2 = 1e-6, means and variances over H and W,
    alpha and beta over their joint sum)."""
    rng = np.random.default_rng(2)
    shapes = [(2, 4, 3, 7), (2, 3, 5, 2)]
    fx = [rng.normal(size=s) for s in shapes]
    fy = [rng.normal(size=s) for s in shapes]
    lin = [rng.random(4), rng.random(3)]
    want = 0.0
    for a, b, w in zip(fx, fy, lin):
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        diff = (lpips.normalize_tensor(ta) - lpips.normalize_tensor(tb)) ** 2
        weighted = (diff * torch.from_numpy(w)[None, :, None, None]).sum(1, keepdim=True)
        want = want + lpips.spatial_average(weighted, keepdim=False).numpy()
    np.testing.assert_allclose(dm.lpips_from_features(fx, fy, lin), want.reshape(-1), rtol=1e-12)
    fx = [np.abs(f) for f in fx]                 # DISTS reads ReLU outputs
    fy = [np.abs(f) for f in fy]
    alpha, beta = rng.random(7), rng.random(7)
    c1 = c2 = 1e-6
    w_sum = alpha.sum() + beta.sum()
    d1 = d2 = 0.0
    for k, (a, b) in enumerate(zip(fx, fy)):
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        sl = slice(0, 4) if k == 0 else slice(4, 7)
        al = torch.from_numpy(alpha[sl] / w_sum)[None, :, None, None]
        be = torch.from_numpy(beta[sl] / w_sum)[None, :, None, None]
        xm, ym = ta.mean([2, 3], keepdim=True), tb.mean([2, 3], keepdim=True)
        s1 = (2 * xm * ym + c1) / (xm ** 2 + ym ** 2 + c1)
        d1 = d1 + (al * s1).sum(1, keepdim=True)
        xv = ((ta - xm) ** 2).mean([2, 3], keepdim=True)
        yv = ((tb - ym) ** 2).mean([2, 3], keepdim=True)
        cov = (ta * tb).mean([2, 3], keepdim=True) - xm * ym
        s2 = (2 * cov + c2) / (xv + yv + c2)
        d2 = d2 + (be * s2).sum(1, keepdim=True)
    want = (1 - (d1 + d2)).squeeze().numpy()
    np.testing.assert_allclose(dm.dists_from_features(fx, fy, alpha, beta), want, rtol=1e-12)


def test_without_the_trunk_weights_the_baseline_is_random_init(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net = perceptual.build("lpips", "auto", 5)
    assert net.provenance.random_init and net.provenance.seed == 5
    assert net.identity["trunk"] == {"source": "random-init", "seed": 5}
    again = perceptual.build("lpips", "random", 5)
    x = np.zeros((1, 32, 32, 3), np.uint8) + 100
    assert np.array_equal(net.features(x)[2], again.features(x)[2])    # seeded


def test_baseline_values_of_lpips_are_the_networks_scores_and_are_cached(tmp_path, monkeypatch,
                                                                        stand_in_vgg):
    """The pipeline's image-by-image loop (clean outputs computed once per few images) gives
    each unit the values of scoring it whole against the clean unit, and a second call reads
    them back from the cache; another trunk is another cache entry."""
    from featrank import baselines
    from featrank.dataset import ImageRecord, builtin_identity
    from featrank.feature_cache import evaluation_units
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    records = [ImageRecord(s, builtin_identity(s)) for s in builtin_sources()[:3]]
    units = evaluation_units(records, {"blur": {"type": "gaussian_blur", "levels": [1.0, 2.0]}})
    got = baselines.baseline_values(["lpips", "psnr"], units, 32, 0, str(tmp_path / "cache"), "random")
    assert got.reasons == {} and got.weights["lpips"].random_init
    net = perceptual.build("lpips", "random", 0)
    from featrank.dataset import load_rgb
    from featrank.degradation_generator import apply_degradation

    def images(u):           # written out here, not baselines.unit_images: decode, then degrade
        return np.stack([load_rgb(r.source, 32) if u.degradation is None else
                         apply_degradation(load_rgb(r.source, 32), u.degradation, u.level, 0, r.sha256)
                         for r in u.records]).astype(np.uint8)
    clean = images(units[0])
    assert units[0].degradation is None and len(units) == 3
    for u in units:
        want = net.score(images(u), clean)
        assert np.array_equal(got.values["lpips"][(u.group, u.position)], want)
    calls = []
    monkeypatch.setattr(perceptual.PerceptualNet, "features", lambda self, x: calls.append(1))
    again = baselines.baseline_values(["lpips"], units, 32, 0, str(tmp_path / "cache"), "random")
    assert calls == [] and all(np.array_equal(again.values["lpips"][k], v)
                               for k, v in got.values["lpips"].items())
    monkeypatch.setenv("TORCH_HOME", stand_in_vgg[0])     # another trunk, same seed: not a hit
    with pytest.raises(TypeError):                         # (features called: None is no list)
        baselines.baseline_values(["lpips"], units, 32, 0, str(tmp_path / "cache"), "auto")

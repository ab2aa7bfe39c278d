"""Shift-tolerant LPIPS (issue #43): the `stlpips_vgg` and `stlpips_alex` backbones and
baselines, ported from the authors' package stlpips-pytorch 0.0.2 and loading its weight
files, against that package's own `LPIPS(variant="shift_tolerant")` on photographs and their
distortions.

The package imports IPython (`embed`) and torchsummary (`summary`) at import time and never
calls them on the metric's path; the peer runs with those two names stubbed, its computation
untouched."""
import importlib.util
import os
import sys
import types

import numpy as np
import pytest
import torch

from featrank import backbones, baselines, perceptual
from featrank.dataset import ImageRecord, builtin_identity, builtin_sources, load_rgb
from featrank.degradation_generator import apply_degradation
from featrank.feature_cache import evaluation_units
from test_shipped_networks import _file

STLPIPS = ("stlpips_pytorch", "0.0.2", {
    "vgg": "44597da68f49c1837c100ff52299050f274d102eb102e5837178c79be6f0e250",
    "alex": "b356b382f96010f77d085ee8343ecd9fd322d0a56e8de2b2d0549fafcad8b9ee"})


@pytest.fixture(scope="module")
def peer():
    """The package's `stlpips` module (its unused IPython and torchsummary imports stubbed)."""
    _file("stlpips-pytorch", "vgg_shift_tolerant.pth")
    saved = {n: sys.modules.get(n) for n in ("IPython", "torchsummary")}
    for name, attr in (("IPython", "embed"), ("torchsummary", "summary")):
        if importlib.util.find_spec(name) is None:
            stub = types.ModuleType(name)
            setattr(stub, attr, lambda *a, **k: None)
            sys.modules[name] = stub
    from stlpips_pytorch import stlpips
    yield stlpips
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def photographs():
    """Four built-in photographs at 64 px (BAPPS's patch size), each against four distortions
    (blur, noise, JPEG) and a one-pixel shift (the wrap-around roll, the change ST-LPIPS was
    made to tolerate); uint8 (n, 64, 64, 3) distorted and clean."""
    clean, distorted = [], []
    for i, src in enumerate(builtin_sources()[:4]):
        img = load_rgb(src, 64)
        clean += [img] * 4
        distorted += [apply_degradation(img, "gaussian_blur", 1.0 + i / 2, 0, "x"),
                      apply_degradation(img, "gaussian_noise", 8.0 + 4 * i, 0, f"{i:064x}"),
                      apply_degradation(img, "jpeg_compression", 20 + 10 * i, 0, "x"),
                      np.roll(img, 1, axis=1)]
    return np.stack(distorted).astype(np.uint8), np.stack(clean).astype(np.uint8)


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_stlpips_equals_the_authors_package_on_photographs_and_their_distortions(
        peer, photographs, net):
    x, y = photographs
    ours = perceptual.build(f"stlpips_{net}", "auto", 0)
    assert (ours.provenance.package, ours.provenance.version, ours.provenance.sha256) == \
        (STLPIPS[0], STLPIPS[1], STLPIPS[2][net])
    got = ours.score(x, y)
    model = peer.LPIPS(net=net, variant="shift_tolerant", verbose=False)

    def tensor(a):
        return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        want = model(tensor(x), tensor(y), normalize=True).double().numpy().reshape(-1)
    print(net, "max |ours - peer|", np.abs(got - want).max(), got)
    assert np.abs(got - want).max() < 1e-6, (got, want)          # the issue asks for 1e-5
    assert np.all(got > 0) and np.allclose(ours.score(y, y), 0.0, atol=1e-12)
    # shift tolerance, the point of the network: a one-pixel shift is closer than any distortion
    # of the same photograph
    per_photo = got.reshape(4, 4)
    assert np.all(per_photo[:, 3] < per_photo[:, :3].min(axis=1)), per_photo


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_the_port_holds_every_tensor_of_the_weight_file(net):
    """Every key of the package's file is one of the port's, with its shape, and back; the blur
    pools' filters in the file are the binomial [1, 2, 1]^T [1, 2, 1] / 16 written out here."""
    path = _file("stlpips-pytorch", f"{net}_shift_tolerant.pth")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    module = backbones.get_spec(f"stlpips_{net}").build(224)
    own = module.state_dict()
    assert {k: tuple(v.shape) for k, v in own.items()} == {k: tuple(v.shape) for k, v in sd.items()}
    blur = torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]) / 16
    filters = [k for k in sd if k.endswith(".filt")]
    assert len(filters) == (4 if net == "vgg" else 3)
    for k in filters:
        assert torch.allclose(sd[k], blur.expand_as(sd[k])) and torch.allclose(own[k], sd[k])
    bb = backbones.build_backbone(f"stlpips_{net}", "auto", allow_download=False)
    assert all(torch.equal(bb.module.state_dict()[k], v) for k, v in sd.items())


def test_without_its_package_the_baseline_names_the_no_deps_install(monkeypatch):
    from importlib import metadata
    real = metadata.distribution

    def absent(name):
        if name.replace("_", "-").lower() == "stlpips-pytorch":
            raise metadata.PackageNotFoundError(name)
        return real(name)
    monkeypatch.setattr(metadata, "distribution", absent)
    for weights in ("auto", "random"):
        with pytest.raises(perceptual.BaselineUnavailable, match="pip install --no-deps stlpips-pytorch"):
            perceptual.build("stlpips_alex", weights, 0)
    with pytest.raises(backbones.WeightsError, match="pip install --no-deps stlpips-pytorch"):
        backbones.resolve_weights("stlpips_alex", "pretrained")


def test_in_a_run_the_baseline_is_scored_rises_with_blur_and_noise_and_random_keeps_the_heads(tmp_path):
    """baseline_values scores stlpips_alex on a run's units as the network scores them, every
    image farther at the stronger blur and the stronger noise; with --weights random the trunk
    is random-init under the seed and the heads stay the file's."""
    _file("stlpips-pytorch", "alex_shift_tolerant.pth")
    records = [ImageRecord(s, builtin_identity(s)) for s in builtin_sources()[:3]]
    units = evaluation_units(records, {"blur": {"type": "gaussian_blur", "levels": [1.0, 3.0]},
                                       "noise": {"type": "gaussian_noise", "levels": [10, 40]}})
    got = baselines.baseline_values(["stlpips_alex"], units, 48, 0, str(tmp_path / "cache"), "auto")
    assert got.reasons == {} and got.weights["stlpips_alex"].package == STLPIPS[0]
    clean = np.stack([load_rgb(r.source, 48) for r in records]).astype(np.uint8)
    net = perceptual.build("stlpips_alex", "auto", 0)
    for u in units[1:]:
        noisy = np.stack([apply_degradation(load_rgb(r.source, 48), u.degradation, u.level, 0, r.sha256)
                          for r in u.records]).astype(np.uint8)
        assert np.array_equal(got.values["stlpips_alex"][(u.group, u.position)], net.score(noisy, clean))
    for group in ("blur", "noise"):
        low, high = (got.values["stlpips_alex"][(u.group, u.position)] for u in units if u.group == group)
        assert np.all(high > low), group                  # more blur, more noise: farther
    rand = perceptual.build("stlpips_alex", "random", 7)
    assert rand.provenance.random_init and rand.provenance.seed == 7
    assert all(np.array_equal(a, b) for a, b in zip(rand.head["lin"], net.head["lin"]))
    x = clean[:1]
    assert not np.allclose(rand.features(x)[0], net.features(x)[0])
    assert np.array_equal(rand.features(x)[0], perceptual.build("stlpips_alex", "random", 7).features(x)[0])

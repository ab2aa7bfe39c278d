"""Contract: every registry row names a real module whose output has the declared shape."""
import pytest
import torch

from featrank.backbones import build_backbone
from featrank.feature_extraction import capture_layers, run_captured
from featrank.backbones import BACKBONES
from featrank.layer_registry import output_form


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_backbone(name, weights="random", seed=0, allow_download=False)
        return cache[name]
    return get


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_registry_row_matches_the_real_module(name, built):
    spec = BACKBONES[name]
    bb = built(name)
    paths = [layer.path for layer in spec.layers]
    assert [layer.index for layer in spec.layers] == list(range(len(paths))), "indices 0..n-1"
    assert len(set(paths)) == len(paths)
    x = torch.rand(1, 3, spec.input_size, spec.input_size)
    with capture_layers(bb.module, paths, stop_early=False) as store, torch.inference_mode():
        out = run_captured(bb.forward, x, store)
    for layer in spec.layers:
        got = tuple(out[layer.path].shape[1:])
        assert got == layer.shape, f"{name}[{layer.index}] {layer.path}: {got} != {layer.shape}"
        kind = type(dict(bb.module.named_modules())[layer.path]).__name__
        if layer.kind in ("Conv2d", "Linear", "LayerNorm", "GroupNorm", "AdaptiveAvgPool2d",
                          "Conv2dSame", "BatchNormAct2d", "SelectAdaptivePool2d"):
            assert kind == layer.kind, f"{layer.path} is a {kind}, registry says {layer.kind}"
    assert set(spec.recommended) <= {layer.index for layer in spec.layers}
    forms = {output_form(layer.shape) for layer in spec.layers}
    assert forms <= {"map", "tokens", "vector"}


def test_lpips_trunk_is_vgg16_with_13_convs(built):
    bb = built("lpips_vgg")
    convs = [p for p, m in bb.module.named_modules()
             if isinstance(m, torch.nn.Conv2d) and p.startswith("net.")]
    assert convs == [layer.path for layer in BACKBONES["lpips_vgg"].layers]
    assert len(convs) == 13


@pytest.mark.parametrize("name,path", [("vgg19", "features.0"), ("vgg19", "features.16"),
                                        ("lpips_vgg", "net.slice3.14")])
def test_conv_capture_is_pre_relu_despite_inplace_relu(name, path, built):
    """torchvision VGG applies ReLU(inplace=True) to each conv output: the capture must
    still equal the conv's own output, negative values included."""
    bb = built(name)
    mods = dict(bb.module.named_modules())
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    seen = {}
    # Independent reference: the conv's input, recorded by a pre-hook, fed to the conv again.
    pre = mods[path].register_forward_pre_hook(lambda m, inp: seen.__setitem__("in", inp[0].clone()))
    try:
        with capture_layers(bb.module, [path], stop_early=False) as store, torch.inference_mode():
            out = run_captured(bb.forward, x, store)
    finally:
        pre.remove()
    with torch.inference_mode():
        expected = mods[path](seen["in"])
    assert (out[path] < 0).any(), "captured output has no negative value: it is post-ReLU"
    torch.testing.assert_close(out[path], expected)


def test_stop_early_skips_the_rest_of_the_network(built):
    bb = built("resnet50")
    mods = dict(bb.module.named_modules())
    fired = []
    h = mods["fc"].register_forward_hook(lambda *a: fired.append(1))
    try:
        with capture_layers(bb.module, ["layer2", "conv1"]) as store, torch.inference_mode():
            out = run_captured(bb.forward, torch.rand(1, 3, 64, 64), store)
    finally:
        h.remove()
    assert set(out) == {"layer2", "conv1"} and not fired
    assert not any(m._forward_hooks for m in mods.values() if m is not mods["fc"])

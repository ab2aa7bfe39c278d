"""The full-reference baselines with networks of their own: LPIPS, shift-tolerant LPIPS and DISTS.

* LPIPS (Zhang et al., CVPR 2018), the VGG variant of version 0.1, as `lpips.LPIPS(net="vgg")`
  computes it: the image in [-1, 1] shifted and scaled by its ScalingLayer, the five ReLU outputs
  of torchvision's VGG16 (relu1_2 … relu5_3), and the calibrated linear weights the `lpips`
  package ships (`lpips/weights/v0.1/vgg.pth`).
* DISTS (Ding et al., TPAMI 2020), as `DISTS_pytorch.DISTS` computes it: torchvision's VGG16 with
  each max-pool replaced by an L2 pooling (a 3-tap Hann window, stride 2), the image itself and
  the five stage outputs, and the alpha/beta weights the `DISTS-pytorch` package ships
  (`DISTS_pytorch/weights.pt`).
* ST-LPIPS (Ghildyal & Liu, ECCV 2022), `stlpips_vgg` and `stlpips_alex`, as
  `stlpips_pytorch.stlpips.LPIPS(net=..., variant="shift_tolerant")` computes it on [0, 1]
  images (`normalize=True`): LPIPS's distance over the five ReLU maps of an anti-aliased trunk.
  Trunk and linear heads come from one file of the `stlpips-pytorch` package (the backbones
  `stlpips_vgg` and `stlpips_alex`, shift_tolerant.py); both were trained on BAPPS, not ImageNet.

This module runs the networks and returns their layer outputs; the distances themselves are
the pure functions `distance_metrics.lpips_from_features` and `dists_from_features`. The LPIPS
and DISTS trunks are torchvision's ImageNet VGG16, found through torch.hub's cache as the
`lpips_vgg` backbone finds it (`backbones.resolve_weights`); when it is absent they are
random-init, and the baseline's rows say so. The heads (LPIPS's linear layers, DISTS's alpha
and beta, ST-LPIPS's linear layers) always come from the installed packages, and their
digests enter the baseline's cache key; `--weights random` makes only the trunk random.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np

from featrank.backbones import Provenance, WeightsError, build_backbone, get_spec, resolve_weights
from featrank.host import file_sha256, resolve_device
from featrank.layer_registry import IMAGENET_MEAN, IMAGENET_STD     # DISTS normalises [0, 1] images with these

NETWORK_BASELINES = ("lpips", "dists", "stlpips_vgg", "stlpips_alex")
SHIFT_TOLERANT = ("stlpips_vgg", "stlpips_alex")   # their names are their backbones' too
TRUNK = "lpips_vgg"                   # the backbone whose VGG16 weights both trunks load
LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # lpips.ScalingLayer: (x - shift) / scale, x in [-1, 1]
LPIPS_SCALE = (0.458, 0.448, 0.450)
STAGE_ENDS = (4, 9, 16, 23, 30)         # VGG16 features[:4] -> relu1_2, [4:9] -> relu2_2, ...
POOLS = (4, 9, 16, 23)                  # the max-pools DISTS replaces by L2 pooling
CHUNK = 2                               # images per forward (bounded float64 copies)


class BaselineUnavailable(Exception):
    """A network baseline cannot run here (its package or weights are missing); the message
    says which and what to install."""


@dataclass
class PerceptualNet:
    """A built LPIPS or DISTS network: `features(images)` gives its layer outputs, `head` the
    weights the distance needs, `identity` what its values depend on (a cache key's part)."""
    name: str
    module: object
    head: dict
    provenance: Provenance
    identity: dict
    device: object = None            # torch.device the network runs on (None: cpu)

    def features(self, images: np.ndarray) -> list[np.ndarray]:
        """The layer outputs of (n, H, W, 3) uint8 images, float64 (n, C, h, w) each."""
        import torch
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device or "cpu")
        x = x.permute(0, 3, 1, 2).float() / 255.0
        with torch.inference_mode():
            return [f.double().cpu().numpy() for f in self.module(x)]

    def distance(self, fx: list, fy: list) -> np.ndarray:
        """Per image: the distance between two images' layer outputs (`features`)."""
        from featrank import distance_metrics as dm
        if "lin" in self.head:            # LPIPS and ST-LPIPS: linear heads
            return dm.lpips_from_features(fx, fy, self.head["lin"])
        return dm.dists_from_features(fx, fy, self.head["alpha"], self.head["beta"])

    def score(self, images: np.ndarray, clean: np.ndarray) -> np.ndarray:
        """Per image: the distance of `images` to `clean` ((n, H, W, 3) uint8 each)."""
        return np.concatenate([self.distance(self.features(images[s:s + CHUNK]),
                                             self.features(clean[s:s + CHUNK]))
                               for s in range(0, len(images), CHUNK)])


def _package_file(package: str, *parts: str, pip_name: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BaselineUnavailable(f"the {package!r} package is not installed: pip install {pip_name}")
    path = os.path.join(spec.submodule_search_locations[0], *parts)
    if not os.path.isfile(path):
        raise BaselineUnavailable(f"{path} is missing from the installed {package!r} package; "
                                  f"reinstall it: pip install --force-reinstall {pip_name}")
    return path


def lpips_head_file() -> str:
    return _package_file("lpips", "weights", "v0.1", "vgg.pth", pip_name="lpips")


def dists_head_file() -> str:
    return _package_file("DISTS_pytorch", "weights.pt", pip_name="DISTS-pytorch")


def _vgg16_features(provenance: Provenance):
    """torchvision's VGG16 `features`, with the ImageNet weights of `provenance` (a torchvision
    checkpoint) or random-init under its seed."""
    import torch
    import torchvision
    if provenance.random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(provenance.seed)
            return torchvision.models.vgg16(weights=None).features.eval()
    features = torchvision.models.vgg16(weights=None).features
    state = torch.load(provenance.file or provenance.path, map_location="cpu", weights_only=True)
    own = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    features.load_state_dict(own, strict=True)
    return features.eval()


def _l2_pool(channels: int, device):
    """DISTS_pytorch.L2pooling: sqrt(conv(x^2, hann) + 1e-12), stride 2, per channel."""
    import torch
    import torch.nn.functional as F
    a = np.hanning(5)[1:-1]
    g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
    weight = (g / g.sum())[None, None].repeat(channels, 1, 1, 1).to(device)

    def pool(x):
        return (F.conv2d(x ** 2, weight, stride=2, padding=1, groups=channels) + 1e-12).sqrt()
    return pool


def _lpips_module(features, device):
    import torch
    shift = torch.tensor(LPIPS_SHIFT, device=device).view(1, 3, 1, 1)
    scale = torch.tensor(LPIPS_SCALE, device=device).view(1, 3, 1, 1)
    stages = [features[a:b] for a, b in zip((0,) + STAGE_ENDS, STAGE_ENDS)]

    def run(x):                       # x in [0, 1]
        h, out = ((2 * x - 1) - shift) / scale, []
        for stage in stages:
            h = stage(h)
            out.append(h)             # the next stage starts with a pool: h is not changed
        return out
    return run


def _dists_module(features, device):
    import torch
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    # features[i - 2] is the convolution whose ReLU output pool i takes
    layers = [_l2_pool(features[i - 2].out_channels, device) if i in POOLS else features[i]
              for i in range(len(features))]
    stages = [layers[a:b] for a, b in zip((0,) + STAGE_ENDS, STAGE_ENDS)]

    def run(x):                       # x in [0, 1]; DISTS's first "layer" is the image itself
        h, out = (x - mean) / std, [x]
        for stage in stages:
            for layer in stage:
                h = layer(h)
            out.append(h)
        return out
    return run


def _shift_tolerant(name: str, weights: str, seed: int, dev):
    """ST-LPIPS: its backbone (trunk and heads from the package's one file), the trunk
    random-init under `seed` when `weights` is random; the heads always the file's."""
    import torch
    from featrank import shift_tolerant      # imports torch
    source = get_spec(name).weights
    try:
        found = source.find(name)
    except WeightsError as exc:
        raise BaselineUnavailable(str(exc)) from None
    if found is None:
        raise BaselineUnavailable(source.missing(name))
    prov = resolve_weights(name, "random" if weights == "random" else "pretrained", seed,
                           allow_download=False)
    module = build_backbone(name, provenance=prov).module.to(dev)
    if prov.random_init:              # a pretrained build loaded the file's heads already
        state = torch.load(found.paths[-1], map_location="cpu", weights_only=True)
        for k in range(5):
            getattr(module, f"lin{k}").model[1].weight.copy_(state[f"lin{k}.model.1.weight"])
    identity = {"trunk": prov.identity(), "head_sha256": file_sha256(found.paths[-1])}

    def run(x):                       # x in [0, 1]: LPIPS(normalize=True) maps it to [-1, 1]
        return module(2 * x - 1)
    return PerceptualNet(name, run, {"lin": shift_tolerant.head(module)}, prov, identity, dev)


def build(name: str, weights: str, seed: int, device: str = "cpu") -> PerceptualNet:
    """The network of baseline `name` (NETWORK_BASELINES). `weights` is the run's setting:
    random gives a random-init trunk; anything else takes the pretrained trunk (LPIPS and DISTS:
    torchvision's ImageNet VGG16 from torch.hub's cache when present, else random-init with a
    warning, as a checkpoint given for the run's backbone is not a VGG16; ST-LPIPS: its
    package's file). `device`: config['device']. BaselineUnavailable when a package or its
    head is missing."""
    import torch
    dev = resolve_device(device)
    if name in SHIFT_TOLERANT:
        return _shift_tolerant(name, weights, seed, dev)
    head_file = lpips_head_file() if name == "lpips" else dists_head_file()
    try:
        prov = resolve_weights(TRUNK, "random" if weights == "random" else "auto", seed,
                               allow_download=False)
    except WeightsError as exc:
        raise BaselineUnavailable(str(exc)) from None
    features = _vgg16_features(prov).to(dev)
    for p in features.parameters():
        p.requires_grad_(False)
    state = torch.load(head_file, map_location="cpu", weights_only=True)
    if name == "lpips":
        head = {"lin": [state[f"lin{k}.model.1.weight"].double().numpy().reshape(-1) for k in range(5)]}
        module = _lpips_module(features, dev)
    else:
        head = {"alpha": state["alpha"].double().numpy().reshape(-1),
                "beta": state["beta"].double().numpy().reshape(-1)}
        module = _dists_module(features, dev)
    identity = {"trunk": prov.identity(), "head_sha256": file_sha256(head_file)}
    return PerceptualNet(name, module, head, prov, identity, dev)

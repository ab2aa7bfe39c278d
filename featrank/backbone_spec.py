"""What a backbone is, as one record (`BackboneSpec`, like timm's `pretrained_cfg`), and the
specs built from a library's own metadata for any model it has:

* ``timm:NAME`` — `timm.create_model`; preprocessing from its `pretrained_cfg`;
* ``torchvision:NAME`` — `torchvision.models.get_model`; preprocessing from the weights'
  transforms;
* ``hf:MODEL_ID`` (a hub id or a `save_pretrained` folder) — a transformers vision model built
  from its config; preprocessing from its `preprocessor_config.json`.

The registered backbones' specs are the table in backbones.py."""
from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable

from featrank import layer_registry as R
from featrank.errors import UserError
from featrank.weight_sources import FolderFiles, HubFiles, PackageFile, TorchHubFile, WeightsError

LIBRARY_PREFIXES = ("timm:", "torchvision:", "hf:")


class BackboneError(UserError):
    """An unknown backbone name or library model; the message lists the valid ones."""


# ----------------------------------------------------------------- the spec

def _identity_keys(sd: dict) -> dict:
    return sd


def _module_itself(module, input_size: int) -> Callable:
    return module


@dataclass(frozen=True)
class BackboneSpec:
    """Everything about one backbone. `build(input_size)` returns the random-init architecture
    (the caller seeds torch); `forward(module, input_size)` the callable that runs it on a
    normalised (n, 3, H, W) batch; `adapt_keys(state_dict)` maps the checkpoint layouts users
    have onto the module's keys; `checked_keys(key)` says which of the module's keys a
    checkpoint must provide; `load_pretrained(file, input_size)` / `load_folder(folder,
    input_size)` use the library's own loader where it has one (else `build` + a strict
    state-dict load)."""
    name: str
    library: str                   # the package that builds it; its version is in the cache key
    architecture: str              # for people
    weights_id: str                # what "pretrained" means
    weights: object                # TorchHubFile | HubFiles | FolderFiles | PackageFile | a tuple
                                   # of them, tried in order | None
    input_size: int
    mean: tuple
    std: tuple
    build: Callable
    interpolation: str = "bicubic"  # resize to input_size (torch.nn.functional.interpolate mode)
    antialias: bool = True
    patch: int | None = None       # transformer patch size: tokens = prefix + (size/patch)^2
    # the smallest --image-size: the larger of the smallest input its forward accepts and its
    # output stride (its deepest map then has a pixel of the image); checked from the
    # architecture by tests/test_backbone_specs.py. 16 for library models (no layer table).
    min_input_size: int = 16
    layers: tuple = ()             # layer_registry.Layer rows; () for library models
    recommended: tuple = ()
    forward: Callable = _module_itself
    adapt_keys: Callable = _identity_keys
    checked_keys: Callable = lambda key: True
    load_pretrained: Callable | None = None
    load_folder: Callable | None = None
    stats: tuple = (None, "mean")  # (layer path, vit_pool) of --save-stats
    cache_name: str = ""           # folder and key name in the cache (default: name)
    notes: str = ""                # where the preprocessing came from, caveats

    @property
    def key_name(self) -> str:
        return self.cache_name or self.name


@dataclass
class Backbone:
    """A built backbone: hook paths are relative to `module`."""
    name: str
    module: object                  # a torch.nn.Module
    forward: Callable
    provenance: object             # backbones.Provenance: source, model id, sha256 or random seed
    input_size: int
    spec: BackboneSpec = None



def torchvision_arch(arch: str) -> Callable:
    def build(input_size):
        import torchvision
        # torchvision's ViTs fix their input size at construction
        kw = {"image_size": input_size} if arch.startswith("vit_") else {}
        return torchvision.models.get_model(arch, weights=None, **kw)
    return build


# ----------------------------------------------------------------- any model of a library

def close_matches(name: str, names, n: int = 8) -> str:
    close = difflib.get_close_matches(name, list(names), n=n)
    return f"; close: {', '.join(close)}" if close else ""


def timm_spec(arch: str) -> BackboneSpec:
    import timm
    if not timm.is_model(arch):
        raise BackboneError(f"timm has no model {arch!r}{close_matches(arch, timm.list_models())}; "
                            "list them with python -c \"import timm; print(timm.list_models('*vit*'))\"")
    pcfg = timm.models.get_pretrained_cfg(arch)
    pcfg = pcfg.to_dict() if pcfg is not None else {}
    size = pcfg.get("input_size", (3, 224, 224))[-1]
    weights = (HubFiles(pcfg["hf_hub_id"]) if pcfg.get("hf_hub_id")
               else TorchHubFile(pcfg["url"]) if pcfg.get("url") else None)

    def build(input_size):
        kw = {"img_size": input_size} if _timm_takes_img_size(arch) else {}
        return timm.create_model(arch, pretrained=False, **kw)

    def load(file, input_size):
        kw = {"img_size": input_size} if _timm_takes_img_size(arch) else {}
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": file}, **kw)
    return BackboneSpec(
        name=f"timm:{arch}", library="timm", architecture=arch,
        weights_id=pcfg.get("hf_hub_id") or pcfg.get("url") or "none",
        weights=weights, input_size=size, mean=tuple(pcfg.get("mean", R.IMAGENET_MEAN)),
        std=tuple(pcfg.get("std", R.IMAGENET_STD)),
        interpolation=pcfg.get("interpolation", "bicubic"), patch=_timm_patch(arch),
        build=build, load_pretrained=load, cache_name=f"timm-{arch}",
        notes="preprocessing from timm's pretrained_cfg")


@functools.lru_cache(maxsize=None)
def _timm_probe(arch: str):
    """The architecture built on the meta device (no memory, no weights): its patch size."""
    import timm
    import torch
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    pe = getattr(model, "patch_embed", None)
    patch = getattr(pe, "patch_size", None)
    return (patch[0] if isinstance(patch, (tuple, list)) else patch), pe is not None


def _timm_patch(arch):
    return _timm_probe(arch)[0]


def _timm_takes_img_size(arch):
    return _timm_probe(arch)[1]


def torchvision_spec(arch: str) -> BackboneSpec:
    import torchvision
    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        raise BackboneError(f"torchvision has no image classification model {arch!r}"
                            f"{close_matches(arch, names)}; list them with python -c \"import torchvision; "
                            "print(torchvision.models.list_models(module=torchvision.models))\"")
    enum = torchvision.models.get_model_weights(arch)
    w = enum.DEFAULT
    tf = w.transforms()
    size = tf.crop_size[0]
    patch = 0
    if arch.startswith("vit_"):    # torchvision's VisionTransformer: vit_b_16 -> 16 (vit_h_14 -> 14)
        patch = int(arch.rsplit("_", 1)[-1])

    def load(file, input_size):
        # torchvision's own loader: it remaps old key layouts (densenet) that a plain
        # load_state_dict refuses; the file is already in its cache, so nothing is downloaded
        return torchvision.models.get_model(arch, weights=w)
    return BackboneSpec(
        name=f"torchvision:{arch}", library="torchvision", architecture=arch,
        weights_id=f"{enum.__name__}.{w.name}", weights=TorchHubFile(w.url), input_size=size,
        mean=tuple(tf.mean), std=tuple(tf.std), interpolation=tf.interpolation.value,
        antialias=bool(tf.antialias), patch=patch or None, build=torchvision_arch(arch),
        load_pretrained=load, cache_name=f"torchvision-{arch}",
        notes=f"preprocessing from {enum.__name__}.{w.name}.transforms() (centre crop to "
              f"{size}; here images are cropped at the working size, then resized)")


_PIL_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic"}   # LANCZOS -> bicubic


def hf_spec(model_id: str) -> BackboneSpec:
    """A transformers vision model: a hub id in the HF cache, or a save_pretrained folder."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING
    local = os.path.isdir(model_id)
    where = os.path.abspath(model_id) if local else model_id
    try:
        config = transformers.AutoConfig.from_pretrained(where, local_files_only=True)
    except Exception as exc:
        hint = ("a folder written by save_pretrained needs config.json" if local else
                f"run `huggingface-cli download {model_id}` on a machine with internet and copy "
                "the Hugging Face cache here (or set HF_HOME), or pass a save_pretrained folder")
        raise BackboneError(f"hf:{model_id}: no readable config ({type(exc).__name__}); {hint}") from None
    vision = getattr(config, "vision_config", None) or config
    if type(vision) not in MODEL_MAPPING:
        raise BackboneError(f"hf:{model_id}: transformers has no base model for config type "
                            f"{type(vision).__name__}; give a vision model (ViT, DINOv2, CLIP, SigLIP, ...)")
    model_class = MODEL_MAPPING[type(vision)]
    import inspect
    if "pixel_values" not in inspect.signature(model_class.forward).parameters:
        raise BackboneError(f"hf:{model_id}: {model_class.__name__} ({vision.model_type}) is not a "
                            "vision model (it takes no pixel_values); give a vision model (ViT, "
                            "DINOv2, CLIP, SigLIP, ...)")
    pre = _hf_preprocessor(where, local)
    size = pre.get("size") or getattr(vision, "image_size", 224)
    size = size if isinstance(size, int) else size[0]
    patch = getattr(vision, "patch_size", None)
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch

    def build(input_size):
        return model_class(vision)

    def load(path, input_size):
        try:
            return model_class.from_pretrained(where, local_files_only=True)
        except Exception as exc:      # a corrupt or truncated weights file, a wrong format
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise WeightsError(f"hf:{model_id}: cannot load the weights in {where} "
                               f"({type(exc).__name__}: {first[:200]}); download them again, or "
                               "pass --weights random") from None

    def forward(module, input_size):
        import inspect
        kw = {}
        if ("interpolate_pos_encoding" in inspect.signature(module.forward).parameters
                and input_size != getattr(module.config, "image_size", input_size)):
            kw["interpolate_pos_encoding"] = True
        return lambda x: module(pixel_values=x, **kw)
    digest = hashlib.sha256(vision.to_json_string().encode()).hexdigest()[:8]
    return BackboneSpec(
        name=f"hf:{model_id}", library="transformers",
        architecture=f"{model_class.__name__} ({vision.model_type})",
        weights_id=where, weights=FolderFiles(where) if local else HubFiles(model_id, ("config.json",)),
        input_size=size, mean=tuple(pre.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(pre.get("std", (0.5, 0.5, 0.5))), interpolation=pre.get("interpolation", "bilinear"),
        patch=patch, build=build, forward=forward, load_pretrained=load,
        cache_name=f"hf-{os.path.basename(where.rstrip('/')).replace('/', '-')}-{digest}",
        notes=pre["source"])


def _hf_preprocessor(where: str, local: bool) -> dict:
    """Input size, mean/std and resampling from preprocessor_config.json, when the model has one;
    else transformers' defaults for ViT-like processors (0.5 mean/std, bilinear)."""
    path = os.path.join(where, "preprocessor_config.json") if local else None
    if not local:
        try:
            from huggingface_hub import hf_hub_download
            path = hf_hub_download(where, "preprocessor_config.json", local_files_only=True)
        except Exception:
            path = None
    if not path or not os.path.isfile(path):
        return {"source": "no preprocessor_config.json: config image_size, mean/std 0.5, bilinear"}
    try:
        with open(path, encoding="utf-8") as f:
            p = json.load(f)
    except (OSError, ValueError) as exc:
        raise BackboneError(f"{path} is not readable JSON ({type(exc).__name__}); fix or remove the "
                            "file (without it: mean/std 0.5, bilinear)") from None
    if not isinstance(p, dict):
        raise BackboneError(f"{path} does not hold a preprocessor config (a JSON object)")
    out = {"source": f"preprocessing from {path}"}
    size = p.get("crop_size") if p.get("do_center_crop") else p.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    if isinstance(size, int):
        out["size"] = size
    if p.get("do_normalize", True) and "image_mean" in p:
        for key in ("image_mean", "image_std"):
            v = p.get(key)
            if not (isinstance(v, list) and len(v) == 3 and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
                raise BackboneError(f"{path}: {key} = {v!r} must be three numbers (one per RGB "
                                    "channel); fix the file")
        if min(p["image_std"]) <= 0:
            raise BackboneError(f"{path}: image_std = {p['image_std']!r} must be positive; fix the file")
        out["mean"], out["std"] = p["image_mean"], p["image_std"]
    if "resample" in p:
        out["interpolation"] = _PIL_RESAMPLE.get(p["resample"], "bicubic")
    return out



def is_library_model(name: str) -> bool:
    return name.startswith(LIBRARY_PREFIXES)


# ----------------------------------------------------------------- networks ported here

def _shift_tolerant(net: str, input_size: int):
    from featrank import shift_tolerant      # imports torch, as every spec's build does
    return shift_tolerant.build(net)


def stlpips_spec(net: str) -> BackboneSpec:
    """Shift-tolerant LPIPS's trunk (shift_tolerant.py, ported from stlpips-pytorch): the whole
    network with its linear heads, whose keys are the weight file's; the layers are the trunk's."""
    return BackboneSpec(
        name=f"stlpips_{net}", library="stlpips-pytorch",
        architecture=f"ST-LPIPS {'VGG16' if net == 'vgg' else 'AlexNet'} trunk (anti-aliased, "
                     "trained from scratch on BAPPS 2AFC)",
        weights_id=f"stlpips-pytorch vST0.0/{net}_shift_tolerant.pth",
        weights=PackageFile("stlpips-pytorch", suffix=f"/{net}_shift_tolerant.pth", no_deps=True),
        # LPIPS(normalize=True): 2x - 1, then its ScalingLayer (the module's first step)
        input_size=224, mean=R.SIGNED_UNIT[0], std=R.SIGNED_UNIT[1],
        min_input_size=18 if net == "vgg" else 21,   # the smallest size whose reflection pads fit
        build=functools.partial(_shift_tolerant, net),
        layers=tuple(R.STLPIPS_VGG if net == "vgg" else R.STLPIPS_ALEX),
        recommended=(13, 14, 15, 16, 17) if net == "vgg" else (5, 6, 7, 8, 9),
        notes="the ReLU maps of the 5 slices (the recommended layers) are what ST-LPIPS compares")

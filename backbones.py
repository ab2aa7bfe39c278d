"""Build a backbone and load its weights through each library's own mechanism.

`build_backbone(name, weights, seed)` returns the module whose `named_modules()`
paths are the registry's paths, the function that runs the forward pass, and the
weights provenance recorded in every cache key and result:

* ``pretrained`` — the library's standard cache, never a private one:
  torchvision: ``$TORCH_HOME/hub/checkpoints/<file>`` (``torch.hub.get_dir()``);
  timm / diffusers / transformers: the Hugging Face cache (``$HF_HOME``/``$HF_HUB_CACHE``),
  with ``HF_HUB_OFFLINE=1`` respected. Absent weights raise `WeightsError`
  naming the file or model id and how to put it in place.
* ``random`` — the same architecture, initialised under ``torch.manual_seed(seed)``.
* ``auto`` — pretrained when it can be had, else random with a loud warning.
* a path — a local checkpoint (``.pth/.pt/.bin/.safetensors``, loaded with
  ``weights_only=True``) or a ``save_pretrained`` folder for the Hugging Face
  libraries. Missing or unexpected keys are an error, never ignored.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Callable

from layer_registry import BACKBONES

# torch is imported inside the functions that build models: resolving weights for a cache key
# (a full cache hit) needs no torch at all.

log = logging.getLogger(__name__)

TORCHVISION_FILES = {  # the files torchvision's weight enums download
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",  # LPIPS trunk
}
HF_WEIGHT_FILES = {  # (repo id, file(s) fetched into the HF cache)
    "dinov2_vitb14": ("timm/vit_base_patch14_dinov2.lvd142m", ["model.safetensors"]),
    "sd_vae": ("stabilityai/sd-vae-ft-mse", ["config.json", "diffusion_pytorch_model.safetensors"]),
    "clip_vit": ("openai/clip-vit-base-patch32", ["config.json", "model.safetensors"]),
}


class WeightsError(RuntimeError):
    """Weights could not be loaded; the message names the file and the fix."""


@dataclass
class Backbone:
    name: str
    module: object                          # a torch.nn.Module; hook paths are relative to it
    forward: Callable
    provenance: dict                        # source, model id, sha256 or random seed
    input_size: int


def sha256_file(path: str, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _folder_sha256(folder: str) -> str:
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if name.endswith((".json", ".safetensors", ".bin", ".pth")):
                h.update(name.encode())
                h.update(sha256_file(os.path.join(root, name)).encode())
    return h.hexdigest()


# ----------------------------------------------------------------- architectures

def _vae_container(encoder):
    """A module holding the SD VAE encoder as `encoder`, so paths read `encoder.…`."""
    from torch import nn
    holder = nn.Module()
    holder.encoder = encoder
    return holder


def _sd_vae_encoder():
    # The Stable Diffusion v1 VAE configuration (stabilityai/sd-vae-ft-mse config.json).
    from diffusers.models.autoencoders.vae import Encoder
    return Encoder(in_channels=3, out_channels=4, down_block_types=("DownEncoderBlock2D",) * 4,
                   block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                   norm_num_groups=32, act_fn="silu", double_z=True)


def _clip_config(image_size: int):
    from transformers import CLIPVisionConfig
    # openai/clip-vit-base-patch32 vision tower.
    return CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, image_size=image_size, patch_size=32,
                            hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=512)


def _architecture(name: str, input_size: int) :
    """The randomly initialised architecture (the caller seeds torch)."""
    if name in ("resnet50", "vgg19"):
        import torchvision
        return getattr(torchvision.models, name)(weights=None)
    if name == "dinov2_vitb14":
        import timm
        return timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0,
                                 img_size=input_size)
    if name == "sd_vae":
        return _vae_container(_sd_vae_encoder())
    if name == "lpips_vgg":
        import lpips
        return lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False)
    if name == "clip_vit":
        from transformers import CLIPVisionModel
        return CLIPVisionModel(_clip_config(224))
    raise KeyError(name)


def _forward_fn(name: str, module, input_size: int) -> Callable:
    if name == "dinov2_vitb14":
        return module.forward_features
    if name == "sd_vae":
        return module.encoder
    if name == "lpips_vgg":
        return lambda x: module.net(module.scaling_layer(x))
    if name == "clip_vit":
        interp = input_size != 224
        return lambda x: module(pixel_values=x, interpolate_pos_encoding=interp)
    return module


# ----------------------------------------------------------------- state dicts

def _read_state_dict(path: str) -> dict:
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(path)
        else:
            import torch
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, pickled objects, wrong format
        raise WeightsError(f"cannot read weights file {path!r}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}. Is it a complete "
                           "PyTorch/safetensors state dict?") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path!r} does not hold a state dict (found {type(sd).__name__})")
    return sd


def _adapt_keys(name: str, sd: dict) -> dict:
    """Accept the checkpoint layouts users have: full model or the part we use."""
    if name == "sd_vae":
        if any(k.startswith("encoder.") for k in sd):
            return {k: v for k, v in sd.items() if k.startswith("encoder.")}
        return {f"encoder.{k}": v for k, v in sd.items()}
    if name == "lpips_vgg":
        if any(k.startswith("features.") for k in sd):  # a torchvision VGG16 checkpoint
            out = {}
            for k, v in sd.items():
                if k.startswith("features."):
                    idx = int(k.split(".")[1])
                    out[f"net.{_lpips_slice(idx)}.{idx}.{k.split('.', 2)[2]}"] = v
            return out
        return {k: v for k, v in sd.items() if k.startswith("net.")}
    if name == "clip_vit":
        return {k[len("vision_model."):] if k.startswith("vision_model.") else k: v
                for k, v in sd.items() if not k.startswith(("text_model.", "visual_projection",
                                                             "text_projection", "logit_scale"))}
    return sd


def _lpips_slice(vgg_index: int) -> str:
    # lpips.pretrained_networks.vgg16: slices [0,4) [4,9) [9,16) [16,23) [23,30)
    for k, end in enumerate((4, 9, 16, 23, 30), start=1):
        if vgg_index < end:
            return f"slice{k}"
    raise ValueError(vgg_index)


def _load_strict(name: str, module, sd: dict, source: str) -> None:
    sd = _adapt_keys(name, sd)
    own = module.state_dict()
    if name == "lpips_vgg":  # only the trunk is used; LPIPS's lin layers are not ours to check
        own = {k: v for k, v in own.items() if k.startswith("net.")}
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
        raise WeightsError(f"weights {source!r} do not match the {name} architecture: "
                           + "; ".join(parts))
    module.load_state_dict(sd, strict=False)  # strictness checked above, lin layers excluded


# ----------------------------------------------------------------- pretrained

def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def torch_hub_dir() -> str:
    """torch.hub.get_dir()'s rule, without importing torch: $TORCH_HOME/hub, where TORCH_HOME
    defaults to $XDG_CACHE_HOME/torch (~/.cache/torch)."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return os.path.join(os.path.expanduser(home), "hub")


def _torchvision_file(arch: str, allow_download: bool) -> str:
    url = TORCHVISION_FILES[arch]
    path = os.path.join(torch_hub_dir(), "checkpoints", os.path.basename(url))
    if os.path.isfile(path):
        return path
    if allow_download and not _offline():
        try:
            import torch
            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.hub.download_url_to_file(url, path, progress=False)
            return path
        except Exception:
            pass
    raise WeightsError(f"pretrained {arch} weights not found at {path}. Download {url} on a "
                       "machine with internet and copy it there (or set TORCH_HOME to the "
                       "folder holding hub/checkpoints/), or use --weights random")


def _hf_files(name: str, allow_download: bool) -> tuple[str, list[str]]:
    from huggingface_hub import hf_hub_download
    repo, files = HF_WEIGHT_FILES[name]
    paths = []
    for fname in files:
        try:
            paths.append(hf_hub_download(repo, fname, local_files_only=True))
            continue
        except Exception:
            pass
        if allow_download and not _offline():
            try:
                paths.append(hf_hub_download(repo, fname))
                continue
            except Exception:
                pass
        from huggingface_hub.constants import HF_HUB_CACHE
        raise WeightsError(
            f"pretrained {name} weights not found: {repo}/{fname} is not in the Hugging Face "
            f"cache ({HF_HUB_CACHE}). On a machine with internet run "
            f"`huggingface-cli download {repo} {' '.join(files)}` and copy the cache folder "
            f"here (or set HF_HOME), pass a local folder with --weights PATH, or use "
            "--weights random")
    return repo, paths


def _pretrained_files(name: str, allow_download: bool) -> dict:
    """Locate (or download) the pretrained files; no model is built."""
    spec = BACKBONES[name]
    if name in ("resnet50", "vgg19", "lpips_vgg"):
        path = _torchvision_file("vgg16" if name == "lpips_vgg" else name, allow_download)
        return {"source": "pretrained", "library": "torchvision", "model_id": spec["weights_id"],
                "file": path, "sha256": sha256_file(path)}
    repo, paths = _hf_files(name, allow_download)
    return {"source": "pretrained", "library": spec["library"], "model_id": repo,
            "file": paths[-1], "sha256": sha256_file(paths[-1])}


def resolve_weights(name: str, weights: str = "auto", seed: int = 0,
                    allow_download: bool = True) -> dict:
    """The provenance of the weights `build_backbone` would load, without building a model:
    {"source": pretrained | local | random-init, "model_id"/"path", "sha256" or "seed", "label"}.
    Cache keys use it, so a full cache hit never constructs the backbone. `auto` looks in the
    local caches only (never the network); `pretrained` downloads when absent and online."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    prov = None
    if weights in ("pretrained", "auto"):
        try:
            prov = _pretrained_files(name, allow_download and weights == "pretrained")
        except WeightsError as exc:
            if weights == "pretrained":
                raise
            log.warning("!" * 78)
            log.warning("NO PRETRAINED WEIGHTS for %s: using RANDOM-INIT weights (seed %d).", name, seed)
            log.warning("%s", exc)
            log.warning("Scores from random-init features are NOT comparable to published ones.")
            log.warning("!" * 78)
    elif weights != "random":
        if not os.path.exists(weights):
            raise WeightsError(f"--weights {weights!r}: no such file or folder. Give a checkpoint "
                               "file or a save_pretrained folder, or one of auto, pretrained, random")
        digest = _folder_sha256(weights) if os.path.isdir(weights) else sha256_file(weights)
        prov = {"source": "local", "path": os.path.abspath(weights), "sha256": digest}
    if prov is None:
        return {"source": "random-init", "seed": seed, "label": f"random-init seed {seed}"}
    prov["label"] = (f"{prov['source']} {prov.get('model_id', prov.get('path', ''))} "
                     f"sha256:{prov['sha256'][:12]}")
    return prov


def _load_pretrained(name: str, prov: dict, input_size: int) :
    path = prov["file"]
    if name in ("resnet50", "vgg19", "lpips_vgg"):
        module = _architecture(name, input_size)
        _load_strict(name, module, _read_state_dict(path), path)
        return module
    if name == "dinov2_vitb14":
        import timm
        return timm.create_model("vit_base_patch14_dinov2", pretrained=True, num_classes=0,
                                 img_size=input_size, pretrained_cfg_overlay={"file": path})
    if name == "sd_vae":
        from diffusers import AutoencoderKL
        return _vae_container(AutoencoderKL.from_pretrained(os.path.dirname(path)).encoder)
    from transformers import CLIPVisionModel
    return CLIPVisionModel.from_pretrained(os.path.dirname(path))


def _load_local(name: str, path: str, input_size: int) :
    if os.path.isdir(path):
        if name == "sd_vae":
            from diffusers import AutoencoderKL
            return _vae_container(AutoencoderKL.from_pretrained(path).encoder)
        if name == "clip_vit":
            from transformers import CLIPVisionModel
            return CLIPVisionModel.from_pretrained(path)
        raise WeightsError(f"--weights {path!r} is a folder; {name} needs a checkpoint file "
                           "(.pth, .pt, .bin or .safetensors)")
    module = _architecture(name, input_size)
    _load_strict(name, module, _read_state_dict(path), path)
    return module


def build_backbone(name: str, weights: str = "auto", seed: int = 0,
                   input_size: int | None = None, allow_download: bool = True,
                   provenance: dict | None = None) -> Backbone:
    """Build `name` (a registry key) with `weights` (auto | pretrained | random | path).
    Pass the `provenance` from `resolve_weights` to avoid locating the files twice."""
    prov = provenance or resolve_weights(name, weights, seed, allow_download)
    input_size = input_size or BACKBONES[name]["input_size"]
    import torch
    if prov["source"] == "random-init":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(prov["seed"])
            module = _architecture(name, input_size)
    elif prov["source"] == "pretrained":
        module = _load_pretrained(name, prov, input_size)
    else:
        module = _load_local(name, prov["path"], input_size)
    module.eval().requires_grad_(False)
    return Backbone(name, module, _forward_fn(name, module, input_size), prov, input_size)


def build_library_model(spec: str) -> tuple:
    """`timm:NAME` or `torchvision:NAME` -> (random-init model, input size), for --list-layers."""
    library, _, arch = spec.partition(":")
    if library == "timm":
        import timm
        if not timm.list_models(arch):
            close = timm.list_models(f"*{arch}*")[:8]
            raise KeyError(f"timm has no model {arch!r}" + (f"; close: {', '.join(close)}" if close else ""))
        model = timm.create_model(arch, pretrained=False)
        size = model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
        return model.eval(), size
    if library == "torchvision":
        import torchvision
        names = torchvision.models.list_models()
        if arch not in names:
            import difflib
            close = difflib.get_close_matches(arch, names, n=8)
            raise KeyError(f"torchvision has no model {arch!r}" + (f"; close: {', '.join(close)}" if close else ""))
        return torchvision.models.get_model(arch, weights=None).eval(), 224
    raise KeyError(f"{spec!r}: use a built-in backbone name, timm:NAME or torchvision:NAME")

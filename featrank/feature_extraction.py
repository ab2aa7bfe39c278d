"""Run a backbone once per batch and capture every requested layer through hooks.

* One forward pass serves all requested layers, and it stops as soon as the last
  of them has produced its output (like timm's `forward_intermediates(stop_early=True)`).
* Each hook stores a *copy* of the output taken when the module returns: torchvision's
  VGG (and LPIPS) apply `ReLU(inplace=True)` right after each conv, so keeping a
  reference would silently turn a "Conv2d" capture into a post-ReLU one.
* Hooks are removed in every case (`capture_layers` is a context manager).
* Images are decoded, degraded and resized in DataLoader workers so the
  accelerator is fed; `torch.inference_mode`; channels_last on CUDA; autocast to bfloat16 or
  float16 when config['extraction_precision'] asks for it (float32, exact, by default).
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from featrank.dataset import ImageRecord, load_rgb
from featrank.degradation_generator import apply_degradation
from featrank.errors import UsageError
from featrank.host import available_cores, available_memory, die_with_parent, resolve_device

log = logging.getLogger(__name__)

DECODED_IMAGES = 256          # decoded working-size images kept per process (~50 MB at 256 px)
WRITE_THREADS = 2             # cache files written (npy, sha256, fsync) beside the forward passes
PENDING_WRITES = 4            # files waiting for a writer before the forward passes wait
# What an extraction plans for before it starts, against the memory its device has free
MEMORY_SHARE = 0.8            # of the free memory an extraction may plan to use
LIVE_OUTPUTS = 3              # tensors of the largest module output alive at the peak: its
                              # input, its output and a skip connection's
PREFETCH = 2                  # batches a DataLoader worker prepares ahead (PyTorch's default)

# Modules worth listing for an arbitrary model (the layer guide's "extractable" kinds);
# activations, pooling, dropout and reshapes are left out.
EXTRACTABLE_TYPES = ("Conv2d", "Linear", "LayerNorm", "BatchNorm2d", "GroupNorm",
                     "Bottleneck", "BasicBlock", "Block", "PatchEmbed", "EncoderLayer",
                     "Attention", "ResnetBlock2D", "Layer", "Embeddings", "Stage")


@dataclass(frozen=True)
class ImageItem:
    """One image to run through the backbone: a record, optionally degraded."""
    record: ImageRecord
    degradation: str | None = None   # degradation *type*
    level: object = None             # None = clean


@functools.lru_cache(maxsize=DECODED_IMAGES)
def _decoded(source: str, working_size: int) -> np.ndarray:
    """load_rgb, remembered per process: an evaluation image is degraded at every level (45
    times with the default degradations) but decoded once per DataLoader worker. The array is
    read-only, and degradations return new arrays."""
    return load_rgb(source, working_size)


class ImageDataset(torch.utils.data.Dataset):
    """Decodes and degrades images; runs inside DataLoader workers. With `on_device`, items are
    the (H, W, 3) uint8 working-size images, resized and normalised on the accelerator by
    `preprocess_batch` (a third of the bytes to move, and no resize on the CPU); otherwise
    the normalised (3, S, S) float32 input of `preprocess`."""

    def __init__(self, items, working_size, input_size, mean, std, seed, interpolation="bicubic",
                 on_device: bool = False, antialias: bool = True):
        self.items, self.working_size, self.input_size = list(items), working_size, input_size
        self.interpolation, self.antialias, self.on_device = interpolation, antialias, on_device
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.seed = seed

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        img = _decoded(item.record.source, self.working_size)
        img = apply_degradation(img, item.degradation, item.level, self.seed, item.record.sha256)
        if self.on_device:
            return torch.from_numpy(np.array(img, dtype=np.uint8))
        return preprocess(img, self.input_size, self.mean, self.std, self.interpolation,
                          self.antialias)


def resize(x: torch.Tensor, input_size: int, interpolation: str, antialias: bool) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 3, S, S). With `antialias` (the registered backbones): an
    antialiased resize, clamped back to [0, 1] (bicubic overshoots). Without it: the plain
    F.interpolate of pytorch-fid and CMMD's PyTorch port, unclamped, as those references do."""
    if x.shape[-1] == input_size and x.shape[-2] == input_size:
        return x
    smooth = interpolation in ("bilinear", "bicubic")
    x = F.interpolate(x, size=(input_size, input_size), mode=interpolation,
                      align_corners=False if smooth else None, antialias=antialias and smooth)
    return x.clamp_(0.0, 1.0) if antialias else x


def preprocess(img: np.ndarray, input_size: int, mean: torch.Tensor, std: torch.Tensor,
               interpolation: str = "bicubic", antialias: bool = True) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, S, S) float32 normalised; resized by the backbone's
    `interpolation` and `antialias` (its spec). Changing this function's output needs
    feature_cache.PREPROCESS_VERSION bumped (a golden-hash test checks it)."""
    x = torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
    x = resize(x[None], input_size, interpolation, antialias)[0]
    return (x - mean) / std


def preprocess_batch(x: torch.Tensor, input_size: int, mean: torch.Tensor, std: torch.Tensor,
                     interpolation: str = "bicubic", antialias: bool = True) -> torch.Tensor:
    """`preprocess` for a batch of (B, H, W, 3) uint8 images already on the accelerator: the same
    operations (scale to [0, 1], resize, normalise), batched."""
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    x = resize(x, input_size, interpolation, antialias)
    return (x - mean.to(x.device)[None]) / std.to(x.device)[None]


FINITE = "\0finite"            # store key suffix: the float32 output was finite
# Devices whose extraction is staged (see _extract); the CPU computes in float32 in place.
STAGED_DEVICE_TYPES = ("cuda",)


class _StopForward(Exception):
    """Raised by the last hook: the rest of the network is not needed."""


def _unwrap(output):
    """Tensor inside tuples / Hugging Face ModelOutputs."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    if isinstance(output, (tuple, list)) and output:
        return _unwrap(output[0])
    raise TypeError(f"cannot capture a module output of type {type(output).__name__}")


def find_modules(module: nn.Module, paths) -> dict[str, nn.Module]:
    """Map each path to its submodule, or raise KeyError with close matches."""
    named = dict(module.named_modules())
    out = {}
    for p in paths:
        if p not in named:
            import difflib
            close = difflib.get_close_matches(p, list(named), n=5, cutoff=0.5)
            raise KeyError(f"no module {p!r}" + (f"; close matches: {', '.join(close)}" if close else ""))
        out[p] = named[p]
    return out


@contextlib.contextmanager
def capture_layers(module: nn.Module, paths, stop_early: bool = True, device_dtype=None):
    """Hook `paths`; yields a dict filled with a copy of each output on every forward: a float32
    CPU tensor, or, with `device_dtype`, a copy in that dtype (the cache's) left on the output's
    device (no synchronisation inside the forward pass on an accelerator), with
    `store[path + FINITE]`, whether the float32 output was finite. With `stop_early`, the
    forward pass raises `_StopForward` once every path has fired (callers use `run_captured`)."""
    targets = find_modules(module, paths)
    store: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(path):
        def hook(_mod, _inp, out):
            t = _unwrap(out).detach()
            if device_dtype is not None:
                store[path + FINITE] = torch.isfinite(t).all()
                store[path] = t.to(device_dtype, copy=True)   # a copy: in-place ReLUs follow
            else:   # .float().cpu() copies unless already float32 on the CPU: clone then
                store[path] = t.float().cpu() if (t.dtype != torch.float32 or t.device.type != "cpu") \
                    else t.clone()
            if stop_early and len(targets) == sum(p in store for p in targets):
                raise _StopForward
        return hook

    try:
        for path, mod in targets.items():
            handles.append(mod.register_forward_hook(make_hook(path)))
        yield store
    finally:
        for h in handles:
            h.remove()


def run_captured(forward, x: torch.Tensor, store: dict) -> dict:
    """Run `forward(x)` under `capture_layers`; returns {path: tensor} for this batch."""
    store.clear()
    try:
        forward(x)
    except _StopForward:
        pass
    return dict(store)


@contextlib.contextmanager
def _on_meta(module: nn.Module):
    """Every parameter and buffer of `module` swapped for a meta tensor of its shape for the
    block, and the very same tensors put back after it (tied weights included: each module's
    own entries are swapped and restored)."""
    saved = [(m, dict(m._parameters), dict(m._buffers)) for m in module.modules()]
    try:
        for m, params, buffers in saved:
            for k, t in params.items():
                if t is not None:
                    m._parameters[k] = nn.Parameter(torch.empty_like(t, device="meta"), t.requires_grad)
            for k, t in buffers.items():
                if t is not None:
                    m._buffers[k] = torch.empty_like(t, device="meta")
        yield
    finally:
        for m, params, buffers in saved:
            m._parameters.clear()
            m._parameters.update(params)
            m._buffers.clear()
            m._buffers.update(buffers)


def forward_bytes(backbone, paths) -> tuple[int, int] | None:
    """(peak, captured): float32 bytes per image of one forward pass of `backbone` at its input
    size: LIVE_OUTPUTS times its largest module output, and the outputs of `paths` (the copies
    the hooks keep). Found by a forward pass on the meta device (shapes only: no memory, no
    arithmetic); None where the model cannot run there."""
    module, wanted = backbone.module, set(paths)
    sizes, captured = [], {}

    def record(path):
        def hook(_mod, _inp, out):   # returns None: the output is left as it is
            try:
                n = _unwrap(out).numel()
            except TypeError:
                return
            sizes.append(n)
            if path in wanted:
                captured.setdefault(path, n)
        return hook
    x = torch.empty(1, 3, backbone.input_size, backbone.input_size, device="meta")
    handles = [m.register_forward_hook(record(p)) for p, m in module.named_modules()]
    try:
        with torch.inference_mode(), _on_meta(module):
            backbone.forward(x)
    except Exception as exc:     # noqa: BLE001 - an op without a meta kernel: no estimate
        log.debug("no memory estimate for %s (%s: %s)", backbone.name, type(exc).__name__, exc)
        return None
    finally:
        for h in handles:
            h.remove()
    if not sizes or wanted - set(captured):
        return None
    return 4 * LIVE_OUTPUTS * max(sizes), 4 * sum(captured.values())


def check_memory(backbone, paths, dev, batch_size: int, *, images: int, working_size: int | None = None,
                 workers: int = 0, unit_images: int = 0, store_itemsize: int = 4,
                 flag: str = "--batch-size", loader: bool = True, est=False) -> None:
    """Before an extraction of `images` images starts: the memory it will hold, against
    MEMORY_SHARE of what its device (and, for the loader and the cache files, the host) has free.
    Per image of a batch: the forward pass (forward_bytes), the input tensor, and in the
    DataLoader's queue (`loader`) the decoded image (`working_size`; None: files read as they
    are) and its tensor; once: the decoded images kept per process, and two cache files of `unit_images`
    rows of the captured layers in the cache's dtype. Where it cannot fit, a UsageError names
    the largest batch (`flag`) that does, or the sizes to lower when one image does not fit.
    `est`: forward_bytes(backbone, paths) computed before (a caller that checks every batch)."""
    est = forward_bytes(backbone, paths) if est is False else est
    if est is None:
        return
    peak, captured = est
    size = backbone.input_size
    tensor = 3 * size * size * 4
    decoded = 3 * working_size * working_size if working_size else tensor
    queued = (workers * PREFETCH + 1) * (decoded + tensor) if loader else 0
    memo = min(DECODED_IMAGES, images) * decoded * max(1, workers) if working_size else 0
    files = 2 * unit_images * (captured // 4) * store_itemsize
    forward = peak + captured + tensor
    cpu = torch.device("cpu")
    checks = ([(dev, 0, forward), (cpu, memo + files, queued)] if dev.type != "cpu"
              else [(cpu, memo + files, forward + queued)])
    for where, fixed, per_image in checks:
        free = available_memory(where)
        if free is None:
            continue
        budget, need = MEMORY_SHARE * free, fixed + batch_size * per_image
        if need <= budget:
            continue
        what = (f"extracting {backbone.name} ({len(paths)} layer(s)) at {size} px"
                + (f", working size {working_size}" if working_size else "")
                + f" needs about {need / 2**30:.1f} GiB of {where.type} memory "
                f"({per_image / 2**20:.0f} MiB per image of a batch of {batch_size}")
        what += (f", plus {fixed / 2**30:.1f} GiB for decoded images and cache files)" if fixed
                 else ")") + f" and {free / 2**30:.1f} GiB is free"
        fits = int((budget - fixed) // per_image)
        if fits >= 1:
            raise UsageError(f"{flag} {batch_size}: {what}; give {flag} {fits} or fewer")
        raise UsageError(f"{what}, even one image at a time: give a smaller --image-size or "
                         "config['working_size'], or layers with smaller outputs")


def cpu_threads(setting) -> int:
    """config['extraction_threads']: 'auto' = the cores this process may run on."""
    return int(setting) if setting != "auto" else available_cores()


def _die_with_this_process():
    """A DataLoader's worker_init_fn: its workers end with this process, even on SIGKILL."""
    return functools.partial(die_with_parent, parent=os.getpid())


def default_workers(setting, device_type: str = "cpu") -> int:
    """DataLoader workers: 'auto' = up to 4 beside a CPU forward pass (which needs the cores
    itself), every core but one (up to 16) to feed an accelerator."""
    if setting != "auto":
        return int(setting)
    cores = cpu_threads("auto")
    return max(0, min(16 if device_type != "cpu" else 4, cores - 1))


def unit_batches(sizes, batch_size: int) -> list[list[int]]:
    """Batches of item indices that never cross a unit (a cache file): items come unit after
    unit with `sizes` items each. A unit is then always computed in the same batches whatever
    else is extracted with it, so its bytes do not depend on what was missing (CPU kernels
    are not bitwise invariant to batch composition)."""
    out, start = [], 0
    for n in sizes:
        out += [list(range(i, min(i + batch_size, start + n))) for i in range(start, start + n, batch_size)]
        start += n
    return out


def extract(backbone, items, paths, batches, *, working_size, seed, device="auto",
            num_workers="auto", progress=True, precision="float32", threads="auto",
            store_dtype=None):
    """Yield (item indices, {path: ndarray (b, ...)}) for each batch of `batches`: float32, or
    on an accelerator `store_dtype` (the cache's dtype, converted there). Images are resized
    and normalised as `backbone.spec` says. On the CPU the forward runs on `threads` threads
    (config['extraction_threads'])."""
    dev = resolve_device(device)
    if dev.type == "cpu":
        before = torch.get_num_threads()
        torch.set_num_threads(cpu_threads(threads))
        try:
            yield from _extract(backbone, items, paths, batches, dev, working_size, seed,
                                num_workers, progress, precision)
        finally:
            torch.set_num_threads(before)
        return
    yield from _extract(backbone, items, paths, batches, dev, working_size, seed,
                        num_workers, progress, precision, store_dtype)


def _extract(backbone, items, paths, batches, dev, working_size, seed, num_workers,
             progress, precision, store_dtype=None):
    """The extraction loop (one function, 65 lines: the prefetch, the forward and the one-batch-behind
    copy share their state). On devices of STAGED_DEVICE_TYPES, images are resized and
    normalised on the device, layer outputs converted to `store_dtype` there and copied to
    (pinned) host memory asynchronously, one batch behind the forward passes; elsewhere the
    float32 CPU path."""
    module = backbone.module.to(dev)
    cuda = dev.type == "cuda"
    on_device = dev.type in STAGED_DEVICE_TYPES
    if cuda:
        module = module.to(memory_format=torch.channels_last)
    spec = backbone.spec
    data = ImageDataset(items, working_size, backbone.input_size, spec.mean, spec.std, seed,
                      spec.interpolation, on_device=on_device, antialias=spec.antialias)
    workers = default_workers(num_workers, dev.type)
    loader = torch.utils.data.DataLoader(data, batch_sampler=batches, num_workers=workers,
                                         pin_memory=cuda, worker_init_fn=_die_with_this_process())
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(data), unit="img", desc=f"extract {backbone.name}", leave=False)
    amp = (contextlib.nullcontext() if precision == "float32"
           else torch.autocast(dev.type, dtype=getattr(torch, precision)))
    mean_t, std_t = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
    dtype = getattr(torch, store_dtype) if (on_device and store_dtype) else None
    if on_device and dtype is None:
        dtype = torch.float32
    t0 = time.perf_counter()
    previous = None
    with capture_layers(module, paths, device_dtype=dtype) as store, torch.inference_mode(), amp:
        for idx, x in zip(batches, loader):
            x = x.to(dev, non_blocking=True)
            if on_device:
                x = preprocess_batch(x, backbone.input_size, mean_t, std_t, spec.interpolation,
                                     spec.antialias)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            out = run_captured(backbone.forward, x, store)
            if dtype is None:
                yield idx, {p: out[p].numpy() for p in paths}
            else:
                # copy this batch to pinned host memory behind the GPU's back, and hand over
                # the previous batch, whose copy is done, while the GPU computes this one
                host = {p: torch.empty(out[p].shape, dtype=dtype, pin_memory=cuda) for p in paths}
                for p in paths:
                    host[p].copy_(out[p], non_blocking=cuda)
                done = None
                if cuda:
                    done = torch.cuda.Event()
                    done.record()
                if previous is not None:
                    yield _landed(*previous, paths)
                previous = (idx, host, {p: out[p + FINITE] for p in paths}, done)
            if bar is not None:
                bar.update(len(x))
        if previous is not None:
            yield _landed(*previous, paths)
    if bar is not None:
        bar.close()
    dt = time.perf_counter() - t0
    if data:
        where = f"{dev} ({torch.get_num_threads()} threads)" if dev.type == "cpu" else str(dev)
        log.info("extracted %d images with %s on %s in %.1fs (%.1f img/s; %d loader workers)",
                 len(data), backbone.name, where, dt, len(data) / max(dt, 1e-9), workers)


def _landed(idx, host, finite, done, paths):
    """(item indices, {path: ndarray}) of a batch copied to the host, once the copy is done."""
    if done is not None:
        done.synchronize()
    for p in paths:
        if not bool(finite[p]):
            from featrank.feature_cache import CacheError
            raise CacheError(f"NaN/inf activations at {p}; check the input images (or the "
                             "weights)")
    return idx, {p: host[p].numpy() for p in paths}


def fill_cache(ext, backbone, caches, units, todo, provenance, progress=True) -> None:
    """Extract the units in `todo` ({unit id: [module paths]}, from
    feature_cache.plan_extraction) into `caches` ({module path: LayerCache}) with the settings
    `ext` (run_plan.ExtractionSettings): all layers in one forward pass per image, batches never
    crossing a cache file."""
    from featrank.backbones import build_backbone
    t0 = time.perf_counter()
    bb = build_backbone(backbone, ext.weights, ext.seed, ext.image_size, provenance=provenance)
    built = time.perf_counter() - t0
    n_units = {kind: sum(u.kind == kind for u in units) for kind in ("ref", "eval")}
    units = [u for u in units if u.id in todo]
    items, owner = [], []
    for ui, u in enumerate(units):
        for r in u.records:
            items.append(ImageItem(r, u.degradation, u.level))
            owner.append(ui)
    paths = sorted({p for ps in todo.values() for p in ps})
    batches = unit_batches([len(u.records) for u in units], ext.batch_size)
    dev = resolve_device(ext.device)
    check_memory(bb, paths, dev, ext.batch_size, images=len(items), working_size=ext.working_size,
                 workers=default_workers(ext.num_workers, dev.type),
                 unit_images=max((len(u.records) for u in units), default=0),
                 store_itemsize=np.dtype(ext.cache_dtype).itemsize)
    buffers, filled = {}, [0] * len(units)
    # files are written by threads (np.save, sha256 and fsync release the GIL) while the next
    # batches run; at most PENDING_WRITES wait, and every write is finished (or its error
    # raised) before this returns
    with concurrent.futures.ThreadPoolExecutor(WRITE_THREADS, "cache-writer") as writers:
        pending = collections.deque()
        for idx, batch in extract(bb, items, paths, batches, working_size=ext.working_size,
                                  seed=ext.seed, device=ext.device, num_workers=ext.num_workers,
                                  progress=progress, precision=ext.extraction_precision,
                                  threads=ext.extraction_threads, store_dtype=ext.cache_dtype):
            ui = owner[idx[0]]                      # a batch never crosses a unit
            u = units[ui]
            for p in todo[u.id]:
                if (ui, p) not in buffers:
                    buffers[(ui, p)] = np.empty((len(u.records),) + batch[p].shape[1:], batch[p].dtype)
                buffers[(ui, p)][filled[ui]:filled[ui] + len(idx)] = batch[p]
            filled[ui] += len(idx)
            if filled[ui] == len(u.records):
                for p in todo[u.id]:
                    pending.append(writers.submit(caches[p].write, u, buffers.pop((ui, p)),
                                                  ext.cache_dtype, n_units[u.kind]))
                while len(pending) > PENDING_WRITES:
                    pending.popleft().result()
        for f in pending:
            f.result()
    _decoded.cache_clear()
    log.info("extraction stage of %s: %d images in %.1fs (the network built in %.1fs; then "
             "decoding, forward passes and cache writes)", backbone, len(items),
             time.perf_counter() - t0, built)


class FolderDataset(torch.utils.data.Dataset):
    """Image files as they are (no working-size crop, no degradation), resized and normalised
    for `spec` at `input_size`: the input of --save-stats, read as pytorch-fid reads them
    (PIL's convert("RGB"), no EXIF rotation; scaled to [0, 1]; the network's own resize)."""

    def __init__(self, files, spec, input_size):
        self.files, self.spec, self.input_size = list(files), spec, input_size
        self.mean = torch.tensor(spec.mean).view(3, 1, 1)
        self.std = torch.tensor(spec.std).view(3, 1, 1)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        from featrank.dataset import DatasetError
        try:
            with Image.open(self.files[i]) as im:
                img = np.asarray(im.convert("RGB"))
        except Exception as exc:
            raise DatasetError(f"cannot decode image {self.files[i]!r} ({type(exc).__name__}: "
                               f"{exc}); remove or replace the file and rerun") from None
        return preprocess(img, self.input_size, self.mean, self.std, self.spec.interpolation,
                          self.spec.antialias)


def folder_activations(backbone, files, path: str, *, batch_size: int, device="auto",
                       num_workers="auto", threads="auto", progress=True) -> np.ndarray:
    """(n, ...) float32 output of module `path` of `backbone` for every image of `files`."""
    dev = resolve_device(device)
    check_memory(backbone, [path], dev, batch_size, images=len(files),
                 workers=default_workers(num_workers, dev.type))
    module = backbone.module.to(dev)
    data = FolderDataset(files, backbone.spec, backbone.input_size)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, worker_init_fn=_die_with_this_process(),
                                         num_workers=default_workers(num_workers, dev.type))
    before = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(cpu_threads(threads))
    out = []
    try:
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(data), unit="img", desc=f"features {backbone.name}", leave=False)
        with capture_layers(module, [path]) as store, torch.inference_mode():
            for x in loader:
                out.append(run_captured(backbone.forward, x.to(dev), store)[path].float().cpu().numpy())
                if bar is not None:
                    bar.update(len(x))
        if bar is not None:
            bar.close()
    finally:
        torch.set_num_threads(before)
    return np.concatenate(out)


def list_extractable_layers(module: nn.Module, forward, input_size: int):
    """[(index, path, type, output shape)] for every extractable module of a model,
    found by one forward pass on a zero image."""
    named = [(p, m) for p, m in module.named_modules()
             if p and type(m).__name__.endswith(EXTRACTABLE_TYPES)]
    shapes = {}

    def record(path):
        def hook(_mod, _inp, out):   # returns None: a hook's return value replaces the output
            shapes.setdefault(path, tuple(_unwrap(out).shape[1:]))
        return hook
    handles = [m.register_forward_hook(record(p)) for p, m in named]
    try:
        with torch.inference_mode():
            forward(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in handles:
            h.remove()
    rows = [(p, type(m).__name__, shapes[p]) for p, m in named if p in shapes]
    return [(i, p, t, s) for i, (p, t, s) in enumerate(rows)]

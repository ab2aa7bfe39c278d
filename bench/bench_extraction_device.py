"""Extraction throughput per backbone inside the pipeline vs the bare model forward.

For each backbone, side by side in one run:
  * pipeline: `python main.py --build-cache` of its recommended layers on the built-in data
    (decode, degrade in DataLoader workers; resize, forward with hooks, copies to the host and
    cache writes), its img/s read from the pipeline's own log line;
  * loader: the same DataLoader alone (decode + degrade + hand-over, no model), img/s;
  * bare: the model forward alone (random input already on the device, same batch size, no
    hooks, stopped at the same last layer), img/s.
Goal (issue #11): pipeline / bare >= 0.5. Also printed: the bytes each image adds to the cache.

    python bench/bench_extraction_device.py --device cuda --batch-size 64 [--mode full]
    python bench/bench_extraction_device.py --device cpu --batch-size 16 --mode small

The pipeline's figure is read from its own INFO line ("extracted N images … (x img/s; k loader
workers)"); a backbone whose command fails or prints no such line is reported as FAILED with
its error, and the bench exits 1.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from featrank.backbones import BACKBONES  # noqa: E402

SIZES = {"small": ("40", "4"), "medium": ("200", "10"), "full": ("1000", "50")}


def bare_forward(name, layers, device, batch, steps=20, image_size=None):
    """img/s of the forward pass up to the last requested layer (as the pipeline stops there)."""
    import torch
    from featrank.backbones import build_backbone
    from featrank.feature_extraction import capture_layers, run_captured
    from featrank.pipeline import layers_of
    bb = build_backbone(name, "random", 0, image_size, allow_download=False)
    module = bb.module.to(device)
    x = torch.randn(batch, 3, bb.input_size, bb.input_size, device=device)
    if device == "cuda":
        module = module.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    order = [p for p, _ in module.named_modules()]
    paths = [p for _, p in layers_of(name, layers)]
    last = max(paths, key=order.index)
    # a hook on the last layer that only stops the pass: no copies, no other hooks
    with capture_layers(module, [last], device_dtype=torch.float32) as store, torch.inference_mode():
        for _ in range(3):
            run_captured(bb.forward, x, store)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            run_captured(bb.forward, x, store)
        if device == "cuda":
            torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def loader_only(name, n_inference, n_evaluation, batch, device, image_size=None):
    """img/s of the pipeline's DataLoader alone over the same items (decode + degrade)."""
    import torch
    from featrank.user_config import default_config
    from featrank.dataset import select_images
    from featrank.feature_cache import evaluation_units, reference_units
    from featrank.feature_extraction import ImageItem, ImageDataset, default_workers, unit_batches
    cfg = default_config()
    ev, ref = select_images("builtin", int(n_evaluation), int(n_inference), 0)
    units = reference_units(ref) + evaluation_units(ev, cfg["degradations"])
    items = [ImageItem(r, u.degradation, u.level) for u in units for r in u.records]
    spec = BACKBONES[name]
    data = ImageDataset(items, cfg["working_size"], image_size or spec.input_size, spec.mean, spec.std, 0,
                      spec.interpolation, on_device=device == "cuda", antialias=spec.antialias)
    batches = unit_batches([len(u.records) for u in units], batch)
    workers = default_workers("auto", device)
    loader = torch.utils.data.DataLoader(data, batch_sampler=batches, num_workers=workers,
                                         pin_memory=device == "cuda")
    t0 = time.perf_counter()
    n = sum(len(x) for x in loader)
    return n / (time.perf_counter() - t0), workers


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--mode", choices=tuple(SIZES), default="medium",
                   help="image counts: small 40 + 4 x 45, medium 200 + 10 x 45, full 1000 + 50 x 45")
    p.add_argument("--image-size", type=int, help="override every backbone's input size")
    p.add_argument("--steps", type=int, default=20,
                   help="timed batches of the bare forward (default 20; 3 is enough on a CPU)")
    p.add_argument("--backbone", action="append", help="default: all")
    p.add_argument("--no-loader", action="store_true", help="skip the loader-only measurement")
    a = p.parse_args()
    n_inf, n_eval = SIZES[a.mode]
    work = tempfile.mkdtemp(prefix="bench_extract_")
    failed = []
    for name in a.backbone or list(BACKBONES):
        layers = [str(i) for i in BACKBONES[name].recommended]
        cache = os.path.join(work, name)
        cmd = [sys.executable, "main.py", "--build-cache", "--backbone", name, "--layers", *layers,
               "--weights", "random", "--device", a.device, "--batch-size", str(a.batch_size),
               "--n-inference", n_inf, "--n-evaluation", n_eval, "--cache-dir", cache]
        if a.image_size:
            cmd += ["--image-size", str(a.image_size)]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        m = re.findall(r"extracted (\d+) images .* \(([\d.]+) img/s; (\d+) loader workers\)", out.stderr)
        if out.returncode != 0 or not m:
            err = [x for x in out.stderr.splitlines() if x.strip()]
            print(f"{name} FAILED (exit {out.returncode}): "
                  + (err[-1] if err else "no output") + ("" if m else "; no 'extracted N images' line"),
                  flush=True)
            failed.append(name)
            continue
        n, pipeline, workers = int(m[-1][0]), float(m[-1][1]), int(m[-1][2])
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cache) for f in fs
                   if f.endswith(".npy"))
        shutil.rmtree(cache, ignore_errors=True)
        bare = bare_forward(name, layers, a.device, a.batch_size, a.steps, image_size=a.image_size)
        loader = "" if a.no_loader else "loader %7.1f img/s  " % loader_only(
            name, n_inf, n_eval, a.batch_size, a.device, a.image_size)[0]
        print(f"{name:14s} layers {' '.join(layers):18s} pipeline {pipeline:7.1f} img/s ({n} images, "
              f"{workers} workers, {size / n / 2**20:.2f} MiB/img, command {wall:.0f}s)  {loader}"
              f"bare forward {bare:8.1f} img/s  ratio {pipeline / bare:.2f}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    if failed:
        sys.exit(f"bench_extraction_device: {', '.join(failed)} failed")


if __name__ == "__main__":
    main()

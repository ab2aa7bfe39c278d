"""Extraction throughput per backbone inside the pipeline vs the bare model forward.

For each backbone: `python main.py --build-cache` of its recommended layers on the built-in
data (decode, degrade, resize in DataLoader workers, forward with hooks, cache writes), its
img/s read from the pipeline's log; then the bare forward (random input already on the
device, same batch size, no hooks) in this process. Goal: pipeline / bare >= 0.5.

    python bench/bench_extraction_device.py --device cuda --batch-size 64
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from layer_registry import BACKBONES  # noqa: E402


def bare_forward(name, device, batch, steps=20):
    import torch
    from backbones import build_backbone
    bb = build_backbone(name, "random", 0, allow_download=False)
    module = bb.module.to(device)
    x = torch.randn(batch, 3, bb.input_size, bb.input_size, device=device)
    if device == "cuda":
        module = module.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            bb.forward(x)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            bb.forward(x)
        if device == "cuda":
            torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-inference", default="200")
    p.add_argument("--n-evaluation", default="10")
    p.add_argument("--backbone", action="append", help="default: all")
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench_extract_")
    for name in a.backbone or list(BACKBONES):
        layers = [str(i) for i in BACKBONES[name]["recommended"]]
        cmd = [sys.executable, "main.py", "--build-cache", "--backbone", name, "--layers", *layers,
               "--weights", "random", "--device", a.device, "--batch-size", str(a.batch_size),
               "--n-inference", a.n_inference, "--n-evaluation", a.n_evaluation,
               "--cache-dir", os.path.join(work, name)]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        m = re.findall(r"extracted (\d+) images .* \(([\d.]+) img/s\)", out.stderr)
        if not m:
            print(name, "FAILED:", out.stderr[-2000:])
            continue
        n, pipeline = int(m[-1][0]), float(m[-1][1])
        bare = bare_forward(name, a.device, a.batch_size)
        print(f"{name:14s} layers {' '.join(layers):18s} pipeline {pipeline:8.1f} img/s ({n} images)  "
              f"bare forward {bare:8.1f} img/s  ratio {pipeline / bare:.2f}")


if __name__ == "__main__":
    main()

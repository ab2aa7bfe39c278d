"""Explicit Gram rows of a wide layer: gram_engine.gram_rows (a block of images per GEMM in two
buffers used again, written straight into the output) against the one-expression form it
replaced (blocks of 16 images, fresh temporaries per block, a scaled copy at the end), on the
same synthetic activations shaped like the layer, side by side in one run.

    .venv/bin/python bench/bench_gram_rows.py --layer resnet50:8 --n 60

Prints seconds, minor page faults and the ratio, and fails if the two outputs differ in any bit.
"""
import argparse
import os
import resource
import sys
import time

import numpy as np

from featrank import gram_engine as ge  # noqa: E402
from featrank.backbones import BACKBONES  # noqa: E402


def one_expression(act: np.ndarray, precision: str) -> np.ndarray:
    """gram_rows before the buffers (commit 66ce137), the baseline."""
    import torch
    images = ge._Images([act], [], torch.device("cpu"), precision, 2**31)
    c = images.c
    iu = np.triu_indices(c)
    flat = torch.from_numpy(iu[0] * c + iu[1])
    weight = torch.from_numpy(np.where(iu[0] == iu[1], 1.0, np.sqrt(2.0))).to(images.dtype)
    out = np.empty((images.n, len(iu[0])))
    for s in range(0, images.n, 16):
        e = min(images.n, s + 16)
        f = images.get(s, e)
        g = torch.bmm(f, f.transpose(1, 2)).reshape(e - s, -1)
        out[s:e] = (g[:, flat] * weight).double().cpu().numpy()
    return out * images.scale[:, None]


def _timed(fn, *args):
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = fn(*args)
    dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return out, dt, r1.ru_minflt - r0.ru_minflt, r1.ru_stime - r0.ru_stime


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--layer", default="resnet50:8", help="BACKBONE:INDEX")
    p.add_argument("--n", type=int, default=60, help="images")
    p.add_argument("--precision", default="float32", choices=("float32", "float64"))
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    import torch
    backbone, index = a.layer.split(":")
    shape = BACKBONES[backbone].layers[int(index)].shape
    act = np.random.default_rng(0).standard_normal((a.n,) + shape, dtype=np.float32)
    print(f"{a.layer} {shape}, {a.n} images, {a.precision}, torch threads {torch.get_num_threads()}")
    best = {}
    for _ in range(a.repeats):
        for name, fn in (("one expression", one_expression), ("gram_rows", ge.gram_rows)):
            out, dt, faults, sys_s = _timed(fn, act, a.precision)
            print(f"  {name:15s} {dt:7.2f} s  {faults:8d} minor faults  {sys_s:6.2f} s system")
            best[name] = min(best.get(name, (np.inf,)), (dt, faults, out), key=lambda x: x[0])
    if not np.array_equal(best["one expression"][2], best["gram_rows"][2]):
        sys.exit("FAIL: gram_rows differs from the one-expression form")
    ratio = best["one expression"][0] / best["gram_rows"][0]
    print(f"same bits; gram_rows is {ratio:.1f}x faster (best of {a.repeats}), "
          f"{best['one expression'][1] / max(1, best['gram_rows'][1]):.0f}x fewer page faults")


if __name__ == "__main__":
    main()

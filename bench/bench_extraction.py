"""One extraction of several layers vs the deepest one alone (target ratio <= 1.15).

Both are timed side by side, alternating, on the same images; the ratio of medians is printed.
    .venv/bin/python bench/bench_extraction.py [--backbone resnet50] [--layers 7 8 9] [--images 48]
"""
import argparse
import os
import statistics
import sys
import time


import torch  # noqa: E402

from featrank.backbones import build_backbone  # noqa: E402
from featrank.feature_extraction import capture_layers, run_captured  # noqa: E402
from featrank.backbones import BACKBONES  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--layers", nargs="+", type=int, default=[0, 2, 4, 7, 8, 9])
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    spec = BACKBONES[a.backbone]
    bb = build_backbone(a.backbone, "random", 0, allow_download=False)
    paths = [spec.layers[i].path for i in a.layers]
    # the deepest = the one that fires last in the forward pass
    order = []
    with capture_layers(bb.module, paths, stop_early=False) as store, torch.inference_mode():
        hooks = [dict(bb.module.named_modules())[q].register_forward_hook(
            lambda m, i, o, q=q: order.append(q)) for q in paths]
        run_captured(bb.forward, torch.rand(1, 3, spec.input_size, spec.input_size), store)
        for h in hooks:
            h.remove()
    deepest = order[-1]
    x = torch.rand(a.images, 3, spec.input_size, spec.input_size)

    def time_once(sel):
        t0 = time.perf_counter()
        with capture_layers(bb.module, sel) as store, torch.inference_mode():
            for i in range(0, len(x), a.batch):
                run_captured(bb.forward, x[i:i + a.batch], store)
        return time.perf_counter() - t0

    time_once([deepest])   # warm-up
    many, one = [], []
    for _ in range(a.repeats):
        many.append(time_once(paths))
        one.append(time_once([deepest]))
    ratio = statistics.median(many) / statistics.median(one)
    print(f"backbone {a.backbone}, {a.images} images at {spec.input_size}px, batch {a.batch}, "
          f"{torch.get_num_threads()} threads")
    print(f"layers {a.layers} ({len(paths)}) in one pass: median {statistics.median(many):.2f}s")
    print(f"deepest layer alone ({deepest}): median {statistics.median(one):.2f}s")
    print(f"ratio all/deepest = {ratio:.3f} (target <= 1.15) -> {'PASS' if ratio <= 1.15 else 'FAIL'}")


if __name__ == "__main__":
    main()

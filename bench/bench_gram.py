"""Time the exact Gram kernel routes at a mode's sizes, on synthetic float16 activations
shaped like a real layer (the numbers do not depend on the values).

    .venv/bin/python bench/bench_gram.py --layer resnet50:8 --mode medium
    python bench/bench_gram.py --layer resnet50:8 --layer sd_vae:9 --mode full --device cuda

Prints, per layer and route: seconds, the cost model's estimate, the route the pipeline would
choose, and the peak resident memory of this process.
"""
import argparse
import os
import resource
import sys
import time

import numpy as np

from featrank import gram_engine as ge  # noqa: E402
from featrank import representations as rp  # noqa: E402
from featrank.run_plan import UserConfig  # noqa: E402
from featrank.backbones import BACKBONES  # noqa: E402

USER = UserConfig.load()

N_UNITS = 1 + sum(len(d["levels"]) for d in USER.config["degradations"].values())   # clean + levels


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--layer", action="append", required=True, help="BACKBONE:INDEX, repeatable")
    p.add_argument("--mode", default="medium", choices=tuple(USER.modes))
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="float32", choices=("float32", "float64"))
    p.add_argument("--routes", default="chosen", help="chosen, all, rows or samples")
    p.add_argument("--budget-gib", type=float, default=USER.config["max_representation_bytes"] / 2**30)
    a = p.parse_args()
    if a.device != "cpu":
        import torch
        print("device:", torch.cuda.get_device_name(0))
    n_ref, n_eval = USER.modes[a.mode]["n_images_inference"], USER.modes[a.mode]["n_images_evaluation"]
    budget = int(a.budget_gib * 2**30)
    rng = np.random.default_rng(0)
    for spec in a.layer:
        backbone, index = spec.split(":")
        layer = BACKBONES[backbone].layers[int(index)]
        shape = layer.shape
        c, pos = ge.gram_shape(shape)
        ref = [rng.standard_normal((min(100, n_ref - i),) + shape, dtype=np.float32).astype(np.float16)
               for i in range(0, n_ref, 100)]
        evals = [rng.standard_normal((n_eval,) + shape, dtype=np.float32).astype(np.float16)
                 for _ in range(N_UNITS)]
        costs = ge.gram_route_costs(c, pos, n_ref, n_eval, N_UNITS, budget, a.device)
        chosen = ge.choose_gram_route(costs)
        routes = {"chosen": [chosen], "all": list(costs)}.get(a.routes, [a.routes])
        print(f"{backbone} {layer.path} ({c} channels x {pos} positions, {rp.gram_dim(c)} dims), "
              f"{a.mode}: {n_ref} ref + {N_UNITS} x {n_eval} eval images; chosen route: {chosen}")
        for route in routes:
            if a.device != "cpu":
                import torch
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            ge.gram_kernel_blocks(ref, evals, route, a.precision, a.device, budget)
            dt = time.perf_counter() - t0
            print(f"  {route:8s} {dt:8.1f} s  (cost model {costs[route]:.1f} s)  on {a.device}, "
                  f"{a.precision}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()

"""Peak RSS of building reference statistics from a 2 GB cached layer (target < 1 GB).

Writes a cache entry shaped like sd_vae layer 9 (1000 images x 512 x 32 x 32, float32 = 2 GiB),
then, in fresh processes, builds the reference statistics (GAP rows -> FID mean/covariance
factor) through the pipeline's chunked path, and for contrast by loading the whole array.
    .venv/bin/python bench/bench_ref_memory.py [--dir /tmp/refmem]
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHAPE, N = (512, 32, 32), 1000


def setup(root):
    import numpy as np
    from featrank.dataset import ImageRecord
    from featrank.feature_cache import LayerCache, reference_units
    recs = [ImageRecord(f"synthetic/{i}", f"{i:064x}") for i in range(N)]
    cache = LayerCache(root, "sd_vae", 9, "encoder.down_blocks.2.downsamplers.0",
                       {"dtype": "float32"}, recs, recs[:2], seed=0)
    units = reference_units(recs)
    rng = np.random.default_rng(0)
    for u in units:
        cache.write(u, rng.normal(size=(len(u.records),) + SHAPE).astype(np.float32), "float32", len(units))
    return cache, units


def measure(root, how):
    import numpy as np
    from featrank import distance_metrics as dm
    from featrank.feature_spaces import FeatureAssembler
    cache, units = setup_existing(root)
    if how == "chunked":
        asm = FeatureAssembler({"encoder.down_blocks.2.downsamplers.0": cache}, units, units[:1],
                               256, None, 2 * 1024**3, 200.0)
        ref, _ = asm._explicit("encoder.down_blocks.2.downsamplers.0", False, "mean")
    else:
        whole = np.concatenate([np.asarray(cache.load(u, mmap=False)) for u in units])
        ref = whole.astype(np.float64).mean(axis=(2, 3))
    stats = dm.FIDReference(ref)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB -> MiB
    print(f"{how}: reference rows {ref.shape}, trace {stats.trace:.4f}, peak RSS {peak:.0f} MiB")


def setup_existing(root):
    from featrank.dataset import ImageRecord
    from featrank.feature_cache import LayerCache, reference_units
    recs = [ImageRecord(f"synthetic/{i}", f"{i:064x}") for i in range(N)]
    cache = LayerCache(root, "sd_vae", 9, "encoder.down_blocks.2.downsamplers.0",
                       {"dtype": "float32"}, recs, recs[:2], seed=0)
    return cache, reference_units(recs)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", default="/tmp/bench_ref_memory")
    p.add_argument("--measure", choices=["chunked", "whole"])
    a = p.parse_args()
    if a.measure:
        measure(a.dir, a.measure)
        return
    shutil.rmtree(a.dir, ignore_errors=True)
    subprocess.run([sys.executable, "-c", "import sys; "
                    f"import bench.bench_ref_memory as b; b.setup({a.dir!r})"], check=True, cwd=ROOT)
    size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(a.dir) for f in fs)
    print(f"cached layer on disk: {size / 2**30:.2f} GiB ({N} x {SHAPE} float32)")
    out = {}
    for how in ("chunked", "whole"):
        r = subprocess.run([sys.executable, __file__, "--dir", a.dir, "--measure", how],
                           capture_output=True, text=True, check=True, cwd=ROOT)
        print(r.stdout.strip())
        out[how] = float(r.stdout.split("peak RSS ")[1].split()[0])
    print(f"chunked peak / whole-array peak = {out['chunked'] / out['whole']:.2f}; chunked "
          f"{'PASS' if out['chunked'] < 1024 else 'FAIL'} (target < 1024 MiB)")
    shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    main()

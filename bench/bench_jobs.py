"""Parallel sweep: `--jobs N` against `--jobs 1` on the same warm cache, side by side.

Builds the cache once (`--build-cache`), then runs `python main.py --mode medium` alternately
with --jobs 1 and --jobs N, `--rounds` times each, as a user would (one process per run). For
each run it reads the scoring phase (the pipeline's "scored ... in X s" log line: grouping,
scoring and bootstrap, after the cache check) and the wall time, and checks that every CSV is
byte-identical. With --recompute, the derived Gram artefacts are deleted before each run, so
the scoring phase includes computing the Gram kernels.
Target (issue #11): scoring phase >= 1.6x faster with --jobs 2 on 2 cores.

    .venv/bin/python bench/bench_jobs.py [--jobs 2] [--rounds 3] [--recompute]
                                         [--n-inference 1000 --n-evaluation 50]
"""
import argparse
import glob
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--n-inference", default="1000", help="full mode's count (the scoring phase of "
                   "medium's 200 + 30 lasts ~3 s, too short to time on a shared machine)")
    p.add_argument("--n-evaluation", default="50")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--recompute", action="store_true", help="delete derived Gram artefacts before each run")
    p.add_argument("--keep", metavar="DIR", help="use (and keep) this work folder")
    a = p.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="bench_jobs_")
    cache = os.path.join(work, "cache")
    common = ["--backbone", a.backbone, "--n-inference", a.n_inference, "--n-evaluation",
              a.n_evaluation, "--cache-dir", cache, "-q"]
    from featrank.run_plan import UserConfig
    layers = [str(i) for i, on in sorted(UserConfig.load().enabled_layers[a.backbone].items()) if on]
    subprocess.run([sys.executable, "main.py", "--build-cache", "--layers", *layers, *common],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not a.recompute:     # derived Gram artefacts made once, as the first sweep would
        subprocess.run([sys.executable, "main.py", "--mode", "medium", "--jobs", "1", "--results-dir",
                        os.path.join(work, "warmup"), *common], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = {1: [], a.jobs: []}
    walls = {1: [], a.jobs: []}
    digests = set()
    for _ in range(a.rounds):
        for jobs in (1, a.jobs):
            if a.recompute:
                for d in glob.glob(os.path.join(cache, "*", "*", "derived_*")):
                    shutil.rmtree(d)
            out = os.path.join(work, f"results_j{jobs}")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "main.py", "--mode", "medium", "--jobs", str(jobs),
                            "--results-dir", out, *common], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walls[jobs].append(time.perf_counter() - t0)
            newest = max(glob.glob(os.path.join(out, "medium_*")), key=os.path.getmtime)
            text = open(os.path.join(newest, "experiment.log")).read()
            seen[jobs].append(float(re.search(r"scored \d+ configuration\(s\) in ([\d.]+)s", text).group(1)))
            (csv,) = glob.glob(os.path.join(newest, "results_*.csv"))
            digests.add(hashlib.sha256(open(csv, "rb").read()).hexdigest())
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    s1, sn = statistics.median(seen[1]), statistics.median(seen[a.jobs])
    w1, wn = statistics.median(walls[1]), statistics.median(walls[a.jobs])
    print(f"{a.backbone} medium, {a.n_inference} reference + {a.n_evaluation} evaluation images, "
          f"layers {' '.join(layers)}, {os.cpu_count()} cores, {a.rounds} rounds"
          + (", derived Gram artefacts recomputed each run" if a.recompute else ", warm cache"))
    print(f"scoring phase  --jobs 1: {' '.join(f'{x:.2f}' for x in seen[1])} s (median {s1:.2f})")
    print(f"scoring phase  --jobs {a.jobs}: {' '.join(f'{x:.2f}' for x in seen[a.jobs])} s (median {sn:.2f})")
    print(f"whole run      --jobs 1: median {w1:.2f} s; --jobs {a.jobs}: median {wn:.2f} s "
          f"(speed-up {w1 / wn:.2f}x)")
    ok = len(digests) == 1
    print(f"CSV identical across all {2 * a.rounds} runs: {'yes' if ok else 'NO'}")
    r = s1 / sn
    print(f"scoring speed-up {r:.2f}x (target >= 1.6) -> {'PASS' if r >= 1.6 and ok else 'FAIL'}")


if __name__ == "__main__":
    main()

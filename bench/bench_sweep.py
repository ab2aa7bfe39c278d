"""A medium sweep from a warm cache vs the extraction it replaces (target <= 10%).

Runs `python main.py --mode medium` twice as a user would, each in its own process, on the
built-in data with a fresh cache: the first extracts (its extraction time is read from the
pipeline's own log), the second scores and ranks every configuration from the cache and
writes every output (bootstrap intervals for the top 5). Both times come from this one run.
    .venv/bin/python bench/bench_sweep.py [--backbone resnet50] [--n-inference 200] [--n-evaluation 30]
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--n-inference", default="200")
    p.add_argument("--n-evaluation", default="30")
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench_sweep_")
    cmd = [sys.executable, "main.py", "--mode", "medium", "--backbone", a.backbone,
           "--n-inference", a.n_inference, "--n-evaluation", a.n_evaluation,
           "--cache-dir", os.path.join(work, "cache"), "--results-dir", os.path.join(work, "results"), "-q"]
    times, logs = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
        newest = max(glob.glob(os.path.join(work, "results", "medium_*")), key=os.path.getmtime)
        with open(os.path.join(newest, "experiment.log")) as f:
            logs.append(f.read())
    extraction = sum(float(x) for x in re.findall(r"extracted \d+ images .* in ([\d.]+)s", logs[0]))
    hits, misses = logs[1].count("CACHE HIT"), logs[1].count("CACHE MISS")
    n_conf = re.search(r"scoring (\d+) configuration", logs[1]).group(1)
    shutil.rmtree(work, ignore_errors=True)
    print(f"backbone {a.backbone}, medium, {a.n_inference} reference + {a.n_evaluation} evaluation "
          f"images, {os.cpu_count()} cores")
    print(f"cold run {times[0]:.1f}s, of which extraction {extraction:.1f}s")
    print(f"warm run, whole process ({n_conf} configurations, {hits} CACHE HIT, {misses} CACHE MISS): "
          f"{times[1]:.1f}s")
    ratio = times[1] / extraction
    print(f"warm sweep / extraction = {ratio:.3f} (target <= 0.10) -> {'PASS' if ratio <= 0.10 else 'FAIL'}")


if __name__ == "__main__":
    main()

"""A medium sweep from a warm cache vs the extraction it replaces (target <= 10%).

Runs `--mode medium` on the built-in data twice in one process with a fresh cache: the first run
extracts (its extraction time is read from the pipeline's own log line), the second scores and
ranks every configuration from the cache, with bootstrap intervals for the top 5.
    .venv/bin/python bench/bench_sweep.py [--backbone resnet50] [--n-inference 200] [--n-evaluation 30]
"""
import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import main  # noqa: E402


class Grab(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main_():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--n-inference", default="200")
    p.add_argument("--n-evaluation", default="30")
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench_sweep_")
    args = ["--mode", "medium", "--backbone", a.backbone, "--n-inference", a.n_inference,
            "--n-evaluation", a.n_evaluation, "--cache-dir", os.path.join(work, "cache"),
            "--results-dir", os.path.join(work, "results"), "-q"]
    grab = Grab()
    logging.getLogger().addHandler(grab)
    t0 = time.perf_counter()
    assert main.main(args) == 0
    t_cold = time.perf_counter() - t0
    extraction = sum(float(m.group(1)) for m in
                     (re.search(r"extracted \d+ images .* in ([\d.]+)s", l) for l in grab.lines) if m)
    grab.lines.clear()
    t0 = time.perf_counter()
    assert main.main(args) == 0
    t_warm = time.perf_counter() - t0
    hits = sum(l.startswith("CACHE HIT") for l in grab.lines)
    misses = sum(l.startswith("CACHE MISS") for l in grab.lines)
    n_conf = next((l for l in grab.lines if "scoring" in l), "")
    shutil.rmtree(work, ignore_errors=True)
    print(f"\nbackbone {a.backbone}, medium, {a.n_inference} reference + {a.n_evaluation} evaluation images")
    print(f"cold run {t_cold:.1f}s, of which extraction {extraction:.1f}s")
    print(f"warm sweep ({n_conf.split(': ')[-1]}, {hits} CACHE HIT, {misses} CACHE MISS): {t_warm:.1f}s")
    ratio = t_warm / extraction
    print(f"warm sweep / extraction = {ratio:.3f} (target <= 0.10) -> {'PASS' if ratio <= 0.10 else 'FAIL'}")


if __name__ == "__main__":
    main_()

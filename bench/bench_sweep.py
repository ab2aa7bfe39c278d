"""A medium sweep from a warm cache vs the extraction it replaces.

Runs `python main.py --mode medium` three times as a user would, each in its own process, on
the built-in data with a fresh cache:
  1. cold: extracts every layer (its extraction time is read from the pipeline's own log);
  2. first warm sweep: the derived Gram artefacts are deleted first, so it recomputes them
     (target <= 0.35 x the extraction time);
  3. second warm sweep: everything from the cache (target <= 0.10 x);
  4. the same warm sweep with the grid before the field's metrics were added (fid, kid, cmmd,
     mmd_rbf, mahalanobis, neg_loglik; no baselines): run 3 / run 4 is what the new metrics and
     baselines cost a warm sweep (target <= 1.5).
The cold run writes report.html and its cost is printed apart; runs 2-4 pass --no-report, so
the ratios time the sweep itself.
    .venv/bin/python bench/bench_sweep.py [--backbone resnet50] [--n-inference 200] [--n-evaluation 30]
"""
import argparse
import glob
import os
import re
import resource
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
    p.add_argument("--keep", metavar="DIR", help="use (and keep) this work folder")
    a = p.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="bench_sweep_")
    cache = os.path.join(work, "cache")
    cmd = [sys.executable, "main.py", "--mode", "medium", "--backbone", a.backbone,
           "--n-inference", a.n_inference, "--n-evaluation", a.n_evaluation,
           "--cache-dir", cache, "--results-dir", os.path.join(work, "results"), "-q"]
    old_grid = [sys.executable, "-c", "import sys; from featrank import cli, run_plan; sys.exit(cli.main(sys.argv[1:], "
                "user=run_plan.UserConfig.load(baselines=[], distance_metrics=['fid', 'kid', 'cmmd', "
                "'mmd_rbf', 'mahalanobis', 'neg_loglik'])))"] + cmd[2:]
    times, logs, rss = [], [], []
    for run in range(4):
        if run == 1:
            for d in glob.glob(os.path.join(cache, "*", "*", "derived_*")):
                shutil.rmtree(d)
        t0 = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        # the cold run writes report.html (its cost is printed apart); the sweeps compared run
        # without it, as a sweep of hundreds of configurations would be timed
        subprocess.run((cmd if run < 3 else old_grid) + (["--no-report"] if run else []), cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
        rss.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if run == 0 or
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss > before else None)
        newest = max(glob.glob(os.path.join(work, "results", "medium_*")), key=os.path.getmtime)
        with open(os.path.join(newest, "experiment.log")) as f:
            logs.append(f.read())
        if run == 2:
            with open(os.path.join(newest, "summary.txt")) as f:
                summary = [line for line in f if "configuration(s) scored" in line]
    extraction = sum(float(x) for x in re.findall(r"extracted \d+ images .* in ([\d.]+)s", logs[0]))
    gram = sum(float(x) for x in re.findall(r"kernel blocks in ([\d.]+)s", logs[1]))
    found = [re.search(r"scoring (\d+) configuration", log) for log in logs[2:]]
    if not all(found) or not extraction:
        sys.exit("bench_sweep: the pipeline's log has no 'extracted N images … in Xs' or 'scoring N "
                 "configuration' line; the log format changed, fix the bench")
    n_conf, n_old = found[0].group(1), found[1].group(1)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(f"backbone {a.backbone}, medium, {a.n_inference} reference + {a.n_evaluation} evaluation "
          f"images, {os.cpu_count()} cores")
    base = re.search(r"baselines .* scored in ([\d.]+)s", logs[0])
    report = re.search(r"report written in ([\d.]+)s", logs[0])
    if not report:
        sys.exit("bench_sweep: the cold run's log has no 'report written in Xs' line; fix the bench")
    print(f"cold run {times[0]:.1f}s, of which extraction {extraction:.1f}s"
          + (f" and the baselines' pixel scores {float(base.group(1)):.1f}s" if base else ""))
    print(f"{n_conf} configurations; {summary[0].strip() if summary else ''}")
    print(f"report.html of the cold run (strip, three t-SNE maps, page): {float(report.group(1)):.1f}s; "
          "the warm sweeps below run with --no-report")
    r1, r2 = times[1] / extraction, times[2] / extraction
    print(f"first warm sweep (derived Gram artefacts recomputed, {gram:.1f}s of Gram kernels): "
          f"{times[1]:.1f}s = {r1:.3f} x extraction (target <= 0.35) -> {'PASS' if r1 <= 0.35 else 'FAIL'}")
    print(f"second warm sweep (all from the cache, {logs[2].count('CACHE HIT')} CACHE HIT): "
          f"{times[2]:.1f}s = {r2:.3f} x extraction (target <= 0.10) -> {'PASS' if r2 <= 0.10 else 'FAIL'}")
    r3 = times[2] / times[3]
    print(f"the same warm sweep with the grid before the field's metrics ({n_old} configurations, no "
          f"baselines): {times[3]:.1f}s; with them ({n_conf} configurations + baselines): "
          f"{times[2]:.1f}s = {r3:.2f} x (target <= 1.5) -> {'PASS' if r3 <= 1.5 else 'FAIL'}")


if __name__ == "__main__":
    main()

"""Time `python main.py --report RESULTS_DIR` on a medium run of about 100 configurations:
the report rebuilt from its stored feature maps, and rebuilt with the strip and the three t-SNE
maps computed again from the cache (as for a run that had the report off).

    .venv/bin/python bench/bench_report.py                       # runs the medium run first
    .venv/bin/python bench/bench_report.py --run-dir results/medium_20261202_120000

The run (when not given): `main.py --mode medium --layers 7 8 --weights random` on the
built-in data at the mode's counts (200 reference, 30 evaluation images), in a temporary folder
(or --keep DIR, to rerun on the same run with --run-dir).
Prints each rebuild's seconds against the 20 s target, the seconds of each t-SNE map (from the
log lines the map builder writes; the bench fails if it cannot find three), and the file size.
"""
import argparse
import glob
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from featrank import pipeline  # noqa: E402
from featrank.report import MAPS_FILE, REPORT_FILE, STRIP_FILE  # noqa: E402

TARGET_S = 20.0
MAP_LINE = re.compile(r"feature map of (.+): t-SNE of (\d+) points in ([\d.]+)s")


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _medium_run(out: str) -> str:
    """The run, in its own process: the rebuilds below are timed in a process that has not just
    run a sweep (whose workers and memory would slow them down)."""
    args = ["--mode", "medium", "--layers", "7", "8", "--weights", "random", "--cache-dir",
            os.path.join(out, "cache"), "--results-dir", os.path.join(out, "results"), "-q"]
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        sys.exit(f"FAIL: the medium run exited {done.returncode}; see its experiment.log")
    print(f"medium run: {time.perf_counter() - t0:.0f}s (python main.py {' '.join(args)})")
    return max(glob.glob(os.path.join(out, "results", "medium_*")))


def _timed(run_dir: str) -> float:
    t0 = time.perf_counter()
    pipeline.rebuild_report(run_dir)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", help="a finished medium run (default: run one)")
    p.add_argument("--keep", help="run the medium run in this folder and keep it")
    a = p.parse_args()
    run_dir = a.run_dir or _medium_run(a.keep or tempfile.mkdtemp(prefix="bench_report_"))
    work = os.path.join(tempfile.mkdtemp(), os.path.basename(run_dir))
    shutil.copytree(run_dir, work)
    n_rows = sum(1 for _ in open(glob.glob(os.path.join(work, "results_*.csv"))[0])) - 1
    for f in (MAPS_FILE, STRIP_FILE, REPORT_FILE):
        if os.path.exists(os.path.join(work, f)):
            os.remove(os.path.join(work, f))
    handler = _Lines()
    logging.getLogger("iqm").addHandler(handler)
    logging.getLogger("iqm").setLevel(logging.INFO)
    computed = _timed(work)                    # strip and maps from the cache, then the page
    stored = _timed(work)                      # the page from the files the first call wrote
    maps = [MAP_LINE.search(line) for line in handler.lines]
    maps = [m for m in maps if m]
    if len(maps) != 3:
        sys.exit(f"FAIL: expected three 'feature map of ...' log lines, found {len(maps)}: "
                 f"{handler.lines}")
    size = os.path.getsize(os.path.join(work, REPORT_FILE)) / 2**20
    print(f"run: {run_dir} ({n_rows} configurations)")
    for m in maps:
        print(f"  t-SNE map of {m.group(1)}: {m.group(2)} points, {float(m.group(3)):.1f}s")
    tsne = sum(float(m.group(3)) for m in maps)
    for what, s in (("rebuild, maps stored  ", stored), ("rebuild, maps computed", computed)):
        print(f"{what}: {s:.1f}s = {s / TARGET_S:.2f} x the {TARGET_S:.0f} s target -> "
              f"{'PASS' if s <= TARGET_S else 'FAIL'}")
    print(f"the three maps (space + t-SNE): {tsne:.1f}s = {tsne / computed:.0%} of the computed rebuild")
    print(f"report.html: {size:.2f} MiB (target < 10 MiB for a full run)")


if __name__ == "__main__":
    main()

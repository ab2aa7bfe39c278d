"""A medium run on a rated database: is its time dominated by extraction?

Full-reference (default):

Writes a KADID-10k-format folder (dmos.csv + images/) of R references from the built-in
photographs and R x T x L distorted images made by the KADID generator's types (default
40 x 5 x 5 = 1,000), with opinion scores that fall with the level. Then runs, as a user would,
in its own process and with a fresh cache:

    python main.py --mode medium --mos FOLDER/dmos.csv --cache-dir ... --results-dir ...

and reads from the run's experiment.log the extraction stage's time ("extraction stage of B: N
images in Xs": building the network, decoding, forward passes, cache writes), the extraction
loop's ("extracted N images ... in Xs") and the scoring time ("scored K configuration(s) in
Ys"). Prints them, the wall time, and the ratio extraction stage / wall time (target: > 0.5,
extraction dominates). Fails loudly when the log lacks any of these lines.

    .venv/bin/python bench/bench_mos.py [--references 40] [--types 5] [--image-size 224]

No-reference (issue #34): `--no-reference 600` writes a RAISE-layout set (dataset/ratings/
{train,test}.csv, dataset/images/{train,test}_images/) of 600 rated images (built-in crops, a
sixth as they are, the rest blurred, noised or JPEG-compressed; opinions falling with the
strength) and a folder of 200 other built-in photographs as the reference set, then runs

    python main.py --mode medium --mos FOLDER/dataset --dataset REFS --backbone efficientnet_lite0

    .venv/bin/python bench/bench_mos.py --no-reference 600 [--backbone efficientnet_lite0]
"""
import argparse
import csv
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TYPES = (1, 3, 10, 11, 21)          # gaussian blur, motion blur, jpeg, white noise, pixelate


def write_database(folder, n_ref, n_types, size=256):
    import numpy as np
    from PIL import Image
    from featrank import degradation_generator as dg
    from featrank.dataset import builtin_sources, load_rgb
    from featrank.kadid10k import KADID10K_LEVELS
    names = list(KADID10K_LEVELS)
    os.makedirs(os.path.join(folder, "images"))
    rows = []
    for i, source in enumerate(builtin_sources()[:n_ref], start=1):
        img = np.array(load_rgb(source, size))
        Image.fromarray(img).save(os.path.join(folder, "images", f"I{i:02d}.png"))
        for t in TYPES[:n_types]:
            for lv in range(1, 6):
                value = KADID10K_LEVELS[names[t - 1]][lv - 1]
                out = dg.apply_degradation(img, "kadid_" + names[t - 1], value, 0, f"ref{i}")
                name = f"I{i:02d}_{t:02d}_{lv:02d}.png"
                Image.fromarray(out).save(os.path.join(folder, "images", name))
                rows.append([name, f"I{i:02d}.png", round(5.2 - 0.8 * lv + 0.01 * (i % 7), 3), 0.1])
    with open(os.path.join(folder, "dmos.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dist_img", "ref_img", "dmos", "var"])
        w.writerows(rows)
    return os.path.join(folder, "dmos.csv"), len(rows)


def write_no_reference(folder, n_rated, n_refs=200, size=256):
    """A RAISE-layout no-reference set and a reference folder; returns (dataset dir, refs dir)."""
    import numpy as np
    from PIL import Image
    from featrank import degradation_generator as dg
    from featrank.dataset import builtin_sources, load_rgb
    src = builtin_sources()
    refs = os.path.join(folder, "refs")
    os.makedirs(refs)
    for i in range(n_refs):
        Image.fromarray(np.array(load_rgb(src[i], size))).save(os.path.join(refs, f"r{i}.png"))
    ds = os.path.join(folder, "RAISE", "dataset")
    kinds = ((None, 0), ("gaussian_blur", 1.5), ("gaussian_blur", 3.0), ("gaussian_noise", 15),
             ("gaussian_noise", 35), ("jpeg_compression", 10))
    rows = {"train": [], "test": []}
    for j in range(n_rated):
        img = np.array(load_rgb(src[n_refs + j], size))
        k = j % len(kinds)
        out = img if kinds[k][0] is None else dg.apply_degradation(img, kinds[k][0], kinds[k][1], 0, f"x{j}")
        split = "train" if j % 5 else "test"
        name = f"{'r' if k == 0 else 'f'}{j}.png"
        os.makedirs(os.path.join(ds, "images", f"{split}_images"), exist_ok=True)
        Image.fromarray(out).save(os.path.join(ds, "images", f"{split}_images", name))
        rows[split].append([name, round(85 - 9 * k + (j % 7), 3), 0.0])
    os.makedirs(os.path.join(ds, "ratings"))
    for split, rs in rows.items():
        with open(os.path.join(ds, "ratings", f"{split}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", "MOS_Rating", "MOS_ZScore"])
            w.writerows(rs)
    return ds, refs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--references", type=int, default=40)
    p.add_argument("--types", type=int, default=5, choices=range(1, len(TYPES) + 1))
    p.add_argument("--no-reference", type=int, metavar="N", help="a no-reference set of N rated images")
    p.add_argument("--backbone", default=None, help="--backbone of the run (no-reference: efficientnet_lite0)")
    p.add_argument("--image-size", default=None, help="--image-size of the run (default: the backbone's)")
    p.add_argument("--keep", metavar="DIR", help="use (and keep) this work folder")
    a = p.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="bench_mos_")
    if a.no_reference:
        ratings, refs = write_no_reference(os.path.join(work, "nr"), a.no_reference)
        n_images = a.no_reference
        extra = ["--dataset", refs, "--backbone", a.backbone or "efficientnet_lite0"]
    else:
        ratings, n_images = write_database(os.path.join(work, "kadid"), a.references, a.types)
        extra = ["--backbone", a.backbone] if a.backbone else []
    cmd = [sys.executable, "main.py", "--mode", "medium", "--mos", ratings, *extra,
           "--cache-dir", os.path.join(work, "cache"), "--results-dir", os.path.join(work, "results"), "-q"]
    if a.image_size:
        cmd += ["--image-size", a.image_size]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    run_dir = max(glob.glob(os.path.join(work, "results", "medium_*")), key=os.path.getmtime)
    with open(os.path.join(run_dir, "experiment.log")) as f:
        log = f.read()
    extracted = re.findall(r"extracted (\d+) images .* in ([\d.]+)s", log)
    scored = re.search(r"scored (\d+) configuration\(s\) in ([\d.]+)s", log)
    if not extracted or not scored:
        sys.exit(f"bench_mos FAILED: experiment.log of {run_dir} lacks the 'extracted N images ... "
                 "in Xs' or 'scored K configuration(s) in Ys' line; the pipeline's log changed")
    loop = sum(float(s) for _, s in extracted)
    stage = re.findall(r"extraction stage of \S+: \d+ images in ([\d.]+)s \(the network built in ([\d.]+)s", log)
    if not stage:
        sys.exit(f"bench_mos FAILED: experiment.log of {run_dir} lacks the 'extraction stage of B: "
                 "N images in Xs (the network built in Ys' line; the pipeline's log changed")
    extraction = sum(float(s) for s, _ in stage)
    built = sum(float(b) for _, b in stage)
    n_extracted = sum(int(n) for n, _ in extracted)
    scoring = float(scored.group(2))
    report = re.search(r"report written in ([\d.]+)s", log)
    report_s = float(report.group(1)) if report else 0.0
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(f"no-reference set of {n_images} rated images, 200 reference images" if a.no_reference else
          f"rated database: {a.references} references x {a.types} types x 5 levels = {n_images} "
          f"distorted images; medium mode, {os.cpu_count()} cores")
    print(f"wall time {wall:.1f}s: extraction stage {extraction:.1f}s (the network built in "
          f"{built:.1f}s; the extraction loop {loop:.1f}s: {n_extracted} images, "
          f"{n_extracted / loop:.1f} img/s), scoring {scored.group(1)} configurations "
          f"{scoring:.1f}s, the rest {wall - extraction - scoring:.1f}s (start-up, reading and "
          "hashing the database, plots)")
    ratio = extraction / wall
    print(f"extraction stage / wall time = {ratio:.2f} (target > 0.5: dominated by extraction) -> "
          f"{'PASS' if ratio > 0.5 else 'FAIL'}; the extraction loop alone / wall time = "
          f"{loop / wall:.2f}")
    if report_s:
        print(f"of the rest, report.html {report_s:.1f}s (its t-SNE maps); extraction / (wall time "
              f"- report) = {extraction / (wall - report_s):.2f}")


if __name__ == "__main__":
    main()

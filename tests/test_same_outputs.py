"""Behaviour unchanged by the package move (issue #42), shown by running it: the code of the
commit before it (BEFORE, taken from this clone's git history) and the working tree run the same
medium run, the same no-reference --mos run and the same --apply (BEFORE in a process of its own,
this tree in the test's), each with a cache of its own, and write byte-identical CSVs, and JSONs
equal but for the run's own folder names, time stamps and command line."""
import copy
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEFORE = "d936915"          # main before the package move (issue #42): the behaviour to keep
# tiny_config's CONFIG (tests/helpers.py), written out: both trees' run_plan.UserConfig.load takes it
USER = {"working_size": 32, "batch_size": 8, "num_workers": 0,
        "degradations": {"blur": {"type": "gaussian_blur", "levels": [1.0, 3.0]},
                         "noise": {"type": "gaussian_noise", "levels": [10, 40]}},
        "bootstrap": {"n_resamples": 20, "scope": "top", "confidence": 0.95}, "report": False}
# run with the BEFORE tree as the current folder: `python -c` puts it first on the import path,
# so the flat tree's `main` is its own
BEFORE_DRIVER = ("import json, sys, main, run_plan; sys.exit(main.main(sys.argv[2:], "
                 "user=run_plan.UserConfig.load(**json.loads(sys.argv[1]))))")
VOLATILE = {"timestamp", "command", "cache_dir", "results_dir", "versions"}
# backbones registered since BEFORE: config.py's tables gained their rows, which the resolved
# configuration records; nothing else of a run that does not use them changes
ADDED_BACKBONES = {"mobilenet_v2", "stlpips_vgg", "stlpips_alex"}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """{"before": the BEFORE commit's files, "after": this working tree's}, as folders."""
    if shutil.which("git") is None or subprocess.run(
            ["git", "-C", ROOT, "cat-file", "-e", BEFORE + "^{commit}"], capture_output=True).returncode:
        pytest.skip(f"commit {BEFORE} is not in this checkout's git history (a shallow clone or an "
                    "archive): nothing to compare with")
    base = tmp_path_factory.mktemp("trees")
    out = {"before": base / "before", "after": ROOT}
    out["before"].mkdir()
    archive = subprocess.run(["git", "-C", ROOT, "archive", BEFORE], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(out["before"])], input=archive.stdout, check=True)
    return out


def _run(which, tree, work, *argv):
    """main.py of `tree` on a tiny run; its sweep in one process (a sweep in 2 processes writes
    the same CSV, tests/test_scale_out.py), which costs the suite's two workers less. The
    BEFORE tree runs in a process of its own (its modules have the package's names); this
    tree's command line runs here."""
    argv = [*argv, "-q", "--cache-dir", str(work / "cache"), "--image-size", "32",
            "--weights", "random", "--jobs", "1"]
    if which == "after":
        from featrank import cli, run_plan
        assert cli.main(argv, user=run_plan.UserConfig.load(**copy.deepcopy(USER))) == 0
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", BEFORE_DRIVER, json.dumps(USER), *argv], cwd=tree,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def _scrub(value):
    """A JSON value without what differs between two runs of the same thing (and without the
    rows of the backbones added since BEFORE)."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()
                if k not in VOLATILE and k not in ADDED_BACKBONES}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _outputs(folder) -> dict:
    """{name without the run's time stamp: path} of a run folder's CSVs and JSONs."""
    return {re.sub(r"_\d{8}_\d{6}(-\d+)?", "", f): os.path.join(folder, f)
            for f in os.listdir(folder) if f.endswith((".csv", ".json"))}


def _same_outputs(a, b):
    """Every CSV and JSON of run folder `a` equals b's (JSONs scrubbed); returns their names."""
    files_a, files_b = _outputs(a), _outputs(b)
    names = sorted(files_a)
    assert names and names == sorted(files_b)
    for name in names:
        pa, pb = files_a[name], files_b[name]
        if name.endswith(".csv"):
            with open(pa, "rb") as fa, open(pb, "rb") as fb:
                assert fa.read() == fb.read(), name
        else:
            with open(pa) as fa, open(pb) as fb:
                assert _scrub(json.load(fa)) == _scrub(json.load(fb)), name
    return names


def _results(work):
    (run,) = os.listdir(work / "results")
    return work / "results" / run


def _rated_set(root):
    """A no-reference rated set: 12 built-in crops, blurred or noised by their index, rated by
    it (image,mos), and 8 other built-in photographs as its references."""
    from PIL import Image, ImageFilter
    from featrank.dataset import builtin_sources, load_rgb
    sources = builtin_sources()
    (root / "rated").mkdir(parents=True)
    (root / "refs").mkdir()
    rows = []
    for i, src in enumerate(sources[:12]):
        img = Image.fromarray(load_rgb(src, 48)).filter(ImageFilter.GaussianBlur(i / 4))
        img.save(root / "rated" / f"r{i:02d}.png")
        rows.append([f"rated/r{i:02d}.png", 5.0 - i / 3])
    for i, src in enumerate(sources[12:20]):
        Image.fromarray(np.asarray(load_rgb(src, 48))).save(root / "refs" / f"f{i}.png")
    with open(root / "ratings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mos"])
        w.writerows(rows)
    return root / "ratings.csv", root / "refs"


@pytest.mark.slow
def test_a_medium_run_a_mos_run_and_an_apply_write_what_they_wrote_before(trees, tmp_path):
    medium = ["--mode", "medium", "--layers", "0", "--n-inference", "10", "--n-evaluation", "4",
              "--n-resamples", "10"]
    ratings, refs = _rated_set(tmp_path / "data")
    mos = ["--mode", "medium", "--layers", "0", "--mos", str(ratings), "--dataset", str(refs),
           "--n-inference", "8",
           "--mos-bins", "3", "--n-resamples", "10", "--no-baselines"]
    runs = {}
    for which, tree in trees.items():
        for name, argv in (("medium", medium), ("mos", mos)):
            work = tmp_path / which / name
            _run(which, tree, work, *argv, "--results-dir", str(work / "results"))
            runs[which, name] = _results(work)
    for name in ("medium", "mos"):
        files = _same_outputs(runs["before", name], runs["after", name])
        assert any(f.startswith("results_") for f in files) and "config_resolved.json" in files
    assert "mos_groups.csv" in os.listdir(runs["after", "mos"])
    # a cache the BEFORE code built is a full CACHE HIT for this tree (the same keys): building
    # the medium run's cache again writes nothing
    hit = tmp_path / "after" / "hit"
    shutil.copytree(tmp_path / "before" / "medium" / "cache", hit / "cache")

    def files():
        return {str(p.relative_to(hit)): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in (hit / "cache").rglob("*") if p.is_file() and not p.name.endswith(".lock")}
    before = files()
    assert any(name.endswith(".npy") for name in before)
    _run("after", ROOT, hit, "--build-cache", *medium[2:8], "--results-dir", str(hit / "results"))
    assert files() == before
    # --apply of the medium run's #1 (one results folder for both, so the CSV's source is one)
    folders = {k: tmp_path / "apply" / k for k in ("ref", "eval")}
    for k, seed in (("ref", 1), ("eval", 2)):
        from helpers import write_images
        write_images(folders[k], n=6, seed=seed)
    outs = {}
    for which, tree in trees.items():
        work = tmp_path / which / "apply"
        work.mkdir()
        out = work / "scores.csv"
        _run(which, tree, work, "--apply", f"{runs['before', 'medium']}#1", str(folders["ref"]),
             str(folders["eval"]), "--out", str(out))
        outs[which] = out.read_bytes()
    assert outs["before"] == outs["after"] and outs["after"].count(b"\n") == 2

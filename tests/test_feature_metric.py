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

import evaluation as ev
import feature_metric as fm
import main
import run_plan
from dataset import load_rgb
from degradation_generator import apply_degradation
from errors import UserError
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
    assert len(grid) > 100 and {c.metric for c in grid} >= set(run_plan.default_config()["distance_metrics"])
    for conf in grid:
        spec = fm.spec_string(conf)
        back = fm.parse_spec(spec)
        assert _content(back) == _content(conf), spec
        assert fm.spec_string(back) == spec
        row = json.loads(json.dumps(ev.ConfigResult(conf).fields()))      # as the JSON holds it
        assert _content(fm.configuration_of_row(row)) == _content(conf), spec
    assert fm.spec_string(fm.parse_spec("resnet50:7+8/concat/gram,pca=64/gaussian/mahalanobis")) == \
        "resnet50:7+8/concat/gram,pca=64/gaussian/mahalanobis"
    c = fm.parse_spec("resnet50:layer3+8/mean/gap,l2/gmm,covariance_type=diag,n_components=3/neg_loglik")
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
        fm.parse_spec(spec)
    assert named in str(exc.value) and "\n" not in str(exc.value)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A small medium run (random weights, 32 px), and its reference images, clean evaluation
    images and their second blur level written to folders as PNG (the pixels the sweep saw)."""
    tmp = tmp_path_factory.mktemp("apply")
    user = tiny_config()
    args = tiny_args(tmp, "--mode", "medium", "--n-inference", "24", "--n-evaluation", "8",
                     "--no-baselines", "--n-resamples", "0")
    assert main.main(args, user=user) == 0
    results = json.load(open(glob.glob(str(tmp / "results" / "*" / "results_*.json"))[0]))
    cfg = results["config"]
    degradation, spec = next(iter(cfg["degradations"].items()))
    folders = {k: tmp / k for k in ("ref", "clean", "degraded")}
    for f in folders.values():
        f.mkdir()
    for i, src in enumerate(results["dataset"]["reference"]):
        Image.fromarray(load_rgb(src, cfg["working_size"])).save(folders["ref"] / f"{i:03d}.png")
    from cache_fill import select
    ev_records, _ = select({**cfg, "dataset": "builtin"})
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
        code = main.main(tiny_args(tmp, "--apply", f"{resdir}#{r['rank']}", str(ref),
                                   str(folders["degraded"]), "--out", str(out), "--n-resamples", "0"),
                         user=user)
        assert code == 0, r["label"]
        got = float(next(csv.DictReader(open(out)))["score"])
        want = r["per_degradation"][degradation]["scores"][2]
        print(f"{r['label']}: apply {got!r} sweep {want!r}")
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9), (r["label"], got, want)


def test_apply_with_a_spec_string_prints_one_score_per_folder_with_an_interval(sweep, capsys):
    tmp, user, _, _, folders = sweep
    code = main.main(tiny_args(tmp, "--apply", "resnet50:8/concat/gap/fid", str(folders["ref"]),
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
    assert main.main(tiny_args(tmp, "--apply", *extra), user=user) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_out_is_checked_before_any_work(sweep, capsys, monkeypatch):
    tmp, user, _, _, folders = sweep
    monkeypatch.setattr(fm, "apply", lambda *a, **k: pytest.fail("work started"))
    assert main.main(tiny_args(tmp, "--apply", "resnet50:8/concat/gap/fid", str(folders["ref"]),
                               str(folders["degraded"]), "--out", "/no/such/dir/s.csv"), user=user) == 2
    assert "/no/such/dir" in capsys.readouterr().err


def test_the_interval_is_a_bootstrap_over_the_eval_images():
    """By hand: the resampled scores are the metric of resampled rows."""
    rng = np.random.default_rng(0)
    ref, e = rng.normal(size=(30, 4)), rng.normal(0.5, 1, size=(12, 4))
    scorer = ev.scorer_for("fid", ev.FeatureSpace.rows(ref, {fm.APPLY_KEY: e}), None,
                           run_plan.default_config(), 0)
    state = scorer.prepare(e)
    idx = rng.integers(0, 12, 12)
    import distance_metrics as dm
    assert scorer.score_prepared(state, idx) == pytest.approx(dm.fid(ref, e[idx]), rel=1e-9)

"""Agreement with human opinion scores (--mos): the three ratings formats give the same numbers,
the criteria equal independent scipy computations, the bootstrap resamples references, a known
truth is found, and bad ratings files are one-line usage errors."""
import csv
import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats
from scipy.optimize import curve_fit

from featrank import degradation_generator as dg
from featrank import evaluation as ev
from featrank import human_agreement as ha
from featrank import cli
from featrank.feature_spaces import FeatureSpace
from helpers import WORSENS, tiny_args, tiny_config

# KADID-10k type numbers (imdist_generator.m cases) used by the small databases below
TYPES = {1: "gaussian_blur", 11: "white_noise", 21: "pixelate"}
N_REF, LEVELS = 5, (1, 2, 3)


def _references():
    from featrank.dataset import builtin_sources, load_rgb
    return [np.array(load_rgb(s, 48)) for s in builtin_sources()[300:300 + N_REF]]


def _opinion(ref, t, level):
    """Ratings written by the test: worse with the level, a type offset, a per-image wobble;
    4 decimals, so every format carries exactly the same numbers."""
    return round(5.0 - 0.9 * level - 0.3 * (t % 3) + 0.05 * ((ref * 7 + t + level) % 5), 4)


def make_databases(root):
    """The same pixels and scores as a KADID-10k folder, a TID2013 folder and a generic CSV
    with DMOS (higher = worse). Returns the three ratings files."""
    refs = _references()
    kadid, tid, gen = root / "kadid", root / "tid", root / "generic"
    for d in (kadid / "images", tid / "distorted_images", tid / "reference_images", gen / "img"):
        d.mkdir(parents=True)
    krows, tlines, grows = [], [], []
    for i, img in enumerate(refs, start=1):
        Image.fromarray(img).save(kadid / "images" / f"I{i:02d}.png")
        Image.fromarray(img).save(tid / "reference_images" / f"I{i:02d}.BMP")
        Image.fromarray(img).save(gen / "img" / f"ref{i}.png")
        for t, name in TYPES.items():
            levels = dg.KADID10K["kadid_" + name]["levels"]
            for lv in LEVELS:
                value = dg.kadid10k.KADID10K_LEVELS[name][lv - 1]
                out = dg.apply_degradation(img, "kadid_" + name, value, 0, f"ref{i}")
                assert value in levels
                score = _opinion(i, t, lv)
                Image.fromarray(out).save(kadid / "images" / f"I{i:02d}_{t:02d}_{lv:02d}.png")
                Image.fromarray(out).save(tid / "distorted_images" / f"i{i:02d}_{t:02d}_{lv}.bmp")
                Image.fromarray(out).save(gen / "img" / f"d{i}_{t}_{lv}.png")
                krows.append([f"I{i:02d}_{t:02d}_{lv:02d}.png", f"I{i:02d}.png", score, 0.1])
                tlines.append(f"{score:.6f} i{i:02d}_{t:02d}_{lv}.bmp")
                grows.append([f"img/d{i}_{t}_{lv}.png", f"img/ref{i}.png", -score, f"t{t}", lv])
    with open(kadid / "dmos.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dist_img", "ref_img", "dmos", "var"])
        w.writerows(krows)
    (tid / "mos_with_names.txt").write_text("\n".join(tlines) + "\n")
    with open(gen / "ratings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "reference", "dmos", "type", "level"])
        w.writerows(grows)
    return kadid / "dmos.csv", tid / "mos_with_names.txt", gen / "ratings.csv"


def _run(tmp_path, ratings, *extra):
    results = tmp_path / "results"
    before = set(results.iterdir()) if results.exists() else set()
    rc = cli.main(tiny_args(tmp_path, "--mode", "medium", "--layers", "0", "--mos", str(ratings),
                             "--n-resamples", "30", "--jobs", "1", *extra), user=tiny_config())
    assert rc == 0
    (run_dir,) = set(results.iterdir()) - before
    stamp = run_dir.name.split("_", 1)[1]
    return run_dir, pd.read_csv(run_dir / f"results_medium_{stamp}.csv"), \
        json.loads((run_dir / f"results_medium_{stamp}.json").read_text())


def _key(df):
    return df.set_index(["layer_config", "transform", "distribution", "metric"], drop=False)


@pytest.mark.slow
def test_kadid_tid_and_generic_formats_give_the_same_agreement(tmp_path, monkeypatch):
    files = make_databases(tmp_path)
    runs = [_run(tmp_path, f, *(["--report"] if f == files[0] else [])) for f in files]
    frames = [_key(df) for _, df, _ in runs]
    scored = frames[0][frames[0].status == "scored"]
    assert len(scored) > 10 and scored.srcc_mos.notna().all()
    for other in frames[1:]:
        o = other.loc[scored.index]
        np.testing.assert_allclose(o.srcc_mos, scored.srcc_mos, atol=1e-12)
        np.testing.assert_allclose(o.plcc_mos, scored.plcc_mos, atol=1e-9)
        np.testing.assert_allclose(o.srcc_mos_ci_low, scored.srcc_mos_ci_low, atol=1e-12)
    # the ranking follows srcc_mos; the JSON says so
    assert list(scored.sort_values("rank").srcc_mos) == sorted(scored.srcc_mos, reverse=True)
    assert runs[0][2]["rank_by"] == "mos" and runs[0][2]["rated_database"]["format"] == "kadid10k"
    assert runs[2][2]["rated_database"]["higher_is_better"] is False
    # per-type SRCC and monotonicity columns use KADID's type names
    assert {"srcc_mos_gaussian_blur", "rho_white_noise", "srcc_mos_pixelate"} <= set(frames[0].columns)
    # per-image criteria exactly for the metrics that score each image (models, paired, baselines)
    from featrank import distance_metrics as dm
    per_image = scored.metric.map(lambda m: dm.METRICS[m]["per_image"])
    assert set(scored[per_image].metric) >= {"mahalanobis", "neg_loglik", "paired_l2", "psnr"}
    assert (~per_image).any() and set(scored[~per_image].metric) >= {"fid", "kid"}
    assert scored[per_image].srcc_mos_image.notna().all() and scored[~per_image].srcc_mos_image.isna().all()

    # srcc_mos is Spearman's rho recomputed from mos_groups.csv (joined on the label)
    run_dir, df, _ = runs[0]
    groups = pd.read_csv(run_dir / "mos_groups.csv")
    assert set(groups.config) == set(df[df.status == "scored"].label)
    assert (groups.n_images == N_REF).all() and len(groups.groupby(["type", "level"])) == 9
    for label, g in groups.groupby("config"):
        row = df[df.label == label].iloc[0]
        # a higher-is-better score (precision, PSNR …) is turned around, as for monotonicity
        expected = stats.spearmanr(WORSENS[row.metric] * g.score, -g.mos).statistic
        if np.ptp(g.score) == 0:
            expected = 0.0
        assert row.srcc_mos == pytest.approx(expected, abs=1e-6)
    for name in ("mos_scatter.png", "heatmap_mean_rho.png", "monotonicity_top1.png"):
        assert (run_dir / name).stat().st_size > 1000
    # report.html ranks by SRCC: its agreement columns hold the CSV's values, the MOS scatter and
    # the database's strip are there, and the maps show one distortion type
    text = (run_dir / "report.html").read_text()
    head = text[text.index('<table id="ranking">'):text.index("</thead>")]
    titles = re.findall(r'<th class="[^"]*" data-col="\d+" title="[^"]*">([^<]+)</th>', head)
    assert {"SRCC", "SRCC interval", "ΔSRCC to #1", "tied (MOS)", "KRCC", "PLCC"} <= set(titles)
    body = text[text.index("<tbody>"):text.index("</tbody>")]
    first = re.findall(r'data-v="([^"]*)"', body.split("</tr>")[0])
    top = next(r for r in runs[0][2]["results"] if r["rank"] == 1)
    assert float(first[titles.index("SRCC")]) == top["mos"]["srcc"]
    assert "Heatmap: SRCC with the MOS" in text and 'alt="set score against MOS"' in text
    assert "Each distortion type of the rated database" in text
    maps = json.loads((run_dir / "feature_maps.json").read_text())["maps"]
    assert len(maps) == 3 and all(m["degradation"] in set(groups.type) for m in maps)


def test_plcc_equals_an_independent_logistic_fit():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 10, 60)
    mos = 4 / (1 + np.exp((x - 5) / 1.5)) + 1 + rng.normal(0, 0.15, 60)   # falls with the score

    def logistic(v, b1, b2, b3, b4):
        return (b1 - b2) / (1 + np.exp(-(v - b3) / b4)) + b2
    params, _ = curve_fit(logistic, x, mos, p0=[mos.max(), mos.min(), x.mean(), x.std() / 4],
                          maxfev=10000)
    expected = stats.pearsonr(logistic(x, *params), mos).statistic
    got = ha.criteria(x, mos)
    assert got["plcc_fit"] == "logistic4"
    assert got["plcc"] == pytest.approx(expected, abs=1e-6) and got["plcc"] > 0.9
    assert got["srcc"] == pytest.approx(-stats.spearmanr(x, mos).statistic, abs=1e-12)
    assert got["krcc"] == pytest.approx(-stats.kendalltau(x, mos).statistic, abs=1e-12)
    # a score that rises with quality disagrees: every criterion is negative
    rising = ha.criteria(-x, mos)
    assert rising["srcc"] < -0.9 and rising["plcc"] < -0.9
    # a constant score: no fit, zero
    assert ha.criteria(np.ones(10), np.arange(10.0))["plcc"] == 0.0


class _Recorder:
    """A scorer whose prepared state is one score per reference; it records the positions."""

    def __init__(self):
        self.seen = []

    def score_prepared(self, state, idx=None):
        self.seen.append((state["key"], None if idx is None else tuple(idx)))
        return float(np.mean(state["v"] if idx is None else state["v"][idx]))


def test_the_bootstrap_resamples_references_with_all_their_images():
    keys = [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    rng = np.random.default_rng(0)
    n_ref = 7
    quality = rng.normal(size=(len(keys), n_ref))
    ratings = ha.Ratings(tuple(keys), quality)
    r = ev.ConfigResult(ev.Configuration("x", {"name": "l", "paths": ["p"]}, {"name": "t"}, None, "fid"),
                        n_evaluation=n_ref)
    rec = _Recorder()
    r.scorer = rec
    r.prepared = {k: {"key": k, "v": rng.normal(size=n_ref)} for k in [("clean", 0)] + keys}
    degs = {"a": {"levels": [1, 2]}, "b": {"levels": [1, 2]}}
    ev._monotonicity(r, degs, n_ref)
    ev.agreement(r, ratings)
    rec.seen.clear()
    ev.bootstrap(r, degs, 25, 0.95, seed=1, ratings=ratings)
    # every resample scores every group on the same reference positions: a reference's
    # distorted images stay together (resampling images per group would differ between groups)
    by_call = {}
    for key, idx in rec.seen:
        by_call.setdefault(key, []).append(idx)
    resamples = list(zip(*[by_call[k] for k in keys]))
    assert len(resamples) == 25
    assert all(len(set(row)) == 1 for row in resamples)
    # and the group MOS of a resample is the mean over those same references
    idx = np.array([row[0] for row in resamples])
    scores = np.array([[np.mean(r.prepared[k]["v"][i]) for k in keys] for i in idx])
    mos = np.stack([quality[:, i].mean(axis=1) for i in idx])
    want = np.array([stats.spearmanr(a, -b).statistic for a, b in zip(scores, mos)])
    np.testing.assert_allclose(r.boot_mos, want, atol=1e-12)
    lo, hi = np.percentile(want[np.isfinite(want)], [2.5, 97.5])
    assert r.mos["srcc_ci"] == pytest.approx([lo, hi], abs=1e-12)


def _space(shift_per_group, rng, n_ref=30, n=20, d=4):
    base = rng.normal(size=(n, d))
    keys = [("clean", 0)] + [("d", p) for p in range(1, len(shift_per_group) + 1)]
    evals = {k: base + s for k, s in zip(keys, [0.0] + list(shift_per_group))}
    return FeatureSpace.rows(rng.normal(size=(n_ref, d)), evals)


def test_ratings_that_follow_one_configurations_scores_rank_it_first_and_untied():
    rng = np.random.default_rng(5)
    shifts = [0.2, 0.5, 0.9, 1.4, 2.0]
    degs = {"d": {"levels": list(range(1, 6))}}
    seeing = _space(shifts, rng)
    blind = _space([0.0] * 5, np.random.default_rng(6))          # features equal at every level
    keys = tuple(("d", p) for p in range(1, 6))
    conf = ev.Configuration("bb", {"name": "l", "paths": ["p"]}, {"name": "t"}, None, "fid")
    probe = ev.score_group([conf], lambda: seeing, degs, 0)[0]
    fid = np.array(probe.per_degradation["d"]["scores"][1:])
    # opinions: a strictly decreasing function of this configuration's own set scores
    quality = np.repeat((10 - np.log1p(fid))[:, None], 20, axis=1)
    ratings = ha.Ratings(keys, quality)
    a = ev.score_group([conf], lambda: seeing, degs, 0, ratings=ratings)[0]
    b = ev.score_group([ev.Configuration("bb", {"name": "blind", "paths": ["p"]}, {"name": "t"}, None, "fid")],
                       lambda: blind, degs, 0, ratings=ratings)[0]
    assert a.mos["srcc"] == pytest.approx(1.0) and a.mos["krcc"] == pytest.approx(1.0)
    ranked = ev.rank([b, a], by="mos")
    assert ranked[0] is a and a.rank == 1
    for r in ranked:
        ev.bootstrap(r, degs, 200, 0.95, 0, ratings)
    ev.ties_with_top_mos(ranked, 0.95)
    assert a.mos["tied_with_top"] is True and b.mos["tied_with_top"] is False
    assert b.mos["delta_top_ci"][0] > 0


# ---------------------------------------------------------------- bad ratings files

def _bad(tmp_path, capsys, ratings):
    rc = cli.main(tiny_args(tmp_path, "--mode", "medium", "--layers", "0", "--mos", str(ratings)), user=tiny_config())
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()
    return err[0]


def _edit(path, fn):
    lines = path.read_text().splitlines()
    path.write_text("\n".join(fn(lines)) + "\n")


def test_bad_ratings_files_are_one_line_usage_errors(tmp_path, monkeypatch, capsys):
    kadid, tid, gen = make_databases(tmp_path / "db")
    original = gen.read_text()
    # an image that does not exist
    (kadid.parent / "images" / "I02_11_03.png").unlink()
    msg = _bad(tmp_path, capsys, kadid)
    assert "I02_11_03.png" in msg and "does not exist" in msg
    # a duplicated row
    _edit(tid, lambda ls: ls + [ls[3]])
    msg = _bad(tmp_path, capsys, tid)
    assert "rated again" in msg and "line 4" in msg
    # a non-numeric opinion score
    _edit(gen, lambda ls: ls[:2] + [ls[2].replace(ls[2].split(",")[2], "good", 1)] + ls[3:])
    msg = _bad(tmp_path, capsys, gen)
    assert "'good'" in msg and ":3:" in msg
    # an unknown format
    odd = tmp_path / "db" / "odd.csv"
    odd.write_text("file;score\na.png;3\n")
    assert "unknown ratings format" in _bad(tmp_path, capsys, odd)
    # fewer than three (type, level) groups
    two = tmp_path / "db" / "generic" / "two.csv"
    rows = [r for r in original.splitlines()[1:] if r.endswith(",t1,1") or r.endswith(",t1,2")]
    two.write_text("image,reference,mos,type,level\n" + "\n".join(rows) + "\n")
    assert "2 group(s)" in _bad(tmp_path, capsys, two)
    # the same reference twice in one group names the line
    gen.write_text(original)
    _edit(gen, lambda ls: ls + [ls[1].replace("d1_", "x1_", 1)])
    (gen.parent / "img" / "x1_1_1.png").write_bytes((gen.parent / "img" / "d1_1_1.png").read_bytes())
    assert "two images of reference 'ref1.png'" in _bad(tmp_path, capsys, gen)
    # every opinion score the same: no order to agree with
    lines = original.splitlines()
    flat = [",".join(r.split(",")[:2] + ["3.5"] + r.split(",")[3:]) for r in lines[1:]]
    gen.write_text("\n".join([lines[0]] + flat) + "\n")
    msg = _bad(tmp_path, capsys, gen)
    assert f"all {len(flat)} opinion scores are 3.5" in msg and "vary" in msg


def test_blank_ratings_files_are_one_line_usage_errors(tmp_path, monkeypatch, capsys):
    for text in ("", "\n\n  \n"):
        ratings = tmp_path / "mos.txt"
        ratings.write_text(text)
        assert "is empty" in _bad(tmp_path, capsys, ratings)


# ---------------------------------------------------------------------- known truth, every direction
# Scores are "higher = worse" and opinions "higher = better" (human_agreement's convention), so a
# score that falls as the opinion rises agrees (+1) and one that rises with it disagrees (-1).

def _design(n_groups=4, n_refs=7, seed=0):
    """(G, R) opinions with G != R, varying across groups and across references."""
    rng = np.random.default_rng(seed)
    return (5 - np.arange(n_groups)[:, None] * 0.9 + rng.uniform(0, 0.8, (n_groups, n_refs)))


@pytest.mark.parametrize("f, sign", [(lambda q: -2.0 * q + 1, 1), (lambda q: np.exp(-q), 1),
                                     (lambda q: q ** 3, -1), (lambda q: -np.exp(-q), -1)])
def test_criteria_follow_an_increasing_or_decreasing_function_of_the_opinions(f, sign):
    q = _design().ravel()
    got = ha.criteria(f(q), q)
    assert got["srcc"] == pytest.approx(sign * 1.0, abs=1e-12)
    assert got["krcc"] == pytest.approx(sign * 1.0, abs=1e-12)
    assert np.sign(got["plcc"]) == sign and abs(got["plcc"]) > 0.9
    assert got["srcc"] == pytest.approx(-stats.spearmanr(f(q), q).statistic, abs=1e-12)


@pytest.mark.parametrize("params", [(5.0, 1.0, 0.0, -0.5), (5.0, 1.0, 0.0, 0.5),
                                    (1.0, 5.0, 0.0, -0.5), (1.0, 5.0, 0.0, 0.5),
                                    # (b1 - b2) / b4 between 0 and 1: a rising curve
                                    (1.5, 1.0, 0.0, 0.8), (1.0, 1.5, 0.0, -0.8)])
def test_plcc_reads_the_direction_of_the_fitted_logistic_whatever_its_parameters(monkeypatch, params):
    """All four ways of writing a logistic (b1 above or below b2, slope b4 positive or negative):
    the fit is pinned to `params` and the opinions lie on that curve, so the PLCC is +1 when the
    curve falls with the score (read here from its values) and -1 when it rises."""
    x = np.linspace(-3, 3, 41)

    def curve(v):
        b1, b2, b3, b4 = params
        return (b1 - b2) / (1 + np.exp(-(v - b3) / b4)) + b2
    y = curve(x)
    falls = bool(np.all(np.diff(y) < 0))
    monkeypatch.setattr(ha, "fit_logistic", lambda s, m: np.array(params))
    r, how, fitted = ha.plcc(x, y)
    assert how == "logistic4" and list(fitted) == list(params)
    assert r == pytest.approx(1.0 if falls else -1.0, abs=1e-12)


def test_a_constant_side_gives_zero_agreement_where_scipy_gives_nan():
    """srcc, krcc and plcc are 0 when the scores or the opinions are all equal (scipy's
    spearmanr/kendalltau/pearsonr return NaN there), on either side."""
    x, c = np.array([1.0, 2.0, 4.0, 3.0, 5.0, 0.5]), np.full(6, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(stats.kendalltau(x, c).statistic) and np.isnan(stats.spearmanr(x, c).statistic)
    for a, b in ((x, c), (c, x), (c, c)):
        assert ha.srcc(a, b) == 0.0 and ha.krcc(a, b) == 0.0
        assert ha.plcc(a, b) == (0.0, "linear", None)
    assert ha.krcc(x, -x) == pytest.approx(-1.0) and ha.srcc(x, x) == pytest.approx(1.0)


def test_logistic4_is_vqegs_formula_and_a_fit_needs_five_points():
    """logistic4 written out by hand at three points; fit_logistic refuses fewer than 5 points
    or a constant side, and fits 5 points on a logistic (recovering it)."""
    b1, b2, b3, b4 = 5.0, 1.0, 2.0, 0.5
    for v in (0.0, 2.0, 3.0):
        assert ha.logistic4(v, b1, b2, b3, b4) == pytest.approx(4.0 / (1.0 + np.exp(-(v - 2.0) / 0.5)) + 1.0)
    assert ha.logistic4(2.0, b1, b2, b3, b4) == pytest.approx(3.0)       # the midpoint (b1 + b2) / 2
    x5 = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    y5 = ha.logistic4(x5, b1, b2, b3, b4)
    params = ha.fit_logistic(x5, y5)
    assert params is not None
    np.testing.assert_allclose(ha.logistic4(x5, *params), y5, atol=1e-6)
    assert ha.fit_logistic(x5[:4], y5[:4]) is None
    assert ha.fit_logistic(np.full(5, 1.0), y5) is None and ha.fit_logistic(x5, np.full(5, 3.0)) is None
    assert ha.plcc(x5, y5)[1] == "logistic4" and ha.plcc(x5[:4], y5[:4])[1] == "linear"


def test_a_fit_that_is_flat_on_the_scores_falls_back_to_linear(monkeypatch):
    """A fitted logistic with b1 == b2 is constant over the scores: no correlation can be read
    from it, so PLCC is Pearson's r of the score with the negated opinions."""
    x = np.linspace(0, 1, 9)
    y = 3 - 2 * x + np.random.default_rng(1).uniform(0, 0.05, 9)
    monkeypatch.setattr(ha, "fit_logistic", lambda s, m: np.array([2.0, 2.0, 0.5, 0.1]))
    r, how, params = ha.plcc(x, y)
    assert how == "linear" and params is None
    assert r == pytest.approx(stats.pearsonr(x, -y).statistic, abs=1e-12)


def test_an_interval_of_no_finite_resample_is_nan_and_otherwise_numpys_percentiles():
    """Resamples that leave a statistic undefined are dropped; none left gives [nan, nan]."""
    for values in ([], [np.nan, np.inf, -np.inf]):
        low, high = ha.interval(values, 0.95)
        assert np.isnan(low) and np.isnan(high)
    v = [0.3, np.nan, 0.1, 0.7, np.inf, 0.5]
    assert ha.interval(v, 0.9) == [np.quantile([0.3, 0.1, 0.7, 0.5], 0.05), np.quantile([0.3, 0.1, 0.7, 0.5], 0.95)]


def test_a_negative_slope_fit_on_falling_opinions_agrees():
    """The real fit on opinions that fall with the score (from scipy's curve_fit, pyiqa's start)
    is positive; the same opinions against the negated score are negative."""
    x = np.linspace(0, 10, 40)
    y = 4 / (1 + np.exp((x - 5) / 0.8)) + 1                # falls: slope -1/0.8 in (x - b3) / b4
    r, how, params = ha.plcc(x, y)
    assert how == "logistic4" and r == pytest.approx(1.0, abs=1e-6)
    r2, how2, _ = ha.plcc(-x, y)
    assert how2 == "logistic4" and r2 == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.parametrize("n", [4, 12])
def test_the_linear_fallback_keeps_the_orientation(monkeypatch, n):
    """Too few points to fit four parameters (n=4), or a fit that fails (n=12): the PLCC is
    Pearson's r of the score with the negated opinions, computed here with scipy."""
    if n > 4:
        def fail(*a, **k):
            raise RuntimeError("Optimal parameters not found")
        monkeypatch.setattr(ha, "curve_fit", fail)
    q = np.linspace(1, 5, n) + np.random.default_rng(n).uniform(0, 0.1, n)
    for score, sign in ((-3 * q + 2, 1), (q ** 2, -1)):
        r, how, params = ha.plcc(score, q)
        assert how == "linear" and params is None
        assert r == pytest.approx(stats.pearsonr(score, -q).statistic, abs=1e-12)
        assert np.sign(r) == sign


def test_per_type_srcc_has_the_sign_of_each_type():
    """Two types over three levels: one whose scores rise as its opinions fall (+1), one whose
    scores fall as its opinions fall (-1), one with too few levels (None)."""
    keys = (("up", 1), ("up", 2), ("up", 3), ("down", 1), ("down", 2), ("down", 3), ("one", 1))
    q = np.array([[4.0, 4.2], [3.0, 3.1], [2.0, 2.3], [4.5, 4.4], [3.5, 3.2], [1.0, 1.4], [2, 2]])
    scores = np.array([0.1, 0.5, 0.9, 0.9, 0.4, 0.2, 0.3])
    got = ha.set_level(scores, ha.Ratings(keys, q))
    assert got["srcc_per_type"] == {"up": pytest.approx(1.0), "down": pytest.approx(-1.0), "one": None}
    mos = q.mean(axis=1)
    for t, sel in (("up", slice(0, 3)), ("down", slice(3, 6))):
        assert got["srcc_per_type"][t] == pytest.approx(
            stats.spearmanr(scores[sel], -mos[sel]).statistic, abs=1e-12)
    assert got["srcc"] == pytest.approx(stats.spearmanr(scores, -mos).statistic, abs=1e-12)


def test_image_level_criteria_pair_each_image_with_its_own_opinion():
    """Per-image scores of a complete (G, R) design with G != R: a score that is an exact
    decreasing function of each image's opinion has SRCC 1; the same values laid out transposed
    (R, G), or with the references of one group permuted, do not."""
    q = _design(n_groups=4, n_refs=7)
    ratings = ha.Ratings(tuple(("t", p) for p in range(1, 5)), q)
    scores = -np.log(q)
    assert ha.image_level(scores, ratings)["srcc"] == pytest.approx(1.0, abs=1e-12)
    assert ha.image_level(list(scores), ratings)["srcc"] == pytest.approx(1.0, abs=1e-12)
    transposed = np.ascontiguousarray(scores.T).reshape(q.shape)
    assert ha.image_level(transposed, ratings)["srcc"] < 0.99
    shuffled = scores.copy()
    shuffled[1] = shuffled[1][::-1]
    assert ha.image_level(shuffled, ratings)["srcc"] < 0.99
    with pytest.raises(ValueError):
        ha.image_level(scores[:, :-1], ratings)
    # an incomplete design: one array per group, each of its own length
    rows = tuple(q[g, :3 + g] for g in range(4))
    inc = ha.Ratings(tuple(("t", p) for p in range(1, 5)), rows, clusters=tuple(
        np.arange(len(r)) for r in rows), n_clusters=7, complete=False)
    assert ha.image_level([-np.log(r) for r in rows], inc)["srcc"] == pytest.approx(1.0, abs=1e-12)
    assert ha.image_level([-np.log(r[::-1]) for r in rows], inc)["srcc"] < 0.99


def test_agreement_orients_a_metric_that_falls_as_quality_worsens():
    """evaluation.agreement: a metric whose score rises with quality (orientation -1) agrees with
    the opinions when it rises with them, at set level and image level."""
    from featrank import distance_metrics as dm
    falling, rising = "realism", "mahalanobis"      # per-image scores; WORSENS -1 and +1
    assert dm.METRICS[falling]["per_image"] and dm.METRICS[rising]["per_image"]
    q = _design(n_groups=5, n_refs=6)
    keys = tuple(("t", p) for p in range(1, 6))
    ratings = ha.Ratings(keys, q)
    for metric, values in ((falling, q), (rising, -q)):
        r = ev.ConfigResult.__new__(ev.ConfigResult)
        r.conf = type("Conf", (), {"metric": metric})()
        r.per_degradation = {"t": {"scores": [None] + [float(v.mean()) for v in values]}}
        r.prepared = {k: v for k, v in zip(keys, values)}
        ev.agreement(r, ratings)
        assert r.mos["srcc"] == pytest.approx(1.0), metric
        assert r.mos["image"]["srcc"] == pytest.approx(1.0), metric
        assert r.mos["srcc_per_type"]["t"] == pytest.approx(1.0), metric


def test_the_reference_bootstrap_keeps_a_references_images_together():
    """ha.resamples on an incomplete design: in every resample every group takes each of its
    images as often as its reference was drawn, and nothing else."""
    clusters = (np.array([0, 2, 3]), np.array([1, 2]), np.array([0, 1, 2, 3]))
    ratings = ha.Ratings(keys=(("a", 1), ("a", 2), ("b", 1)),
                         quality=tuple(np.arange(len(c), dtype=float) for c in clusters),
                         clusters=clusters, n_clusters=4, complete=False)
    for rows in ha.resamples(ratings, 50, np.random.default_rng(0), ("clean", 0)):
        drawn = np.bincount(rows[("clean", 0)], minlength=4)
        for key, cl in zip(ratings.keys, clusters):
            got = np.bincount(cl[rows[key]], minlength=4)
            assert (got == np.where(np.isin(np.arange(4), cl), drawn, 0)).all()


def test_a_no_reference_resample_draws_the_clean_set_and_each_bin_on_its_own():
    """No clusters: the clean (reference) set draws n_clean of its rows, each bin as many rows
    as it has, all within range; over many resamples every row of every set is drawn."""
    rows = (np.arange(4.0), np.arange(3.0), np.arange(5.0))
    ratings = ha.Ratings(keys=(("mos", 1), ("mos", 2), ("mos", 3)), quality=rows, clusters=None,
                         complete=False, paired=False, n_clean=7)
    seen = {k: set() for k in [("clean", 0), *ratings.keys]}
    for draw in ha.resamples(ratings, 200, np.random.default_rng(1), ("clean", 0)):
        assert len(draw[("clean", 0)]) == 7
        for key, q in zip(ratings.keys, rows):
            assert len(draw[key]) == len(q)
        for k, v in draw.items():
            seen[k] |= set(v.tolist())
    assert seen[("clean", 0)] == set(range(7))
    for key, q in zip(ratings.keys, rows):
        assert seen[key] == set(range(len(q)))


def test_spearman_rows_leave_out_the_columns_a_resample_emptied():
    """Row by row against scipy on the columns where neither side is NaN; NaN where fewer than
    3 remain; 0 for a constant row."""
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(6, 7)), rng.normal(size=(6, 7))
    a[1, 2] = np.nan
    b[2, [0, 5]] = np.nan
    a[3, :5] = np.nan                      # 2 columns left
    b[4, 6] = np.nan
    a[5] = 1.0                             # constant
    got = ha.spearman_rows(a, b)
    for i in range(6):
        keep = ~(np.isnan(a[i]) | np.isnan(b[i]))
        if keep.sum() < 3:
            assert np.isnan(got[i])
        elif np.ptp(a[i, keep]) == 0:
            assert got[i] == 0.0
        else:
            assert got[i] == pytest.approx(stats.spearmanr(a[i, keep], b[i, keep]).statistic,
                                           abs=1e-12), i
    assert np.isnan(got[3]) and got[5] == 0.0


def test_bootstrap_srcc_of_an_incomplete_design_recomputes_each_groups_mos():
    """The list form (ha.resamples): each resample's group MOS is the mean of the rows it drew,
    recomputed here, and its SRCC with the scores is scipy's; a group the resample left empty
    is left out of that row."""
    rows = (np.array([4.0, 4.5, 3.9]), np.array([3.0, 3.3]), np.array([2.0, 2.4, 1.8, 2.2]),
            np.array([1.0, 1.5, 0.7]))
    ratings = ha.Ratings(keys=tuple(("t", p) for p in range(1, 5)), quality=rows,
                         clusters=tuple(np.arange(len(r)) for r in rows), n_clusters=4,
                         complete=False)
    idx = ha.resamples(ratings, 30, np.random.default_rng(2), ("clean", 0))
    idx[0][("t", 2)] = np.array([], dtype=int)                 # emptied by the resample
    scores = np.random.default_rng(3).normal(size=(30, 4))
    got = ha.bootstrap_srcc(scores, ratings, idx)
    for b, draw in enumerate(idx):
        mos = np.array([rows[g][draw[k]].mean() if len(draw[k]) else np.nan
                        for g, k in enumerate(ratings.keys)])
        keep = ~np.isnan(mos)
        want = stats.spearmanr(scores[b, keep], -mos[keep]).statistic
        assert got[b] == pytest.approx(want, abs=1e-12), b
    assert np.isfinite(got[0])


def test_every_reference_can_be_drawn_by_the_reference_bootstrap():
    clusters = (np.array([0, 1, 2, 3]), np.array([0, 2]), np.array([1, 3]))
    ratings = ha.Ratings(keys=(("a", 1), ("a", 2), ("a", 3)),
                         quality=tuple(np.ones(len(c)) for c in clusters), clusters=clusters,
                         n_clusters=4, complete=False)
    drawn = np.concatenate([r[("clean", 0)] for r in ha.resamples(ratings, 100, np.random.default_rng(0), ("clean", 0))])
    assert set(drawn.tolist()) == {0, 1, 2, 3}


def test_a_type_with_two_levels_has_a_per_type_srcc():
    keys = (("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 3))
    q = np.array([[4.0, 4.1], [3.0, 3.2], [4.0, 4.4], [2.0, 2.1], [1.0, 1.2]])
    got = ha.set_level(np.array([0.1, 0.2, 0.3, 0.1, 0.5]), ha.Ratings(keys, q))
    assert got["srcc_per_type"]["a"] == pytest.approx(1.0)
    assert got["srcc_per_type"]["b"] == pytest.approx(0.5)

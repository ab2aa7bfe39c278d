"""Human judgments as they are published (issue #34): no-reference realism ratings (RAISE's layout
and a generic image,mos CSV) in MOS-quantile bins, incomplete full-reference designs, the
unified dis_img_path,dis_type,ref_img_path,score CSV, and the realism score. Every criterion is
recomputed here from the run's own per-group and per-image outputs with scipy."""
import csv
import glob
import json
import random

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from featrank import degradation_generator as dg
from featrank import distance_metrics as dm
from featrank import human_agreement as ha
from featrank import cli
from featrank.dataset import builtin_sources, load_rgb
from helpers import WORSENS, tiny_args, tiny_config

N_REFS, N_RATED, BINS = 16, 30, 4


def make_no_reference(root, mos=None):
    """A no-reference rated set from real photographs: N_RATED built-in crops, blurred by a level
    that sets their opinion (or `mos`: path -> score), in RAISE's layout (dataset/ratings/
    {train,test}.csv, images in dataset/images/{split}_images/) and as a generic image,mos CSV,
    plus two rated images equal to reference images; and the reference folder. Returns
    (RAISE's dataset folder, the generic CSV, the reference folder)."""
    src = builtin_sources()
    refs = root / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    for i in range(N_REFS):
        Image.fromarray(load_rgb(src[i * 7], 48)).save(refs / f"r{i}.png")
    ds = root / "RAISE" / "dataset"
    rows, generic = {"train": [], "test": []}, []
    for j in range(N_RATED + 2):
        split = "train" if j % 3 else "test"
        folder = ds / "images" / f"{split}_images"
        folder.mkdir(parents=True, exist_ok=True)
        if j < N_RATED:
            img, lv = load_rgb(src[400 + j * 5], 48), j % 6
            out = img if lv == 0 else dg.apply_degradation(img, "gaussian_blur", 0.5 * lv, 0, f"x{j}")
            name = f"{'r' if lv == 0 else 'f'}{j}.png"
            score = round(90 - 10 * lv + (j % 5) * 0.7, 3)
            Image.fromarray(out).save(folder / name)
        else:                                     # a reference photograph, rated as well
            name, score = f"dup{j}.png", 80.0
            folder.joinpath(name).write_bytes((refs / f"r{j - N_RATED}.png").read_bytes())
        rel = f"RAISE/dataset/images/{split}_images/{name}"
        score = mos.get(rel, score) if mos else score
        rows[split].append([name, score, 0.0])
        generic.append([rel, score])
    (ds / "ratings").mkdir(exist_ok=True)
    for split, rs in rows.items():
        with open(ds / "ratings" / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", "MOS_Rating", "MOS_ZScore"])
            w.writerows(rs)
    with open(root / "generic.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mos"])
        w.writerows(generic)
    return ds, root / "generic.csv", refs


def _run(tmp_path, ratings, *extra, refs=None, expect=0):
    results = tmp_path / "results"
    before = set(results.iterdir()) if results.exists() else set()
    args = ["--mode", "medium", "--layers", "0", "--mos", str(ratings), "--n-resamples", "30",
            "--jobs", "1", "--no-baselines", *extra]
    if refs is not None:
        args += ["--dataset", str(refs), "--n-inference", str(N_REFS)]
    assert cli.main(tiny_args(tmp_path, *args), user=tiny_config()) == expect
    (out,) = set(results.iterdir()) - before
    return out


def _csv(out):
    return pd.read_csv(next(out.glob("results_*.csv"))).set_index("label")


def _recomputed_set_srcc(out):
    """srcc_mos of every configuration from mos_groups.csv, with scipy (a score equal in every
    group carries no order: 0, as the module documents, where scipy gives NaN)."""
    g = pd.read_csv(out / "mos_groups.csv")
    res = _csv(out)
    got = {}
    for label, rows in g[g.score.notna()].groupby("config", sort=False):
        sign = WORSENS[res.loc[label, "metric"]]
        got[label] = (0.0 if rows.score.nunique() == 1
                      else stats.spearmanr(sign * rows.score, -rows.mos).statistic)
    return got


@pytest.fixture(scope="module")
def no_reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nr")
    ds, generic, refs = make_no_reference(tmp)
    return tmp, ds, generic, refs, _run(tmp, ds, "--mos-bins", str(BINS), refs=refs)


def test_raise_layout_and_generic_csv_give_identical_results(no_reference, caplog):
    tmp, ds, generic, refs, out = no_reference
    other = _run(tmp, generic, "--mos-bins", str(BINS), refs=refs)
    assert next(out.glob("results_*.csv")).read_bytes() == next(other.glob("results_*.csv")).read_bytes()
    assert (out / "mos_groups.csv").read_bytes() == (other / "mos_groups.csv").read_bytes()
    a, b = pd.read_csv(out / "mos_images.csv"), pd.read_csv(other / "mos_images.csv")
    assert a.drop(columns="image").equals(b.drop(columns="image"))
    one_split = _run(tmp, ds / "ratings" / "test.csv", "--mos-bins", "3", refs=refs)
    assert pd.read_csv(one_split / "mos_groups.csv").groupby("config").n_images.sum().iloc[0] == 10


def test_bins_are_quantiles_and_srcc_is_recomputed_from_the_outputs(no_reference):
    tmp, ds, generic, refs, out = no_reference
    g = pd.read_csv(out / "mos_groups.csv")
    first = g[g.config == g.config.iloc[0]]
    assert list(first.level) == [1, 2, 3, 4] and first.n_images.sum() == N_RATED
    assert (first.n_images.max() - first.n_images.min()) <= 1                # equal counts
    assert (first.mos_min.values[:-1] >= first.mos_max.values[1:]).all()      # best bin first
    assert ((first.mos >= first.mos_min) & (first.mos <= first.mos_max)).all()
    res = _csv(out)
    recomputed = _recomputed_set_srcc(out)
    assert len(recomputed) == res.srcc_mos.notna().sum() > 20
    for label, v in recomputed.items():
        assert res.loc[label, "srcc_mos"] == pytest.approx(v, abs=1e-6), label
    # image level: every per-image metric (mahalanobis, neg_loglik, realism), from mos_images.csv
    img = pd.read_csv(out / "mos_images.csv")
    assert {"mahalanobis", "neg_loglik", "realism"} <= set(res.loc[img.config.unique(), "metric"])
    for label, rows in img.groupby("config"):
        sign = WORSENS[res.loc[label, "metric"]]
        assert len(rows) == N_RATED
        want = stats.spearmanr(sign * rows.score, -rows.mos).statistic
        assert res.loc[label, "srcc_mos_image"] == pytest.approx(want, abs=1e-6), label
    # paired metrics and baselines need a clean version: not run, said so
    paired = res[res.metric.isin(["paired_l2", "paired_cosine"])]
    assert len(paired) > 0 and (paired.status == "not_run").all()


def test_a_rated_image_equal_to_a_reference_is_left_out_and_counted(no_reference, capsys):
    tmp, ds, generic, refs, out = no_reference
    results = json.loads(next(out.glob("results_*.json")).read_text())
    assert results["rated_database"]["excluded_equal_to_a_reference"] == 2
    assert results["rated_database"]["kind"] == "no-reference"
    paths = set(pd.read_csv(out / "mos_images.csv").image)
    assert not any("dup" in p for p in paths)
    _run(tmp, generic, "--mos-bins", "3", refs=refs)
    assert "2 rated image(s) equal to a reference image" in capsys.readouterr().err


def test_known_truth_a_decreasing_function_of_the_scores_ranks_first(tmp_path, no_reference):
    """Ratings made a strictly decreasing function of one per-image configuration's scores:
    its bins are that configuration's score quantiles, each bin's score is the mean of its
    images' scores, so its SRCC is 1 and nothing ranks above it."""
    tmp, ds, generic, refs, out = no_reference
    img = pd.read_csv(out / "mos_images.csv")
    res = _csv(out)
    label = next(lb for lb in img.config.unique() if res.loc[lb, "metric"] == "mahalanobis")
    rows = img[img.config == label]
    root = tmp_path / "truth"
    mos = {"RAISE" + p.split("RAISE", 1)[1]: round(100.0 - float(v), 9)
           for p, v in zip(rows.image, rows.score)}
    ds2, generic2, refs2 = make_no_reference(root, mos)
    new = _run(root, generic2, "--mos-bins", str(BINS), refs=refs2)
    r = _csv(new)
    assert r.loc[label, "srcc_mos"] == pytest.approx(1.0)
    assert r.srcc_mos.max() == pytest.approx(1.0)        # nothing above it: it shares rank 1
    assert r.loc[label, "rank"] <= (r.srcc_mos > 1 - 1e-12).sum()
    assert r.loc[label, "srcc_mos_image"] == pytest.approx(1.0)


def test_no_reference_bad_input_is_one_line(tmp_path, no_reference, capsys):
    tmp, ds, generic, refs, out = no_reference

    def bad(*extra, refs=refs, ratings=generic):
        capsys.readouterr()
        args = ["--mode", "medium", "--layers", "0", "--mos", str(ratings), "--no-baselines", *extra]
        if refs is not None:
            args += ["--dataset", str(refs), "--n-inference", str(N_REFS)]
        assert cli.main(tiny_args(tmp_path, *args), user=tiny_config()) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
        assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
        return err[0]
    assert "--dataset" in bad(refs=None)
    assert "--mos-bins" in bad("--mos-bins", "2")
    assert "cannot fill 40 MOS bins" in bad("--mos-bins", "40")
    only_refs = tmp_path / "only_refs.csv"
    only_refs.write_text("image,mos\n" + "".join(f"{refs}/r{i}.png,{50 + i}\n" for i in range(5)))
    assert "also a reference image" in bad(ratings=only_refs)


# ---------------------------------------------------------------------- incomplete designs

def make_full_reference(root, n_refs=6, drop=0.2, seed=1):
    """A full-reference database (n_refs references x 3 types x 3 levels; type 'same' holds
    exact copies of the references) as a generic CSV, with a fraction `drop` of its rows
    removed at random; and the same rows as a unified CSV (KADID-like names carry the level)."""
    src = builtin_sources()
    img_dir = root / "db" / "img"
    img_dir.mkdir(parents=True)
    rows, unified = [], []
    types = {"blur": ("gaussian_blur", (0.6, 1.5, 3.0)), "noise": ("gaussian_noise", (8, 20, 40)),
             "same": (None, (1, 2, 3))}
    for i in range(1, n_refs + 1):
        ref = load_rgb(src[300 + i * 3], 48)
        Image.fromarray(ref).save(img_dir / f"I{i:02d}.png")
        for t, name in enumerate(types, start=1):
            dtype, values = types[name]
            for lv, value in enumerate(values, start=1):
                out = ref if dtype is None else dg.apply_degradation(ref, dtype, value, 0, f"r{i}")
                fname = f"I{i:02d}_{t:02d}_{lv:02d}.png"
                Image.fromarray(out).save(img_dir / fname)
                score = round(5.0 - (0 if dtype is None else 0.8 * lv) + 0.05 * ((i * 7 + lv) % 5), 4)
                rows.append([f"img/{fname}", f"img/I{i:02d}.png", score, name, lv])
                unified.append([f"db/img/{fname}", name, f"db/img/I{i:02d}.png", score])
    rng = random.Random(seed)
    keep = sorted(rng.sample(range(len(rows)), round(len(rows) * (1 - drop))))
    with open(root / "db" / "ratings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "reference", "mos", "type", "level"])
        w.writerows(rows[k] for k in keep)
    with open(root / "unified.txt", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dis_img_path", "dis_type", "ref_img_path", "score"])
        w.writerows(unified[k] for k in keep)
    return root / "db" / "ratings.csv", root / "unified.txt", [rows[k] for k in keep]


@pytest.fixture(scope="module")
def incomplete(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inc")
    generic, unified, rows = make_full_reference(tmp)
    return tmp, generic, unified, rows, _run(tmp, generic)


def test_an_incomplete_design_runs_on_the_images_each_group_has(incomplete):
    tmp, generic, unified, rows, out = incomplete
    g = pd.read_csv(out / "mos_groups.csv")
    first = g[g.config == g.config.iloc[0]]
    counts = pd.DataFrame(rows, columns=["image", "ref", "mos", "type", "level"]).groupby(
        ["type", "level"]).size()
    for _, r in first.iterrows():
        assert r.n_images == counts[(r.type, int(r.level))]
    assert counts.nunique() > 1                                    # the design is incomplete
    res = _csv(out)
    for label, v in _recomputed_set_srcc(out).items():
        assert res.loc[label, "srcc_mos"] == pytest.approx(v, abs=1e-6), label
    # each image pairs with its own reference: exact copies score 0 (paired) and PSNR_MAX (psnr)
    paired = res[res.metric == "paired_l2"]
    scored = paired[paired.status == "scored"].index
    assert len(scored) >= 2, paired[["status", "reason"]]            # raw and gram_only at least
    # the others are not run for a stated size rule (a PCA of 10 needs 11 references), not failed
    assert all(paired.loc[lb, "status"] == "not_run" and "pca_dim" in paired.loc[lb, "reason"]
               for lb in paired.index.difference(scored))
    for label in scored:
        same = g[(g.config == label) & (g.type == "same")]
        assert len(same) > 0 and same.score.notna().all(), label        # scored, not skipped
        assert np.allclose(same.score.astype(float), 0.0, atol=1e-9), label


def test_incomplete_design_pairs_each_image_with_its_reference_on_kernel_blocks(tmp_path):
    """The Gram held as kernel blocks (a tiny memory budget) pairs through the engine's K_pair
    with the design's pairs: the copies' paired distance is 0 there too, and the baselines
    compare each image with its own reference."""
    generic, unified, rows = make_full_reference(tmp_path)
    args = ["--mode", "medium", "--layers", "7", "--mos", str(generic), "--n-resamples", "0",
            "--jobs", "1"]
    user = tiny_config(max_representation_bytes=2 ** 20, gram_precision="float64", feature_transforms=[
        {"name": "gram_only", "use_gram": True, "use_pca": False}],
        distance_metrics=["fid", "paired_l2", "paired_cosine"])
    assert cli.main(tiny_args(tmp_path, *args), user=user) == 0
    (out,) = (tmp_path / "results").iterdir()
    res, g = _csv(out), pd.read_csv(out / "mos_groups.csv")
    label = "resnet50 / single_layer_7 / gram_only / paired_l2"
    record = next(r for r in json.loads(next(out.glob("results_*.json")).read_text())["results"]
                  if r["label"] == label)
    assert any("kernel blocks" in note for note in record["notes"]), record["notes"]
    same = g[(g.config == label) & (g.type == "same")]
    assert len(same) > 0 and same.score.notna().all()               # scored, not skipped
    assert np.allclose(same.score.astype(float), 0.0, atol=1e-5)   # cancellation only: a wrong pair gives > 1
    psnr = g[(g.config == "baseline:psnr") & (g.type == "same")]
    assert len(psnr) > 0 and psnr.score.notna().all()
    assert np.allclose(psnr.score.astype(float), 100.0)             # PSNR's cap for identical images


def test_the_unified_csv_gives_the_generic_layouts_srcc(incomplete, capsys):
    tmp, generic, unified, rows, out = incomplete
    capsys.readouterr()
    assert cli.main(tiny_args(tmp, "--mode", "medium", "--layers", "0", "--mos", str(unified),
                               "--no-baselines"), user=tiny_config()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mos-orientation" in err[0] and "Traceback" not in err[0]
    # ... and with a format that states its orientation the flag does nothing: refused
    assert cli.main(tiny_args(tmp, "--mode", "medium", "--layers", "0", "--mos", str(generic),
                               "--mos-orientation", "higher-better"), user=tiny_config()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mos-orientation higher-better does nothing" in err[0] and "csv format" in err[0]
    # --mos-bins with a database whose every type has levels shapes no group: refused, for the
    # sweep and for --build-cache, before anything is written
    for command in (("--mode", "medium"), ("--build-cache",)):
        assert cli.main(tiny_args(tmp, *command, "--layers", "7", "--mos", str(generic),
                                  "--mos-bins", "4", "--results-dir", str(tmp / "not_written"),
                                  "--cache-dir", str(tmp / "not_written_cache")),
                        user=tiny_config()) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--mos-bins 4 does nothing" in err[0] and "drop --mos-bins" in err[0]
        assert not (tmp / "not_written").exists() and not (tmp / "not_written_cache").exists()
    uni = _csv(_run(tmp, unified, "--mos-orientation", "higher-better"))
    gen = _csv(out)
    common = [lb for lb in uni.index if not lb.startswith("baseline:") and uni.loc[lb, "status"] == "scored"]
    assert len(common) > 20
    for label in common:
        assert uni.loc[label, "srcc_mos"] == pytest.approx(gen.loc[label, "srcc_mos"], abs=1e-9), label


def test_a_unified_type_without_levels_is_binned_and_says_so(tmp_path):
    """LIVE's names carry no level: that type's images fall in MOS-quantile bins."""
    generic, unified, rows = make_full_reference(tmp_path, n_refs=6, drop=0.0)
    text = unified.read_text().replace("_03_01.png", "_a.png").replace("_03_02.png", "_b.png") \
        .replace("_03_03.png", "_c.png")
    for p in (tmp_path / "db" / "img").glob("*_03_0?.png"):
        p.rename(p.with_name(p.name.replace("_03_01", "_a").replace("_03_02", "_b").replace("_03_03", "_c")))
    unified.write_text(text)
    out = _run(tmp_path, unified, "--mos-orientation", "higher-better", "--mos-bins", "3")
    rated = json.loads(next(out.glob("results_*.json")).read_text())["rated_database"]
    assert rated["binned"] == ["same"]
    g = pd.read_csv(out / "mos_groups.csv")
    assert sorted(g[(g.config == g.config.iloc[0]) & (g.type == "same")].n_images) == [6, 6, 6]


# ---------------------------------------------------------------------- the realism score

def _authors_realism(real, fake, k=3):
    """ManifoldEstimator(real, nhood_sizes=[k], clamp_to_percentile=50).evaluate(fake,
    return_realism=True) of kynkaat/improved-precision-and-recall-metric, step by step in
    numpy (its distance block returns squared Euclidean distances)."""
    def sq(u, v):
        return np.maximum((u * u).sum(1)[:, None] - 2 * u @ v.T + (v * v).sum(1)[None, :], 0.0)
    d = sq(real, real)
    radii = np.partition(d, np.arange(k + 1), axis=1)[:, [k]]
    radii[radii > np.percentile(radii, 50, axis=0)] = 0
    return np.max(radii[:, 0] / (sq(fake, real) + 1e-5), axis=1)


def test_realism_is_the_authors_score_on_rows_and_on_kernel_blocks():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(60, 7))
    fake = np.concatenate([rng.normal(size=(20, 7)), rng.normal(3, 1, size=(10, 7))])
    want = _authors_realism(real, fake)
    np.testing.assert_allclose(dm.realism_scores(real, fake), want, rtol=1e-9)
    ref = dm.RealismReference(k_rr=real @ real.T)
    np.testing.assert_allclose(ref.prepare((real @ fake.T, fake @ fake.T)), want, rtol=1e-6)
    # far from the real rows scores lower than near them; a real row whose ball is kept (its
    # k-th neighbour within the median radius) scores its squared radius / 1e-5
    assert want[20:].mean() < want[:20].mean()
    own = dm.realism_scores(real, real)
    kept = dm.RealismReference(real).radii_sq > 0
    assert kept.sum() == 30 and (own[kept] > 1e4).all()
    assert dm.RealismReference(real).score(fake) == pytest.approx(want.mean())


# A design of uneven references: (reference, type, level) of each rated image. R0 has 2
# images, R1 all 5, R2 3, R3 4, R4 2; group (noise, 2) holds 2 images (under 3: scored per
# image, not as a set). "same" images are exact copies of their reference. In the ratings file
# the types are named as NAMED says, names whose CSV columns would collide with others
# (`srcc_mos_image` is a column; `rho_blur_ci_low` both blur's interval and a type's rho).
UNEVEN = [(0, "blur", 1), (0, "same", 1),
          (1, "blur", 1), (1, "blur", 2), (1, "same", 1), (1, "noise", 1), (1, "noise", 2),
          (2, "blur", 1), (2, "blur", 2), (2, "noise", 1),
          (3, "blur", 2), (3, "same", 1), (3, "noise", 1), (3, "noise", 2),
          (4, "blur", 1), (4, "same", 1)]
SIZE = 176                                 # MS-SSIM's smallest side: every pixel baseline runs
NAMED = {"blur": "blur", "noise": "blur_ci_low", "same": "image"}


def _uneven(root):
    src = builtin_sources()
    (root / "img").mkdir(parents=True)
    refs = {}
    for r in range(5):
        refs[r] = load_rgb(src[200 + 11 * r], SIZE)
        Image.fromarray(refs[r]).save(root / "img" / f"R{r}.png")
    rows, pixels = [], {}
    for k, (r, t, lv) in enumerate(UNEVEN):
        out = (refs[r] if t == "same" else
               dg.apply_degradation(refs[r], "gaussian_blur" if t == "blur" else "gaussian_noise",
                                    lv * 1.5 if t == "blur" else lv * 15.0, 0, f"u{k}"))
        name = f"img/d{k:02d}.png"
        Image.fromarray(out).save(root / name)
        pixels[name] = (out, refs[r])
        rows.append([name, f"img/R{r}.png", round(4.5 - 0.7 * lv - (0.5 if t == "noise" else 0) + 0.1 * r, 3),
                     NAMED[t], lv])
    with open(root / "ratings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "reference", "mos", "type", "level"])
        w.writerows(rows)
    return root / "ratings.csv", pixels


@pytest.mark.slow
def test_on_an_uneven_design_every_pixel_baseline_and_paired_metric_scores_each_image_against_its_own_reference(tmp_path):
    """Every pixel baseline and paired metric is scored (not 'not_run', not failed) on a design
    whose references have 2 to 5 images and whose one group is under 3; per image, PSNR equals
    the formula and SSIM / MS-SSIM equal pyiqa's calibrated metrics on (image, its own
    reference); an exact copy of its reference scores 0 on the paired distances. The types'
    names would make columns collide: the CSV's are unique, every per-name one bracketed, and
    each equals the results JSON."""
    pyiqa = pytest.importorskip("pyiqa")
    import torch
    ratings, pixels = _uneven(tmp_path / "db")
    user = tiny_config(working_size=SIZE, baselines=["psnr", "ssim", "ms_ssim"])
    args = tiny_args(tmp_path, "--mode", "medium", "--layers", "0", "--mos", str(ratings))
    assert cli.main(args, user=user) == 0
    (out,) = glob.glob(str(tmp_path / "results" / "*"))
    res = pd.read_csv(glob.glob(f"{out}/results_*.csv")[0])
    images = pd.read_csv(f"{out}/mos_images.csv")
    want = {"baseline:psnr", "baseline:ssim", "baseline:ms_ssim"}
    paired = res.metric.isin(["paired_l2", "paired_cosine"]) & res["transform"].isin(["raw", "gram_only"])
    rows = res[res.label.isin(want) | paired]           # (PCA needs more than 5 references)
    assert want <= set(rows.label) and {"paired_l2", "paired_cosine"} <= set(rows.metric)
    assert (rows.status == "scored").all(), rows[["label", "status", "reason"]].to_string()
    peers = {"ssim": pyiqa.create_metric("ssim", device="cpu"), "ms_ssim": pyiqa.create_metric("ms_ssim", device="cpu")}

    def tensor(a):
        return torch.from_numpy(a).permute(2, 0, 1)[None].double() / 255.0
    for label in sorted(rows.label):
        per = images[images.config == label]
        assert len(per) == len(UNEVEN), label                  # the small group's images too
        for name, (img, ref) in pixels.items():
            got = float(per[per.image.str.endswith(name)].score.iloc[0])
            if label == "baseline:psnr":
                mse = np.mean((img.astype(np.float64) - ref) ** 2)
                assert got == pytest.approx(100.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse), abs=1e-9)
            elif label.startswith("baseline:"):
                with torch.no_grad():
                    peer = float(peers[label.split(":")[1]](tensor(img), tensor(ref)))
                assert got == pytest.approx(peer, abs=1e-4), (label, name)
            elif np.array_equal(img, ref):                      # paired distances: a copy is 0
                assert got == pytest.approx(0.0, abs=1e-6), (label, name)
            else:
                assert got > 1e-6, (label, name)
    # column names from user data: unique, bracketed, equal to the JSON
    with open(glob.glob(f"{out}/results_*.csv")[0]) as f:
        header = next(csv.reader(f))
    assert len(header) == len(set(header))
    with open(glob.glob(f"{out}/results_*.json")[0]) as f:
        records = {r["label"]: r for r in json.load(f)["results"]}
    scored = res[res.status == "scored"]
    assert len(scored) > 0
    for t in NAMED.values():
        assert f"srcc_mos[{t}]" in header and f"rho[{t}]" in header and f"rho[{t}]_ci_low" in header
        for _, row in scored.iterrows():
            rec = records[row["label"]]
            want = rec["mos"]["srcc_per_type"][t]
            assert (pd.isna(row[f"srcc_mos[{t}]"]) if want is None
                    else row[f"srcc_mos[{t}]"] == pytest.approx(want, abs=1e-6)), (row["label"], t)
            assert row[f"rho[{t}]"] == pytest.approx(rec["per_degradation"][t]["spearman"], abs=1e-6)

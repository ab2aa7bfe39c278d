"""Pairwise human judgments through --mos (issue #44): the generic pairwise CSV and BAPPS's 2AFC
layout, Bradley-Terry scaling, LPIPS's 2AFC agreement, and their bad input. Expected values are
computed here from the rows written, not from the code under test."""
import csv
import logging
import os

import numpy as np
import pytest
from PIL import Image, ImageFilter
from scipy import stats

from featrank import evaluation as ev
from featrank import human_agreement as ha
from featrank.configurations import Configuration
from featrank.dataset import builtin_sources, load_rgb
from featrank.evaluation import CLEAN
from featrank.rated_database import read_ratings
from featrank.rated_design import RatingsError

SIGMAS = (0.5, 1.0, 1.8, 3.0)


def _photos(root, n, size=48):
    os.makedirs(root / "ref", exist_ok=True)
    os.makedirs(root / "img", exist_ok=True)
    out = []
    for i, src in enumerate(builtin_sources()[:n]):
        img = Image.fromarray(load_rgb(src, size))
        img.save(root / "ref" / f"r{i:02d}.png")
        out.append(img)
    return out


def _simulated(root, n_contents=8, voters=15, seed=0):
    """Each content blurred at SIGMAS (truth: -sigma, the same scale across contents); every pair
    within a content and, so that the graph is connected, pairs across neighbouring contents
    (their own references: reference_a, reference_b), judged by `voters` simulated people who
    follow Bradley-Terry on the truth. Returns (csv path, {image path: truth}, the rows)."""
    photos = _photos(root, n_contents)
    rng = np.random.default_rng(seed)
    truth, names, rows = {}, {}, []
    for i, img in enumerate(photos):
        for k, s in enumerate(SIGMAS):
            name = f"img/c{i:02d}_{k}.png"
            img.filter(ImageFilter.GaussianBlur(s)).save(root / name)
            truth[str(root / name)] = -s
            names[i, k] = name
    candidates = [((i, a), (i, b)) for i in range(n_contents) for a in range(4) for b in range(a + 1, 4)]
    candidates += [((i, a), ((i + 1) % n_contents, b)) for i in range(n_contents) for a in range(4)
                   for b in range(4) if a != b]
    for (ia, ka), (ib, kb) in candidates:
        ta, tb = -SIGMAS[ka], -SIGMAS[kb]
        va = int(rng.binomial(voters, 1 / (1 + np.exp(2.0 * (tb - ta)))))
        rows.append([names[ia, ka], names[ib, kb], va, voters - va, f"ref/r{ia:02d}.png", f"ref/r{ib:02d}.png"])
    # a repeated pair in the other order: its votes add up
    rows.append([rows[0][1], rows[0][0], 2, 1, rows[0][5], rows[0][4]])
    path = root / "pairs.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b", "votes_a", "votes_b", "reference_a", "reference_b"])
        w.writerows(rows)
    return str(path), truth, rows


def _hand_2afc(rows, root, value, higher_is_better):
    """LPIPS's 2AFC by hand over the CSV's pairs (repeated rows merged): per pair the share of
    voters who chose the image the score prefers, 1/2 on a tie; mean over pairs."""
    votes = {}
    for a, b, va, vb, *_ in rows:
        a, b = str(root / a), str(root / b)
        if (b, a) in votes:
            votes[b, a][0] += vb
            votes[b, a][1] += va
        else:
            v = votes.setdefault((a, b), [0, 0])
            v[0] += va
            v[1] += vb
    out = []
    for (a, b), (va, vb) in votes.items():
        sa, sb = value[a], value[b]
        if sa == sb:
            out.append(0.5)
        else:
            a_preferred = (sa > sb) if higher_is_better else (sa < sb)
            out.append((va if a_preferred else vb) / (va + vb))
    return float(np.mean(out))


def _baseline_result(name, db, ratings, value):
    """A baseline row whose per-image values are `value` (by image path), as the sweep builds it."""
    values = {CLEAN: np.zeros(len(db.references) or 3)}
    for key, _, ims in db.all_groups():
        values[key] = np.array([value[im.image] for im in ims])
    return ev.score_baseline(name, values, db.degradations(), {}, ratings)


def test_a_known_truth_ranks_first_with_the_hand_computed_2afc_and_bradley_terry_recovers_it(tmp_path):
    path, truth, rows = _simulated(tmp_path)
    db = read_ratings(path, bins=4)
    assert db.pairwise and db.scaled and db.format == "pairs"
    scaled = {im.image: im.score for ims in db.groups.values() for im in ims}
    scaled.update({im.image: im.score for ims in db.small.values() for im in ims})
    keys = sorted(truth)
    rho = stats.spearmanr([scaled[k] for k in keys], [truth[k] for k in keys]).statistic
    assert rho >= 0.95, rho
    # each image's own reference (pairs cross contents)
    for ims in db.groups.values():
        for im in ims:
            c = os.path.basename(im.image)[1:3]
            assert os.path.basename(im.reference) == f"r{c}.png"
    ratings = db.ratings()
    rng = np.random.default_rng(1)
    noisy = {k: v + rng.normal(0, 1.0) for k, v in truth.items()}
    results = [_baseline_result("psnr", db, ratings, truth),       # psnr: higher is better
               _baseline_result("ssim", db, ratings, noisy)]
    ranked = ev.rank(results, "mos")
    assert ranked[0] is results[0] and ranked[0].rank == 1
    want = _hand_2afc(rows, tmp_path, truth, higher_is_better=True)
    assert ranked[0].mos["agreement_2afc"] == pytest.approx(want, abs=1e-12)
    assert ranked[1].mos["agreement_2afc"] == pytest.approx(_hand_2afc(rows, tmp_path, noisy, True), abs=1e-12)
    assert ranked[0].mos["agreement_2afc"] > ranked[1].mos["agreement_2afc"]
    # the image-level criteria use the scaled quality: the truth agrees with it
    assert ranked[0].mos["image"]["srcc"] >= 0.95


def _bapps(root, n=12, seed=3):
    """A BAPPS 2AFC folder of n triplets (ref, p0 blurred, p1 noised) and the CSV of the same
    triplets; returns (folder, csv path, {stem: judge})."""
    folder = root / "bapps"
    for d in ("ref", "p0", "p1", "judge"):
        os.makedirs(folder / d)
    rng = np.random.default_rng(seed)
    judges, rows = {}, []
    for i, src in enumerate(builtin_sources()[:n]):
        stem = f"{i:06d}"
        img = Image.fromarray(load_rgb(src, 48))
        img.save(folder / "ref" / f"{stem}.png")
        img.filter(ImageFilter.GaussianBlur(0.5 + i / 6)).save(folder / "p0" / f"{stem}.png")
        noisy = np.clip(np.asarray(img, float) + rng.normal(0, 4 + 2 * i, (48, 48, 3)), 0, 255)
        Image.fromarray(noisy.astype(np.uint8)).save(folder / "p1" / f"{stem}.png")
        judges[stem] = float(rng.choice([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]))
        np.save(folder / "judge" / f"{stem}.npy", np.array([judges[stem]]))
        rows.append([f"bapps/p0/{stem}.png", f"bapps/p1/{stem}.png", judges[stem], f"bapps/ref/{stem}.png"])
    path = root / "triplets.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b", "prefer_b", "reference"])
        w.writerows(rows)
    return folder, str(path), judges


def test_bapps_folder_and_its_csv_give_lpips_own_2afc(tmp_path, caplog):
    folder, path, judges = _bapps(tmp_path)
    caplog.set_level(logging.WARNING)
    dbs = [read_ratings(str(folder), bins=3), read_ratings(path, bins=3)]
    assert "12 separate components" in caplog.text          # each triplet is its own pair
    rng = np.random.default_rng(5)
    d = {}                                                   # a distance per image, ties included
    for stem in judges:
        d[stem] = (float(rng.integers(0, 4)), float(rng.integers(0, 4)))
    # LPIPS's score_2afc_dataset: (d0 < d1) * (1 - gt) + (d1 < d0) * gt + (d1 == d0) * 0.5
    d0, d1 = np.array([d[s][0] for s in judges]), np.array([d[s][1] for s in judges])
    gt = np.array(list(judges.values()))
    want = float(np.mean((d0 < d1) * (1 - gt) + (d1 < d0) * gt + (d1 == d0) * 0.5))
    got = []
    for db in dbs:
        assert db.pairwise and not db.scaled and len(db.judgments) == 12
        value = {}
        for ims in list(db.groups.values()) + list(db.small.values()):
            for im in ims:
                stem, which = os.path.basename(im.image)[:6], os.path.basename(os.path.dirname(im.image))
                value[im.image] = d[stem][0 if which == "p0" else 1]
        r = _baseline_result("lpips", db, db.ratings(), value)        # lpips: lower is better
        assert r.mos["srcc"] is None and r.mos["image"] is None      # nothing scaled to agree with
        got.append(r.mos["agreement_2afc"])
    assert got[0] == pytest.approx(want, abs=1e-12) and got[1] == pytest.approx(want, abs=1e-12)


def test_2afc_interval_resamples_pairs_by_reference_content():
    """Pairs of one cluster move together: with two clusters of identical pairs inside each, a
    resample's agreement is one of the three mixtures."""
    clusters = np.array([0, 0, 0, 1, 1, 1])
    draws = ha.pair_resamples(clusters, 200, np.random.default_rng(0))
    for d in draws:
        assert len(d) == 6 and set(np.bincount(clusters[d], minlength=2).tolist()) <= {0, 3, 6}
    score = np.array([0.0, 1.0] * 6)
    pairs = np.arange(12).reshape(6, 2)
    prefer_b = np.array([0.0] * 3 + [1.0] * 3)      # cluster 0 agrees fully, cluster 1 not at all
    values = {ha.agreement_2afc(score, pairs[d], prefer_b[d]) for d in draws}
    assert values <= {0.0, 0.5, 1.0} and len(values) == 3


@pytest.mark.parametrize("row, header, message", [
    (["img/c00_0.png", "img/missing.png", 1, 2], "votes", "does not exist"),
    (["img/c00_0.png", "img/c00_1.png", -1, 2], "votes", "votes_a '-1' is not a count"),
    (["img/c00_0.png", "img/c00_1.png", 1.5, 2], "votes", "votes_a '1.5' is not a count"),
    (["img/c00_0.png", "img/c00_1.png", 0, 0], "votes", "both 0"),
    (["img/c00_0.png", "img/c00_1.png", 1.2], "prefer_b", "prefer_b '1.2' is not a fraction"),
    (["img/c00_0.png", "img/c00_1.png", "nan"], "prefer_b", "prefer_b 'nan' is not a fraction"),
    (["img/c00_0.png", "img/c00_0.png", 0.5], "prefer_b", "paired with itself"),
])
def test_bad_pairs_are_refused_with_the_line_and_the_fix(tmp_path, row, header, message):
    _simulated(tmp_path, n_contents=3)
    cols = ["image_a", "image_b"] + (["votes_a", "votes_b"] if header == "votes" else ["prefer_b"])
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerow(["img/c01_0.png", "img/c01_1.png"] + ([3, 1] if header == "votes" else [0.25]))
        w.writerow(row)
    with pytest.raises(RatingsError, match=message) as err:
        read_ratings(str(path), bins=3)
    assert f"{path}:3:" in str(err.value)


def test_a_csv_that_gives_votes_and_prefer_b_or_one_reference_column_is_refused(tmp_path):
    _simulated(tmp_path, n_contents=3)
    for header, message in ((["image_a", "image_b", "votes_a", "votes_b", "prefer_b"], "both prefer_b and votes"),
                            (["image_a", "image_b", "prefer_b", "reference_a"], "both 'reference_a' and 'reference_b'"),
                            (["image_a", "image_b", "votes_a"], "needs votes_a,votes_b")):
        path = tmp_path / "bad.csv"
        path.write_text(",".join(header) + "\nimg/c00_0.png,img/c00_1.png,1,1,1\n")
        with pytest.raises(RatingsError, match=message):
            read_ratings(str(path), bins=3)


def test_a_bapps_triplet_without_its_image_or_with_a_bad_judge_is_refused(tmp_path):
    folder, _, _ = _bapps(tmp_path, n=9)
    os.remove(folder / "p1" / "000004.png")
    with pytest.raises(RatingsError, match="p1/000004"):
        read_ratings(str(folder), bins=3)
    folder2, _, _ = _bapps(tmp_path / "two", n=9)
    np.save(folder2 / "judge" / "000002.npy", np.array([1.5]))
    with pytest.raises(RatingsError, match="not a fraction"):
        read_ratings(str(folder2), bins=3)


@pytest.mark.slow
def test_a_pairwise_run_writes_2afc_that_recomputes_from_mos_images_in_both_orientations(tmp_path, capsys):
    """A medium --mos run on a pairwise CSV whose pairs cross contents: agreement_2afc of every
    scored row with a score per image (feature metrics, lower = better, and PSNR, higher =
    better) recomputes from mos_images.csv and the CSV's own votes; PSNR compares each image
    with its own reference; the ranking is by agreement_2afc."""
    from featrank import cli
    from featrank.pixel_metrics import psnr
    from helpers import WORSENS, tiny_args, tiny_config
    path, truth, rows = _simulated(tmp_path / "data", n_contents=4, voters=7)
    args = tiny_args(tmp_path, "--mode", "medium", "--layers", "0", "--mos", path, "--mos-bins", "3")
    assert cli.main(args, user=tiny_config(baselines=["psnr"])) == 0
    (run,) = os.listdir(tmp_path / "results")
    out = tmp_path / "results" / run
    with open(next(out.glob("results_*.csv"))) as f:
        results = list(csv.DictReader(f))
    with open(out / "mos_images.csv") as f:
        images = list(csv.DictReader(f))
    scored = [r for r in results if r["status"] == "scored" and r["agreement_2afc"]]
    assert {"psnr", "realism", "paired_l2", "mahalanobis"} <= {r["metric"] for r in scored}
    ranked = [float(r["agreement_2afc"]) for r in results if r["status"] == "scored" and r["agreement_2afc"]]
    assert ranked == sorted(ranked, reverse=True) and results[0]["agreement_2afc"]
    for r in scored:
        value = {row["image"]: float(row["score"]) for row in images if row["config"] == r["label"]}
        assert len(value) == len(truth)
        want = _hand_2afc(rows, tmp_path / "data", value, higher_is_better=WORSENS[r["metric"]] < 0)
        assert float(r["agreement_2afc"]) == pytest.approx(want, abs=1e-6), r["label"]
    # the truth's order: scaled quality in mos_images.csv follows it
    mos = {row["image"]: float(row["mos"]) for row in images if row["config"] == scored[0]["label"]}
    assert stats.spearmanr([mos[k] for k in truth], list(truth.values())).statistic >= 0.9
    # PSNR of an image against its own reference (working size 32, as the run saw them)
    psnr_row = next(r for r in scored if r["metric"] == "psnr")
    for row in images:
        if row["config"] != psnr_row["label"]:
            continue
        name = os.path.basename(row["image"])
        ref = tmp_path / "data" / "ref" / f"r{name[1:3]}.png"
        want = psnr(load_rgb(row["image"], 32)[None], load_rgb(str(ref), 32)[None])[0]
        assert float(row["score"]) == pytest.approx(want, abs=1e-9), name
    # bad input: one line, exit 2
    bad = tmp_path / "data" / "bad.csv"
    bad.write_text("image_a,image_b,prefer_b\nimg/c00_0.png,img/c00_1.png,2\n")
    capsys.readouterr()
    assert cli.main(tiny_args(tmp_path / "b", "--mode", "medium", "--layers", "0", "--mos", str(bad)),
                    user=tiny_config()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prefer_b '2' is not a fraction" in err[0], err


def test_repeated_rows_merge_into_one_pair_in_file_order_and_equal_votes_are_a_judgment():
    """Rows of one pair in either order add their wins; the pairs keep the order of their first
    lines (not of their names or clusters) and that line; 2 votes against 2 is a judgment
    (prefer_b 1/2), 0 against 0 is none."""
    from featrank import rated_database as rdb
    assert rdb._votes("p.csv", 3, {"votes_a": "2", "votes_b": "2"}) == (2.0, 2.0)
    with pytest.raises(RatingsError, match="both 0"):
        rdb._votes("p.csv", 3, {"votes_a": "0", "votes_b": "0"})
    merged = rdb._merge([(5, "y", "x", 2.0, 2.0, "k1"), (7, "a", "b", 3.0, 1.0, "k0"),
                         (9, "x", "y", 1.0, 0.0, "k1")])
    assert [(p.a, p.b, p.wins_a, p.wins_b, p.line, p.cluster) for p in merged] == \
        [("x", "y", 3.0, 2.0, 5, "k1"), ("a", "b", 3.0, 1.0, 7, "k0")]
    assert [p.prefer_b for p in merged] == [pytest.approx(2 / 5), pytest.approx(1 / 4)]


def test_comparison_components_are_undirected_largest_first_then_by_first_item():
    """Items 0..6: {0, 5} compared once each way (equal wins: still an edge), {1, 2} one-way,
    {3, 4, 6} a chain; 6 items in three components, largest first, equal sizes by first item."""
    wins = np.zeros((7, 7))
    wins[0, 5] = wins[5, 0] = 1.0
    wins[2, 1] = 3.0
    wins[3, 4] = wins[6, 4] = 1.0
    comps = ha.comparison_components(7, wins)
    assert [c.tolist() for c in comps] == [[3, 4, 6], [0, 5], [1, 2]]


def test_pair_resamples_draw_whole_clusters_of_unequal_sizes():
    """Clusters of 3, 1 and 2 pairs: every resample is 3 draws of whole clusters (its length and
    each cluster's count are multiples of that cluster's size), and the pairs are the cluster's."""
    clusters = np.array(["r0", "r0", "r0", "r1", "r2", "r2"])
    sizes = {"r0": 3, "r1": 1, "r2": 2}
    for d in ha.pair_resamples(clusters, 100, np.random.default_rng(1)):
        counts = {c: int((clusters[d] == c).sum()) for c in sizes}
        assert all(counts[c] % sizes[c] == 0 for c in sizes)
        assert sum(counts[c] // sizes[c] for c in sizes) == 3 and len(d) == sum(counts.values())

"""Reading rated databases (rated_database.py), checked against groups the test computes itself
from the rows it wrote: the same database written with shuffled rows, levels out of order,
upper-case and spaced headers gives the same groups in the same order in every format; errors
name the line of the file they are about; the boundaries of the minimum group count and of the
images a set needs."""
import csv
import os
import random

import numpy as np
import pytest
from PIL import Image

from featrank import rated_database as rd
from featrank import rated_design

N_REF = 4
# KADID-10k type numbers (imdist_generator.m's cases), listed out of their numbering on purpose
KADID_TYPES = {21: "pixelate", 1: "gaussian_blur", 11: "white_noise"}
LEVELS = (3, 1, 2)                 # out of order on purpose


def _score(ref, t, lv):
    return round(4.5 - 0.7 * lv - 0.01 * t + 0.03 * ref, 4)


def _png(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


def _rows():
    """(ref, type number, level, score) of a complete design, in the order a file lists them."""
    return [(i, t, lv, _score(i, t, lv)) for i in range(1, N_REF + 1) for t in KADID_TYPES
            for lv in LEVELS]


def write_databases(root, rows, shuffle=None, shout=False):
    """The rows as KADID-10k's dmos.csv, TID2013's mos_with_names.txt, a generic CSV and a
    unified CSV. `shuffle`: a seed to shuffle the rows; `shout`: headers in upper case with
    spaces around the names."""
    rows = list(rows)
    if shuffle is not None:
        random.Random(shuffle).shuffle(rows)

    def header(names):
        return [f" {n.upper()} " for n in names] if shout else names
    kadid, tid, gen = root / "kadid", root / "tid", root / "gen"
    for d in (kadid / "images", tid / "distorted_images", tid / "reference_images", gen / "img",
              root / "uni" / "img"):
        d.mkdir(parents=True, exist_ok=True)
    for i in range(1, N_REF + 1):
        for p in (kadid / "images" / f"I{i:02d}.png", tid / "reference_images" / f"I{i:02d}.BMP",
                  gen / "img" / f"ref{i}.png", root / "uni" / "img" / f"I{i:02d}.png"):
            _png(p, i)
        for t in KADID_TYPES:
            for lv in LEVELS:
                seed = 1000 * i + 10 * t + lv
                _png(kadid / "images" / f"I{i:02d}_{t:02d}_{lv:02d}.png", seed)
                _png(tid / "distorted_images" / f"i{i:02d}_{t:02d}_{lv}.bmp", seed)
                _png(gen / "img" / f"d{i}_{t}_{lv}.png", seed)
                _png(root / "uni" / "img" / f"I{i:02d}_{t:02d}_{lv:02d}.png", seed)
    with open(kadid / "dmos.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header(["dist_img", "ref_img", "dmos", "var"]))
        w.writerows([f"I{i:02d}_{t:02d}_{lv:02d}.png", f"I{i:02d}.png", s, 0.1] for i, t, lv, s in rows)
    (tid / "mos_with_names.txt").write_text("".join(f"{s:.4f} i{i:02d}_{t:02d}_{lv}.bmp\n"
                                                    for i, t, lv, s in rows))
    with open(gen / "ratings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header(["image", "reference", "mos", "type", "level"]))
        w.writerows([f"img/d{i}_{t}_{lv}.png", f"img/ref{i}.png", s, KADID_TYPES[t], lv]
                    for i, t, lv, s in rows)
    with open(root / "unified.txt", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header(["dis_img_path", "dis_type", "ref_img_path", "score"]))
        w.writerows([f"uni/img/I{i:02d}_{t:02d}_{lv:02d}.png", KADID_TYPES[t],
                     f"uni/img/I{i:02d}.png", s] for i, t, lv, s in rows)
    return {"kadid10k": kadid / "dmos.csv", "tid": tid / "mos_with_names.txt",
            "csv": gen / "ratings.csv", "unified": root / "unified.txt"}


def _read(path):
    """read_ratings, telling the unified CSV (the one format that does not say) its scores' way."""
    unified = os.path.basename(str(path)) == "unified.txt"
    return rd.read_ratings(str(path), orientation="higher-better" if unified else None)


def _groups(db):
    """[((type, level), [(reference number, score)])] in the database's order."""
    def ref_number(im):
        return int("".join(ch for ch in im.reference.rsplit("/", 1)[-1] if ch.isdigit()))
    return [(g, [(ref_number(im), im.score) for im in ims]) for _, g, ims in db.all_groups()]


def _expected(fmt):
    """The groups computed here from the rows: types in KADID-10k's numbering (the three types
    are KADID's: every format names them so, TID by number), levels ascending, references in
    order."""
    name = {t: (f"tid_{t:02d}" if fmt == "tid" else KADID_TYPES[t]) for t in KADID_TYPES}
    return [((name[t], float(lv)), [(i, _score(i, t, lv)) for i in range(1, N_REF + 1)])
            for t in sorted(KADID_TYPES) for lv in sorted(LEVELS)]


def test_shuffled_rows_shouted_headers_and_levels_out_of_order_give_the_same_groups(tmp_path):
    plain = write_databases(tmp_path / "plain", _rows())
    shuffled = write_databases(tmp_path / "shuffled", _rows(), shuffle=7, shout=True)
    again = write_databases(tmp_path / "again", _rows(), shuffle=8)
    for fmt in plain:
        expected = _expected(fmt)
        for files in (plain, shuffled, again):
            db = _read(files[fmt])
            assert db.format == fmt and db.complete
            assert _groups(db) == expected, (fmt, files[fmt])
            assert db.group_keys() == [(t, p) for (t, _), _ in expected[::3] for p in (1, 2, 3)]
            np.testing.assert_array_equal(db.quality(),
                                          [[s for _, s in g] for _, g in expected])


def test_the_generic_csv_reads_quoted_upper_case_and_spaced_headers(tmp_path):
    files = write_databases(tmp_path, _rows())
    text = files["csv"].read_text().splitlines()
    for head in ('"Image", "Reference" ,MOS , Type,LEVEL', "IMAGE,REFERENCE,Mos,TYPE,Level",
                 "' image ',' reference ',' mos ',' type ',' level '"):
        files["csv"].write_text("\n".join([head] + text[1:]) + "\n")
        assert _groups(_read(files["csv"])) == _expected("csv"), head
    # "MOS Rating" is mos_rating: RAISE's header with a space
    assert rd.header_names('FileName, "MOS Rating",MOS_ZScore') == ["filename", "mos_rating",
                                                                    "mos_zscore"]
    # a dmos column in capitals is still DMOS (higher is worse): opinions flipped
    files["csv"].write_text("\n".join(["Image,Reference,DMOS,Type,Level"] + text[1:]) + "\n")
    db = _read(files["csv"])
    assert not db.higher_is_better
    np.testing.assert_array_equal(db.quality(), [[-s for _, s in g] for _, g in _expected("csv")])


def _line_of(text, needle):
    """The 1-based line number of the line holding `needle`, counted here."""
    (n,) = [i for i, ln in enumerate(text.splitlines(), start=1) if needle in ln]
    return n


@pytest.mark.parametrize("fmt", ["kadid10k", "tid", "csv", "unified"])
def test_errors_name_the_line_they_are_about(tmp_path, fmt):
    files = write_databases(tmp_path, _rows())
    path = files[fmt]
    lines = path.read_text().splitlines()
    # blank lines before the bad row shift every number after them
    lines.insert(1, "")
    lines.insert(5, "   ")
    bad = 9
    if fmt == "tid":
        lines[bad] = lines[bad].replace("i0", "x0", 1)          # not a TID name
        needle = "x0"
    elif fmt == "kadid10k":
        lines[bad] = lines[bad].replace("I0", "Q0", 1)          # not a KADID name
        needle = "Q0"
    else:
        cells = lines[bad].split(",")
        cells[2 if fmt == "csv" else 3] = "four"                # not a number
        lines[bad] = ",".join(cells)
        needle = "four"
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    with pytest.raises(rd.RatingsError) as err:
        _read(path)
    n = _line_of(text, needle)
    assert n == bad + 1
    assert str(err.value).startswith(f"{path}:{n}: "), str(err.value)


def _generic(root, groups):
    """A generic CSV whose groups (type 'a', level k) hold `groups[k-1]` images of distinct
    references."""
    (root / "img").mkdir(parents=True)
    rows = []
    for r in range(max(groups)):
        _png(root / "img" / f"r{r}.png", r)
    for lv, n in enumerate(groups, start=1):
        for r in range(n):
            _png(root / "img" / f"d{lv}_{r}.png", 100 * lv + r)
            rows.append(f"img/d{lv}_{r}.png,img/r{r}.png,{5 - lv + 0.01 * r},a,{lv}")
    path = root / "ratings.csv"
    path.write_text("image,reference,mos,type,level\n" + "\n".join(rows) + "\n")
    return path


def test_the_minimum_group_count_and_a_sets_images_at_their_boundaries(tmp_path):
    """Three groups of three images each are enough (the set-level SRCC needs three points and
    a set score three images); two groups, or a third group of two images, are not."""
    db = _read(_generic(tmp_path / "ok", [3, 3, 3]))
    assert len(db.groups) == 3 and not db.small
    with pytest.raises(rd.RatingsError, match=r"1 group\(s\)|2 group\(s\)") as err:
        _read(_generic(tmp_path / "two", [3, 3]))
    assert "at least 3" in str(err.value)
    with pytest.raises(rd.RatingsError, match=r"2 group\(s\)"):
        _read(_generic(tmp_path / "small", [3, 3, 2]))
    db = _read(_generic(tmp_path / "kept", [3, 3, 3, 2]))
    assert [lv for _, lv in db.groups] == [1.0, 2.0, 3.0] and list(db.small) == [("a", 4.0)]
    rows = db.group_rows()
    assert [r["scored"] for r in rows] == [True, True, True, False] and rows[3]["n_images"] == 2


def _no_reference(root, n):
    (root / "img").mkdir(parents=True)
    for j in range(n):
        _png(root / "img" / f"g{j}.png", 500 + j)
    path = root / "ratings.csv"
    path.write_text("Image,MOS\n" + "".join(f"img/g{j}.png,{j * 1.5}\n" for j in range(n)))
    return path


def test_mos_bins_at_their_boundaries(tmp_path):
    """A no-reference set: 9 images fill 3 bins of 3 (the best first); 8 leave a bin of 2,
    which is not scored, and then fewer than 3 bins remain; 2 bins are refused."""
    db = rd.read_ratings(str(_no_reference(tmp_path / "nine", 9)), bins=3)
    assert [len(g) for g in db.groups.values()] == [3, 3, 3]
    best = sorted(im.score for im in db.groups[(rd.BIN_TYPE, 1.0)])
    assert best == [9.0, 10.5, 12.0]                         # the three highest opinions
    with pytest.raises(rd.RatingsError, match="fewer --mos-bins"):
        rd.read_ratings(str(_no_reference(tmp_path / "eight", 8)), bins=3)
    with pytest.raises(rd.RatingsError, match="--mos-bins 2"):
        rd.read_ratings(str(tmp_path / "nine" / "ratings.csv"), bins=2)


def _sha(path):
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_no_reference_bins_read_dmos_the_other_way_round(tmp_path):
    """The same images rated as MOS and as DMOS = 20 - MOS fall in the same bins, the best
    (highest MOS, lowest DMOS) first, and their oriented opinions are equal."""
    mos = _no_reference(tmp_path / "a", 12)
    dmos = tmp_path / "a" / "dmos.csv"
    dmos.write_text("image,dmos\n" + "".join(f"img/g{j}.png,{20 - j * 1.5}\n" for j in range(12)))
    a, b = rd.read_ratings(str(mos), bins=3), rd.read_ratings(str(dmos), bins=3)
    assert a.higher_is_better and not b.higher_is_better
    for g in a.groups:
        assert [im.image for im in a.groups[g]] == [im.image for im in b.groups[g]]
        np.testing.assert_array_equal(a.oriented(a.groups[g]), b.oriented(b.groups[g]) + 20)
    assert sorted(im.score for im in b.groups[(rd.BIN_TYPE, 1.0)]) == [3.5, 5.0, 6.5, 8.0]
    means = [np.mean(a.oriented(g)) for g in a.groups.values()]
    assert means == sorted(means, reverse=True)


def test_no_reference_images_equal_to_a_reference_are_left_out_and_counted(tmp_path):
    path = _no_reference(tmp_path, 11)
    twins = {_sha(tmp_path / "img" / "g0.png"), _sha(tmp_path / "img" / "g5.png")}
    db = rd.read_ratings(str(path), bins=3, exclude=frozenset(twins))
    assert db.excluded == 2 and db.n_images == 9 and db.path == str(path)
    kept = {im.image.rsplit("/", 1)[-1] for g in db.groups.values() for im in g}
    assert "g0.png" not in kept and "g5.png" not in kept and len(kept) == 9
    assert set(db.records) == {im.image for g in db.groups.values() for im in g}
    with pytest.raises(rd.RatingsError, match=r"9 rated image\(s\) \(after leaving out 2 equal to a "
                                              r"reference image\) cannot fill 10"):
        rd.read_ratings(str(path), bins=10, exclude=frozenset(twins))
    every = frozenset(_sha(p) for p in (tmp_path / "img").glob("*.png"))
    with pytest.raises(rd.RatingsError, match="every one of its 11 rated image"):
        rd.read_ratings(str(path), bins=3, exclude=every)


@pytest.mark.parametrize("bins", [True, 2.0, "4", 0, -3])
def test_mos_bins_must_be_an_integer_of_3_or_more(tmp_path, bins):
    with pytest.raises(rd.RatingsError, match=r"--mos-bins .*3 or more"):
        rd.read_ratings(str(_no_reference(tmp_path, 12)), bins=bins)


def test_a_row_rated_twice_names_both_lines(tmp_path):
    path = _no_reference(tmp_path, 9)
    path.write_text(path.read_text() + "img/g4.png,3.0\n")
    with pytest.raises(rd.RatingsError) as err:
        rd.read_ratings(str(path), bins=3)
    assert str(err.value).startswith(f"{path}:11: image 'g4.png' is rated again (first at line 6)")


def test_small_groups_take_the_positions_after_their_types_scored_ones(tmp_path):
    db = _read(_generic(tmp_path, [3, 3, 3, 2, 1]))
    assert db.group_keys() == [("a", 1), ("a", 2), ("a", 3)]
    assert db.small_keys() == [("a", 4), ("a", 5)]
    assert [(k, g) for k, g, _ in db.all_groups()] == [
        (("a", 1), ("a", 1.0)), (("a", 2), ("a", 2.0)), (("a", 3), ("a", 3.0)),
        (("a", 4), ("a", 4.0)), (("a", 5), ("a", 5.0))]
    assert db.degradations() == {"a": {"type": "rated", "levels": [1.0, 2.0, 3.0]}}


def test_group_rows_say_what_mos_groups_csv_says(tmp_path):
    """Every field of each group's record, computed here from the rows _generic wrote (opinion
    5 - level + 0.01 * reference), as MOS and as DMOS (oriented: negated)."""
    path = _generic(tmp_path, [3, 4, 3, 2])
    for column, sign in (("mos", 1.0), ("dmos", -1.0)):
        text = path.read_text().splitlines()
        text[0] = text[0].replace("mos", column)
        path.write_text("\n".join(text) + "\n")
        rows = _read(path).group_rows()
        assert [r["position"] for r in rows] == [1, 2, 3, 4]
        for r, (lv, n) in zip(rows, [(1, 3), (2, 4), (3, 3), (4, 2)]):
            raw = [5 - lv + 0.01 * k for k in range(n)]
            assert (r["type"], r["level"], r["n_images"], r["binned"]) == ("a", float(lv), n, False)
            assert r["mos"] == pytest.approx(sign * np.mean(raw), abs=1e-12)
            assert (r["mos_min"], r["mos_max"]) == (pytest.approx(min(raw)), pytest.approx(max(raw)))
            assert r["scored"] is (n >= 3)
            assert (r["reason"] == "") is (n >= 3)
        assert rows[3]["reason"] == "2 image(s), below the 3 a set score needs"


def test_levels_from_the_names_each_database_uses():
    """KADID-10k I01_05_03.png, TID i01_05_3.bmp, CSIQ 1600.AWGN.3.png (reference.type.level);
    LIVE's img12.bmp carries none."""
    cases = {"I01_05_03.png": 3.0, "i01_05_3.bmp": 3.0, "I25_24_05.PNG": 5.0,
             "1600.AWGN.3.png": 3.0, "sunsetcolor.jpeg2000.5.png": 5.0, "db/x/1600.fnoise.4.png": 4.0,
             "img12.bmp": None, "I01.png": None}
    for name, level in cases.items():
        assert rd.level_from_name(name) == level, name


def test_a_no_reference_set_says_what_it_is(tmp_path):
    db = rd.read_ratings(str(_no_reference(tmp_path, 9)), bins=3)
    assert (db.format, db.kind, db.references, db.binned) == ("csv", rated_design.NO_REFERENCE, (), (rd.BIN_TYPE,))
    assert not db.complete and db.pairs(db.groups[(rd.BIN_TYPE, 1.0)]) is None
    r = db.ratings(n_clean=5)
    assert r.clusters is None and not r.paired and r.n_clean == 5


def test_the_ratings_of_a_full_reference_design(tmp_path):
    """Incomplete ([4, 3, 3, 2] images of 4 references): keys of the scored groups, opinions per
    group, each image's reference position, the small group's images among the per-image ones.
    Complete (every group every reference): one (G, R) matrix in reference order."""
    db = _read(_generic(tmp_path / "inc", [4, 3, 3, 2]))
    assert not db.complete
    r = db.ratings()
    assert r.keys == (("a", 1), ("a", 2), ("a", 3)) and not r.complete and r.paired
    assert r.n_clusters == 4
    assert [c.tolist() for c in r.clusters] == [[0, 1, 2, 3], [0, 1, 2], [0, 1, 2]]
    for q, (lv, n) in zip(r.rows, [(1, 4), (2, 3), (3, 3)]):
        np.testing.assert_allclose(q, [5 - lv + 0.01 * k for k in range(n)])
    assert r.image_keys == (("a", 1), ("a", 2), ("a", 3), ("a", 4))
    np.testing.assert_allclose(r.image_quality[3], [1.0, 1.01])
    assert db.pairs(db.small[("a", 4.0)]) == [0, 1]
    # every rated image and every reference has its checked record (the pipeline reads them)
    assert set(db.records) == {im.image for g in (*db.groups.values(), *db.small.values()) for im in g} \
        | {ref.source for ref in db.references}
    assert all(len(rec.sha256) == 64 and rec.source == p for p, rec in db.records.items())
    full = _read(_generic(tmp_path / "full", [3, 3, 3]))
    assert full.complete
    m = full.ratings()
    assert m.complete and m.matrix.shape == (3, 3)
    np.testing.assert_allclose(m.matrix, [[5 - lv + 0.01 * k for k in range(3)] for lv in (1, 2, 3)])


def test_a_unified_type_without_levels_is_binned_alone_and_a_type_named_both_ways_is_refused(tmp_path):
    """In a unified CSV, the types none of whose file names carry a level are binned (here
    'renamed', 4 x 3 images named r<i>_<k>.png), the others keep their levels; a type naming
    some images with a level and one without is refused at that row, naming the file."""
    paths = write_databases(tmp_path, _rows())
    text = paths["unified"].read_text().splitlines()
    extra = []
    for i in range(1, N_REF + 1):
        for k in range(3):
            _png(tmp_path / "uni" / "img" / f"r{i}_{k}.png", 7000 + 10 * i + k)
            extra.append(f"uni/img/r{i}_{k}.png,renamed,uni/img/I{i:02d}.png,{50 + 10 * k + i}")
    paths["unified"].write_text("\n".join(text + extra) + "\n")
    db = rd.read_ratings(str(paths["unified"]), orientation="higher-better", bins=3)
    assert db.binned == ("renamed",)
    assert sorted(lv for t, lv in db.groups if t == "gaussian_blur") == [1.0, 2.0, 3.0]
    assert sorted(lv for t, lv in db.groups if t == "renamed") == [1.0, 2.0, 3.0]   # the bins
    # one gaussian_blur image without a level in its name: refused at its row
    mixed = text + [f"uni/img/r1_0.png,gaussian_blur,uni/img/I01.png,40"]
    paths["unified"].write_text("\n".join(mixed) + "\n")
    with pytest.raises(rd.RatingsError) as err:
        rd.read_ratings(str(paths["unified"]), orientation="higher-better", bins=3)
    assert f"{paths['unified']}:{len(mixed)}:" in str(err.value)
    assert "'gaussian_blur'" in str(err.value) and "'r1_0.png'" in str(err.value)

"""Reading rated databases (rated_database.py), checked against groups the test computes itself
from the rows it wrote: the same database written with shuffled rows, levels out of order,
upper-case and spaced headers gives the same groups in the same order in every format; errors
name the line of the file they are about; the boundaries of the minimum group count and of the
images a set needs."""
import csv
import random

import numpy as np
import pytest
from PIL import Image

import rated_database as rd

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
    return rd.read_ratings(str(path), orientation="higher-better")


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

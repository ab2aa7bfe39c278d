"""Rated image databases (`--mos FILE`): images with human opinion scores.

Full-reference databases (each rated image is a distorted version of a reference):

* KADID-10k: `dmos.csv` with the header `dist_img,ref_img,dmos,var`; the images are in
  `images/` beside it, named `I01_05_03.png` (reference 01, type 05, level 3). Its "dmos" is a
  degradation category rating from 1 (very annoying) to 5 (imperceptible): higher is better.
* TID2013 / TID2008: `mos_with_names.txt`, lines `score name`; distorted images in
  `distorted_images/` (`i01_05_3.bmp`: reference 01, type 05, level 3) and references in
  `reference_images/` (`I01.BMP`); names are matched case-insensitively. Higher MOS is better.
* Generic CSV: a header with `image`, `reference` and `mos` (higher is better) or `dmos` (higher
  is worse: flipped), optional `type` and `level`; paths relative to the file. Without `type`
  every image is of type "all"; without `level` each type has one level.
* The unified CSV many researchers use (icbcbicc/IQA-Dataset, `csv/*.txt`): the header
  `dis_img_path,dis_type,ref_img_path,score` for TID2013, KADID-10k, CSIQ, LIVE, PIPAL…, paths
  relative to the file (put it beside the database folders its paths start with). The score is
  MOS in some files and DMOS in others, so its orientation must be given (`--mos-orientation
  higher-better|lower-better`). Types are `dis_type`; the level comes from the distorted
  image's name where the database's naming carries it (KADID-10k `I01_05_03.png`, TID
  `i01_05_3.bmp`, CSIQ `1600.AWGN.3.png`); where no name of a type carries one (LIVE), that
  type's images are put in MOS-quantile bins (`mos_bins`, its levels then run from the best
  bin to the worst) and the log and the output say so.

No-reference sets (realism ratings of generated and real images, no reference per image; the
reference set is `--dataset FOLDER`, the real photographs the rated images are compared with):

* RAISE (Mukherjee et al. 2025): its `dataset/` folder (`ratings/train.csv` and
  `ratings/test.csv`, header `filename,MOS_Rating,MOS_ZScore`, higher = more real; images in
  `images/train_images/` and `images/test_images/`) for both splits, or one ratings CSV for that
  split. MOS_Rating is the opinion score.
* Generic CSV: a header with `image` and `mos` (or `dmos`, flipped) and no `reference`; paths
  relative to the file.

Pairwise judgments (which of two images people chose), scaled per image by Bradley-Terry and
scored by their 2AFC agreement (human_agreement.agreement_2afc):

* BAPPS 2AFC (Zhang et al. 2018): a folder with `ref/`, `p0/`, `p1/` images and `judge/` `.npy`
  files of one name each (`000000.png`, `000000.npy`: the fraction of people who chose p1 as
  closer to ref). Each triplet is a pair (p0, p1) with its reference.
* Generic pairwise CSV: a header with `image_a,image_b` and either `votes_a,votes_b` (counts)
  or `prefer_b` (the fraction who chose b, in [0, 1]); `reference` (one reference for both,
  2AFC style) or `reference_a,reference_b` (each image's own, so a pair may cross contents), or
  neither (scored as a no-reference set against --dataset). Paths are relative to the file;
  repeated rows of one pair (in either order) add up: votes are summed, fractions averaged.

A no-reference set is grouped into `mos_bins` MOS-quantile bins (equal counts, best first, ties
broken by path); each bin is an evaluation set scored against the reference set, its MOS the
mean of its images'. A rated image whose content (sha256) equals a reference image's is left
out, and counted in the log, so one photograph is never both reference and evaluation.

Header names are read as written, quoted or not, in any case, with spaces as underscores
(`"MOS Rating"` is `mos_rating`); a name given twice is refused. Files are read as UTF-8 (a BOM
allowed) or, failing that, Latin-1. Every path of a database resolves inside its folder except
in the two generic CSVs, whose paths are free (relative to the file, or absolute). A user
mistake raises `RatingsError` naming the line and the fix.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from featrank.rated_design import (BIN_TYPE, Pair, RatedDatabase, RatedImage, RatingsError,
                                    full_reference, no_reference, pairwise)
from featrank.kadid10k import KADID10K_LEVELS

KADID_NAME = re.compile(r"^i(\d+)_(\d+)_(\d+)\.\w+$", re.IGNORECASE)
CSIQ_NAME = re.compile(r"^.+\.([A-Za-z0-9_-]+)\.(\d+)\.\w+$")
TID_LINE = re.compile(r"^\s*(\S+)\s+(\S+)\s*$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
KNOWN_FILES = ("dmos.csv", "mos_with_names.txt", "mos.csv")
ORIENTATIONS = ("higher-better", "lower-better")
UNIFIED = ("dis_img_path", "dis_type", "ref_img_path", "score")
RAISE_HEADER = ("filename", "mos_rating")
RAISE_SPLITS = ("train", "test")
BAPPS_DIRS = ("ref", "p0", "p1", "judge")
PAIR_IMAGES = ("image_a", "image_b")


def is_bapps(folder: str) -> bool:
    return all(os.path.isdir(os.path.join(folder, d)) for d in BAPPS_DIRS)


def resolve_path(path: str) -> str:
    """A ratings file, a folder holding one of KNOWN_FILES, or RAISE's dataset/ folder."""
    if not os.path.exists(path):
        raise RatingsError(f"--mos {path!r} does not exist; pass a ratings file (KADID-10k's "
                           "dmos.csv, TID2013's mos_with_names.txt, a CSV with image,reference,mos "
                           "or image,mos) or RAISE's dataset/ folder")
    if os.path.isdir(path):
        for name in KNOWN_FILES:
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        if is_bapps(path):
            return path
        for raise_dir in (path, os.path.join(path, "dataset")):
            if all(os.path.isfile(os.path.join(raise_dir, "ratings", f"{s}.csv")) for s in RAISE_SPLITS):
                return raise_dir
        raise RatingsError(f"--mos {path!r} is a folder without {', '.join(KNOWN_FILES)}, RAISE's "
                           "ratings/train.csv and ratings/test.csv, or BAPPS's ref/ p0/ p1/ judge/; "
                           "pass the ratings file itself")
    return path


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        raw = f.read()
    if b"\x00" in raw:
        raise RatingsError(f"--mos {path!r} is not a text file; pass a ratings file (CSV or TID's "
                           "mos_with_names.txt)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def header_names(line: str) -> list[str]:
    """A CSV header as names: quotes and spaces around them dropped, lower case, inner spaces as
    underscores."""
    row = next(csv.reader([line]), [])
    return [re.sub(r"\s+", "_", h.strip().strip('"').strip("'").strip().lower()) for h in row]


@dataclass(frozen=True)
class Sniffed:
    """What a ratings file's format is told from: its text, lines, non-blank lines and the
    header's column names (lower-cased)."""
    text: str
    lines: list
    content: list
    columns: frozenset


@dataclass(frozen=True)
class Options:
    """read_ratings' options, as each reader takes them."""
    bins: int
    orientation: str | None
    exclude: frozenset


def _read_unified(path: str, f: Sniffed, o: Options) -> "RatedDatabase":
    if o.orientation not in ORIENTATIONS:
        raise RatingsError(f"{path}: a unified CSV ({','.join(UNIFIED)}) does not say whether a "
                           "higher score is better (MOS) or worse (DMOS): give "
                           "--mos-orientation higher-better or --mos-orientation lower-better")
    rows, unbinned = _unified(path, f.text)
    return full_reference(path, "unified", o.orientation == "higher-better", rows, o.bins, unbinned)


def _read_raise_csv(path: str, f: Sniffed, o: Options) -> "RatedDatabase":
    split = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.dirname(os.path.dirname(path))
    return no_reference(path, "raise", True, _raise(path, split, folder), o.bins, o.exclude)


def _read_generic(path: str, f: Sniffed, o: Options) -> "RatedDatabase":
    higher_is_better = "mos" in f.columns
    if "reference" in f.columns:
        return full_reference(path, "csv", higher_is_better, _generic(path, f.text), o.bins)
    return no_reference(path, "csv", higher_is_better, _generic(path, f.text, no_reference=True),
                         o.bins, o.exclude)


# ------------------------------------------------------------------ pairwise judgments

def _votes(path, n, row) -> tuple[float, float]:
    """(chosen a, chosen b) of one row: votes_a,votes_b counts or prefer_b, a fraction."""
    if "prefer_b" in row:
        p = row.get("prefer_b")
        if not _number(p) or not 0.0 <= float(p) <= 1.0:
            raise RatingsError(f"{path}:{n}: prefer_b {p!r} is not a fraction in [0, 1] (the share "
                               "of people who chose image_b); fix that line")
        return 1.0 - float(p), float(p)
    out = []
    for c in ("votes_a", "votes_b"):
        v = row.get(c)
        if not _number(v) or float(v) < 0 or float(v) != int(float(v)):
            raise RatingsError(f"{path}:{n}: {c} {v!r} is not a count (a whole number of 0 or "
                               "more); fix that line")
        out.append(float(v))
    if out[0] + out[1] == 0:
        raise RatingsError(f"{path}:{n}: votes_a and votes_b are both 0: nobody chose; remove the "
                           "row or give the votes")
    return out[0], out[1]


def _merge(judged: list) -> list[Pair]:
    """Rows of one pair (either order) as one Pair: wins summed; prefer_b from the votes, or the
    mean of the rows' fractions."""
    merged = {}
    for n, a, b, wa, wb, cluster in judged:
        key = tuple(sorted((a, b)))
        if key != (a, b):
            wa, wb = wb, wa
        m = merged.setdefault(key, [0.0, 0.0, n, cluster])
        m[0], m[1] = m[0] + wa, m[1] + wb
    return [Pair(a, b, wb / (wa + wb), wa, wb, n, cluster)
            for (a, b), (wa, wb, n, cluster) in sorted(merged.items(), key=lambda kv: kv[1][2])]


def _read_pairs(path: str, f: Sniffed, o: Options) -> RatedDatabase:
    cols = f.columns
    if "prefer_b" in cols and {"votes_a", "votes_b"} & cols:
        raise RatingsError(f"{path}:1: both prefer_b and votes columns; keep prefer_b (a fraction) or "
                           "votes_a,votes_b (counts)")
    if "prefer_b" not in cols and not {"votes_a", "votes_b"} <= cols:
        raise RatingsError(f"{path}:1: a pairwise CSV needs votes_a,votes_b (counts) or prefer_b (the "
                           "fraction who chose image_b)")
    if len({"reference_a", "reference_b"} & cols) == 1 or ("reference" in cols and "reference_a" in cols):
        raise RatingsError(f"{path}:1: give 'reference' (one for both images) or both 'reference_a' "
                           "and 'reference_b' (each image's own)")
    base = os.path.dirname(path)
    judged, refs = [], {}

    def file(n, name, what):
        if not name:
            raise RatingsError(f"{path}:{n}: no {what}; fix that line")
        return _exists(path, n, os.path.normpath(os.path.join(base, name)),
                       "image" if what.startswith("image") else "reference")
    for n, row in _csv_rows(f.text):
        a, b = file(n, row.get("image_a"), "image_a"), file(n, row.get("image_b"), "image_b")
        if a == b:
            raise RatingsError(f"{path}:{n}: {os.path.basename(a)!r} is paired with itself; a pair "
                               "compares two images")
        wa, wb = _votes(path, n, row)
        if "reference" in cols:
            ra = rb = file(n, row.get("reference"), "reference")
        elif "reference_a" in cols:
            ra, rb = file(n, row.get("reference_a"), "reference_a"), file(n, row.get("reference_b"), "reference_b")
        else:
            ra = rb = None
        for im, r in ((a, ra), (b, rb)):
            if refs.setdefault(im, r) != r:
                raise RatingsError(f"{path}:{n}: {os.path.basename(im)!r} has reference "
                                   f"{os.path.basename(r)!r} here and {os.path.basename(refs[im])!r} "
                                   "on an earlier line; an image has one reference")
        cluster = "|".join(sorted({ra, rb})) if ra is not None else "|".join(sorted((a, b)))
        judged.append((n, a, b, wa, wb, cluster))
    if not judged:
        raise RatingsError(f"{path}: no pairs after the header; add rows image_a,image_b,...")
    return pairwise(path, "pairs", _merge(judged), refs, o.bins, o.exclude)


def _bapps(folder: str) -> tuple[list[Pair], dict]:
    """BAPPS 2AFC triplets: judge/NAME.npy (the fraction who chose p1) with ref/, p0/ and p1/
    images of the same stem."""
    judges = sorted(f for f in os.listdir(os.path.join(folder, "judge")) if f.endswith(".npy"))
    if not judges:
        raise RatingsError(f"{folder}/judge holds no .npy file; BAPPS's judge/NAME.npy gives the "
                           "fraction of people who chose p1/NAME")
    index = {d: {os.path.splitext(f)[0]: os.path.join(folder, d, f)
                 for f in sorted(os.listdir(os.path.join(folder, d)))} for d in BAPPS_DIRS[:3]}
    pairs, refs = [], {}
    for k, name in enumerate(judges, start=1):
        stem = name[:-4]
        files = {}
        for d in BAPPS_DIRS[:3]:
            if stem not in index[d]:
                raise RatingsError(f"{folder}/judge/{name}: {d}/{stem}.* does not exist; every "
                                   "judge/NAME.npy needs ref/, p0/ and p1/ images named NAME")
            files[d] = _inside(folder, k, folder, os.path.relpath(index[d][stem], folder),
                               "reference" if d == "ref" else "image")
        try:
            p = float(np.asarray(np.load(os.path.join(folder, "judge", name), allow_pickle=False)).ravel()[0])
        except (ValueError, IndexError, OSError) as exc:
            raise RatingsError(f"{folder}/judge/{name} is not a .npy number ({type(exc).__name__}); "
                               "replace it") from None
        if not (np.isfinite(p) and 0.0 <= p <= 1.0):
            raise RatingsError(f"{folder}/judge/{name}: {p!r} is not a fraction in [0, 1] (the share "
                               "of people who chose p1); replace it")
        refs[files["p0"]] = refs[files["p1"]] = files["ref"]
        pairs.append(Pair(files["p0"], files["p1"], p, 1.0 - p, p, k, files["ref"]))
    return pairs, refs


def _is_tid(f: Sniffed) -> bool:
    tid = [TID_LINE.match(ln) for ln in f.content]
    return all(tid) and _number(tid[0].group(1))


@dataclass(frozen=True)
class RatedFormat:
    """One ratings format: `sniff(Sniffed)` says whether a file is in it, `read(path, Sniffed,
    Options)` reads it into a RatedDatabase; `shown` names it in the unknown-format message.
    Formats are tried in FORMATS' order; adding one is a reader and a row."""
    name: str
    sniff: Callable
    read: Callable
    shown: str


FORMATS = (
    RatedFormat("kadid10k", lambda f: {"dist_img", "ref_img", "dmos"} <= f.columns,
                lambda path, f, o: full_reference(path, "kadid10k", True, _kadid(path, f.text), o.bins),
                "KADID-10k's dmos.csv (dist_img,ref_img,dmos,var)"),
    RatedFormat("unified", lambda f: set(UNIFIED) <= f.columns, _read_unified,
                f"the unified {','.join(UNIFIED)}"),
    RatedFormat("raise", lambda f: set(RAISE_HEADER) <= f.columns, _read_raise_csv,
                "RAISE's ratings/train.csv or test.csv (or its dataset/ folder)"),
    RatedFormat("pairs", lambda f: set(PAIR_IMAGES) <= f.columns, _read_pairs,
                "a pairwise CSV image_a,image_b with votes_a,votes_b or prefer_b (optional "
                "reference, or reference_a,reference_b)"),
    RatedFormat("csv", lambda f: "image" in f.columns and bool({"mos", "dmos"} & f.columns),
                _read_generic, "a CSV image,reference,mos (full-reference) or image,mos (no-reference)"),
    RatedFormat("tid", _is_tid,
                lambda path, f, o: full_reference(path, "tid", True, _tid(path, f.lines), o.bins),
                "TID2013's mos_with_names.txt ('score name' lines)"),
)


def read_ratings(path: str, *, bins: int = 6, orientation: str | None = None,
                 exclude: frozenset = frozenset()) -> RatedDatabase:
    """Read a ratings file (or RAISE folder) in any of FORMATS, detected from its content.
    `bins`: MOS-quantile bins of a no-reference set (and of unified-CSV types without levels);
    `orientation`: the unified CSV's score direction; `exclude`: sha256 of reference images,
    which a no-reference set's rated images must not repeat."""
    path = os.path.abspath(resolve_path(path))
    if os.path.isdir(path) and is_bapps(path):
        _orientation_unused(path, "bapps", orientation)
        pairs, refs = _bapps(path)
        return pairwise(path, "bapps", pairs, refs, bins)
    if os.path.isdir(path):
        _orientation_unused(path, "raise", orientation)
        rows = [r for s in RAISE_SPLITS for r in _raise(os.path.join(path, "ratings", f"{s}.csv"), s)]
        return no_reference(path, "raise", True, rows, bins, exclude)
    text = _read_text(path)
    lines = text.splitlines()
    content = [ln for ln in lines if ln.strip()]
    if not content:
        raise RatingsError(f"--mos {path!r} is empty; pass a ratings file")
    header = header_names(content[0])
    if len(header) > 1 and len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise RatingsError(f"{path}:1: the column {dup!r} is given twice; keep one")
    if {"mos", "dmos"} <= set(header):
        raise RatingsError(f"{path}:1: both 'mos' and 'dmos' columns; keep the one the scores are "
                           "in (mos: higher is better, dmos: higher is worse)")
    sniffed = Sniffed(text, lines, content, frozenset(header))
    for fmt in FORMATS:
        if fmt.sniff(sniffed):
            _orientation_unused(path, fmt.name, orientation)
            return fmt.read(path, sniffed, Options(bins, orientation, exclude))
    raise RatingsError(
        f"--mos {path!r}: unknown ratings format (first line {content[0][:60]!r}); use "
        + ", ".join(f.shown for f in FORMATS))


def _orientation_unused(path: str, fmt: str, orientation: str | None) -> None:
    """--mos-orientation means something for the unified CSV alone: every other format states
    which way its scores go (mos or dmos columns, the database's own definition)."""
    if orientation is not None and fmt != "unified":
        raise RatingsError(f"--mos-orientation {orientation} does nothing with {path} ({fmt} format), "
                           "which states which way its scores go; drop --mos-orientation (or "
                           "config['mos_orientation'])")


def _number(text) -> bool:
    try:
        return bool(np.isfinite(float(text)))
    except (TypeError, ValueError):
        return False


def _score(path, line, value) -> float:
    if not _number(value):
        raise RatingsError(f"{path}:{line}: the opinion score {value!r} is not a finite number; "
                           "fix that line")
    v = float(value)
    if abs(v) > 1e12:
        raise RatingsError(f"{path}:{line}: the opinion score {value!r} is out of any rating "
                           "scale (|score| > 1e12); fix that line")
    return v


def _exists(path, line, image, what="image") -> str:
    if not os.path.isfile(image):
        raise RatingsError(f"{path}:{line}: {what} {image!r} does not exist; fix the name or add "
                           "the file")
    return image


def _inside(path, line, folder, name, what="image") -> str:
    """`name` under `folder`, refused when it resolves outside it (a database's own layout)."""
    full = os.path.normpath(os.path.join(folder, name))
    root = os.path.realpath(folder)
    if os.path.commonpath([os.path.realpath(full), root]) != root:
        raise RatingsError(f"{path}:{line}: {what} {name!r} resolves outside {folder}; a "
                           "database's images stay in its folder: fix that line")
    return _exists(path, line, full, what)


def _csv_rows(text: str):
    """(line number, {normalised header: value}) of a CSV's data rows."""
    lines = text.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.strip())
    names = header_names(lines[first])
    for n, row in enumerate(csv.reader(lines[first + 1:]), start=first + 2):
        if not any(c.strip() for c in row):
            continue
        yield n, dict(zip(names, (c.strip() for c in row)))


def _kadid(path, text) -> list[RatedImage]:
    folder = os.path.join(os.path.dirname(path), "images")
    rows = []
    types = list(KADID10K_LEVELS)
    for n, row in _csv_rows(text):
        name, ref = row.get("dist_img") or "", row.get("ref_img") or ""
        m = KADID_NAME.match(name)
        if not m:
            raise RatingsError(f"{path}:{n}: {name!r} is not a KADID-10k name (I01_05_03.png: "
                               "reference, type, level); fix that line")
        t = int(m.group(2))
        tname = types[t - 1] if 1 <= t <= len(types) else f"type_{t:02d}"
        rows.append(RatedImage(_inside(path, n, folder, name),
                               _inside(path, n, folder, ref, "reference"),
                               tname, float(m.group(3)), _score(path, n, row.get("dmos")), n))
    return rows


def _casefold_index(folder) -> dict:
    """Lower-case file name -> path; two files differing only in case are both kept out."""
    if not os.path.isdir(folder):
        return {}
    index, clash = {}, set()
    for f in sorted(os.listdir(folder)):
        if f.lower() in index:
            clash.add(f.lower())
        index[f.lower()] = os.path.join(folder, f)
    return {k: v for k, v in index.items() if k not in clash} | {k: None for k in clash}


def _tid(path, lines) -> list[RatedImage]:
    base = os.path.dirname(path)
    dist = _casefold_index(os.path.join(base, "distorted_images"))
    refs = _casefold_index(os.path.join(base, "reference_images"))
    rows = []
    for n, ln in enumerate(lines, start=1):
        if not ln.strip():
            continue
        score, name = TID_LINE.match(ln).groups()
        m = KADID_NAME.match(name)
        if not m:
            raise RatingsError(f"{path}:{n}: {name!r} is not a TID name (i01_05_3.bmp: reference, "
                               f"type, level); fix line {n}: {ln.strip()[:60]!r}")
        image = dist.get(name.lower())
        if image is None:
            raise RatingsError(f"{path}:{n}: image {name!r} does not exist (or exists twice, in "
                               f"other cases) in {os.path.join(base, 'distorted_images')}; fix the "
                               "name or add the file")
        ref_name = f"i{m.group(1)}"
        found = [p for k, p in refs.items() if os.path.splitext(k)[0] == ref_name]
        if len(found) != 1 or found[0] is None:
            what = ("does not exist" if not found else
                    f"is ambiguous ({', '.join(sorted(os.path.basename(p or k) for k, p in refs.items() if os.path.splitext(k)[0] == ref_name))})")
            raise RatingsError(f"{path}:{n}: reference {ref_name.upper()} of {name!r} {what} in "
                               f"{os.path.join(base, 'reference_images')}; keep one image file per "
                               "reference there")
        rows.append(RatedImage(image, found[0], f"tid_{int(m.group(2)):02d}", float(m.group(3)),
                               _score(path, n, score), n))
    return rows


def _safe_type(path, n, t) -> str:
    if not SAFE_NAME.match(t) or ".." in t:
        raise RatingsError(f"{path}:{n}: type {t!r} must match [A-Za-z0-9_.-]+ without '..' "
                           "(it names cache folders); rename it")
    return t


def _generic(path, text, no_reference: bool = False) -> list[RatedImage]:
    base = os.path.dirname(path)
    rows = []
    for n, row in _csv_rows(text):
        column = "mos" if "mos" in row else "dmos"
        image = row.get("image") or ""
        if not image:
            raise RatingsError(f"{path}:{n}: no image name; fix that line")
        image = _exists(path, n, os.path.normpath(os.path.join(base, image)))
        if no_reference:
            rows.append(RatedImage(image, None, BIN_TYPE, 0.0, _score(path, n, row.get(column)), n))
            continue
        t = _safe_type(path, n, row.get("type") or "all")
        level = row.get("level") or "1"
        if not _number(level):
            raise RatingsError(f"{path}:{n}: level {level!r} is not a number; fix that line")
        ref = os.path.normpath(os.path.join(base, row.get("reference") or ""))
        rows.append(RatedImage(image, _exists(path, n, ref, "reference"), t, float(level),
                               _score(path, n, row.get(column)), n))
    return rows


def level_from_name(name: str) -> float | None:
    """The distortion level a database's file name carries: KADID-10k `I01_05_03.png`, TID
    `i01_05_3.bmp`, CSIQ `1600.AWGN.3.png`; None for other names (LIVE's `img12.bmp`)."""
    base = os.path.basename(name)
    m = KADID_NAME.match(base)
    if m:
        return float(m.group(3))
    m = CSIQ_NAME.match(base)
    return float(m.group(2)) if m else None


def _unified(path, text) -> tuple[list[RatedImage], set]:
    """The rows of a unified CSV, and the types none of whose names carry a level."""
    base = os.path.dirname(path)
    rows, levels = [], {}
    for n, row in _csv_rows(text):
        t = _safe_type(path, n, row.get("dis_type") or "")
        image = _inside(path, n, base, row.get("dis_img_path") or "")
        ref = _inside(path, n, base, row.get("ref_img_path") or "", "reference")
        lv = level_from_name(image)
        levels.setdefault(t, []).append(lv)
        rows.append(RatedImage(image, ref, t, 0.0 if lv is None else lv,
                               _score(path, n, row.get("score")), n))
    unbinned = {t for t, lvs in levels.items() if all(v is None for v in lvs)}
    partial = [t for t, lvs in levels.items() if t not in unbinned and any(v is None for v in lvs)]
    if partial:
        r = next(r for r in rows if r.type == partial[0] and level_from_name(r.image) is None)
        raise RatingsError(f"{path}:{r.line}: type {partial[0]!r} names some images with a level and "
                           f"not {os.path.basename(r.image)!r}; name them alike")
    return rows, unbinned


def _raise(path, split, folder=None) -> list[RatedImage]:
    """RAISE's ratings CSV of one split: filename,MOS_Rating[,MOS_ZScore]."""
    folder = folder or os.path.dirname(os.path.dirname(path))
    images = os.path.join(folder, "images", f"{split}_images")
    rows = []
    for n, row in _csv_rows(_read_text(path)):
        name = row.get("filename") or ""
        rows.append(RatedImage(_inside(path, n, images, name), None, BIN_TYPE, 0.0,
                               _score(path, n, row.get("mos_rating")), n))
    return rows


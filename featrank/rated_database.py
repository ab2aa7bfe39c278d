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

A no-reference set is grouped into `mos_bins` MOS-quantile bins (equal counts, best first, ties
broken by path); each bin is an evaluation set scored against the reference set, its MOS the
mean of its images'. A rated image whose content (sha256) equals a reference image's is left
out, and counted in the log, so one photograph is never both reference and evaluation.

Designs: a full-reference group (type, level) holds each reference at most once (a MOS bin may
hold several images of one reference; each pairs with it, and they are resampled together). A complete
design (every group rates every reference: KADID-10k, TID2013) is scored as it always was; an
incomplete one (CSIQ, LIVE, PIPAL) scores every group on the images it has, each paired with its
own reference. A group of fewer than MIN_GROUP_IMAGES images is not scored as a set (its images
still count in the per-image criteria), and the reason is written out; at least MIN_GROUPS
groups must be scored.

Groups come in one order whatever the order of the file's rows: types in KADID-10k's type
order where they are its types, then by name (`type_rank`); levels ascending within a type; a
group's images by reference path, then by image path.

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
from dataclasses import dataclass, field

import numpy as np

from featrank.dataset import DatasetError, ImageRecord
from featrank.kadid10k import KADID10K_LEVELS

KADID_NAME = re.compile(r"^i(\d+)_(\d+)_(\d+)\.\w+$", re.IGNORECASE)
CSIQ_NAME = re.compile(r"^.+\.([A-Za-z0-9_-]+)\.(\d+)\.\w+$")
TID_LINE = re.compile(r"^\s*(\S+)\s+(\S+)\s*$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
MIN_GROUPS = 3
# A set statistic needs 2 images (a covariance, an unbiased pair mean); a group of 2 is left
# with one image by many reference resamples. 3 is the smallest group scored as a set.
MIN_GROUP_IMAGES = 3
MIN_BINS = 3
KNOWN_FILES = ("dmos.csv", "mos_with_names.txt", "mos.csv")
ORIENTATIONS = ("higher-better", "lower-better")
UNIFIED = ("dis_img_path", "dis_type", "ref_img_path", "score")
RAISE_HEADER = ("filename", "mos_rating")
RAISE_SPLITS = ("train", "test")
NO_REFERENCE, FULL_REFERENCE = "no-reference", "full-reference"
BIN_TYPE = "mos"                       # the type of a no-reference set's bins


class RatingsError(DatasetError):
    """A ratings file that cannot be used; the message names the line and the fix."""


@dataclass(frozen=True)
class RatedImage:
    image: str            # absolute path of the rated image
    reference: str | None  # absolute path of its reference (None in a no-reference set)
    type: str
    level: float
    score: float          # the opinion score as written in the file
    line: int


@dataclass(frozen=True)
class RatedDatabase:
    """The rated groups of a database. `groups[(type, level)]` holds the images of each scored
    group (in reference order for a full-reference database), `small` the groups too small to
    be scored as sets; `references` are a full-reference database's references, sorted by path
    (a no-reference set has none: its reference set is --dataset)."""
    path: str
    format: str
    higher_is_better: bool
    references: tuple          # ImageRecord, sorted by path
    groups: dict               # (type, level) -> tuple[RatedImage]
    records: dict              # image path -> ImageRecord
    kind: str = FULL_REFERENCE
    small: dict = field(default_factory=dict)
    binned: tuple = ()         # types whose levels are MOS-quantile bins
    excluded: int = 0          # rated images equal to a reference image, left out

    @property
    def types(self) -> list[str]:
        return list(dict.fromkeys(t for t, _ in self.groups))

    def levels(self, t: str) -> list:
        return [lv for tt, lv in self.groups if tt == t]

    def degradations(self) -> dict:
        """{type: {"type": "rated", "levels": [...]}}: the per-type level sequences that the
        monotonicity criterion reads (level position p = the p-th smallest level of the type)."""
        return {t: {"type": "rated", "levels": self.levels(t)} for t in self.types}

    def group_keys(self) -> list[tuple]:
        """The evaluation-set keys of the scored groups, (type, level position from 1), in order."""
        return [(t, p) for t in self.types for p in range(1, len(self.levels(t)) + 1)]

    def small_keys(self) -> list[tuple]:
        """The keys of the groups too small to score: positions after their type's scored ones."""
        out, count = [], {}
        for t, _ in self.small:
            count[t] = count.get(t, len(self.levels(t))) + 1
            out.append((t, count[t]))
        return out

    def all_groups(self) -> list[tuple]:
        """[(key, (type, level), images)] of every group: scored ones, then small ones."""
        scored = [((t, p), (t, lv), self.groups[(t, lv)]) for t in self.types
                  for p, lv in enumerate(self.levels(t), start=1)]
        return scored + [(k, g, self.small[g]) for k, g in zip(self.small_keys(), self.small)]

    @property
    def complete(self) -> bool:
        """Every group is one image of every reference, in reference order (nothing small)."""
        if self.kind != FULL_REFERENCE or self.small:
            return False
        refs = [r.source for r in self.references]
        return all([im.reference for im in g] == refs for g in self.groups.values())

    def oriented(self, images) -> np.ndarray:
        """Opinions of `images`, higher = better."""
        sign = 1.0 if self.higher_is_better else -1.0
        return np.array([sign * im.score for im in images], np.float64)

    def quality(self) -> np.ndarray:
        """(G, R) opinions oriented higher = better, in `group_keys` order (a complete design)."""
        return np.stack([self.oriented(self.groups[(t, lv)]) for t in self.types for lv in self.levels(t)])

    def pairs(self, images) -> list | None:
        """Each image's reference position, or None for a no-reference set."""
        if self.kind != FULL_REFERENCE:
            return None
        order = {r.source: i for i, r in enumerate(self.references)}
        return [order[im.reference] for im in images]

    def ratings(self, n_clean: int = 0):
        """The human_agreement.Ratings of the scored groups (and the small ones' images)."""
        from featrank.human_agreement import Ratings
        groups = self.all_groups()
        scored = groups[:len(self.groups)]
        if self.complete:
            return Ratings(tuple(k for k, _, _ in scored), self.quality())
        fr = self.kind == FULL_REFERENCE
        return Ratings(
            keys=tuple(k for k, _, _ in scored),
            quality=tuple(self.oriented(ims) for _, _, ims in scored),
            clusters=tuple(np.asarray(self.pairs(ims)) for _, _, ims in scored) if fr else None,
            n_clusters=len(self.references), image_keys=tuple(k for k, _, _ in groups),
            image_quality=tuple(self.oriented(ims) for _, _, ims in groups), paired=fr,
            complete=False, n_clean=n_clean)

    def group_rows(self) -> list[dict]:
        """One record per group, scored or not: what mos_groups.csv and the results JSON say."""
        out = []
        for (t, p), (gt, lv), ims in self.all_groups():
            raw = [im.score for im in ims]
            out.append({"type": t, "level": lv, "position": p, "n_images": len(ims),
                        "mos": float(np.mean(self.oriented(ims))),
                        "mos_min": float(min(raw)), "mos_max": float(max(raw)),
                        "binned": t in self.binned, "scored": (gt, lv) in self.groups,
                        "reason": "" if (gt, lv) in self.groups else
                        f"{len(ims)} image(s), below the {MIN_GROUP_IMAGES} a set score needs"})
        return out

    @property
    def n_images(self) -> int:
        return sum(len(g) for g in self.groups.values()) + sum(len(g) for g in self.small.values())


# ------------------------------------------------------------------ reading

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
        for raise_dir in (path, os.path.join(path, "dataset")):
            if all(os.path.isfile(os.path.join(raise_dir, "ratings", f"{s}.csv")) for s in RAISE_SPLITS):
                return raise_dir
        raise RatingsError(f"--mos {path!r} is a folder without {', '.join(KNOWN_FILES)} or RAISE's "
                           "ratings/train.csv and ratings/test.csv; pass the ratings file itself")
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


def read_ratings(path: str, *, bins: int = 6, orientation: str | None = None,
                 exclude: frozenset = frozenset()) -> RatedDatabase:
    """Read a ratings file (or RAISE folder) in any of the formats above, detected from its
    content. `bins`: MOS-quantile bins of a no-reference set (and of unified-CSV types without
    levels); `orientation`: the unified CSV's score direction; `exclude`: sha256 of reference
    images, which a no-reference set's rated images must not repeat."""
    path = os.path.abspath(resolve_path(path))
    if os.path.isdir(path):
        rows = [r for s in RAISE_SPLITS for r in _raise(os.path.join(path, "ratings", f"{s}.csv"), s)]
        return _no_reference(path, "raise", True, rows, bins, exclude)
    text = _read_text(path)
    lines = text.splitlines()
    content = [ln for ln in lines if ln.strip()]
    if not content:
        raise RatingsError(f"--mos {path!r} is empty; pass a ratings file")
    header = header_names(content[0])
    tid = [TID_LINE.match(ln) for ln in content]
    if len(header) > 1 and len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise RatingsError(f"{path}:1: the column {dup!r} is given twice; keep one")
    if {"mos", "dmos"} <= set(header):
        raise RatingsError(f"{path}:1: both 'mos' and 'dmos' columns; keep the one the scores are "
                           "in (mos: higher is better, dmos: higher is worse)")
    if {"dist_img", "ref_img", "dmos"} <= set(header):
        return _full_reference(path, "kadid10k", True, _kadid(path, text), bins)
    if set(UNIFIED) <= set(header):
        if orientation not in ORIENTATIONS:
            raise RatingsError(f"{path}: a unified CSV ({','.join(UNIFIED)}) does not say whether a "
                               "higher score is better (MOS) or worse (DMOS): give "
                               "--mos-orientation higher-better or --mos-orientation lower-better")
        rows, unbinned = _unified(path, text)
        return _full_reference(path, "unified", orientation == "higher-better", rows, bins, unbinned)
    if set(RAISE_HEADER) <= set(header):
        split = os.path.splitext(os.path.basename(path))[0]
        folder = os.path.dirname(os.path.dirname(path))
        return _no_reference(path, "raise", True, _raise(path, split, folder), bins, exclude)
    if "image" in header and ("mos" in header or "dmos" in header):
        if "reference" in header:
            return _full_reference(path, "csv", "mos" in header, _generic(path, text), bins)
        return _no_reference(path, "csv", "mos" in header, _generic(path, text, no_reference=True),
                             bins, exclude)
    if all(tid) and _number(tid[0].group(1)):
        return _full_reference(path, "tid", True, _tid(path, lines), bins)
    raise RatingsError(
        f"--mos {path!r}: unknown ratings format (first line {content[0][:60]!r}); use KADID-10k's "
        "dmos.csv (dist_img,ref_img,dmos,var), TID2013's mos_with_names.txt ('score name' lines), "
        "a CSV image,reference,mos (full-reference) or image,mos (no-reference), the unified "
        f"{','.join(UNIFIED)}, or RAISE's dataset/ folder")


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


def _duplicates(path, rows) -> None:
    seen = {}
    for r in rows:
        if r.image in seen:
            raise RatingsError(f"{path}:{r.line}: image {os.path.basename(r.image)!r} is rated again "
                               f"(first at line {seen[r.image]}); remove the duplicated row")
        seen[r.image] = r.line


def quantile_bins(rows: list, n_bins: int, higher_is_better: bool) -> list[list]:
    """`rows` in `n_bins` bins of equal counts (sizes differ by one at most), the best opinions
    first; ties broken by path."""
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(rows, key=lambda r: (-sign * r.score, r.image))
    cuts = np.linspace(0, len(order), n_bins + 1).round().astype(int)
    return [order[cuts[i]:cuts[i + 1]] for i in range(n_bins)]


def _check_bins(path, n_images: int, bins: int, what: str) -> None:
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < MIN_BINS:
        raise RatingsError(f"--mos-bins {bins!r}: the set-level criteria need at least {MIN_BINS} "
                           "bins; give --mos-bins 3 or more")
    if n_images < bins:
        raise RatingsError(f"{path}: {n_images} rated image(s) {what} cannot fill {bins} MOS bins; "
                           f"give --mos-bins {max(MIN_BINS, min(n_images, bins))} or fewer, or rate "
                           "more images")


def type_rank(t: str) -> tuple:
    """The sort key of a type: KADID-10k's types in its numbering (imdist_generator.m's cases),
    then every other name alphabetically (TID's zero-padded tid_NN in its numbering)."""
    kadid = list(KADID10K_LEVELS)
    return (kadid.index(t), "") if t in kadid else (len(kadid), t)


def _split_small(groups: dict) -> tuple[dict, dict]:
    scored = {k: g for k, g in groups.items() if len(g) >= MIN_GROUP_IMAGES}
    return scored, {k: g for k, g in groups.items() if len(g) < MIN_GROUP_IMAGES}


def _checked_record(path: str) -> tuple[ImageRecord | None, str]:
    """The record of one image file read once (its sha256), after the dataset module's checks:
    not empty, a header within the pixel limit, a complete decode. (None, why) when it fails."""
    import hashlib
    import io
    import warnings
    from PIL import Image
    from featrank.dataset import MAX_PIXELS
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return None, "is empty"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.size[0] * im.size[1] > MAX_PIXELS:
                    return None, (f"has {im.size[0]} x {im.size[1]} pixels, over the pixel limit "
                                  f"({MAX_PIXELS:,} pixels)")
                im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, f"is over the pixel limit ({MAX_PIXELS:,} pixels: a decompression bomb)"
    except Exception as exc:        # not an image, truncated, corrupt: PIL's many kinds
        return None, f"does not decode ({type(exc).__name__}: {str(exc)[:80]})"
    return ImageRecord(path, hashlib.sha256(data).hexdigest()), ""


def _records(ratings_path: str, rows) -> dict:
    """{path: ImageRecord} of every rated image and reference of `rows`, each checked (in
    threads: decoding releases the GIL); the first that fails is a RatingsError naming it and
    its line."""
    from concurrent.futures import ThreadPoolExecutor
    from featrank.host import available_cores
    line = {}
    for r in rows:
        line.setdefault(r.image, r.line)
        if r.reference is not None:
            line.setdefault(r.reference, r.line)
    paths = sorted(line)
    with ThreadPoolExecutor(max_workers=available_cores()) as pool:
        checked = list(pool.map(_checked_record, paths))
    for p, (record, why) in zip(paths, checked):
        if record is None:
            raise RatingsError(f"{ratings_path}:{line[p]}: image {p!r} {why}; replace the file or "
                               "remove that line")
    return {p: record for p, (record, _) in zip(paths, checked)}


def _no_reference(path, fmt, higher_is_better, rows, bins, exclude) -> RatedDatabase:
    _duplicates(path, rows)
    records = _records(path, rows)
    kept = [r for r in rows if records[r.image].sha256 not in exclude]
    excluded = len(rows) - len(kept)
    if not kept:
        raise RatingsError(f"{path}: every one of its {len(rows)} rated image(s) is also a reference "
                           "image of --dataset; give a --dataset of other photographs")
    _check_bins(path, len(kept), bins, f"(after leaving out {excluded} equal to a reference image)"
                if excluded else "")
    groups = {(BIN_TYPE, float(i)): tuple(sorted(b, key=lambda r: r.image))
              for i, b in enumerate(quantile_bins(kept, bins, higher_is_better), start=1)}
    scored, small = _split_small(groups)
    if len(scored) < MIN_GROUPS:
        raise RatingsError(f"{path}: {len(kept)} rated images make {bins} bins of fewer than "
                           f"{MIN_GROUP_IMAGES} images; give fewer --mos-bins or rate more images")
    return RatedDatabase(path, fmt, higher_is_better, (), scored,
                         {r.image: records[r.image] for r in kept}, NO_REFERENCE, small, (BIN_TYPE,),
                         excluded)


def _full_reference(path, fmt, higher_is_better, rows, bins, binned=frozenset()) -> RatedDatabase:
    """Group by (type, level) (MOS bins within the `binned` types); check each group rates a
    reference once; order groups and references; hash the images."""
    _duplicates(path, rows)
    by_group: dict = {}
    for t in sorted({r.type for r in rows}, key=type_rank):
        of_type = [r for r in rows if r.type == t]
        if t in binned:
            _check_bins(path, len(of_type), bins, f"of type {t!r}")
            for i, b in enumerate(quantile_bins(of_type, bins, higher_is_better), start=1):
                by_group[(t, float(i))] = b
        else:
            for r in of_type:
                by_group.setdefault((t, r.level), []).append(r)
    refs = sorted({r.reference for r in rows})
    order = {p: i for i, p in enumerate(refs)}
    groups = {}
    for t in dict.fromkeys(k[0] for k in by_group):
        for lv in sorted(k[1] for k in by_group if k[0] == t):
            group = sorted(by_group[(t, lv)], key=lambda r: (order[r.reference], r.image))
            twice = next((r for r, q in zip(group[1:], group) if r.reference == q.reference), None)
            if twice is not None and t not in binned:     # a MOS bin may hold several of one
                raise RatingsError(f"{path}:{twice.line}: group type {t!r} level {lv:g} has two "
                                   f"images of reference {os.path.basename(twice.reference)!r}; a "
                                   "group holds one image per reference")
            groups[(t, lv)] = tuple(group)
    scored, small = _split_small(groups)
    if len(scored) < MIN_GROUPS:
        raise RatingsError(f"{path}: {len(scored)} group(s) of (type, level) with at least "
                           f"{MIN_GROUP_IMAGES} images; the set-level criterion needs at least "
                           f"{MIN_GROUPS} (give the CSV 'type' and 'level' columns, or rate more "
                           "images)")
    records = _records(path, rows)
    return RatedDatabase(path, fmt, higher_is_better, tuple(records[p] for p in refs), scored,
                         records, FULL_REFERENCE, small, tuple(sorted(binned)))

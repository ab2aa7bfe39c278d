"""Rated image-quality databases (`--mos FILE`): images with human opinion scores.

Three formats, told apart by the file's content (`read_ratings`):

* KADID-10k: `dmos.csv` with the header `dist_img,ref_img,dmos,var`; the images are in
  `images/` beside it, named `I01_05_03.png` (reference 01, type 05, level 3). Its "dmos" is a
  degradation category rating from 1 (very annoying) to 5 (imperceptible): higher is better.
* TID2013 / TID2008: `mos_with_names.txt`, lines `score name`; distorted images in
  `distorted_images/` (`i01_05_3.bmp`: reference 01, type 05, level 3) and references in
  `reference_images/` (`I01.BMP`); names are matched case-insensitively. Higher MOS is better.
* Generic CSV: a header with `image`, `reference` and `mos` (higher is better) or `dmos` (higher
  is worse: flipped), optional `type` and `level`; paths relative to the file. Without `type`
  every image is of type "all"; without `level` each type has one level.

Every adapter records `higher_is_better` as the file has it; `quality` is always oriented
higher = better (a "higher is worse" column is negated). The images are grouped by (type,
level); the groups must form a complete design (one image per reference in every group), as
KADID-10k and TID2013 do, because every group is scored as one evaluation set aligned with the
references. A user mistake raises `RatingsError` naming the line and the fix.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass

import numpy as np

from dataset import DatasetError, ImageRecord
from host import file_sha256
from kadid10k import KADID10K_LEVELS

KADID_NAME = re.compile(r"^i(\d+)_(\d+)_(\d+)\.\w+$", re.IGNORECASE)
TID_LINE = re.compile(r"^\s*(\S+)\s+(\S+)\s*$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
MIN_GROUPS = 3
KNOWN_FILES = ("dmos.csv", "mos_with_names.txt", "mos.csv")


class RatingsError(DatasetError):
    """A ratings file that cannot be used; the message names the line and the fix."""


@dataclass(frozen=True)
class RatedImage:
    image: str            # absolute path of the distorted image
    reference: str        # absolute path of its reference
    type: str
    level: float
    score: float          # the opinion score as written in the file
    line: int


@dataclass(frozen=True)
class RatedDatabase:
    """A complete design: `groups[(type, level)]` holds one RatedImage per reference, in the
    order of `references`."""
    path: str
    format: str
    higher_is_better: bool
    references: tuple          # ImageRecord, sorted by path
    groups: dict               # (type, level) -> tuple[RatedImage] in reference order
    records: dict              # image path -> ImageRecord

    @property
    def types(self) -> list[str]:
        return list(dict.fromkeys(t for t, _ in self.groups))

    def levels(self, t: str) -> list:
        return [lv for tt, lv in self.groups if tt == t]

    def degradations(self) -> dict:
        """{type: {"type": "rated", "levels": [...]}}: the per-type level sequences that the
        monotonicity criterion reads (level position p = the p-th smallest level in the file)."""
        return {t: {"type": "rated", "levels": self.levels(t)} for t in self.types}

    def group_keys(self) -> list[tuple]:
        """The evaluation-set keys of the groups, (type, level position from 1), in order."""
        return [(t, p) for t in self.types for p in range(1, len(self.levels(t)) + 1)]

    def quality(self) -> np.ndarray:
        """(G, R) opinions oriented higher = better, in `group_keys` order."""
        sign = 1.0 if self.higher_is_better else -1.0
        return np.array([[sign * im.score for im in self.groups[(t, lv)]]
                         for t in self.types for lv in self.levels(t)])

    @property
    def n_images(self) -> int:
        return sum(len(g) for g in self.groups.values())


# ------------------------------------------------------------------ reading

def resolve_path(path: str) -> str:
    """A ratings file, or a folder holding one of KNOWN_FILES."""
    if not os.path.exists(path):
        raise RatingsError(f"--mos {path!r} does not exist; pass a ratings file (KADID-10k's "
                           "dmos.csv, TID2013's mos_with_names.txt, or a CSV with image,reference,mos)")
    if os.path.isdir(path):
        for name in KNOWN_FILES:
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise RatingsError(f"--mos {path!r} is a folder without {', '.join(KNOWN_FILES)}; pass the "
                           "ratings file itself")
    return path


def read_ratings(path: str) -> RatedDatabase:
    """Read a ratings file in any of the three formats (detected from its content)."""
    path = os.path.abspath(resolve_path(path))
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise RatingsError(f"--mos {path!r} is not a text file; pass a ratings file "
                           "(CSV or TID's mos_with_names.txt)") from None
    lines = text.splitlines()
    content = [ln for ln in lines if ln.strip()]
    if not content:
        raise RatingsError(f"--mos {path!r} is empty; pass a ratings file")
    header = [h.strip() for h in content[0].strip().lower().split(",")]
    tid = [TID_LINE.match(ln) for ln in content]
    if {"dist_img", "ref_img", "dmos"} <= set(header):
        fmt, rows, higher_is_better = "kadid10k", _kadid(path, text), True
    elif "image" in header and "reference" in header and ("mos" in header or "dmos" in header):
        fmt, rows, higher_is_better = "csv", _generic(path, text), "mos" in header
    elif all(tid) and _number(tid[0].group(1)):
        fmt, rows, higher_is_better = "tid", _tid(path, lines), True
    else:
        raise RatingsError(
            f"--mos {path!r}: unknown ratings format (first line {content[0][:60]!r}); use "
            "KADID-10k's dmos.csv (dist_img,ref_img,dmos,var), TID2013's mos_with_names.txt "
            "('score name' lines) or a CSV with the header image,reference,mos")
    return _design(path, fmt, higher_is_better, rows)


def _number(text) -> bool:
    try:
        return np.isfinite(float(text))
    except (TypeError, ValueError):
        return False


def _score(path, line, value) -> float:
    if not _number(value):
        raise RatingsError(f"{path}:{line}: the opinion score {value!r} is not a finite number; "
                           "fix that line")
    return float(value)


def _exists(path, line, image, what="image") -> str:
    if not os.path.isfile(image):
        raise RatingsError(f"{path}:{line}: {what} {image!r} does not exist; fix the name or add "
                           "the file")
    return image


def _kadid(path, text) -> list[RatedImage]:
    folder = os.path.join(os.path.dirname(path), "images")
    rows = []
    for n, row in enumerate(csv.DictReader(text.splitlines()), start=2):
        name, ref = (row.get("dist_img") or "").strip(), (row.get("ref_img") or "").strip()
        m = KADID_NAME.match(name)
        if not m:
            raise RatingsError(f"{path}:{n}: {name!r} is not a KADID-10k name (I01_05_03.png: "
                               "reference, type, level); fix that line")
        t = int(m.group(2))
        types = list(KADID10K_LEVELS)
        tname = types[t - 1] if 1 <= t <= len(types) else f"type_{t:02d}"
        rows.append(RatedImage(_exists(path, n, os.path.join(folder, name)),
                               _exists(path, n, os.path.join(folder, ref), "reference"),
                               tname, float(m.group(3)), _score(path, n, row.get("dmos")), n))
    return rows


def _casefold_index(folder) -> dict:
    return {f.lower(): os.path.join(folder, f) for f in os.listdir(folder)} if os.path.isdir(folder) else {}


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
                               "type, level); fix that line")
        image = dist.get(name.lower())
        if image is None:
            raise RatingsError(f"{path}:{n}: image {name!r} does not exist in "
                               f"{os.path.join(base, 'distorted_images')}; fix the name or add the file")
        ref_name = f"i{m.group(1)}"
        ref = next((p for k, p in refs.items() if os.path.splitext(k)[0] == ref_name), None)
        if ref is None:
            raise RatingsError(f"{path}:{n}: reference {ref_name.upper()} of {name!r} does not exist "
                               f"in {os.path.join(base, 'reference_images')}; add it")
        rows.append(RatedImage(image, ref, f"tid_{int(m.group(2)):02d}", float(m.group(3)),
                               _score(path, n, score), n))
    return rows


def _generic(path, text) -> list[RatedImage]:
    base = os.path.dirname(path)
    reader = csv.DictReader(text.splitlines())
    reader.fieldnames = [h.strip().lower() for h in reader.fieldnames]
    column = "mos" if "mos" in reader.fieldnames else "dmos"
    rows = []
    for n, row in enumerate(reader, start=2):
        t = (row.get("type") or "all").strip()
        if not SAFE_NAME.match(t) or ".." in t:
            raise RatingsError(f"{path}:{n}: type {t!r} must match [A-Za-z0-9_.-]+ without '..' "
                               "(it names cache folders); rename it")
        level = (row.get("level") or "1").strip()
        if not _number(level):
            raise RatingsError(f"{path}:{n}: level {level!r} is not a number; fix that line")
        image = os.path.normpath(os.path.join(base, (row.get("image") or "").strip()))
        ref = os.path.normpath(os.path.join(base, (row.get("reference") or "").strip()))
        rows.append(RatedImage(_exists(path, n, image), _exists(path, n, ref, "reference"), t,
                               float(level), _score(path, n, row.get(column)), n))
    return rows


def _design(path, fmt, higher_is_better, rows) -> RatedDatabase:
    """Check duplicates and completeness; hash the images; order groups and references."""
    seen = {}
    for r in rows:
        if r.image in seen:
            raise RatingsError(f"{path}:{r.line}: image {os.path.basename(r.image)!r} is rated again "
                               f"(first at line {seen[r.image]}); remove the duplicated row")
        seen[r.image] = r.line
    by_group: dict = {}
    for r in rows:
        by_group.setdefault((r.type, r.level), []).append(r)
    if len(by_group) < MIN_GROUPS:
        raise RatingsError(f"{path}: {len(by_group)} group(s) of (type, level); the set-level "
                           f"criterion needs at least {MIN_GROUPS} (give the CSV 'type' and "
                           "'level' columns, or rate more distortions)")
    refs = sorted({r.reference for r in rows})
    for key, group in by_group.items():
        have = {r.reference for r in group}
        if len(have) != len(group):
            dup = next(r for r in group if sum(x.reference == r.reference for x in group) > 1)
            raise RatingsError(f"{path}:{dup.line}: group type {key[0]!r} level {key[1]:g} has two "
                               f"images of reference {os.path.basename(dup.reference)!r}; a group "
                               "holds one image per reference")
        if have != set(refs):
            miss = sorted(set(refs) - have)[0]
            raise RatingsError(f"{path}: group type {key[0]!r} level {key[1]:g} has no image of "
                               f"reference {os.path.basename(miss)!r}: every (type, level) must "
                               "rate one image of every reference (a complete design, as "
                               "KADID-10k and TID2013); add it or drop that reference's rows")
    hashes = {p: ImageRecord(p, file_sha256(p)) for p in sorted(set(seen) | set(refs))}
    order = {p: i for i, p in enumerate(refs)}
    groups = {}
    for t in dict.fromkeys(r.type for r in rows):
        for lv in sorted({k[1] for k in by_group if k[0] == t}):
            groups[(t, lv)] = tuple(sorted(by_group[(t, lv)], key=lambda r: order[r.reference]))
    return RatedDatabase(path, fmt, higher_is_better, tuple(hashes[p] for p in refs), groups, hashes)

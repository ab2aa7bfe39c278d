"""A rated database as groups: the records it is made of (`RatedImage`, `RatedDatabase`), and
how rated images become scored groups (rated_database.py reads the files).

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
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace

import numpy as np

from featrank.dataset import DatasetError, ImageRecord
from featrank.kadid10k import KADID10K_LEVELS

log = logging.getLogger(__name__)

MIN_GROUPS = 3
# A set statistic needs 2 images (a covariance, an unbiased pair mean); a group of 2 is left
# with one image by many reference resamples. 3 is the smallest group scored as a set.
MIN_GROUP_IMAGES = 3
MIN_BINS = 3
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
    judgments: tuple = ()      # pairwise judgments: Pair records (their images' scores are scaled)
    scaled: bool = True        # False: pairs on a disconnected graph, not on one scale

    @property
    def pairwise(self) -> bool:
        return bool(self.judgments)

    @property
    def uses_bins(self) -> bool:
        """Whether `bins` shaped the groups: a no-reference set, a pairwise set (its scale), or
        types without levels. Otherwise every type has its own levels and bins mean nothing."""
        return self.kind == NO_REFERENCE or bool(self.binned)

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
            return Ratings(tuple(k for k, _, _ in scored), self.quality(), **self._pair_fields())
        fr = self.kind == FULL_REFERENCE
        return Ratings(**self._pair_fields(), 
            keys=tuple(k for k, _, _ in scored),
            quality=tuple(self.oriented(ims) for _, _, ims in scored),
            clusters=tuple(np.asarray(self.pairs(ims)) for _, _, ims in scored) if fr else None,
            n_clusters=len(self.references), image_keys=tuple(k for k, _, _ in groups),
            image_quality=tuple(self.oriented(ims) for _, _, ims in groups), paired=fr,
            complete=False, n_clean=n_clean)

    def _pair_fields(self) -> dict:
        """Ratings' pairwise fields: each pair's images as positions in the concatenation of
        every group's images (all_groups order), its fraction for the second, its cluster."""
        if not self.judgments:
            return {}
        position = {im.image: i for i, im in enumerate(im for _, _, ims in self.all_groups() for im in ims)}
        _, clusters = np.unique([p.cluster for p in self.judgments], return_inverse=True)
        return {"pairs": np.array([[position[p.a], position[p.b]] for p in self.judgments], np.intp),
                "prefer_b": np.array([p.prefer_b for p in self.judgments], np.float64),
                "pair_clusters": clusters, "scaled": self.scaled}

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

@dataclass(frozen=True)
class Pair:
    """One pair of a pairwise database, its repeated rows merged: images `a` and `b`, the
    fraction of people who chose `b`, the wins each got (votes, or the fractions of each row),
    its first line and its cluster (the reference content(s), or the pair itself)."""
    a: str
    b: str
    prefer_b: float
    wins_a: float
    wins_b: float
    line: int
    cluster: str


def pairwise(path, fmt, pairs: list, references: dict, bins: int, exclude=frozenset()) -> RatedDatabase:
    """A database of pairwise judgments: each image's quality is its Bradley-Terry scale value
    from the pairs (human_agreement.bradley_terry), and the images are grouped as a rated set
    is, in `bins` quantile bins of that quality (full-reference when `references` gives each
    image its reference, else no-reference against --dataset). On a disconnected comparison
    graph the components are named in a warning, the bins follow each image's share of wins,
    and only the 2AFC agreement is reported (`scaled` False)."""
    from featrank import human_agreement as ha
    images = sorted({p.a for p in pairs} | {p.b for p in pairs})
    index = {im: i for i, im in enumerate(images)}
    wins = np.zeros((len(images), len(images)))
    first = {}
    for p in pairs:
        wins[index[p.a], index[p.b]] += p.wins_a
        wins[index[p.b], index[p.a]] += p.wins_b
        first.setdefault(p.a, p.line)
        first.setdefault(p.b, p.line)
    comps = ha.comparison_components(len(images), wins)
    scaled = len(comps) == 1
    if scaled:
        quality, alpha = ha.bradley_terry(wins)
        log.info("%s: %d images scaled by Bradley-Terry from %d pairs%s", path, len(images), len(pairs),
                 "" if alpha == 0 else f" (an image never chosen or never beaten: L2 penalty {alpha:g})")
    else:
        shown = "; ".join("{" + ", ".join(os.path.basename(images[i]) for i in c[:3])
                          + (", …" if len(c) > 3 else "") + "}" for c in comps[:3])
        log.warning("%s: the comparison graph has %d separate components (sizes %s; %s%s): "
                    "Bradley-Terry puts images on one scale only within one, so SRCC/KRCC/PLCC with "
                    "scaled quality are left out and agreement_2afc is reported. Compare images "
                    "across components to scale them.", path, len(comps),
                    ", ".join(str(len(c)) for c in comps[:8]) + (", …" if len(comps) > 8 else ""),
                    shown, "; …" if len(comps) > 3 else "")
        total = wins.sum(axis=1) + wins.sum(axis=0)
        quality = wins.sum(axis=1) / np.where(total > 0, total, 1)
    rows = [RatedImage(im, references.get(im), BIN_TYPE, 0.0, float(q), first[im])
            for im, q in zip(images, quality)]
    if any(r.reference is not None for r in rows):
        db = full_reference(path, fmt, True, rows, bins, frozenset({BIN_TYPE}))
    else:
        db = no_reference(path, fmt, True, rows, bins, exclude)
    kept = [p for p in pairs if p.a in db.records and p.b in db.records]
    if len(kept) < len(pairs):
        log.info("%s: %d pair(s) left out with their images (equal to a reference image)", path,
                 len(pairs) - len(kept))
    if not kept:
        raise RatingsError(f"{path}: no pair is left once the images equal to a reference image of "
                           "--dataset are left out; give a --dataset of other photographs")
    return replace(db, judgments=tuple(kept), scaled=scaled)


def check_duplicates(path, rows) -> None:
    seen = {}
    for r in rows:
        if r.image in seen:
            raise RatingsError(f"{path}:{r.line}: image {os.path.basename(r.image)!r} is rated again "
                               f"(first at line {seen[r.image]}); remove the duplicated row")
        seen[r.image] = r.line


def check_spread(path, rows) -> None:
    """Opinion scores that are all equal carry no order: no criterion can agree with them."""
    scores = {r.score for r in rows}
    if len(rows) > 1 and len(scores) == 1:
        raise RatingsError(f"{path}: all {len(rows)} opinion scores are {scores.pop()!r}; with no "
                           "spread there is nothing to agree with: give ratings that vary")


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


def no_reference(path, fmt, higher_is_better, rows, bins, exclude) -> RatedDatabase:
    check_duplicates(path, rows)
    check_spread(path, rows)
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


def full_reference(path, fmt, higher_is_better, rows, bins, binned=frozenset()) -> RatedDatabase:
    """Group by (type, level) (MOS bins within the `binned` types); check each group rates a
    reference once; order groups and references; hash the images."""
    check_duplicates(path, rows)
    check_spread(path, rows)
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

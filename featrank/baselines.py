"""Full-reference baselines in the same ranking as the feature spaces: does a deep-feature
score beat PSNR, SSIM, MS-SSIM, LPIPS or DISTS?

Each evaluation image at each level is compared with its own clean version, on the pixels the
backbones saw before their resize: the working-size image, decoded and degraded exactly as
for extraction (a rated database's images are read as they are and compared with their
reference). The per-image values go to evaluation.score_baseline, which ranks them like any
configuration (rows `baseline:<name>`). The scores live in distance_metrics (PIXEL_FUNCTIONS;
LPIPS and DISTS over the layer outputs of their networks, which perceptual.py runs); this
module produces the images and caches the values: SSIM over a medium run's 1,350 images
costs about as much as extraction, so, like activations, the values are computed once per
(images, degradation level, working size, seed) and read back by every later sweep, under
<cache_dir>/baselines/<name>/<key>.npy with the key of feature_cache.cache_key (for LPIPS and
DISTS the key holds their trunk's weights identity and their head's digest too).
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from featrank import distance_metrics as dm
from featrank.dataset import load_rgb
from featrank.degradation_generator import DEGRADATION_VERSION, apply_degradation
from featrank.cache_files import load_array, save_array
from featrank.feature_cache import BASELINES_DIR, cache_key
from featrank.host import available_cores
from featrank.perceptual import NETWORK_BASELINES, BaselineUnavailable, build

log = logging.getLogger(__name__)

BASELINES = dm.PIXEL_METRICS          # in distance_metrics' order
BASELINE_VERSION = 3                  # bump when a pixel score changes its numbers (2: ssim and
                                      # ms_ssim became Wang et al.'s, on luminance; 3: ssim as
                                      # pyiqa's calibrated default, without ssim.m's downsampling)


def unit_images(unit, working_size: int, seed: int, which=None) -> np.ndarray:
    """(n, S, S, 3) uint8: the images of a cache unit (those at positions `which`, default all)
    as extraction decodes and degrades them."""
    out = []
    for record in (unit.records if which is None else [unit.records[i] for i in which]):
        img = load_rgb(record.source, working_size)
        if unit.degradation is not None:
            img = apply_degradation(img, unit.degradation, unit.level, seed, record.sha256)
        out.append(np.asarray(img, dtype=np.uint8))
    return np.stack(out)


def clean_positions(unit, clean_unit) -> list:
    """The clean unit's row of each of `unit`'s rows: its own position, or the reference a
    rated image of an incomplete design pairs with (`unit.pairs`)."""
    return list(unit.pairs) if unit.pairs is not None else list(range(len(clean_unit.records)))


def value_key(name: str, unit, clean_unit, working_size: int, seed: int,
              network: dict | None = None) -> str:
    """The cache key of one baseline's values on one evaluation unit: the images' and their
    clean versions' bytes, the degradation and level, the working size and the seed; and for
    LPIPS and DISTS, `network` (perceptual.PerceptualNet.identity: trunk weights and head)."""
    fields = {"kind": "baseline", "name": name, "version": BASELINE_VERSION,
              "degradations": DEGRADATION_VERSION, "working_size": working_size,
              "seed": seed, "degradation": unit.degradation, "level": unit.level,
              "images": [r.sha256 for r in unit.records],
              "clean": [clean_unit.records[i].sha256 for i in clean_positions(unit, clean_unit)]}
    if network is not None:
        fields["network"] = network
    return cache_key(fields)


class BaselineValues(NamedTuple):
    values: dict          # name -> {(group, position): per-image values}
    reasons: dict         # name -> why it cannot run
    weights: dict         # name -> backbones.Provenance of its network's trunk (LPIPS, DISTS)


def baseline_values(names, eval_units, working_size: int, seed: int,
                    cache_dir: str | None = None, weights: str = "auto",
                    device: str = "cpu") -> BaselineValues:
    """The per-image values of the baselines `names` over the evaluation units (the clean unit
    first), why any cannot run, and the trunk weights of LPIPS and DISTS (`weights`: the run's
    setting, perceptual.build; they run on `device`). With `cache_dir`, values computed before
    are read back and new ones are stored. Units missing from the cache are computed in
    threads, one per core (the filters release the GIL); the networks' image by image
    (_network_values; torch uses every core)."""
    clean_unit = next(u for u in eval_units if u.position == 0)
    reasons, nets = {}, {}
    for name in names:
        if name in NETWORK_BASELINES:
            try:
                nets[name] = build(name, weights, seed, device)
            except BaselineUnavailable as exc:
                reasons[name] = str(exc)
    names = [n for n in names if n not in reasons]
    values, todo = _cached_values(names, nets, eval_units, clean_unit, working_size, seed, cache_dir)
    if todo:
        outs = _pixel_values(todo, nets, clean_unit, working_size, seed)
        for name, net in nets.items():
            ks = [k for k, (_, m) in enumerate(todo) if name in m]
            got = _network_values(net, [todo[k][0] for k in ks], clean_unit, working_size, seed)
            for k, v in zip(ks, got):
                outs[k][name] = v
        for (unit, missing), out in zip(todo, outs):
            for name, v in out.items():
                if isinstance(v, Exception):
                    reasons.setdefault(name, str(v))
                    continue
                values[name][(unit.group, unit.position)] = v
                if missing[name]:
                    save_array(missing[name], v, os.path.basename(missing[name])[:-4])
    log.info("baselines %s: %d of %d evaluation set(s) computed, the rest read from the cache",
             ", ".join(names), len(todo), len(eval_units))
    return BaselineValues({n: v for n, v in values.items() if n not in reasons}, reasons,
                          {n: net.provenance for n, net in nets.items()})


def _cached_values(names, nets, eval_units, clean_unit, working_size: int, seed: int,
                   cache_dir: str | None) -> tuple[dict, list]:
    """The values of `names` found in the cache (name -> {(group, position): values}), and the
    units to compute with, for each, name -> its cache path (None without a cache)."""
    values, todo = {n: {} for n in names}, []
    for unit in eval_units:
        missing = {}
        for name in names:
            network = nets[name].identity if name in nets else None
            path = (os.path.join(cache_dir, BASELINES_DIR, name,
                                 value_key(name, unit, clean_unit, working_size, seed, network) + ".npy")
                    if cache_dir else None)
            cached = load_array(path, (len(unit.records),), os.path.basename(path)[:-4]) if path else None
            if cached is not None:
                values[name][(unit.group, unit.position)] = cached
            else:
                missing[name] = path
        if missing:
            todo.append((unit, missing))
    return values, todo


def _pixel_values(todo, nets, clean_unit, working_size: int, seed: int) -> list[dict]:
    """For each (unit, missing) of `todo`, name -> the per-image values of the pixel baselines
    missing there (or the MetricInputError that says why one cannot run), in threads."""
    clean = unit_images(clean_unit, working_size, seed)

    def compute(item):
        unit, missing = item
        todo_names = [n for n in missing if n not in nets]
        if not todo_names:
            return {}
        images = clean if unit is clean_unit else unit_images(unit, working_size, seed)
        paired = clean if unit.pairs is None else clean[list(unit.pairs)]
        out = {}
        for name in todo_names:
            try:
                out[name] = np.asarray(dm.PIXEL_FUNCTIONS[name](images, paired), np.float64)
            except dm.MetricInputError as exc:
                out[name] = exc
        return out

    with ThreadPoolExecutor(max_workers=available_cores()) as pool:
        return list(pool.map(compute, todo))


def _network_values(net, units, clean_unit, working_size: int, seed: int) -> list[np.ndarray]:
    """Per-image values of LPIPS or DISTS (`net`, a perceptual.PerceptualNet) on each of
    `units`, image by image: a few clean images' layer outputs are computed once and compared
    with the same images at every level, so no clean output is computed twice and no unit's
    outputs are held whole (a VGG16's layers of one 256 px image are 32 MiB)."""
    from featrank.perceptual import CHUNK
    n = len(clean_unit.records)
    out = [np.empty(len(u.records)) for u in units]
    for k, unit in enumerate(units):         # an incomplete design's groups, image by image
        if unit.pairs is not None:
            for s in range(0, len(unit.records), CHUNK):
                which = range(s, min(len(unit.records), s + CHUNK))
                fy = net.features(unit_images(clean_unit, working_size, seed,
                                              [unit.pairs[i] for i in which]))
                out[k][s:s + len(which)] = net.distance(net.features(
                    unit_images(unit, working_size, seed, which)), fy)
    units_aligned = [(k, u) for k, u in enumerate(units) if u.pairs is None]
    for s in range(0, n, CHUNK):
        which = range(s, min(n, s + CHUNK))
        fy = net.features(unit_images(clean_unit, working_size, seed, which))
        for k, unit in units_aligned:
            fx = fy if unit is clean_unit else net.features(unit_images(unit, working_size, seed, which))
            out[k][s:s + len(which)] = net.distance(fx, fy)
    return out

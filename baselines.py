"""Full-reference baselines in the same ranking as the feature spaces: does a deep-feature
score beat PSNR, SSIM or MS-SSIM?

Each evaluation image at each level is compared with its own clean version, on the pixels the
backbones saw before their resize: the working-size image, decoded and degraded exactly as
for extraction (a rated database's images are read as they are and compared with their
reference). The per-image values go to evaluation.score_baseline, which ranks them like any
configuration (rows `baseline:<name>`). The scores live in distance_metrics (PIXEL_FUNCTIONS);
this module produces the images and caches the values: SSIM over a medium run's 1,350 images
costs about as much as extraction, so, like activations, the values are computed once per
(images, degradation level, working size, seed) and read back by every later sweep, under
<cache_dir>/baselines/<name>/<key>.npy with the key of feature_cache.cache_key.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import distance_metrics as dm
from dataset import load_rgb
from degradation_generator import DEGRADATION_VERSION, apply_degradation
from feature_cache import BASELINES_DIR, cache_key, load_array, save_array
from host import available_cores

log = logging.getLogger(__name__)

BASELINES = dm.PIXEL_METRICS          # in distance_metrics' order
BASELINE_VERSION = 1                  # bump when a pixel score changes its numbers


def unit_images(unit, working_size: int, seed: int) -> np.ndarray:
    """(n, S, S, 3) uint8: the images of a cache unit as extraction decodes and degrades them."""
    out = []
    for record in unit.records:
        img = load_rgb(record.source, working_size)
        if unit.degradation is not None:
            img = apply_degradation(img, unit.degradation, unit.level, seed, record.sha256)
        out.append(np.asarray(img, dtype=np.uint8))
    return np.stack(out)


def value_key(name: str, unit, clean_unit, working_size: int, seed: int) -> str:
    """The cache key of one baseline's values on one evaluation unit: the images' and their
    clean versions' bytes, the degradation and level, the working size and the seed."""
    return cache_key({"kind": "baseline", "name": name, "version": BASELINE_VERSION,
                      "degradations": DEGRADATION_VERSION, "working_size": working_size,
                      "seed": seed, "degradation": unit.degradation, "level": unit.level,
                      "images": [r.sha256 for r in unit.records],
                      "clean": [r.sha256 for r in clean_unit.records]})


def baseline_values(names, eval_units, working_size: int, seed: int,
                    cache_dir: str | None = None) -> tuple[dict, dict]:
    """({name: {(group, position): per-image values}}, {name: why it cannot run}) for the
    baselines `names` over the evaluation units (the clean unit first). With `cache_dir`,
    values computed before are read back and new ones are stored. Units missing from the cache
    are computed in threads, one per core (the filters release the GIL)."""
    clean_unit = next(u for u in eval_units if u.position == 0)
    values, reasons, todo = {n: {} for n in names}, {}, []
    for unit in eval_units:
        missing = {}
        for name in names:
            path = (os.path.join(cache_dir, BASELINES_DIR, name,
                                 value_key(name, unit, clean_unit, working_size, seed) + ".npy")
                    if cache_dir else None)
            cached = load_array(path, (len(unit.records),)) if path else None
            if cached is not None:
                values[name][(unit.group, unit.position)] = cached
            else:
                missing[name] = path
        if missing:
            todo.append((unit, missing))
    if todo:
        clean = unit_images(clean_unit, working_size, seed)

        def compute(item):
            unit, missing = item
            images = clean if unit is clean_unit else unit_images(unit, working_size, seed)
            out = {}
            for name in missing:
                try:
                    out[name] = np.asarray(dm.PIXEL_FUNCTIONS[name](images, clean), np.float64)
                except dm.MetricInputError as exc:
                    out[name] = exc
            return out

        with ThreadPoolExecutor(max_workers=available_cores()) as pool:
            for (unit, missing), out in zip(todo, pool.map(compute, todo)):
                for name, v in out.items():
                    if isinstance(v, Exception):
                        reasons.setdefault(name, str(v))
                        continue
                    values[name][(unit.group, unit.position)] = v
                    if missing[name]:
                        save_array(missing[name], v)
    log.info("baselines %s: %d of %d evaluation set(s) computed, the rest read from the cache",
             ", ".join(names), len(todo), len(eval_units))
    return {n: v for n, v in values.items() if n not in reasons}, reasons

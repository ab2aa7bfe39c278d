"""Maps of the feature spaces themselves, for the report: does the best space separate the
degraded sets from the clean ones, or only shift them?

A map of one configuration is a 2-D t-SNE of its own features (layers, aggregate and transform:
what its metric reads, before any distribution model) of three kinds of rows: the reference
rows (at most MAP_SETTINGS["max_reference"] of them, drawn with the run's seed), the clean
evaluation rows, and every level of one degradation. The rows are first projected on the
principal components of the reference rows (at most MAP_SETTINGS["pca_dim"]), computed from
their linear kernel: kernel PCA, which for a Gram space held as kernel blocks gives the span
coordinates (the rows' coordinates in the span of the reference rows) without the rows
themselves, and for explicit rows is their PCA. Then scikit-learn's Barnes-Hut t-SNE with
a fixed seed embeds them (same input, same seed: the same map, checked by a test), one thread
per map and the maps in the run's `jobs` processes. When the clean set is the reference set
itself (a rated database whose references are the reference set, or a no-reference set) it is
drawn once, as the reference.

The maps are computed once, when the run finishes, and written to feature_maps.json beside
the results; the report draws them from that file, so rebuilding a report needs no cache.
"""
from __future__ import annotations

import json
import logging
import os
import time

import numpy as np

from featrank.backbones import resolve_weights
from featrank.cache_fill import RunData, feature_assembler, open_caches
from featrank.evaluation import BASELINE, SCORED
from featrank.configurations import configuration_of_row
from featrank.feature_spaces import CLEAN_KEY, FeatureSpace, Infeasible
from featrank.parallel import sweep_map
from featrank.report import MAPS_FILE
from featrank.representations import KernelPCA
from featrank.run_plan import ExtractionSettings, SpaceSettings

log = logging.getLogger("iqm")

N_MAPS = 3
MAP_SETTINGS = {"pca_dim": 50, "perplexity": 30.0, "max_reference": 200, "init": "pca",
                "method": "barnes_hut", "max_iter": 1000}


def map_degradation(degradations: dict) -> str:
    """The degradation every map shows: the one with the most levels (the finest gradient of
    colours), the first by name among those; the same whatever the order of `degradations`."""
    return min(degradations, key=lambda name: (-len(degradations[name]["levels"]), name))


def projected_sets(space: FeatureSpace, keys: list, pca_dim: int) -> tuple[np.ndarray, dict]:
    """(reference coordinates, {key: coordinates}) of `space` on the reference rows' first
    `pca_dim` principal components (fewer when the reference rows span fewer)."""
    if space.kernel is not None:
        rr, cross = space.kernel.rr, {k: space.kernel.re[k].T for k in keys}
    else:
        ref = np.asarray(space.ref, np.float64)
        rr, cross = ref @ ref.T, {k: np.asarray(space.evals[k], np.float64) @ ref.T for k in keys}
    kp = KernelPCA(rr, min(pca_dim, len(rr) - 1), at_most=True)
    return kp.transform(rr), {k: kp.transform(v) for k, v in cross.items()}


def tsne(points: np.ndarray, seed: int, params: dict = MAP_SETTINGS) -> np.ndarray:
    """2-D t-SNE of `points` (scikit-learn, `params`, perplexity capped at (n - 1) / 3)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits
    perplexity = min(params["perplexity"], (len(points) - 1) / 3)
    with threadpool_limits(1):        # one summation order, whatever the machine
        return TSNE(2, perplexity=perplexity, init=params["init"], method=params["method"],
                    max_iter=params["max_iter"], random_state=seed).fit_transform(points)


def map_parts(space: FeatureSpace, degradation: str, levels: list, seed: int,
              params: dict = MAP_SETTINGS, clean_is_reference: bool = False) -> tuple[list, int]:
    """The sets of one configuration's map before t-SNE, [(name, position, projected rows)], and
    the number of reference rows.
    Position 0 is the clean set; the reference rows have position None. When the clean set is
    the reference set itself (a no-reference rated set), it is drawn once, as the reference."""
    keys = ([CLEAN_KEY] if CLEAN_KEY in space.keys and not clean_is_reference else []) + [
        (degradation, p) for p in range(1, len(levels) + 1) if (degradation, p) in space.keys]
    ref, evals = projected_sets(space, keys, params["pca_dim"])
    rng = np.random.default_rng(seed)
    shown = np.sort(rng.choice(len(ref), min(len(ref), params["max_reference"]), replace=False))
    return [("reference", None, ref[shown])] + [
        ("clean" if k == CLEAN_KEY else f"level {k[1]}: {levels[k[1] - 1]}", k[1], evals[k])
        for k in keys], len(ref)


def map_of(parts: list, xy: np.ndarray) -> list[dict]:
    """The "sets" of a map: each part's name, position and rows of the embedding `xy`."""
    sets, start = [], 0
    for name, position, rows in parts:
        sets.append({"name": name, "position": position,
                     "xy": np.round(xy[start:start + len(rows)], 4).tolist()})
        start += len(rows)
    return sets


def space_map(space: FeatureSpace, degradation: str, levels: list, seed: int,
              params: dict = MAP_SETTINGS, clean_is_reference: bool = False) -> dict:
    """The map of one configuration's space: {"sets": [{"name", "position", "xy"}...], ...}."""
    parts, n_ref = map_parts(space, degradation, levels, seed, params, clean_is_reference)
    xy = tsne(np.vstack([p[2] for p in parts]), seed, params)
    return {"degradation": degradation, "sets": map_of(parts, xy), "n_reference": n_ref,
            "dims": int(parts[0][2].shape[1]), "form": space.form}


def _embed(task: tuple) -> tuple[np.ndarray, float]:
    """t-SNE of one map's stacked rows (a parallel.sweep_map task): (embedding, seconds)."""
    points, seed, params = task
    t0 = time.perf_counter()
    return tsne(points, seed, params), time.perf_counter() - t0


def _maps(rows: list, ext: ExtractionSettings, spaces: SpaceSettings, data: RunData,
          provenances: dict, check_cache: bool, jobs: int = 1) -> list[dict]:
    """The maps of the first N_MAPS scored feature-space rows of a results JSON, each with its
    label and rank, or the reason it could not be drawn. Each map's rows are projected here, and
    the t-SNE of the maps run in `jobs` processes (each one-threaded: the same maps as one by one)."""
    degradation = map_degradation(data.degradations)
    levels = data.degradations[degradation]["levels"]
    clean_is_reference = [r.sha256 for r in data.eval_records] == [r.sha256 for r in data.ref_records]
    out, assemblers, pending = [], {}, []
    for row in [r for r in rows if r["status"] == SCORED and r["backbone"] != BASELINE][:N_MAPS]:
        conf = configuration_of_row(row)
        entry = {"label": row["label"], "rank": row["rank"], "metric": row["metric"]}
        prov = (provenances.get(conf.backbone)
                or resolve_weights(conf.backbone, ext.weights, ext.seed))
        caches = open_caches(ext, conf.backbone,
                             list(conf.layer_config.resolved), prov, data.ref_records,
                             data.eval_records)
        if check_cache and any(cache.check(u, full=False) for cache in caches.values()
                               for u in data.ref_units + data.eval_units):   # present, not hashed
            out.append({**entry, "missing": f"the cache in {ext.cache_dir} no longer holds these "
                                            "features; rerun the experiment to draw this map"})
            continue
        key = (conf.backbone, tuple(conf.layer_config.paths))
        if key not in assemblers:
            assemblers[key] = feature_assembler(spaces, conf.backbone, caches, data.ref_units,
                                                  data.eval_units)
        try:
            space = assemblers[key].space(conf.layer_config, conf.transform)
        except Infeasible as exc:
            out.append({**entry, "missing": str(exc)})
            continue
        parts, n_ref = map_parts(space, degradation, levels, ext.seed, MAP_SETTINGS,
                                 clean_is_reference)
        out.append({**entry, "degradation": degradation, "n_reference": n_ref,
                    "dims": int(parts[0][2].shape[1]), "form": space.form})
        pending.append((out[-1], parts))
    embedded = sweep_map(_embed, [(np.vstack([p[2] for p in parts]), ext.seed, MAP_SETTINGS)
                                  for _, parts in pending], jobs)
    for (record, parts), (xy, seconds) in zip(pending, embedded):
        record["sets"] = map_of(parts, xy)
        log.info("feature map of %s: t-SNE of %d points in %.1fs", record["label"], len(xy), seconds)
    return out


def write_maps(out_dir: str, rows: list, ext: ExtractionSettings, spaces: SpaceSettings,
               data: RunData, provenances: dict, check_cache: bool = False, jobs: int = 1) -> str:
    """Compute the maps of a finished run (results JSON `rows`, its extraction and space
    settings, its images) in `jobs` processes and write feature_maps.json into out_dir;
    returns its path. The maps' seed is the run's."""
    import sklearn
    maps = _maps(rows, ext, spaces, data, provenances, check_cache, jobs)
    path = os.path.join(out_dir, MAPS_FILE)
    with open(path, "w") as f:
        json.dump({"settings": {**MAP_SETTINGS, "seed": ext.seed,
                                "library": f"scikit-learn {sklearn.__version__}"},
                   "maps": maps}, f, indent=None, sort_keys=True)
    return path


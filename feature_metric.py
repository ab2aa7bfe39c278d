"""Use the winner: any ranked configuration as a metric on your own folders.

A configuration (evaluation.Configuration: backbone, layers, aggregate, transform, model,
metric) comes from a finished run or is written by hand:

* `configuration_from("results/medium_…", rank=1)` (or `label=…`): a row of a run's results
  JSON, with the settings its numbers depend on (working size, input size, seed, weights,
  storage and arithmetic precision, KID/CMMD parameters, the Gram budget);
* a spec string, `BACKBONE:LAYERS/AGGREGATE/TRANSFORM/[MODEL/]METRIC`, e.g.
  `resnet50:7+8/concat/gram,pca=64/gaussian/mahalanobis` or `dinov2_vitb14:11/concat/gap/cmmd`
  (README "Using a configuration as a metric"). `spec_string(conf)` writes one; the two
  round-trip.

`apply(cfg, applied, ref, evals)` scores each EVAL folder against the REF folder exactly as the
sweep scores an evaluation set against its reference set: the images are read at the working
size, extracted through the cache (a folder already extracted is a CACHE HIT), and the same
feature space, model and metric score them. Paired metrics compare each EVAL image with the REF
image at the same sorted position. The interval is a percentile bootstrap over EVAL's images.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass

import numpy as np

import distance_metrics as dm
from cache_fill import ensure_cached, open_caches
from dataset import folder_records
from distribution_modeling import MODELS, ModelError, ModelSpec
from errors import RuntimeFailure, UsageError
from evaluation import BASELINE, SCORED, Configuration, pair_allowed, score_group
from feature_cache import CLEAN, Unit, reference_units
from feature_spaces import AGGREGATIONS, VIT_POOLS, FeatureAssembler, Transform, TransformError
from layer_registry import LayerConfig
from run_plan import check_output_file, layers_of, spec_of, validate_config

log = logging.getLogger("iqm")

# The settings a configuration's numbers depend on, taken from the run that ranked it.
REPRODUCED = ("working_size", "image_size", "seed", "weights", "cache_dtype",
              "extraction_precision", "kid", "cmmd", "max_representation_bytes", "gram_precision")
SPEC_FORM = "BACKBONE:LAYERS/AGGREGATE/TRANSFORM/[MODEL/]METRIC"
TRANSFORM_FLAGS = {"whiten": "whiten", "standardize": "standardize", "l2": "l2_normalize"}
APPLY_KEY = ("apply", 1)           # the EVAL folder's set in the feature space


@dataclass(frozen=True)
class Applied:
    """A configuration and the run settings it was ranked under ({} for a spec string)."""
    conf: Configuration
    settings: dict
    source: str


@dataclass
class AppliedScore:
    """The score of one EVAL folder against REF, with its bootstrap interval."""
    eval: str
    n_images: int
    metric: str
    score: float
    ci: list | None
    n_resamples: int
    confidence: float


# ---------------------------------------------------------------------- spec strings

def _fmt(v) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def spec_string(conf: Configuration) -> str:
    """The spec string of `conf` (SPEC_FORM): parameters at their defaults are left out."""
    lc, t, m = conf.layer_config, conf.transform, conf.model
    tparts = ["gram" if t.use_gram else "gap"] + ([f"pca={t.pca_dim}"] if t.use_pca else [])
    tparts += [flag for flag, key in TRANSFORM_FLAGS.items() if getattr(t, key)]
    tparts += [f"pool={t.vit_pool}"] if t.vit_pool != "mean" else []
    parts = [f"{conf.backbone}:{'+'.join(str(x) for x in lc.layers)}", lc.aggregate, ",".join(tparts)]
    if m is not None:
        defaults = MODELS[m.type]["params"]
        parts.append(",".join([m.type] + [f"{k}={_fmt(v)}" for k, v in m.params.items()
                                          if v != defaults[k]]))
    return "/".join(parts + [conf.metric])


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _bad(spec: str, what: str) -> UsageError:
    return UsageError(f"spec {spec!r}: {what} (the form is {SPEC_FORM}, e.g. "
                      "resnet50:7+8/concat/gram,pca=64/gaussian/mahalanobis)")


def _transform(spec: str, text: str) -> Transform:
    tokens = text.split(",")
    if tokens[0] not in ("gap", "gram"):
        raise _bad(spec, f"transform {text!r} must start with gap or gram")
    entry = {"name": text, "use_gram": tokens[0] == "gram"}
    for tok in tokens[1:]:
        key, eq, val = tok.partition("=")
        if key == "pca" and eq:
            entry.update(use_pca=True, pca_dim=_value(val))
        elif key == "pool" and eq:
            entry["vit_pool"] = val
        elif key in TRANSFORM_FLAGS and not eq:
            entry[TRANSFORM_FLAGS[key]] = True
        else:
            raise _bad(spec, f"transform part {tok!r} is not one of: pca=N, pool={'|'.join(VIT_POOLS)}, "
                             f"{', '.join(TRANSFORM_FLAGS)}")
    try:
        return Transform.of(entry, f"transform {text!r}")
    except TransformError as exc:
        raise _bad(spec, str(exc)) from None


def _model(spec: str, text: str) -> ModelSpec:
    kind, *rest = text.split(",")
    if kind not in MODELS:
        raise _bad(spec, f"model {kind!r} is not one of: {', '.join(MODELS)}")
    entry = {"name": text, "type": kind}
    for tok in rest:
        key, eq, val = tok.partition("=")
        if not eq:
            raise _bad(spec, f"model part {tok!r} must be KEY=VALUE, KEY one of "
                             f"{', '.join(MODELS[kind]['params'])}")
        entry[key] = _value(val)
    try:
        return ModelSpec.of(entry, f"model {text!r}")
    except ModelError as exc:
        raise _bad(spec, str(exc)) from None


def parse_spec(spec: str) -> Configuration:
    """The Configuration a spec string names; a bad part is a UsageError naming it and the choices."""
    parts = spec.split("/")
    metric = parts[-1]
    if metric not in dm.FEATURE_METRICS:
        raise _bad(spec, f"metric {metric!r} is not one of: {', '.join(dm.FEATURE_METRICS)}")
    with_model = dm.METRICS[metric]["model"]
    tail = 4 if with_model else 3
    if len(parts) < tail + 1:
        raise _bad(spec, f"{metric} needs {tail + 1} parts" + ("" if with_model else
                         " (it takes no model)"))
    if not with_model and parts[-2].split(",")[0] in MODELS:
        raise _bad(spec, f"{metric} is a two-sample metric and takes no model: drop "
                         f"'{parts[-2]}/'")
    backbone, sep, layers = "/".join(parts[:-tail]).rpartition(":")
    if not sep or not backbone or not layers:
        raise _bad(spec, "it must start with BACKBONE:LAYERS (indices or module paths joined by +)")
    spec_of(backbone)
    resolved = tuple(layers_of(backbone, layers.split("+")))
    aggregate = parts[-tail]
    if aggregate not in AGGREGATIONS:
        raise _bad(spec, f"aggregate {aggregate!r} is not one of: {', '.join(AGGREGATIONS)}")
    transform = _transform(spec, parts[-tail + 1])
    model = _model(spec, parts[-2]) if with_model else None
    if not pair_allowed(metric, model):
        raise _bad(spec, f"{metric} needs a model with a covariance (gaussian or gmm), not {model.type}")
    ids = [str(i) if i is not None else p for i, p in resolved]
    name = "single_layer_" + ids[0] if len(ids) == 1 else "layers_" + "+".join(ids) + "_" + aggregate
    return Configuration(backbone, LayerConfig(name, resolved, aggregate), transform, model, metric)


# ---------------------------------------------------------------------- results rows

def _results_json(path: str) -> str:
    if os.path.isdir(path):
        found = sorted(n for n in os.listdir(path) if n.startswith("results_") and n.endswith(".json"))
        if not found:
            raise UsageError(f"{path!r} holds no results_*.json; give a results folder of a finished "
                             "run, its JSON, or a spec string")
        return os.path.join(path, found[-1])
    return path


def configuration_of_row(row: dict) -> Configuration:
    """The Configuration of one row of a results JSON."""
    if row.get("backbone") == BASELINE:
        raise UsageError(f"{row.get('label')} is a pixel baseline, not a feature space; choose a "
                         "feature-space row")
    resolved = tuple((i if isinstance(i, int) else None, p)
                     for i, p in zip(row["layers"], row["module_paths"]))
    lc = LayerConfig(row["layer_config"], resolved, row.get("aggregate", "concat"))
    transform = Transform.of({"name": row["transform"], **(row.get("transform_params") or {})})
    model = None
    if row.get("distribution"):
        params = row.get("distribution_params") or {}
        kind = row.get("distribution_type") or next(   # older results: the type's parameters
            k for k, d in MODELS.items() if set(d["params"]) == set(params))
        model = ModelSpec.of({"name": row["distribution"], "type": kind, **params})
    return Configuration(row["backbone"], lc, transform, model, row["metric"])


def configuration_from(source: str, rank: int | None = None, label: str | None = None) -> Applied:
    """A configuration from `RESULTS_DIR[#rank]`, a results JSON `[#rank]` (with `rank` or
    `label` as arguments too; default #1), or a spec string."""
    path, hash_, given = source.rpartition("#") if "#" in source else (source, "", "")
    if hash_ and not os.path.exists(path):
        path, given = source, ""
    if not os.path.exists(path):
        if rank is not None or label is not None:
            raise UsageError(f"{source!r} is not a results folder or JSON; rank and label select "
                             "a row of one")
        return Applied(parse_spec(source), {}, source)
    if given:
        if not given.isdigit() or int(given) < 1:
            raise UsageError(f"{source!r}: #{given} is not a rank; write RESULTS_DIR#1 for the top row")
        rank = int(given)
    file = _results_json(path)
    try:
        with open(file) as f:
            results = json.load(f)
        rows, settings = results["results"], results.get("config", {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{file!r} is not a results JSON of this tool ({exc}); give a results "
                         "folder, its results_*.json, or a spec string") from None
    if label is not None:
        match = [r for r in rows if r.get("label") == label]
        if not match:
            raise UsageError(f"no row labelled {label!r} in {file}")
        row = match[0]
    else:
        rank = rank or 1
        match = [r for r in rows if r.get("rank") == rank]
        if not match:
            top = max((r["rank"] for r in rows if r.get("rank")), default=0)
            raise UsageError(f"{file} has no row ranked #{rank} (ranks 1..{top})")
        row = match[0]
    if row.get("status") != SCORED:
        log.warning("%s was %s in that run: %s", row.get("label"), row.get("status"), row.get("reason"))
    conf = configuration_of_row(row)
    return Applied(conf, {k: settings[k] for k in REPRODUCED if k in settings},
                   f"{file}#{row.get('rank') or row.get('label')}")


# ---------------------------------------------------------------------- scoring folders

def _records(folder: str, what: str) -> list:
    records = folder_records(folder)
    if len(records) < 2:
        raise UsageError(f"{what} {folder!r} has {len(records)} readable image(s); a score needs at "
                         "least two")
    return records


def apply(cfg: dict, conf: Configuration, ref: str, evals: list, progress: bool = True):
    """([AppliedScore] of each EVAL folder against the REF folder under `conf`, the weights'
    Provenance), with cfg's settings (cache, weights, working size, bootstrap)."""
    from backbones import resolve_weights
    spec = spec_of(conf.backbone)
    ref_records = _records(ref, "REF")
    paired = dm.METRICS[conf.metric]["paired"]
    prov = resolve_weights(conf.backbone, cfg["weights"], cfg["seed"])
    if prov.random_init:
        log.warning("%s has RANDOM-INIT weights here: the scores are not the ranked metric's", conf.backbone)
    out = []
    for folder in evals:
        ev = _records(folder, "EVAL")
        if paired and len(ev) != len(ref_records):
            raise UsageError(f"{conf.metric} compares each EVAL image with the REF image at the same "
                             f"sorted position: {folder!r} has {len(ev)} images, REF {len(ref_records)}")
        units = [Unit("eval", CLEAN, 0, None, None, tuple(ref_records))] if paired else []
        units.append(Unit("eval", APPLY_KEY[0], APPLY_KEY[1], None, None, tuple(ev)))
        ref_units = reference_units(ref_records)
        caches = open_caches(cfg, conf.backbone, list(conf.layer_config.resolved), prov,
                             ref_records, list(ev) + (list(ref_records) if paired else []))
        ensure_cached(cfg, conf.backbone, caches, ref_units + units, prov, progress)
        assembler = FeatureAssembler(caches, ref_units, units, cfg["image_size"] or spec.input_size,
                                     spec.patch, cfg["max_representation_bytes"],
                                     cfg["gram_precision"], cfg["device"])
        (r,) = score_group([conf], lambda: assembler.space(conf.layer_config, conf.transform), {},
                           cfg, cfg["seed"])
        if r.status != SCORED:
            raise RuntimeFailure(f"{conf.label} cannot score {folder!r}: {r.reason}")
        out.append(_with_interval(r, folder, len(ev), cfg))
    return out, prov


def _with_interval(r, folder: str, n: int, cfg: dict) -> AppliedScore:
    state = r.prepared[APPLY_KEY]
    score = float(r.scorer.score_prepared(state))
    b, conf_level = cfg["bootstrap"]["n_resamples"], cfg["bootstrap"]["confidence"]
    ci = None
    if b > 0:
        rng = np.random.default_rng([cfg["seed"], 0xA991])
        vals = np.array([r.scorer.score_prepared(state, rng.integers(0, n, n)) for _ in range(b)])
        tail = (1 - conf_level) / 2 * 100
        ci = [float(np.percentile(vals, tail)), float(np.percentile(vals, 100 - tail))]
    return AppliedScore(folder, n, r.conf.metric, score, ci, b, conf_level)


def write_scores(path: str, scores: list, applied: Applied, weights: str) -> None:
    """The scores as a small CSV (one row per EVAL folder)."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["eval", "n_images", "metric", "score", "ci_low", "ci_high", "n_resamples",
                    "confidence", "configuration", "source", "weights"])
        for s in scores:
            lo, hi = s.ci if s.ci else ("", "")
            w.writerow([s.eval, s.n_images, s.metric, repr(s.score), lo, hi, s.n_resamples,
                        s.confidence, spec_string(applied.conf), applied.source, weights])
    os.replace(tmp, path)


def command(cfg: dict, args: list, out: str | None, given=(), progress: bool = True) -> list[str]:
    """`--apply CONFIG REF EVAL [EVAL ...] [--out FILE.csv]`: the lines main.py prints. The
    settings of a results row replace cfg's, but for those in `given` (set by a flag)."""
    if len(args) < 3:
        raise UsageError(f"--apply needs CONFIG REF EVAL [EVAL ...]; got {len(args)} argument(s) "
                         "(README: Using a configuration as a metric)")
    if out is not None:
        check_output_file(out, "--out", ".csv")
    applied = configuration_from(args[0])
    cfg = {**cfg, **{k: v for k, v in applied.settings.items() if k not in given}}
    validate_config(cfg)
    scores, prov = apply(cfg, applied.conf, args[1], args[2:], progress)
    lines = [f"configuration {spec_string(applied.conf)} ({applied.source}); weights {prov.label}"]
    for s in scores:
        ci = f"  [{s.confidence:.0%} CI {s.ci[0]:.6g}, {s.ci[1]:.6g}]" if s.ci else ""
        lines.append(f"{s.eval}: {s.metric} = {s.score:.6g}{ci} over {s.n_images} images")
    if out:
        write_scores(out, scores, applied, prov.label)
        lines.append(f"wrote {out}")
    return lines

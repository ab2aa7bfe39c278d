"""A configuration, named: the spec-string grammar and the rows of a finished run.

A configuration (evaluation.Configuration: backbone, layers, aggregate, transform, model,
metric) comes from a finished run or is written by hand:

* `configuration_from("results/medium_…", rank=1)` (or `label=…`): a row of a run's results
  JSON, with the settings its numbers depend on (working size, input size, seed, weights,
  storage and arithmetic precision, KID/CMMD parameters, the Gram budget);
* a spec string, `BACKBONE:LAYERS/AGGREGATE/TRANSFORM/[MODEL/]METRIC`, e.g.
  `resnet50:7+8/concat/gram,pca=64/gaussian/mahalanobis` or `dinov2_vitb14:11/concat/gap/cmmd`
  (docs/metric.md). `spec_string(conf)` writes one; the two round-trip.
"""

import json
import logging
import os
import re
from dataclasses import dataclass


from featrank import distance_metrics as dm
from featrank.distribution_modeling import MODELS, ModelError, ModelSpec
from featrank.errors import UsageError, UserError
from featrank.evaluation import SCORED, Configuration
from featrank.configurations import configuration_of_row, pair_allowed
from featrank.feature_spaces import AGGREGATIONS, VIT_POOLS, Transform, TransformError
from featrank.layer_registry import LayerConfig
from featrank.report import results_json
from featrank.run_plan import (layers_of, reproduced, spec_of)


log = logging.getLogger("iqm")

SPEC_FORM = "BACKBONE:LAYERS/AGGREGATE/TRANSFORM/[MODEL/]METRIC"
TRANSFORM_FLAGS = {"whiten": "whiten", "standardize": "standardize", "l2": "l2_normalize"}


@dataclass(frozen=True)
class Applied:
    """A configuration and the run settings it was ranked under ({} for a spec string)."""
    conf: Configuration
    settings: dict
    source: str



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
    if any(not t for t in tokens):
        raise _bad(spec, f"transform {text!r} has an empty part between commas")
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
    if any(not t for t in rest):
        raise _bad(spec, f"model {text!r} has an empty part between commas")
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
    """The Configuration a spec string names; a bad part is a UsageError naming it and the
    choices. Every part, and every layer of BACKBONE:LAYERS, must be given (no empty one)."""
    parts = spec.split("/")
    if any(not p.strip() for p in parts):
        raise _bad(spec, "a part between two '/' is empty")
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
    if not sep or not backbone:
        raise _bad(spec, "it must start with BACKBONE:LAYERS (indices or module paths joined by +)")
    spec_of(backbone)
    if any(not x.strip() for x in layers.split("+")):
        raise _bad(spec, f"layers {layers!r} have an empty part: name each layer (an index or a module "
                         "path), joined by +")
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
        found = results_json(path)
        if found is None:
            raise UsageError(f"{path!r} holds no results_*.json; give a results folder of a finished "
                             "run, its JSON, or a spec string")
        return found
    return path


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
        if not re.fullmatch(r"[0-9]+", given) or int(given) < 1:
            raise UsageError(f"{source!r}: #{given} is not a rank; write RESULTS_DIR#1 for the top row")
        rank = int(given)
    file = _results_json(path)
    try:
        with open(file, encoding="utf-8") as f:
            results = json.load(f)
        rows, settings = results["results"], results.get("config", {})
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows) \
                or not isinstance(settings, dict):
            raise TypeError("its results are not a list of rows")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{file!r} is not a results JSON of this tool ({type(exc).__name__}: "
                         f"{str(exc)[:80]}); give a results folder, its results_*.json, or a spec "
                         "string") from None
    if label is not None:
        match = [r for r in rows if r.get("label") == label]
        if not match:
            raise UsageError(f"no row labelled {label!r} in {file}")
        row = match[0]
    else:
        rank = rank or 1
        match = [r for r in rows if r.get("rank") == rank]
        if not match:
            top = max((r["rank"] for r in rows if isinstance(r.get("rank"), int)), default=0)
            raise UsageError(f"{file} has no row ranked #{rank} (ranks 1..{top})")
        row = match[0]
    try:
        conf = configuration_of_row(row)
    except (KeyError, TypeError, ValueError, AttributeError, UserError) as exc:
        raise UsageError(f"{file}: row #{row.get('rank')} is not a configuration of this tool "
                         f"({type(exc).__name__}: {str(exc)[:80]}); give a results JSON this tool "
                         "wrote, or a spec string") from None
    if row.get("status") != SCORED:
        log.warning("%s was %s in that run: %s", row.get("label"), row.get("status"), row.get("reason"))
    return Applied(conf, reproduced(settings),
                   f"{file}#{row.get('rank') or row.get('label')}")



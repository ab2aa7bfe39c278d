"""Use the winner: any ranked configuration as a metric on your own folders.

A configuration (evaluation.Configuration: backbone, layers, aggregate, transform, model,
metric) comes from a finished run or is written by hand:

* `configuration_from("results/medium_…", rank=1)` (or `label=…`): a row of a run's results
  JSON, with the settings its numbers depend on (working size, input size, seed, weights,
  storage and arithmetic precision, KID/CMMD parameters, the Gram budget);
* a spec string, `BACKBONE:LAYERS/AGGREGATE/TRANSFORM/[MODEL/]METRIC`, e.g.
  `resnet50:7+8/concat/gram,pca=64/gaussian/mahalanobis` or `dinov2_vitb14:11/concat/gap/cmmd`
  (docs/metric.md). `spec_string(conf)` writes one; the two
  round-trip.

`apply(cfg, applied, ref, evals)` scores each EVAL folder against the REF folder exactly as the
sweep scores an evaluation set against its reference set: the images are read at the working
size, extracted through the cache (a folder already extracted is a CACHE HIT), and the same
feature space, model and metric score them. Paired metrics compare each EVAL image with the REF
image at the same sorted position. The interval is a percentile bootstrap over EVAL's images.
A REF saved by `save_reference` (--save-reference) holds REF's rows and the record of what they
were made for; `--generator MODULE:FUNCTION --n N` scores generated images without writing them.

`FeatureMetric` is the same metric in a training loop (update / compute / reset), on the
images' device, equal to --apply on the same images, and correct under torch.distributed.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass

import numpy as np

from featrank import distance_metrics as dm
from featrank.cache_fill import ensure_cached, feature_assembler, open_caches
from featrank.dataset import folder_records
from featrank.distribution_modeling import MODELS, ModelError, ModelSpec
from featrank.errors import RuntimeFailure, UsageError, UserError
from featrank.evaluation import (SCORED, Configuration, configuration_of_row, pair_allowed,
                        score_group)
from featrank.feature_cache import CLEAN, Unit, reference_units
from featrank.feature_spaces import AGGREGATIONS, VIT_POOLS, Transform, TransformError
from featrank.layer_registry import LayerConfig
from featrank.report import results_json
from featrank.run_plan import (Stages, applied_stages, check_output_file, check_writable, layers_of,
                      reproduced, spec_of)

log = logging.getLogger("iqm")

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


# ---------------------------------------------------------------------- scoring folders

def _records(folder: str, what: str) -> list:
    records = folder_records(folder)
    if len(records) < 2:
        raise UsageError(f"{what} {folder!r} has {len(records)} readable image(s); a score needs at "
                         "least two")
    return records


def reference_record(stages: Stages, conf: Configuration, prov) -> dict:
    """What a saved reference was made for: the configuration, the settings and the weights."""
    return {"configuration": spec_string(conf), "weights": prov.identity(),
            "settings": reproduced(stages.config(), leave_out=("batch_size",))}


def save_reference(stages: Stages, applied: Applied, ref: str, out: str) -> tuple[int, object]:
    """`--save-reference CONFIG REF OUT.npz`: REF's rows under the configuration (before the
    transform's post-processing, which is fitted on them when scoring) and the record of what
    they were made for. Returns (images, Provenance)."""
    from featrank.backbones import resolve_weights
    check_output_file(out, "--save-reference output", ".npz")
    prov = resolve_weights(applied.conf.backbone, stages.extraction.weights, stages.extraction.seed)
    m = FeatureMetric(Applied(applied.conf, stages.config(), applied.source), reference=ref,
                      keep_rows=True)
    tmp = out[:-4] + ".tmp.npz"
    np.savez_compressed(tmp, rows=m.reference,
                        record=np.array(json.dumps(reference_record(stages, applied.conf, prov),
                                                   sort_keys=True)))
    os.replace(tmp, out)
    return len(m.reference), prov


def load_reference(path: str, stages: Stages, conf: Configuration, prov) -> np.ndarray:
    """The rows of a --save-reference file, refused (UsageError) unless its record is this
    configuration's, with these settings and weights."""
    how = "save one with python main.py --save-reference CONFIG REF OUT.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            rows, record = np.asarray(f["rows"]), json.loads(str(f["record"]))
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        # numpy's own text may advise allow_pickle=True, which would run the file's code: never
        raise UsageError(f"{path!r} is not a reference saved by --save-reference "
                         f"({type(exc).__name__}); {how}") from None
    if not isinstance(record, dict):
        raise UsageError(f"{path!r}: its record is a {type(record).__name__}, not the record "
                         f"--save-reference writes; {how}")
    if rows.dtype.kind != "f" or rows.ndim != 2 or len(rows) < 2 or rows.shape[1] < 1:
        raise UsageError(f"{path!r}: its rows are {rows.dtype} {rows.shape}, not real feature rows "
                         f"(n >= 2, d) of floats; {how}")
    if not np.isfinite(rows).all():
        raise UsageError(f"{path!r}: its rows hold NaN or inf; {how}")
    want = json.loads(json.dumps(reference_record(stages, conf, prov), sort_keys=True))
    for key in ("configuration", "weights", "settings"):
        if record.get(key) != want[key]:
            raise UsageError(f"{path!r} was saved for {key} {record.get(key)!r}, not {want[key]!r}; save "
                             f"it again: python main.py --save-reference '{want['configuration']}' REF {path}")
    return dm.check_features(rows, path)


def apply(stages: Stages, conf: Configuration, ref: str, evals: list, progress: bool = True):
    """([AppliedScore] of each EVAL folder against the REF folder under `conf`, the weights'
    Provenance), with the settings `stages` (cache, weights, working size, bootstrap)."""
    ext = stages.extraction
    from featrank.backbones import resolve_weights
    from featrank.dataset import DatasetError
    saved = ref.endswith(".npz")
    ref_records = None if saved else _records(ref, "REF")      # bad folders fail before any work
    for folder in evals:
        if not os.path.isdir(folder):
            raise DatasetError(f"EVAL {shown(folder)!r} is not a folder; pass folders of images")
    if not saved:              # the images go through the cache: it must take them
        check_writable(ext.cache_dir, "--cache-dir")
    prov = resolve_weights(conf.backbone, ext.weights, ext.seed)
    rows = load_reference(ref, stages, conf, prov) if saved else None   # a bad file: before any word
    if prov.random_init:
        log.warning("%s has RANDOM-INIT weights here: the scores are not the ranked metric's", conf.backbone)
    if saved:
        return _apply_saved(stages, conf, rows, evals), prov
    paired = dm.METRICS[conf.metric]["paired"]
    out = []
    for folder in evals:
        ev = _records(folder, "EVAL")
        if paired and len(ev) != len(ref_records):
            raise UsageError(f"{conf.metric} compares each EVAL image with the REF image at the same "
                             f"sorted position: {folder!r} has {len(ev)} images, REF {len(ref_records)}")
        units = [Unit("eval", CLEAN, 0, None, None, tuple(ref_records))] if paired else []
        units.append(Unit("eval", APPLY_KEY[0], APPLY_KEY[1], None, None, tuple(ev)))
        ref_units = reference_units(ref_records)
        caches = open_caches(ext, conf.backbone, list(conf.layer_config.resolved), prov,
                             ref_records, list(ev) + (list(ref_records) if paired else []))
        ensure_cached(ext, conf.backbone, caches, ref_units + units, prov, progress)
        assembler = feature_assembler(stages.spaces, conf.backbone, caches, ref_units, units)
        sc = stages.scoring
        (r,) = score_group([conf], lambda: assembler.space(conf.layer_config, conf.transform), {},
                           sc.seed, kid=sc.kid, cmmd=sc.cmmd)
        if r.status != SCORED:
            raise RuntimeFailure(f"{conf.label} cannot score {folder!r}: {r.reason}")
        out.append(_with_interval(r, folder, len(ev), stages))
    return out, prov


def _apply_saved(stages: Stages, conf: Configuration, rows: np.ndarray, evals: list) -> list:
    """--apply with a saved reference: each EVAL folder through FeatureMetric (no cache)."""
    out = []
    for folder in evals:
        records = _records(folder, "EVAL")
        m = FeatureMetric(Applied(conf, stages.config(), ""), reference_features=rows,
                          keep_rows=True)
        ext = stages.extraction
        for batch in _image_batches(records, ext.working_size, ext.batch_size):
            m.update(batch)
        out.append(_with_interval(m.result(), folder, len(records), stages))
    return out


def _image_batches(records, working_size: int, size: int):
    """(B, 3, S, S) uint8 tensors of `records` read at the working size, `size` at a time."""
    import torch
    from featrank.dataset import load_rgb
    for s in range(0, len(records), size):
        images = np.stack([load_rgb(r.source, working_size) for r in records[s:s + size]])
        yield torch.from_numpy(images).permute(0, 3, 1, 2)


def _with_interval(r, folder: str, n: int, stages: Stages) -> AppliedScore:
    state = r.prepared[APPLY_KEY]
    score = float(r.scorer.score_prepared(state))
    b, conf_level = stages.ranking.n_resamples, stages.ranking.confidence
    ci = None
    if b > 0:
        rng = np.random.default_rng([stages.scoring.seed, 0xA991])
        vals = np.array([r.scorer.score_prepared(state, rng.integers(0, n, n)) for _ in range(b)])
        tail = (1 - conf_level) / 2 * 100
        ci = [float(np.percentile(vals, tail)), float(np.percentile(vals, 100 - tail))]
    return AppliedScore(folder, n, r.conf.metric, score, ci, b, conf_level)


def shown(path: str) -> str:
    """A path as text that any UTF-8 output takes: bytes of a name that is not UTF-8 (kept by
    Python as surrogates) are written as backslash escapes."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


def write_scores(path: str, scores: list, applied: Applied, weights: str) -> None:
    """The scores as a small CSV (one row per EVAL folder; names shown as `shown` writes them),
    written to a temporary file renamed into place; nothing is left behind on a failure."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["eval", "n_images", "metric", "score", "ci_low", "ci_high", "n_resamples",
                        "confidence", "configuration", "source", "weights"])
            for s in scores:
                lo, hi = s.ci if s.ci else ("", "")
                w.writerow([shown(s.eval), s.n_images, s.metric, repr(s.score), lo, hi, s.n_resamples,
                            s.confidence, spec_string(applied.conf), shown(applied.source), weights])
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_generator(spec: str):
    """`module:function` -> the function. MODULE is the user's: a `MODULE.py` (or package folder;
    dots are folders) in the current folder, else an installed module; sys.path is not edited."""
    import importlib
    import importlib.util
    import sys
    name, sep, attr = spec.partition(":")
    if not sep or not name or not attr:
        raise UsageError(f"--generator {spec!r} must be MODULE:FUNCTION, e.g. my_gan:sample")
    here = os.path.join(os.getcwd(), *name.split("."))
    path = next((p for p in (here + ".py", os.path.join(here, "__init__.py")) if os.path.isfile(p)), None)
    try:
        if path is None:
            module = importlib.import_module(name)
        else:
            found = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(found)
            sys.modules[name] = module
            found.loader.exec_module(module)
        fn = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--generator {spec!r}: {exc}; give MODULE:FUNCTION, MODULE.py in the "
                         "current folder or an installed module") from None
    if not callable(fn):
        raise UsageError(f"--generator {spec!r} is not a function")
    return fn


def generated_score(stages: Stages, applied: Applied, ref: str, generator: str,
                    n: int) -> AppliedScore:
    """The score of `n` images from `generator(batch_size)` (a function returning a batch of
    (B, 3, H, W) images, uint8 or float in [0, 1], as clean-fid's `gen=`) against REF (a
    folder or a saved reference), with its bootstrap interval, through FeatureMetric: nothing is written to disk."""
    if n is None or n < 2:
        raise UsageError(f"--generator needs --n N (at least 2 images); got {n}")
    fn = load_generator(generator)
    given = Applied(applied.conf, stages.config(), applied.source)
    ext = stages.extraction
    if ref.endswith(".npz"):
        from featrank.backbones import resolve_weights
        prov = resolve_weights(applied.conf.backbone, ext.weights, ext.seed)
        m = FeatureMetric(given, reference_features=load_reference(ref, stages, applied.conf, prov),
                          keep_rows=True)
    else:
        m = FeatureMetric(given, reference=ref, keep_rows=True)
    got = 0
    while got < n:
        out = fn(min(ext.batch_size, n - got))
        if out is None or isinstance(out, (list, tuple, dict, str)) or hasattr(out, "__next__"):
            raise UsageError(f"--generator {generator!r} returned {type(out).__name__}; it must return "
                             "one batch of (B, 3, H, W) images (a tensor or array) per call")
        batch = check_images(out, f"--generator {generator!r}")[: n - got]
        m.update(batch)
        got += len(batch)
    return _with_interval(m.result(), f"{generator} ({n} images)", n, stages)


def command(cfg: dict, args: list, out: str | None, given=(), progress: bool = True,
            generator: str | None = None, n: int | None = None) -> list[str]:
    """`--apply CONFIG REF EVAL [EVAL ...] [--out FILE.csv]`, or `--apply CONFIG REF --generator
    MODULE:FUNCTION --n N`: the lines main.py prints. The settings of a results row replace
    cfg's, but for those in `given` (set by a flag)."""
    if len(args) < (2 if generator else 3):
        raise UsageError(f"--apply needs CONFIG REF EVAL [EVAL ...] (or CONFIG REF with --generator); "
                         f"got {len(args)} argument(s) (docs/metric.md)")
    if generator and len(args) > 2:
        raise UsageError(f"--apply CONFIG REF with --generator scores generated images: the EVAL "
                         f"folder(s) {', '.join(map(shown, args[2:]))} would do nothing; drop them or "
                         "drop --generator")
    if n is not None and not generator:
        raise UsageError("--n counts generated images: give --generator MODULE:FUNCTION with it, "
                         "or drop --n")
    if out is not None:
        check_output_file(out, "--out", ".csv")
    applied, stages = _with_settings(args[0], cfg, given)
    if generator:
        from featrank.backbones import resolve_weights
        scores = [generated_score(stages, applied, args[1], generator, n)]
        ext = stages.extraction
        prov = resolve_weights(applied.conf.backbone, ext.weights, ext.seed)
    else:
        scores, prov = apply(stages, applied.conf, args[1], args[2:], progress)
    lines = [f"configuration {spec_string(applied.conf)} ({shown(applied.source)}); weights {prov.label}"]
    for s in scores:
        ci = f"  [{s.confidence:.0%} CI {s.ci[0]:.6g}, {s.ci[1]:.6g}]" if s.ci else ""
        lines.append(f"{shown(s.eval)}: {s.metric} = {s.score:.6g}{ci} over {s.n_images} images")
    if out:
        try:
            write_scores(out, scores, applied, prov.label)
        except OSError as exc:                 # the scores are not lost: they go to stdout
            print("\n".join(lines))
            raise RuntimeFailure(f"--out {shown(out)}: {exc.strerror or exc}; the scores are printed "
                                 "above") from None
        lines.append(f"wrote {shown(out)}")
    return lines


# ---------------------------------------------------------------------- in a training loop

STATE_WARN_BYTES = 1 << 30     # a FeatureMetric holding more than this says so, once


def check_images(images, where: str):
    """`images` as a float (B, 3, H, W) tensor in [0, 1] on their device, checked once where they
    arrive: uint8 (0-255) or floating point in [0, 1], finite, of that shape, on a device that
    holds data. Anything else (wider or signed integers, bool, complex, floats outside [0, 1]
    such as 0-255 values, NaN, another shape, the meta device) is a UsageError naming what was
    given and how to convert it; nothing is kept of a refused batch."""
    import torch
    try:
        x = torch.as_tensor(images)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{where}: a {type(images).__name__} is not a batch of images "
                         f"({type(exc).__name__}); give a (B, 3, H, W) tensor or array, uint8 or "
                         "float in [0, 1]") from None
    if x.device.type == "meta":
        raise UsageError(f"{where}: a tensor on the 'meta' device holds no pixels; give images on "
                         "the CPU or a GPU")
    if x.ndim != 4 or x.shape[1] != 3 or 0 in tuple(x.shape):
        raise UsageError(f"{where} takes (B, 3, H, W) images; got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div(255.0)
    if not x.is_floating_point():
        raise UsageError(f"{where}: {x.dtype} images are not read: give uint8 (0-255) or float in "
                         f"[0, 1] (e.g. x.to(torch.uint8) for 0-255 integers, x.float() / 255)")
    if not bool(torch.isfinite(x).all()):
        raise UsageError(f"{where}: the images hold NaN or inf pixels; give finite values in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise UsageError(f"{where}: float pixels must lie in [0, 1]; these run from {lo:g} to "
                         f"{hi:g} (divide 0-255 values by 255, or give uint8)")
    return x.float()


class FeatureMetric:
    """A configuration as a metric inside a training loop, in the style of torchmetrics:

        m = FeatureMetric("results/medium_20261201_120000#1", reference="real_images/")
        for batch in loader:
            m.update(batch)            # (B, 3, H, W) uint8, or float in [0, 1]
        score = m.compute()
        m.reset()

    `config` is what --apply takes (a results folder[#rank], its JSON, a spec string) or an
    Applied. `reference` is a folder (read at the working size, as --apply reads it) or a
    (N, 3, H, W) tensor; `reference_features` gives the reference rows directly. The backbone
    runs on the images' device in batches of config['batch_size'] taken from the stream of
    images, whatever sizes update() receives (CPU convolutions round differently in other
    batch compositions; so the extraction's batches are reproduced); its layer outputs are rounded to
    the cache's storage dtype and pooled (GAP) or turned into Gram rows by the sweep's own
    functions, so the score equals --apply's on the same images. Only the rows are kept, or, for
    FID on a space without post-processing, the running mean and scatter matrix (O(d^2) for any
    number of images). The cache is never written. Under torch.distributed, compute() gathers
    every rank's rows (or merges their sums) in rank order: each rank gets the score of all the
    images. `settings` overrides the run's settings (run_plan.default_config keys)."""

    def __init__(self, config, reference=None, *, reference_features=None,
                 settings: dict | None = None, keep_rows: bool = False):
        from featrank.backbones import build_backbone
        from featrank.run_plan import default_config
        self.applied = config if isinstance(config, Applied) else configuration_from(config)
        self.conf = self.applied.conf
        self.stages = applied_stages(default_config(),
                                     {**self.applied.settings, **(settings or {})})
        ext = self.stages.extraction
        self.spec = spec_of(self.conf.backbone)
        self.backbone = build_backbone(self.conf.backbone, ext.weights, ext.seed, ext.image_size,
                                       allow_download=False)
        self.batch_size = ext.batch_size
        t, metric = self.conf.transform, self.conf.metric
        self.running = not keep_rows and metric == "fid" and not (
            t.use_gram or t.use_pca or t.standardize or t.l2_normalize)
        if reference_features is not None:
            self.reference = dm.check_features(reference_features, "reference_features")
        elif reference is not None:
            self.reference = self._reference_rows(reference)
        else:
            raise UsageError("FeatureMetric needs a reference: a folder, a tensor of images, or "
                             "reference_features")
        self.reset()

    # -- state
    def reset(self) -> None:
        """Forget every image given to update()."""
        self._rows, self._n, self._mean, self._scatter, self._pending = [], 0, None, None, []
        self._warned = False

    def state_bytes(self) -> int:
        """Bytes held for the images given so far (rows, or mean and scatter)."""
        pending = sum(x.nelement() * x.element_size() for x in self._pending)
        rows = sum(r.nbytes for r in self._rows)
        if self.running and self._mean is not None:
            return pending + rows + self._mean.nbytes + self._scatter.nbytes
        return pending + rows

    def update(self, images=None, *, features=None) -> None:
        """Add a batch: (B, 3, H, W) images (uint8, or float in [0, 1]), or feature rows (B, d) of
        the reference's width. A refused batch (check_images) leaves the metric as it was."""
        if features is not None:
            rows = dm.check_features(features, "features", 1)
            self._check_width(rows.shape[1], "features")
            self._add(rows)
            return
        self._pending.extend(check_images(images, "FeatureMetric.update"))
        while len(self._pending) >= self.batch_size:
            self._flush(self.batch_size)

    def _check_width(self, width: int, what: str) -> None:
        if width != self.reference.shape[1]:
            raise UsageError(f"FeatureMetric.update: {what} of width {width}, but the reference rows "
                             f"(and every row so far) have {self.reference.shape[1]}: give rows of "
                             f"{self.conf.label}'s space, or images")

    def _flush(self, n: int) -> None:
        import torch
        batch, self._pending = torch.stack(self._pending[:n]), self._pending[n:]
        self._add(self.features(batch))

    def _add(self, rows: np.ndarray) -> None:
        self._rows.append(rows)
        if not self._warned and self.state_bytes() > STATE_WARN_BYTES:
            self._warned = True
            log.warning("FeatureMetric keeps every image's rows for %s (%.2f GiB now, %d dims per "
                        "image; only FID without post-processing keeps running moments): call "
                        "compute() and reset() between evaluations", self.conf.label,
                        self.state_bytes() / 2**30, rows.shape[1])
        # FID: rows are merged into the mean and scatter once as many as their dimension wait
        # (so the state stays under twice d + d^2 numbers, and merging costs O(d^2) per d rows)
        if self.running and sum(len(r) for r in self._rows) >= rows.shape[1]:
            self._merge_rows()

    def _merge_rows(self) -> None:
        if self._rows:
            rows, self._rows = np.concatenate(self._rows), []
            self._n, self._mean, self._scatter = _merge(self._n, self._mean, self._scatter,
                                                        *_moments(rows))

    def compute(self) -> float:
        """The score of every image given so far (on every rank) against the reference."""
        if self._pending:
            self._flush(len(self._pending))
        if self.running:
            self._merge_rows()
            n, mean, scatter = _gather_moments(self._n, self._mean, self._scatter)
            if n < 2:
                raise UsageError(f"FeatureMetric.compute needs at least two images; got {n}")
            mu_r, sigma_r = dm.gaussian_stats(self.reference)
            return float(dm.frechet_distance(mu_r, sigma_r, mean, scatter / (n - 1)))
        r = self.result()
        return float(r.scorer.score_prepared(r.prepared[APPLY_KEY]))

    def result(self):
        """The evaluation.ConfigResult of the rows given so far (not for the running FID): its
        scorer and prepared state also give resampled scores."""
        if self._pending:
            self._flush(len(self._pending))
        rows = _gather_rows(np.concatenate(self._rows) if self._rows else np.empty((0, 0)))
        if len(rows) < 1:
            raise UsageError("FeatureMetric.compute: no images were given to update()")
        from featrank.feature_spaces import CLEAN_KEY, FeatureSpace, postprocess
        evals = {APPLY_KEY: rows}
        if dm.METRICS[self.conf.metric]["paired"]:
            if len(rows) != len(self.reference):
                raise UsageError(f"{self.conf.metric} pairs image i with reference image i: "
                                 f"{len(rows)} images for {len(self.reference)} references")
            evals[CLEAN_KEY] = self.reference
        space = FeatureSpace.rows(self.reference, evals)
        (r,) = score_group([self.conf], lambda: postprocess(space, self.conf.transform), {},
                           self.stages.scoring.seed, kid=self.stages.scoring.kid,
                           cmmd=self.stages.scoring.cmmd)
        if r.status != SCORED:
            raise RuntimeFailure(f"{self.conf.label} cannot score these images: {r.reason}")
        return r

    # -- features
    def features(self, images) -> np.ndarray:
        """The configuration's rows (n, d) of (B, 3, H, W) images (uint8, or float in [0, 1]),
        before post-processing, computed in batches of `batch_size` as given."""
        import torch
        from featrank.feature_extraction import capture_layers, resize, run_captured
        from featrank import gram_engine as ge
        from featrank import representations as rp
        from featrank.feature_extraction import cpu_threads
        # a contiguous NCHW batch, as the extraction's DataLoader collates one: convolutions on
        # a channels-last view round differently
        x = check_images(images, "FeatureMetric.features").contiguous()
        module = self.backbone.module.to(x.device)
        threads = torch.get_num_threads()
        if x.device.type == "cpu":      # the extraction's thread count: CPU sums depend on it
            torch.set_num_threads(cpu_threads(self.stages.extraction.extraction_threads))
        size = self.backbone.input_size
        mean = torch.tensor(self.spec.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std, device=x.device).view(1, 3, 1, 1)
        store_dtype = getattr(np, self.stages.extraction.cache_dtype)
        lc, t = self.conf.layer_config, self.conf.transform
        per_path = {p: [] for p in lc.paths}
        try:
            with capture_layers(module, lc.paths) as store, torch.inference_mode():
                for chunk in x.split(self.batch_size):
                    xin = ((resize(chunk, size, self.spec.interpolation, self.spec.antialias) - mean)
                           / std).contiguous()
                    for p, act in run_captured(self.backbone.forward, xin, store).items():
                        if p in per_path:
                            per_path[p].append(act.float().cpu().numpy().astype(store_dtype))
        finally:
            torch.set_num_threads(threads)
        parts = []
        for p in lc.paths:
            act = np.ascontiguousarray(np.concatenate(per_path[p]))
            if t.use_gram:
                parts.append(ge.gram_rows(act, self.stages.spaces.gram_precision, "cpu"))
            else:
                prefix = rp.prefix_tokens(act.shape[1:], size, self.spec.patch)
                parts.append(rp.gap(act, t.vit_pool, prefix))
        return rp.aggregate(parts, lc.aggregate)

    def _reference_rows(self, reference) -> np.ndarray:
        if isinstance(reference, (str, os.PathLike)):
            from featrank.feature_cache import CHUNK_SIZE
            records = _records(str(reference), "reference")
            # the cache's chunks, each in batches of batch_size (self.features splits them)
            return np.concatenate([self.features(chunk) for chunk in _image_batches(
                records, self.stages.extraction.working_size, CHUNK_SIZE)])
        return self.features(reference)


def _moments(rows: np.ndarray):
    """(n, mean, scatter) of rows: scatter = sum of (x - mean)(x - mean)^T."""
    mean = rows.mean(axis=0)
    c = rows - mean
    return len(rows), mean, c.T @ c


def _merge(n_a, mean_a, scatter_a, n_b, mean_b, scatter_b):
    """Chan et al.'s pairwise update: the moments of two sets joined (exact, one pass)."""
    if n_a == 0:
        return n_b, mean_b, scatter_b
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / n), scatter_a + scatter_b + np.outer(delta, delta) * (n_a * n_b / n)


def _distributed():
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def _comm_device(dist):
    import torch
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"


def _gather_rows(rows: np.ndarray) -> np.ndarray:
    """Every rank's rows, in rank order (this rank's alone outside torch.distributed)."""
    dist = _distributed()
    if dist is None:
        return rows
    import torch
    dev = _comm_device(dist)
    world = dist.get_world_size()
    shape = torch.tensor([rows.shape[0], rows.shape[1] if rows.ndim == 2 else 0], device=dev)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    n_max, d = max(int(s[0]) for s in shapes), max(int(s[1]) for s in shapes)
    padded = torch.zeros((n_max, d), dtype=torch.float64, device=dev)
    if len(rows):
        padded[:len(rows)] = torch.as_tensor(rows, dtype=torch.float64, device=dev)
    out = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return np.concatenate([o[:int(s[0])].cpu().numpy() for o, s in zip(out, shapes)])


def _gather_moments(n, mean, scatter):
    """Every rank's (n, mean, scatter) merged in rank order."""
    dist = _distributed()
    if dist is None:
        return n, mean, scatter
    import torch
    dev = _comm_device(dist)
    world = dist.get_world_size()
    d = torch.tensor([0 if mean is None else mean.size], device=dev)
    ds = [torch.zeros_like(d) for _ in range(world)]
    dist.all_gather(ds, d)
    dim = max(int(x) for x in ds)
    flat = torch.zeros(1 + dim + dim * dim, dtype=torch.float64, device=dev)
    if n:
        flat[0] = n
        flat[1:1 + dim] = torch.as_tensor(mean, dtype=torch.float64, device=dev)
        flat[1 + dim:] = torch.as_tensor(scatter, dtype=torch.float64, device=dev).reshape(-1)
    out = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(out, flat)
    total = (0, None, None)
    for o in out:
        o = o.cpu().numpy()
        if o[0]:
            total = _merge(*total, int(o[0]), o[1:1 + dim], o[1 + dim:].reshape(dim, dim))
    return total


def _with_settings(config: str, cfg: dict, given) -> tuple[Applied, Stages]:
    """The configuration named by `config`, and the stages of cfg with the settings of its
    results row (but for those in `given`, set by a flag), validated."""
    applied = configuration_from(config)
    return applied, applied_stages(cfg, applied.settings, given)


def save_command(cfg: dict, args: list, given=()) -> str:
    """`--save-reference CONFIG REF OUT.npz`: the line main.py prints."""
    applied, stages = _with_settings(args[0], cfg, given)
    n, prov = save_reference(stages, applied, args[1], args[2])
    return f"wrote {args[2]}: {n} reference rows for {spec_string(applied.conf)} (weights {prov.label})"

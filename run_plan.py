"""The run plan: config.py's values and the flags, validated once, resolved once.

config.py is data the user edits; this module is the only one besides it that reads its
globals (CONFIG, QUICK, ENABLED_LAYERS, MODES). Each stage keeps its own validator (of
degradations, transforms, models, metric parameters, job counts); `validate_config` runs them
all at start-up, before any image is read, and raises ConfigError naming the key and the fix.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import config as C
from backbones import (BACKBONE_NAMES, LIBRARY_PREFIXES, BackboneError, get_spec,
                       is_library_model)
from degradation_generator import select_sets, validate_degradations, validate_sets
import distance_metrics as dm
from distance_metrics import MODEL_METRICS, MetricInputError, validate_metric_params
from distribution_modeling import ModelError, validate_model
from errors import ConfigError, UsageError
from evaluation import Configuration, build_grid
from feature_cache import CACHE_DTYPES
from feature_spaces import AGGREGATIONS, TransformError, validate_transform
from layer_registry import resolve_layers
from parallel import ParallelError, resolve_jobs

METRICS = tuple(dm.METRICS)          # in distance_metrics' order
# Valid choices of the extraction settings (feature_extraction imports torch, so they live here).
PRECISIONS = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda", "mps")


def _choice(value, choices, where):
    if value not in choices:
        raise ConfigError(f"{where} = {value!r} is not valid; choose one of: "
                          f"{', '.join(map(str, choices))} (edit config.py)")


def validate_quick(cfg: dict) -> None:
    """Quick mode scores QUICK's transform and metric: both must be configured."""
    if C.QUICK["transform"] not in [t.get("name") for t in cfg["feature_transforms"]]:
        raise ConfigError(f"QUICK['transform'] = {C.QUICK['transform']!r} is not one of "
                          "config['feature_transforms'] names; add it there or change QUICK")


def validate_config(cfg: dict, backbones: tuple[str, ...]) -> None:
    """Raise ConfigError naming the first invalid value and the valid choices.

    `backbones` are the registry's names.
    Layer indices are checked against the registry by `layer_registry.resolve_layers`.
    """
    unknown = set(cfg) - set(C.CONFIG)
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)}; valid keys: "
                          f"{', '.join(sorted(C.CONFIG))}")
    if cfg["backbone"] != "all" and not str(cfg["backbone"]).startswith(LIBRARY_PREFIXES):
        _choice(cfg["backbone"], backbones + ("all",),
                "config['backbone'] (or timm:NAME, torchvision:NAME, hf:MODEL_ID)")
    _choice(cfg["device"], DEVICES, "config['device']")
    _choice(cfg["rank_by"], ("auto", "monotonicity", "mos"), "config['rank_by'] (--rank-by)")
    for key in ("mos", "mos_reference"):
        if cfg[key] is not None and not (isinstance(cfg[key], str) and cfg[key]):
            raise ConfigError(f"config['{key}'] = {cfg[key]!r} must be a path (a string)"
                              + (" or None" if key == "mos" else ", 'database' or 'builtin'"))
    _choice(cfg["cache_dtype"], CACHE_DTYPES, "config['cache_dtype']")
    _choice(cfg["extraction_precision"], PRECISIONS, "config['extraction_precision']")
    _choice(cfg["gram_precision"], ("float32", "float64"), "config['gram_precision']")
    if not isinstance(cfg["max_representation_bytes"], int) or cfg["max_representation_bytes"] < 2**20:
        raise ConfigError(f"config['max_representation_bytes'] = {cfg['max_representation_bytes']!r} "
                          "must be an integer number of bytes >= 1 MiB (edit config.py)")
    for key in ("batch_size", "working_size"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"config['{key}'] = {cfg[key]!r} must be a positive integer")
    if cfg["image_size"] is not None and (not isinstance(cfg["image_size"], int)
                                          or cfg["image_size"] < 16):
        raise ConfigError(f"image size {cfg['image_size']!r} must be an integer >= 16")
    for key in ("n_images_inference", "n_images_evaluation"):
        v = cfg[key]
        if v is not None and (not isinstance(v, int) or v < 2):
            raise ConfigError(f"config['{key}'] = {v!r} must be an integer >= 2 "
                              "(statistics need at least two images)")
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool) or not 0 <= cfg["seed"] < 2**32:
        raise ConfigError(f"config['seed'] = {cfg['seed']!r} must be an integer in 0 .. 2**32 - 1")
    et = cfg["extraction_threads"]
    if et != "auto" and (not isinstance(et, int) or isinstance(et, bool) or et < 1):
        raise ConfigError(f"config['extraction_threads'] = {et!r} must be 'auto' or an integer >= 1")
    nw = cfg["num_workers"]
    if nw != "auto" and (not isinstance(nw, int) or isinstance(nw, bool) or nw < 0):
        raise ConfigError(f"config['num_workers'] = {nw!r} must be 'auto' or an integer >= 0 "
                          "(0 decodes images in the main process)")

    try:
        resolve_jobs(cfg["jobs"])
    except ParallelError as exc:
        raise ConfigError(f"config['jobs']: {exc}") from None
    ds = cfg["dask_scheduler"]
    if ds is not None and (not isinstance(ds, str) or not ds.strip()):
        raise ConfigError(f"config['dask_scheduler'] = {ds!r} must be None or a scheduler address "
                          "such as 'tcp://host:8786'")

    names = set()
    for t in cfg["feature_transforms"]:
        if not isinstance(t, dict) or "name" not in t or t["name"] in names:
            raise ConfigError(f"every feature transform needs a unique 'name' (got {t})")
        names.add(t["name"])
        try:
            validate_transform(t, f"feature transform {t['name']!r}")
        except TransformError as exc:
            raise ConfigError(f"{exc} (edit config['feature_transforms'] in config.py)") from None

    names = set()
    for m in cfg["distribution_models"]:
        if "name" not in m or m["name"] in names:
            raise ConfigError(f"every distribution model needs a unique 'name' (got {m})")
        names.add(m["name"])
        try:
            validate_model(m, f"distribution model {m['name']!r}")
        except ModelError as exc:
            raise ConfigError(f"{exc} (edit config['distribution_models'] in config.py)") from None

    if not cfg["distance_metrics"]:
        raise ConfigError("config['distance_metrics'] is empty; choose from: "
                          + ", ".join(METRICS))
    for metric in cfg["distance_metrics"]:
        _choice(metric, METRICS, "distance metric")
    if (any(m in MODEL_METRICS for m in cfg["distance_metrics"])
            and not cfg["distribution_models"]):
        raise ConfigError("mahalanobis/neg_loglik need at least one entry in "
                          "config['distribution_models']")

    if cfg["layer_configs"] is not None:
        for lc in cfg["layer_configs"]:
            extra = set(lc) - {"name", "layers", "aggregate"}
            if extra:
                raise ConfigError(f"layer config {lc.get('name')!r} has unknown key(s) {sorted(extra)}; "
                                  "valid keys: name, layers, aggregate (edit config.py)")
            if not lc.get("layers"):
                raise ConfigError(f"layer config {lc} needs a non-empty 'layers' list")
            _choice(lc.get("aggregate", "concat"), AGGREGATIONS,
                    f"layer config {lc.get('name')!r} aggregate")
        named = [lc["name"] for lc in cfg["layer_configs"] if lc.get("name")]
        dup = sorted({n for n in named if named.count(n) > 1})
        if dup:
            raise ConfigError(f"layer configs {dup} are named twice; names must be unique (edit config.py)")

    validate_sets(cfg["degradation_sets"])
    validate_degradations(select_sets(cfg["degradation_sets"], cfg["degradations"]))

    b = cfg["bootstrap"]
    if not isinstance(b.get("n_resamples"), int) or b["n_resamples"] < 0:
        raise ConfigError(f"bootstrap n_resamples = {b.get('n_resamples')!r} must be an "
                          "integer >= 0 (0 disables intervals)")
    _choice(b.get("scope"), ("top", "all"), "bootstrap scope")
    if not 0 < b.get("confidence", 0) < 1:
        raise ConfigError(f"bootstrap confidence = {b.get('confidence')!r} must be in (0, 1)")
    if not isinstance(cfg["top_n"], int) or cfg["top_n"] < 1:
        raise ConfigError(f"config['top_n'] = {cfg['top_n']!r} must be an integer >= 1")

    for section in ("kid", "cmmd"):
        try:
            validate_metric_params(section, cfg[section])
        except MetricInputError as exc:
            raise ConfigError(f"{exc} (edit config.py)") from None
    extra = set(cfg["bootstrap"]) - {"n_resamples", "scope", "confidence"}
    if extra:
        raise ConfigError(f"config['bootstrap'] has unknown key(s) {sorted(extra)}; valid keys: "
                          "n_resamples, scope, confidence (edit config.py)")

    for backbone in C.ENABLED_LAYERS:
        _choice(backbone, backbones, "ENABLED_LAYERS key")
    for table, name in ((C.QUICK["layers"], "QUICK['layers']"), (C.ENABLED_LAYERS, "ENABLED_LAYERS")):
        missing = [b for b in backbones if b not in table]
        if missing:
            raise ConfigError(f"{name} has no entry for backbone(s) {missing}; add one per backbone "
                              "in config.py (layer indices from LAYER_GUIDE.md)")
    _choice(C.QUICK["metric"], METRICS, "QUICK['metric']")


# ---------------------------------------------------------------------- checks

def check_writable(path: str, flag: str) -> None:
    """`path` is, or can be created as, a writable folder; else UsageError naming the flag."""
    p = os.path.abspath(path)
    probe = p
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if os.path.exists(p) and not os.path.isdir(p):
        raise UsageError(f"{flag} {path!r} is a file, not a folder; pass a folder path")
    if not os.path.isdir(probe):
        raise UsageError(f"{flag} {path!r}: {probe!r} is a file, so the folder cannot be created; "
                         "pass another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path!r}: {probe!r} is not writable by this user; pass a folder "
                         "you can write to")


def check_module_paths(backbone: str, layers, image_size, module=None) -> None:
    """Unknown module paths fail now, with close matches, before any extraction. `module` is
    the built backbone when the caller has it (else a random-init one is built)."""
    others = [p for i, p in layers if i is None]
    if not others:
        return
    from backbones import build_backbone
    from feature_extraction import find_modules
    if module is None:
        module = build_backbone(backbone, "random", 0, image_size, allow_download=False).module
    try:
        find_modules(module, others)
    except KeyError as exc:
        raise UsageError(f"{backbone}: {exc.args[0]}. List valid names with "
                         f"`python main.py --list-layers {backbone}`") from None


def with_degradation_sets(cfg) -> dict:
    """A copy of cfg whose 'degradations' are those of config['degradation_sets'] (idempotent)."""
    return {**cfg, "degradations": select_sets(cfg["degradation_sets"], cfg["degradations"])}


def spec_of(name: str):
    """The backbone's spec; an unknown name or library model is a UsageError."""
    try:
        return get_spec(name)
    except BackboneError as exc:
        raise UsageError(str(exc)) from None


def layers_of(backbone: str, layers) -> list[tuple[int | None, str]]:
    """[(registry index or None, module path)] of `layers` (indices or module paths)."""
    return resolve_layers(backbone, spec_of(backbone).layers, layers)


def backbones_of(cfg) -> list[str]:
    """The backbones of this run; a ViT's input size must be a multiple of its patch size."""
    names = list(BACKBONE_NAMES) if cfg["backbone"] == "all" else [cfg["backbone"]]
    size = cfg["image_size"]
    for name in names:
        p = spec_of(name).patch
        if size and p and size % p:
            lo, hi = max(p, size // p * p), (size // p + 1) * p
            raise UsageError(f"--image-size {size} is not a multiple of {name}'s patch size {p} "
                             f"(pixels past the last patch would be dropped); use {lo} or {hi}")
    return names



def layer_configs_for(cfg, mode, backbone, layer_specs) -> list[dict]:
    """The layer configurations of a run, each with its resolved module paths: one per entry
    of `layer_specs` (indices or module paths) when given, else config['layer_configs'],
    QUICK (quick mode) or ENABLED_LAYERS."""
    if layer_specs:
        specs = [{"name": None, "layers": [s]} for s in layer_specs]
    elif cfg["layer_configs"] is not None:
        specs = cfg["layer_configs"]
    elif is_library_model(backbone):
        raise UsageError(f"{backbone} has no default layers ({mode} mode takes them from QUICK or "
                         "ENABLED_LAYERS, which list the registered backbones): pass --layers "
                         f"MODULE_PATH ... (python main.py --list-layers {backbone})")
    elif mode == "quick":
        specs = [{"name": None, "layers": C.QUICK["layers"][backbone]}]
    else:
        enabled = C.ENABLED_LAYERS[backbone]
        n = len(get_spec(backbone).layers)
        bad = [i for i in enabled if not 0 <= i < n]
        if bad:
            raise ConfigError(f"ENABLED_LAYERS[{backbone!r}] has index {bad[0]} but {backbone} "
                                f"has layers 0..{n - 1}; fix config.py")
        specs = [{"name": None, "layers": [i]} for i, on in sorted(enabled.items()) if on]
        if not specs:
            raise ConfigError(f"ENABLED_LAYERS[{backbone!r}] enables no layer; set some to True")
    out, names = [], set()
    for s in specs:
        resolved = layers_of(backbone, s["layers"])
        aggregate = s.get("aggregate", "concat")
        ids = [str(i) if i is not None else p for i, p in resolved]
        name = s.get("name") or ("single_layer_" + ids[0] if len(ids) == 1
                                 else "layers_" + "+".join(ids) + "_" + aggregate)
        if name in names:
            raise ConfigError(f"two layer configs are named {name!r}; give each entry of "
                                "config['layer_configs'] a unique 'name' (edit config.py)")
        names.add(name)
        out.append({"name": name, "layers": [i if i is not None else p for i, p in resolved],
                    "paths": [p for _, p in resolved], "aggregate": aggregate,
                    "resolved": resolved})
    return out


def plan_run(cfg, mode, layer_specs=None) -> list[tuple[str, list[dict]]]:
    """[(backbone, layer configs)] of a run; user mistakes fail here, before anything is written."""
    if mode not in C.MODES:
        raise UsageError(f"mode {mode!r} is not valid; choose one of {', '.join(C.MODES)}")
    if mode == "quick":
        validate_quick(cfg)
    plans = []
    for backbone in backbones_of(cfg):
        lcs = layer_configs_for(cfg, mode, backbone, layer_specs)
        # one model built for every module path of the run (a library model has only paths)
        check_module_paths(backbone, sorted({x for lc in lcs for x in lc["resolved"]}, key=str),
                           cfg["image_size"])
        plans.append((backbone, lcs))
    return plans


# ---------------------------------------------------------------------- the plan

@dataclass(frozen=True)
class RunPlan:
    """A run, resolved once: nothing after planning reads config.py's globals.

    `cfg` is the validated configuration with 'degradations' set to the selected sets;
    `backbones` is ((name, layer configs), ...) in run order; `quick` and `enabled_layers`
    are config.py's QUICK and ENABLED_LAYERS as they were when the plan was made."""
    mode: str
    cfg: dict
    backbones: tuple
    quick: dict
    enabled_layers: dict

    def grid(self, backbone: str, lcs) -> list:
        """The configurations of one backbone: QUICK's transform and metric per layer config
        in quick mode, else every (layers, transform, [model,] metric) that can run in
        principle."""
        cfg = self.cfg
        if self.mode == "quick":
            transform = next(t for t in cfg["feature_transforms"] if t["name"] == self.quick["transform"])
            return [Configuration(backbone, lc, transform, None, self.quick["metric"]) for lc in lcs]
        return build_grid(backbone, lcs, cfg["feature_transforms"], cfg["distribution_models"],
                          cfg["distance_metrics"])


def make_plan(cfg: dict, mode: str, layer_specs=None) -> RunPlan:
    """Validate `cfg` (config.py's keys) and plan a run of `mode`; `layer_specs` (indices or
    module paths, one layer config each) replaces the mode's layers. User mistakes fail here,
    before anything is read or written."""
    validate_config(cfg, BACKBONE_NAMES)
    cfg = with_degradation_sets(cfg)
    plans = plan_run(cfg, mode, layer_specs)
    return RunPlan(mode, cfg, tuple((b, tuple(lcs)) for b, lcs in plans),
                   copy.deepcopy(C.QUICK), copy.deepcopy(C.ENABLED_LAYERS))

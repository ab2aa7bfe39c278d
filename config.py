"""Every default of the pipeline, in one place.

Edit this file to steer experiments; the CLI reads its defaults from here and
`validate_config` checks every value at start-up, before any image is read.
The fully resolved configuration is written next to every result
(`config_resolved.json`).

Layer indices refer to the tables in LAYER_GUIDE.md (generated from
layer_registry.py). Names of keys, never line numbers, are the contract.
"""
from __future__ import annotations

import copy

CONFIG = {
    # ---------------------------------------------------------------- data
    "dataset": "builtin",          # "builtin" or a folder of images (searched recursively)
    # A rated database (README "Agreement with human judgments"): a ratings file (KADID-10k's
    # dmos.csv, TID2013's mos_with_names.txt, or a CSV image,reference,mos) or None. Its
    # references are the reference set unless mos_reference names a folder (or "builtin").
    "mos": None,
    "mos_reference": "database",
    "rank_by": "auto",             # auto (mos with a rated database, else monotonicity) | monotonicity | mos
    "seed": 0,                     # every random choice derives from this seed
    # Images are resized (shorter side) and centre-cropped to this square size,
    # degraded at this size, then resized to the backbone's input size.
    "working_size": 256,
    "n_images_inference": None,    # None = the mode's default (MODES below)
    "n_images_evaluation": None,

    # ----------------------------------------------------------- extraction
    "backbone": "resnet50",        # a name of backbones.BACKBONES, "all", timm:NAME,
                                   # torchvision:NAME or hf:MODEL_ID (hub id or local folder)
    "weights": "auto",             # auto | pretrained | random | /path/to/checkpoint
    "device": "auto",              # auto | cpu | cuda | mps
    "batch_size": 16,
    "image_size": None,            # None = the backbone's own input size
    "num_workers": "auto",         # DataLoader workers; auto = min(4, cores - 1)
    "cache_dir": "cache",
    "results_dir": "results",
    "cache_dtype": "float16",      # float16 | float32: how raw activations are stored
    # Sweeps: configurations sharing features are scored as one task, `jobs` tasks at a time
    # in worker processes ("auto" = every core; 1 = in this process). With `dask_scheduler`
    # (an address such as "tcp://10.0.0.5:8786") the tasks run on that Dask cluster instead.
    "jobs": "auto",
    "dask_scheduler": None,
    # Arithmetic of the forward pass: float32 (exact), or bfloat16/float16 autocast (faster on
    # GPUs, ~1e-2 relative error in activations). Part of the cache key, whatever the device.
    "extraction_precision": "float32",
    # CPU threads of the forward pass. CPU convolutions add in an order that depends on the
    # thread count (~1e-5 relative), so every process of a sharded or torchrun build uses this
    # count, whatever OMP_NUM_THREADS torchrun sets: N shards then write the very bytes one
    # process writes. "auto" = the cores this process may run on. Not part of the cache key.
    "extraction_threads": "auto",
    "verify_checksums": True,      # sha256 of every cached file checked on load

    # ------------------------------------------------------ what to compare
    # Each layer config names registry indices (or module paths) of the backbone.
    # Several layers are aggregated by `aggregate` ("concat" or "mean").
    # When None, medium/full modes build one config per enabled layer
    # (ENABLED_LAYERS below); quick mode uses QUICK["layers"].
    "layer_configs": None,

    # Representation of one layer's activations:
    #   use_gram   False: global average pooling (GAP; tokens pooled by vit_pool)
    #              True : Gram matrix F F^T / (C*H*W) (course notes), upper triangle
    #   use_pca    PCA to pca_dim, fitted on the reference images only
    #   whiten     scale PCA components to unit variance (needs use_pca)
    #   standardize z-score each dimension with the reference mean/std
    #   l2_normalize divide each row by its L2 norm (before PCA/standardize)
    #   vit_pool   token pooling for ViT layers under GAP: mean | cls | cls_mean
    "feature_transforms": [
        {"name": "raw", "use_gram": False, "use_pca": False},
        {"name": "gram_only", "use_gram": True, "use_pca": False},
        {"name": "gram_pca", "use_gram": True, "use_pca": True, "pca_dim": 10},
    ],

    # Models of the reference distribution, used by mahalanobis and neg_loglik.
    "distribution_models": [
        {"name": "gaussian", "type": "gaussian"},
        {"name": "gmm_diag", "type": "gmm", "covariance_type": "diag", "n_components": 5},
        {"name": "gmm_full", "type": "gmm", "covariance_type": "full", "n_components": 5},
        {"name": "kde", "type": "kde", "bandwidth": "auto"},
    ],

    # Two-sample metrics (fid, kid, cmmd, mmd_rbf) need no distribution model;
    # model-based metrics (mahalanobis, neg_loglik) are crossed with every model.
    "distance_metrics": ["fid", "kid", "cmmd", "mmd_rbf", "mahalanobis", "neg_loglik"],

    "kid": {
        "subsets": None,           # None = deterministic estimate over the full sets
        "subset_size": 1000,       # torch-fidelity default
        "degree": 3,
        "gamma": None,             # None = 1 / dim
        "coef0": 1.0,
    },
    "cmmd": {"sigma": 10.0, "scale": 1000.0},   # values of the CMMD reference

    # ---------------------------------------------------------- degradations
    # Which sets run: "seed" (the `degradations` below), "kadid10k" (KADID-10k's 25 types x 5
    # levels, kadid10k.py) and "fid" (the FID paper's disturbances); --degradations seed,kadid10k.
    "degradation_sets": ["seed"],
    # Levels from the original pipeline. Severity increases along each list;
    # the undegraded evaluation images are always scored as level 0.
    "degradations": {
        "blur": {"type": "gaussian_blur",
                 "levels": [0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.3, 1.6, 2, 2.5, 3]},
        "blur_contrast": {"type": "blur_plus_contrast",
                          "levels": [[0.3, 0.95], [0.7, 0.9], [1.0, 0.85],
                                     [1.5, 0.8], [2.0, 0.7], [3.0, 0.6]]},
        "noise": {"type": "gaussian_noise",
                  "levels": [1, 2, 3, 5, 7, 9, 12, 15, 18, 22, 26, 30]},
        "aliasing": {"type": "downsample_upsample",
                     "levels": [1.1, 1.25, 1.5, 1.75, 2, 2.25, 2.5, 2.75, 3]},
        "jpeg": {"type": "jpeg_compression", "levels": [90, 70, 50, 30, 20, 10]},
    },

    # ------------------------------------------------------------ evaluation
    "bootstrap": {
        "n_resamples": 200,
        "scope": "top",            # "top": the top_n configurations; "all": every one
        "confidence": 0.95,
    },
    "top_n": 5,
    # Memory for one layer's representation. A Gram whose explicit rows (every image, float64)
    # exceed a quarter of it is held as exact kernel blocks, computed within this budget;
    # only models that need explicit rows (gmm) and standardize are then not run.
    "max_representation_bytes": 2 * 1024**3,
    # Arithmetic of the Gram GEMMs (the kernel blocks accumulate in float64 either way):
    # float32 (default; the cache stores float16) or float64. On CUDA when `device` allows.
    "gram_precision": "float32",
}

# Image counts and defaults per mode (seed README: quick = 50 images, one config;
# full = 1000 images, every config).
MODES = {
    "quick": {"n_images_inference": 50, "n_images_evaluation": 20},
    "medium": {"n_images_inference": 200, "n_images_evaluation": 30},
    "full": {"n_images_inference": 1000, "n_images_evaluation": 50},
}

# The single configuration of quick mode, per backbone (seed default: layer 8 of
# resnet50 = `layer4`, raw GAP features, FID).
QUICK = {
    "layers": {"resnet50": [8], "vgg19": [11], "dinov2_vitb14": [11],
               "sd_vae": [9], "lpips_vgg": [7], "clip_vit": [9],
               "inception_fid": [16], "dinov2_vitl14": [25], "clip_vit_l14_336": [26]},
    "transform": "raw",
    "metric": "fid",
}

# Layers used by medium/full modes, per backbone: index -> enabled.
# Defaults are the recommended layers of LAYER_GUIDE.md.
ENABLED_LAYERS = {
    "resnet50": {0: False, 1: False, 2: False, 3: False, 4: False, 5: False, 6: False,
                 7: True, 8: True, 9: True, 10: False, 11: False, 12: False,
                 13: False, 14: False, 15: False},
    "vgg19": {i: i in (0, 3, 7, 11, 15, 17) for i in range(18)},
    "dinov2_vitb14": {i: i in (0, 2, 5, 8, 11, 13) for i in range(14)},
    "sd_vae": {i: i in (0, 3, 6, 9, 12, 16) for i in range(17)},
    "lpips_vgg": {i: i in (0, 3, 6, 9, 12) for i in range(13)},
    "clip_vit": {i: i in (0, 3, 6, 9, 12) for i in range(13)},
    # the standard metrics' networks: FID's pool3 (16), FD-DINOv2's norm (25), CMMD's embedding (26)
    "inception_fid": {i: i in (4, 7, 12, 15, 16) for i in range(18)},
    "dinov2_vitl14": {i: i in (0, 6, 12, 18, 24, 25) for i in range(26)},
    "clip_vit_l14_336": {i: i in (0, 6, 12, 18, 24, 26) for i in range(27)},
}

# Valid choices, used by validation and the CLI.
TWO_SAMPLE_METRICS = ("fid", "kid", "cmmd", "mmd_rbf")
MODEL_METRICS = ("mahalanobis", "neg_loglik")
METRICS = TWO_SAMPLE_METRICS + MODEL_METRICS
DTYPES = ("float16", "float32")
PRECISIONS = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda", "mps")


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and how to fix it."""


def default_config() -> dict:
    """A deep copy of CONFIG, safe to modify."""
    return copy.deepcopy(CONFIG)


def _choice(value, choices, where):
    if value not in choices:
        raise ConfigError(f"{where} = {value!r} is not valid; choose one of: "
                          f"{', '.join(map(str, choices))} (edit config.py)")


def validate_quick(cfg: dict) -> None:
    """Quick mode scores QUICK's transform and metric: both must be configured."""
    if QUICK["transform"] not in [t.get("name") for t in cfg["feature_transforms"]]:
        raise ConfigError(f"QUICK['transform'] = {QUICK['transform']!r} is not one of "
                          "config['feature_transforms'] names; add it there or change QUICK")


def validate_config(cfg: dict, backbones: tuple[str, ...]) -> None:
    """Raise ConfigError naming the first invalid value and the valid choices.

    `backbones` are the registry's names (passed in so config.py imports nothing).
    Layer indices are checked against the registry by `layer_registry.resolve_layers`.
    """
    from degradation_generator import validate_degradations  # local: keeps config import-free

    unknown = set(cfg) - set(CONFIG)
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)}; valid keys: "
                          f"{', '.join(sorted(CONFIG))}")
    from backbones import LIBRARY_PREFIXES   # any model of these libraries, checked when built
    if cfg["backbone"] != "all" and not str(cfg["backbone"]).startswith(LIBRARY_PREFIXES):
        _choice(cfg["backbone"], backbones + ("all",),
                "config['backbone'] (or timm:NAME, torchvision:NAME, hf:MODEL_ID)")
    _choice(cfg["device"], DEVICES, "config['device']")
    _choice(cfg["rank_by"], ("auto", "monotonicity", "mos"), "config['rank_by'] (--rank-by)")
    for key in ("mos", "mos_reference"):
        if cfg[key] is not None and not (isinstance(cfg[key], str) and cfg[key]):
            raise ConfigError(f"config['{key}'] = {cfg[key]!r} must be a path (a string)"
                              + (" or None" if key == "mos" else ", 'database' or 'builtin'"))
    _choice(cfg["cache_dtype"], DTYPES, "config['cache_dtype']")
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

    from parallel import ParallelError, resolve_jobs
    try:
        resolve_jobs(cfg["jobs"])
    except ParallelError as exc:
        raise ConfigError(f"config['jobs']: {exc}") from None
    ds = cfg["dask_scheduler"]
    if ds is not None and (not isinstance(ds, str) or not ds.strip()):
        raise ConfigError(f"config['dask_scheduler'] = {ds!r} must be None or a scheduler address "
                          "such as 'tcp://host:8786'")

    names = set()
    from feature_spaces import AGGREGATIONS, TransformError, validate_transform
    for t in cfg["feature_transforms"]:
        if not isinstance(t, dict) or "name" not in t or t["name"] in names:
            raise ConfigError(f"every feature transform needs a unique 'name' (got {t})")
        names.add(t["name"])
        try:
            validate_transform(t, f"feature transform {t['name']!r}")
        except TransformError as exc:
            raise ConfigError(f"{exc} (edit config['feature_transforms'] in config.py)") from None

    from distribution_modeling import ModelError, validate_model
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

    from degradation_generator import select_sets, validate_sets
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

    from distance_metrics import MetricInputError, validate_metric_params
    for section in ("kid", "cmmd"):
        try:
            validate_metric_params(section, cfg[section])
        except MetricInputError as exc:
            raise ConfigError(f"{exc} (edit config.py)") from None
    extra = set(cfg["bootstrap"]) - {"n_resamples", "scope", "confidence"}
    if extra:
        raise ConfigError(f"config['bootstrap'] has unknown key(s) {sorted(extra)}; valid keys: "
                          "n_resamples, scope, confidence (edit config.py)")

    for backbone in ENABLED_LAYERS:
        _choice(backbone, backbones, "ENABLED_LAYERS key")
    for table, name in ((QUICK["layers"], "QUICK['layers']"), (ENABLED_LAYERS, "ENABLED_LAYERS")):
        missing = [b for b in backbones if b not in table]
        if missing:
            raise ConfigError(f"{name} has no entry for backbone(s) {missing}; add one per backbone "
                              "in config.py (layer indices from LAYER_GUIDE.md)")
    _choice(QUICK["metric"], METRICS, "QUICK['metric']")

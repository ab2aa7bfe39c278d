"""The user's configuration: a config.py read by path into a `UserConfig` value, the flags
that override one setting each (`SETTING_FLAGS`), and the check of every value.

config.py is data the user edits; this module is the only one that reads its globals (CONFIG,
QUICK, ENABLED_LAYERS, MODES), once, by running the file (`runpy`), never by importing it: a
user's own `config` module is never this one. Callers and tests pass their own `UserConfig`
instead of editing config.py's globals. Each stage keeps its own validator (of degradations,
transforms, models, metric parameters, job counts); `validate_config` runs them all at start-up,
before any image is read, and raises ConfigError naming the key and the fix. `SETTING_FLAGS`
declares the flag of each setting a flag may override (help, range); cli.py builds its parser
from it and names a bad value by the flag typed.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from typing import Callable
from featrank.config_schema import check_tables
from featrank.backbones import BACKBONE_NAMES, BackboneError, get_spec
from featrank.backbone_spec import LIBRARY_PREFIXES
from featrank.degradation_generator import select_sets, validate_degradations, validate_sets
from featrank import distance_metrics as dm
from featrank.distance_metrics import MODEL_METRICS, MetricInputError, validate_metric_params
from featrank.distribution_modeling import ModelError, validate_model
from featrank.errors import ConfigError, UsageError
from featrank.feature_cache import CACHE_DTYPES
from featrank.feature_spaces import AGGREGATIONS, TransformError, validate_transform
from featrank.host import resolve_device, resolve_jobs
from featrank.rated_database import ORIENTATIONS
from featrank.rated_design import MIN_BINS

# The keys config.py ships with: an edited CONFIG with another key is a mistake (a test checks
# that config.py's CONFIG has exactly these).
CONFIG_KEYS = (
    "dataset", "mos", "mos_reference", "mos_bins", "mos_orientation", "rank_by", "seed",
    "working_size", "n_images_inference",
    "n_images_evaluation", "backbone", "weights", "device", "batch_size", "image_size",
    "num_workers", "cache_dir", "results_dir", "cache_dtype", "jobs", "dask_scheduler",
    "extraction_precision", "extraction_threads", "verify_checksums", "layer_configs",
    "feature_transforms", "distribution_models", "distance_metrics", "baselines", "kid", "cmmd",
    "degradation_sets", "degradations", "bootstrap", "top_n", "report", "max_representation_bytes",
    "gram_precision")
METRICS = dm.FEATURE_METRICS          # in distance_metrics' order; the pixel ones are baselines
# Valid choices of the extraction settings (feature_extraction imports torch, so they live here).
PRECISIONS = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda", "mps")


# The config.py the package reads when no other file is named: a link to the checkout's own
# config.py (so `python -m featrank` in a clone, or after `pip install -e .`, reads the file the
# user edits), and a copy of it in an installed wheel. It is read by path, never imported.
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py")
CONFIG_TABLES = ("CONFIG", "QUICK", "ENABLED_LAYERS", "MODES")


@dataclass(frozen=True)
class UserConfig:
    """config.py's four tables as one value: `config` (CONFIG), `quick` (QUICK),
    `enabled_layers` (ENABLED_LAYERS) and `modes` (MODES). `load()` reads config.py."""
    config: dict
    quick: dict
    enabled_layers: dict
    modes: dict

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, **changes) -> "UserConfig":
        """The tables of the config file at `path` (default DEFAULT_CONFIG), run as a script
        (runpy), never imported: a user's own `config` module is never this one, nor this one
        theirs. `changes` apply to CONFIG. A file that does not run (a syntax error, an undefined
        name) or lacks a table is a ConfigError of one line."""
        import runpy
        path = os.path.realpath(DEFAULT_CONFIG if path is None else os.fspath(path))
        shown = os.path.basename(path)
        if not os.path.isfile(path):
            raise ConfigError(f"--config {path}: no such file; give the path of a config.py "
                              "(copy the one beside main.py and edit it)")
        try:
            tables = runpy.run_path(path, run_name="featrank_config")
        except SyntaxError as exc:
            raise ConfigError(f"{shown} line {exc.lineno}: {exc.msg}; fix that line") from None
        except Exception as exc:
            tb = exc.__traceback__
            while tb.tb_next is not None and tb.tb_frame.f_code.co_filename != path:
                tb = tb.tb_next
            while tb.tb_next is not None and tb.tb_next.tb_frame.f_code.co_filename == path:
                tb = tb.tb_next
            raise ConfigError(f"{shown} line {tb.tb_lineno}: {type(exc).__name__}: {exc}; fix that "
                              "line") from None
        missing = [t for t in CONFIG_TABLES if t not in tables]
        if missing:
            raise ConfigError(f"{path} defines no {', '.join(missing)}; restore "
                              f"{'it' if len(missing) == 1 else 'them'} from the config.py beside main.py")
        check_tables(tables)
        cfg = copy.deepcopy(tables["CONFIG"])
        cfg.update(copy.deepcopy(changes))
        return cls(cfg, copy.deepcopy(tables["QUICK"]), copy.deepcopy(tables["ENABLED_LAYERS"]),
                   copy.deepcopy(tables["MODES"]))

    def replace(self, **fields) -> "UserConfig":
        return dataclasses.replace(self, **fields)


def default_config() -> dict:
    """config.py's CONFIG, a deep copy safe to modify."""
    return UserConfig.load().config


def _choice(value, choices, where):
    if value not in choices:
        raise ConfigError(f"{where} = {value!r} is not valid; choose one of: "
                          f"{', '.join(map(str, choices))} (edit config.py)")


def validate_quick(cfg: dict, quick: dict) -> None:
    """Quick mode scores QUICK's transform and metric: both must be configured."""
    if quick["transform"] not in [t.get("name") for t in cfg["feature_transforms"]]:
        raise ConfigError(f"QUICK['transform'] = {quick['transform']!r} is not one of "
                          "config['feature_transforms'] names; add it there or change QUICK")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_config(cfg: dict, backbones: tuple[str, ...] = BACKBONE_NAMES) -> None:
    """Raise ConfigError naming the first invalid value of CONFIG and the valid choices.

    `backbones` are the registry's names.
    Layer indices are checked against the registry by `layer_registry.resolve_layers`.
    """
    unknown = set(cfg) - set(CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)}; valid keys: "
                          f"{', '.join(sorted(CONFIG_KEYS))}")
    missing = set(CONFIG_KEYS) - set(cfg)
    if missing:
        raise ConfigError(f"config key(s) {sorted(missing)} are missing; restore them in config.py")
    _validate_containers(cfg)
    _validate_data(cfg)
    _validate_extraction(cfg, backbones)
    _validate_execution(cfg)
    _validate_scoring(cfg)
    _validate_evaluation(cfg)


# The keys whose value is a list or a dict, and what each entry must be: checked before any
# validator reads them, so a number or a string there is one line, not a traceback. (Every
# other key's validator below checks its own type.)
CONTAINERS = {"layer_configs": (list, dict), "feature_transforms": (list, dict),
              "distribution_models": (list, dict), "distance_metrics": (list, str),
              "baselines": (list, str), "degradation_sets": (list, str),
              "degradations": (dict, dict), "kid": (dict, None), "cmmd": (dict, None),
              "bootstrap": (dict, None)}


def _validate_containers(cfg: dict) -> None:
    for key, (kind, entry) in CONTAINERS.items():
        v = cfg[key]
        if key == "layer_configs" and v is None:
            continue
        if not isinstance(v, (kind, tuple) if kind is list else kind):
            what = "a list" if kind is list else "a dict"
            raise ConfigError(f"config['{key}'] = {v!r} must be {what}"
                              + (" or None" if key == "layer_configs" else "") + " (edit config.py)")
        items = v.values() if kind is dict else v
        bad = next((x for x in items if entry is not None and not isinstance(x, entry)), None)
        if bad is not None:
            raise ConfigError(f"config['{key}'] has an entry {bad!r}; each must be "
                              f"{'a dict' if entry is dict else 'a name (a string)'} (edit config.py)")


def _validate_data(cfg: dict) -> None:
    """Images, ratings and counts."""
    _choice(cfg["rank_by"], ("auto", "monotonicity", "mos"), "config['rank_by'] (--rank-by)")
    for key in ("mos", "mos_reference"):
        if (cfg[key] is not None or key == "mos_reference") and not (isinstance(cfg[key], str) and cfg[key]):
            raise ConfigError(f"config['{key}'] = {cfg[key]!r} must be a path (a string)"
                              + (" or None" if key == "mos" else ", 'database' or 'builtin'"))
    if not _is_int(cfg["mos_bins"]) or cfg["mos_bins"] < MIN_BINS:
        raise ConfigError(f"config['mos_bins'] = {cfg['mos_bins']!r} must be an integer >= {MIN_BINS} "
                          "(the set-level criteria need 3 groups); --mos-bins")
    if cfg["mos_orientation"] is not None:
        _choice(cfg["mos_orientation"], ORIENTATIONS, "config['mos_orientation'] (--mos-orientation)")
    if not isinstance(cfg["dataset"], str) or not cfg["dataset"]:
        raise ConfigError(f"config['dataset'] = {cfg['dataset']!r} must be 'builtin' or a folder path")
    if not _is_int(cfg["working_size"]) or cfg["working_size"] < 1:
        raise ConfigError(f"config['working_size'] = {cfg['working_size']!r} must be a positive integer")
    for key in ("n_images_inference", "n_images_evaluation"):
        v = cfg[key]
        if v is not None and (not _is_int(v) or v < 2):
            raise ConfigError(f"config['{key}'] = {v!r} must be an integer >= 2 "
                              "(statistics need at least two images)")
    if not _is_int(cfg["seed"]) or not 0 <= cfg["seed"] < 2**32:
        raise ConfigError(f"config['seed'] = {cfg['seed']!r} must be an integer in 0 .. 2**32 - 1")


def _validate_extraction(cfg: dict, backbones) -> None:
    """Backbone, weights, device, sizes, precisions, the cache."""
    if cfg["backbone"] != "all" and not str(cfg["backbone"]).startswith(LIBRARY_PREFIXES):
        _choice(cfg["backbone"], backbones + ("all",),
                "config['backbone'] (or timm:NAME, torchvision:NAME, hf:MODEL_ID)")
    if not isinstance(cfg["weights"], str) or not cfg["weights"]:
        raise ConfigError(f"config['weights'] = {cfg['weights']!r} must be auto, pretrained, random "
                          "or a checkpoint path")
    _choice(cfg["device"], DEVICES, "config['device']")
    if cfg["device"] in ("cuda", "mps"):
        resolve_device(cfg["device"])        # absent: a UsageError now, before any work
    _choice(cfg["cache_dtype"], CACHE_DTYPES, "config['cache_dtype']")
    _choice(cfg["extraction_precision"], PRECISIONS, "config['extraction_precision']")
    _choice(cfg["gram_precision"], ("float32", "float64"), "config['gram_precision']")
    if not _is_int(cfg["batch_size"]) or cfg["batch_size"] < 1:
        raise ConfigError(f"config['batch_size'] = {cfg['batch_size']!r} must be a positive integer")
    if cfg["image_size"] is not None and (not _is_int(cfg["image_size"]) or cfg["image_size"] < 16):
        raise ConfigError(f"config['image_size'] = {cfg['image_size']!r} must be an integer >= 16 "
                          "or None (--image-size; edit config.py)")
    for key in ("cache_dir", "results_dir"):
        if not isinstance(cfg[key], str) or not cfg[key].strip():
            raise ConfigError(f"config['{key}'] = {cfg[key]!r} must be a folder path (a string)")
    if not isinstance(cfg["verify_checksums"], bool):
        raise ConfigError(f"config['verify_checksums'] = {cfg['verify_checksums']!r} must be True "
                          "or False")
    et = cfg["extraction_threads"]
    if et != "auto" and (not _is_int(et) or et < 1):
        raise ConfigError(f"config['extraction_threads'] = {et!r} must be 'auto' or an integer >= 1")
    nw = cfg["num_workers"]
    if nw != "auto" and (not _is_int(nw) or nw < 0):
        raise ConfigError(f"config['num_workers'] = {nw!r} must be 'auto' or an integer >= 0 "
                          "(0 decodes images in the main process)")


def _validate_execution(cfg: dict) -> None:
    """Scoring processes and the Dask cluster."""
    try:
        resolve_jobs(cfg["jobs"])
    except UsageError as exc:
        raise ConfigError(f"config['jobs']: {exc}") from None
    ds = cfg["dask_scheduler"]
    if ds is not None and (not isinstance(ds, str) or not ds.strip()):
        raise ConfigError(f"config['dask_scheduler'] = {ds!r} must be None or a scheduler address "
                          "such as 'tcp://host:8786'")
    if not _is_int(cfg["max_representation_bytes"]) or cfg["max_representation_bytes"] < 2**20:
        raise ConfigError(f"config['max_representation_bytes'] = {cfg['max_representation_bytes']!r} "
                          "must be an integer number of bytes >= 1 MiB (edit config.py)")


def _unique_named(entries, what, key, validate, error):
    names = set()
    for e in entries:
        if not isinstance(e, dict) or "name" not in e or e["name"] in names:
            raise ConfigError(f"every {what} needs a unique 'name' (got {e})")
        names.add(e["name"])
        try:
            validate(e, f"{what} {e['name']!r}")
        except error as exc:
            raise ConfigError(f"{exc} (edit config['{key}'] in config.py)") from None


def _no_repeats(names, key: str) -> None:
    """A name listed twice would be scored twice and ranked against itself."""
    twice = sorted({n for n in names if list(names).count(n) > 1})
    if twice:
        raise ConfigError(f"config['{key}'] lists {', '.join(map(repr, twice))} more than once; "
                          "keep one of each (edit config.py)")


def _validate_scoring(cfg: dict) -> None:
    """Layer configs, transforms, models, metrics and their parameters."""
    _unique_named(cfg["feature_transforms"], "feature transform", "feature_transforms",
                  validate_transform, TransformError)
    _unique_named(cfg["distribution_models"], "distribution model", "distribution_models",
                  validate_model, ModelError)
    if not cfg["distance_metrics"]:
        raise ConfigError("config['distance_metrics'] is empty; choose from: " + ", ".join(METRICS))
    for metric in cfg["distance_metrics"]:
        if metric in dm.PIXEL_METRICS:
            raise ConfigError(f"{metric} is a pixel baseline, not a feature-space metric: list it in "
                              "config['baselines'] (edit config.py)")
        _choice(metric, METRICS, "distance metric")
    if not isinstance(cfg["baselines"], (list, tuple)):
        raise ConfigError(f"config['baselines'] = {cfg['baselines']!r} must be a list of "
                          f"{', '.join(dm.PIXEL_METRICS)} (or [])")
    for name in cfg["baselines"]:
        _choice(name, dm.PIXEL_METRICS, "config['baselines'] entry")
    for key in ("distance_metrics", "baselines"):
        _no_repeats(cfg[key], key)
    if any(m in MODEL_METRICS for m in cfg["distance_metrics"]) and not cfg["distribution_models"]:
        raise ConfigError("mahalanobis/neg_loglik need at least one entry in "
                          "config['distribution_models']")
    for section in ("kid", "cmmd"):
        try:
            validate_metric_params(section, cfg[section])
        except MetricInputError as exc:
            raise ConfigError(f"{exc} (edit config.py)") from None
    if cfg["layer_configs"] is None:
        return
    for i, lc in enumerate(cfg["layer_configs"]):
        at = f"config['layer_configs'][{i}]"
        extra = set(lc) - {"name", "layers", "aggregate"}
        if extra:
            raise ConfigError(f"{at} has unknown key(s) {sorted(extra)}; valid keys: name, layers, "
                              "aggregate (edit config.py)")
        if not isinstance(lc.get("layers"), (list, tuple)) or not lc["layers"]:
            raise ConfigError(f"{at}['layers'] = {lc.get('layers')!r} must be a non-empty list of "
                              "layer indices or module paths (edit config.py)")
        _choice(lc.get("aggregate", "concat"), AGGREGATIONS, f"{at}['aggregate']")
    named = [lc["name"] for lc in cfg["layer_configs"] if lc.get("name")]
    dup = sorted({n for n in named if named.count(n) > 1})
    if dup:
        raise ConfigError(f"layer configs {dup} are named twice; names must be unique (edit config.py)")


def _validate_evaluation(cfg: dict) -> None:
    """Degradations, the bootstrap and the report's top-N."""
    validate_sets(cfg["degradation_sets"])
    validate_degradations(select_sets(cfg["degradation_sets"], cfg["degradations"]))
    b = cfg["bootstrap"]
    if not isinstance(b, dict):
        raise ConfigError(f"config['bootstrap'] = {b!r} must be a dict with n_resamples, scope, confidence")
    extra = set(b) - {"n_resamples", "scope", "confidence"}
    if extra:
        raise ConfigError(f"config['bootstrap'] has unknown key(s) {sorted(extra)}; valid keys: "
                          "n_resamples, scope, confidence (edit config.py)")
    if not _is_int(b.get("n_resamples")) or b["n_resamples"] < 0:
        raise ConfigError(f"bootstrap n_resamples = {b.get('n_resamples')!r} must be an "
                          "integer >= 0 (0 disables intervals)")
    _choice(b.get("scope"), ("top", "all"), "bootstrap scope")
    c = b.get("confidence")
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c < 1:
        raise ConfigError(f"bootstrap confidence = {c!r} must be a number in (0, 1), e.g. 0.95")
    if not _is_int(cfg["top_n"]) or cfg["top_n"] < 1:
        raise ConfigError(f"config['top_n'] = {cfg['top_n']!r} must be an integer >= 1")
    if not (cfg["report"] is True or cfg["report"] is False or cfg["report"] == "auto"):
        raise ConfigError(f"config['report'] = {cfg['report']!r} is not valid; choose \"auto\" "
                          "(medium and full), True or False (edit config.py)")


def validate_user_config(user: UserConfig, backbones: tuple[str, ...] = BACKBONE_NAMES) -> None:
    """validate_config of CONFIG, then QUICK and ENABLED_LAYERS: one entry per backbone."""
    validate_config(user.config, backbones)
    for backbone in user.enabled_layers:
        _choice(backbone, backbones, "ENABLED_LAYERS key")
    for table, name in ((user.quick["layers"], "QUICK['layers']"), (user.enabled_layers, "ENABLED_LAYERS")):
        missing = [b for b in backbones if b not in table]
        if missing:
            raise ConfigError(f"{name} has no entry for backbone(s) {missing}; add one per backbone "
                              "in config.py (layer indices from LAYER_GUIDE.md)")
    _choice(user.quick["metric"], METRICS, "QUICK['metric']")
    qb = user.quick.get("backbone")
    if qb is not None and not (isinstance(qb, str) and qb.startswith(LIBRARY_PREFIXES)):
        _choice(qb, backbones, "QUICK['backbone'] (or None: config['backbone'])")




def spec_of(name: str):
    """The backbone's spec; an unknown name or library model is a UsageError."""
    try:
        return get_spec(name)
    except BackboneError as exc:
        raise UsageError(str(exc)) from None



MAX_IMAGE_SIZE = 4096        # a larger input would not fit a batch in memory on any device


def comma_list(text: str) -> list[str]:
    """'seed, kadid10k' -> ['seed', 'kadid10k'] (a flag's list of names)."""
    return [name.strip() for name in text.split(",") if name.strip()]


@dataclass(frozen=True)
class SettingFlag:
    """A flag that overrides one setting ('section.key': a key of a section) of config.py's CONFIG:
    argparse's `options`, the help ('{default}' is the setting's value in CONFIG) and, where a
    flag's value has a range, the check and what the value must be (named under the flag)."""
    flag: str
    setting: str
    group: str
    help: str
    options: dict = dataclasses.field(default_factory=dict)
    check: Callable[[object], bool] | None = None
    must_be: str = ""

    @property
    def dest(self) -> str:
        """The argparse attribute ('--n-inference' -> 'n_inference')."""
        return self.flag[2:].replace("-", "_")

    def help_for(self, config: dict) -> str:
        """The help with `config`'s value of the setting for '{default}' (a list comma-joined)."""
        section, _, key = self.setting.partition(".")
        value = (config.get(section) or {}).get(key) if key else config.get(section)
        return self.help.format(default=",".join(value) if isinstance(value, list) else value)


MODEL, DATA, EXECUTION = "model and layers", "data", "execution (docs/scaling-out.md)"
STATS = "an integer >= 2 (statistics need two images)"
SETTING_FLAGS = (
    SettingFlag("--backbone", "backbone", MODEL, f"one of {', '.join(BACKBONE_NAMES)}, all, timm:NAME, "
                "torchvision:NAME or hf:MODEL_ID (hub id or save_pretrained folder) (default: {default})",
                {"metavar": "NAME"}),
    SettingFlag("--weights", "weights", MODEL, "auto: pretrained if found, else random-init with a warning; "
                "random: seeded; PATH: a local checkpoint (default: {default})",
                {"metavar": "{auto,pretrained,random,PATH}"}),
    SettingFlag("--image-size", "image_size", MODEL, "override the backbone's input size, e.g. 112 on a CPU",
                {"type": int, "metavar": "PX"},
                lambda v: 16 <= v <= MAX_IMAGE_SIZE, f"an integer in 16 .. {MAX_IMAGE_SIZE} (pixels)"),
    SettingFlag("--dataset", "dataset", DATA, "'builtin' (no download) or a folder of images",
                {"metavar": "{builtin,FOLDER}"}),
    SettingFlag("--mos", "mos", DATA, "a rated database (KADID-10k's dmos.csv, TID2013's mos_with_names.txt, "
                "a CSV image,reference,mos[,type,level] or image,mos, the unified dis_img_path,dis_type,"
                "ref_img_path,score, RAISE's dataset/ folder): rank by agreement with its opinion scores",
                {"metavar": "FILE"}),
    SettingFlag("--mos-bins", "mos_bins", DATA, "MOS-quantile bins of a no-reference rated set (and of a "
                "unified CSV's types without levels) (default: {default})", {"type": int, "metavar": "K"},
                lambda v: v >= MIN_BINS, f"an integer >= {MIN_BINS} (the set-level criteria need 3 groups)"),
    SettingFlag("--mos-orientation", "mos_orientation", DATA, "a unified CSV's score: higher-better "
                "(MOS) or lower-better (DMOS); required for that format", {"choices": ORIENTATIONS}),
    SettingFlag("--rank-by", "rank_by", DATA, "default: mos with --mos, else monotonicity",
                {"choices": ("monotonicity", "mos")}),
    SettingFlag("--n-inference", "n_images_inference", DATA, "reference images (default: the mode's)",
                {"type": int, "metavar": "N"}, lambda v: v >= 2, STATS),
    SettingFlag("--n-evaluation", "n_images_evaluation", DATA, "evaluation images, disjoint from the "
                "reference", {"type": int, "metavar": "N"}, lambda v: v >= 2, STATS),
    SettingFlag("--degradations", "degradation_sets", DATA, "comma-separated: seed (config['degradations']), "
                "kadid10k, fid (default: {default})", {"metavar": "SETS", "type": comma_list}),
    SettingFlag("--seed", "seed", DATA, "seed of every random choice (default: {default})", {"type": int},
                lambda v: 0 <= v < 2**32, "an integer in 0 .. 2**32 - 1"),
    SettingFlag("--device", "device", EXECUTION, "default: auto (cuda, mps, cpu)", {"choices": DEVICES}),
    SettingFlag("--jobs", "jobs", EXECUTION, "scoring processes (default: {default}; 1 = in this one)",
                {"type": int, "metavar": "N"}, lambda v: v >= 1, "an integer >= 1 (1 scores in this process)"),
    SettingFlag("--dask-scheduler", "dask_scheduler", EXECUTION, "score on this Dask cluster "
                "(tcp://host:8786)", {"metavar": "ADDRESS"},
                lambda v: bool(v.strip()), "a scheduler address such as tcp://host:8786"),
    SettingFlag("--batch-size", "batch_size", EXECUTION, "default: {default}", {"type": int},
                lambda v: v >= 1, "an integer >= 1"),
    SettingFlag("--cache-dir", "cache_dir", EXECUTION, "default: {default}"),
    SettingFlag("--results-dir", "results_dir", EXECUTION, "default: {default}"),
    SettingFlag("--n-resamples", "bootstrap.n_resamples", EXECUTION, "bootstrap resamples (default: "
                "{default})", {"type": int}, lambda v: v >= 0, "an integer >= 0 (0 disables intervals)"),
    SettingFlag("--bootstrap-all", "bootstrap.scope", EXECUTION, "bootstrap every configuration, not only "
                "the top-N", {"action": "store_const", "const": "all"}),
    SettingFlag("--no-baselines", "baselines", EXECUTION, "leave out {default}",
                {"action": "store_const", "const": []}),
)
_FLAG_OF = {f.setting: f for f in SETTING_FLAGS}


def _flags_that_do_nothing(cfg: dict, overrides: dict, names: dict) -> None:
    """A setting that would be ignored is a UsageError naming it and what would give it a use."""
    if cfg["rank_by"] == "mos" and not cfg["mos"]:
        raise UsageError(f"{names.get('rank_by', 'config[' + repr('rank_by') + ']')} mos ranks by "
                         "agreement with a rated database: give --mos FILE (or config['mos']), or "
                         "rank by monotonicity")
    if "degradation_sets" in overrides and cfg["mos"]:
        raise UsageError(f"{names.get('degradation_sets', '--degradations')} does nothing with --mos: a "
                         "rated database's own groups are the evaluation sets; drop one of them")
    for key in ("mos_bins", "mos_orientation"):
        if key in overrides and not cfg["mos"]:
            raise UsageError(f"{names.get(key, key)} does nothing without --mos FILE (a rated set); give "
                             "--mos or drop it")


def resolve_settings(user: UserConfig, overrides: dict, mode: str, names: dict | None = None,
                     sweep: bool = True) -> dict:
    """CONFIG of `user` with `overrides` applied (setting -> value; 'section.key' sets a key of a
    section), image counts defaulted from the mode, and validated. A bad override is reported
    under names[setting] (the flag the user typed), a bad config value under its config key.
    A quick-mode `sweep` (not another command such as --build-cache) runs QUICK's backbone
    unless `overrides` name one."""
    names = names or {}
    for key, value in overrides.items():
        flag = _FLAG_OF.get(key)
        if flag is not None and flag.check is not None and value is not None and not flag.check(value):
            shown = repr(value) if isinstance(value, str) else value
            raise UsageError(f"{names.get(key, key)} {shown} is not valid: it must be {flag.must_be}")
    if overrides.get("backbone") not in (None, "all"):
        spec_of(overrides["backbone"])       # close matches and the valid forms
    cfg = copy.deepcopy(user.config)
    for key, value in overrides.items():
        section, _, sub = key.partition(".")
        if sub:
            cfg[section] = {**cfg[section], sub: value}
        else:
            cfg[key] = value
    if mode not in user.modes:
        raise UsageError(f"mode {mode!r} is not valid; choose one of {', '.join(user.modes)}")
    for key in ("n_images_inference", "n_images_evaluation"):
        if cfg[key] is None:
            cfg[key] = user.modes[mode][key]
    validate_config(cfg)
    _flags_that_do_nothing(cfg, overrides, names)
    if sweep and mode == "quick" and user.quick.get("backbone") and "backbone" not in overrides:
        cfg["backbone"] = user.quick["backbone"]          # quick mode's own, unless --backbone
        spec_of(cfg["backbone"])
    for section in dm.METRIC_DEFAULTS:         # every parameter, as the results record it
        cfg[section] = dm.metric_params(section, cfg[section])
    if cfg["weights"] not in ("auto", "pretrained", "random") and not os.path.exists(cfg["weights"]):
        where = names.get("weights", "config['weights']")
        raise UsageError(f"{where} {cfg['weights']!r}: no such "
                         "file or folder. Give a checkpoint file or a save_pretrained folder, or "
                         "one of auto, pretrained, random")
    return cfg

"""The run plan: the user's configuration (user_config.py) and the flags, resolved once into
a frozen `RunPlan`: the backbones and their layer configurations, the degradation sets, the grid,
and one frozen settings record per stage (`Stages`), each field named as config.py's key."""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from featrank.backbones import BACKBONE_NAMES, get_spec
from featrank.backbone_spec import is_library_model
from featrank.degradation_generator import select_sets
from featrank.errors import ConfigError, UsageError
from featrank.evaluation import Configuration
from featrank.configurations import build_grid
from featrank.layer_registry import LayerConfig, resolve_layers
from featrank.user_config import (UserConfig, spec_of, validate_config, validate_quick,
                                   validate_user_config)
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


def check_output_file(path: str, flag: str, suffix: str) -> None:
    """An output file path (`flag` names it) that ends in `suffix`, is not a folder, and whose
    folder exists and can be written: checked before any work, so no work is lost to it."""
    if not path.endswith(suffix):
        raise UsageError(f"{flag} {path!r} must end in {suffix}")
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path!r} is a folder; give a file path ending in {suffix}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{flag} {path!r}: the folder {parent!r} does not exist; create it or give "
                         "another path")
    check_writable(parent, f"{flag} folder")


def with_degradation_sets(cfg) -> dict:
    """A copy of cfg whose 'degradations' are those of config['degradation_sets'] (idempotent)."""
    return {**cfg, "degradations": select_sets(cfg["degradation_sets"], cfg["degradations"])}


def layers_of(backbone: str, layers) -> list[tuple[int | None, str]]:
    """[(registry index or None, module path)] of `layers` (indices or module paths)."""
    return resolve_layers(backbone, spec_of(backbone).layers, layers)


def backbones_of(cfg) -> list[str]:
    """The backbones of this run, each checked against the run's input size (check_input_size)."""
    names = list(BACKBONE_NAMES) if cfg["backbone"] == "all" else [cfg["backbone"]]
    for name in names:
        check_input_size(name, cfg["image_size"])
    return names


def check_input_size(name: str, size: int | None, what: str = "--image-size") -> None:
    """`size` (--image-size, or `what` names where it was set) within what backbone `name`
    accepts: at least its smallest input (BackboneSpec.min_input_size), and for a ViT a multiple
    of its patch size; UsageError naming the sizes to use. Every command that builds a network
    checks it: the sweep, --build-cache, --apply, --save-reference, --save-stats, FeatureMetric."""
    spec = spec_of(name)
    if size and size < spec.min_input_size:
        raise UsageError(f"{what} {size} is below {name}'s smallest input, "
                         f"{spec.min_input_size} px; use {what} {spec.min_input_size} or more")
    p = spec.patch
    if size and p and size % p:
        lo, hi = max(p, size // p * p), (size // p + 1) * p
        raise UsageError(f"{what} {size} is not a multiple of {name}'s patch size {p} "
                         f"(pixels past the last patch would be dropped); use {lo} or {hi}")



def layer_configs_for(user: UserConfig, cfg, mode, backbone, layer_specs) -> list[LayerConfig]:
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
        specs = [{"name": None, "layers": user.quick["layers"][backbone]}]
    else:
        enabled = user.enabled_layers[backbone]
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
        resolved = tuple(layers_of(backbone, s["layers"]))
        aggregate = s.get("aggregate", "concat")
        ids = [str(i) if i is not None else p for i, p in resolved]
        name = s.get("name") or ("single_layer_" + ids[0] if len(ids) == 1
                                 else "layers_" + "+".join(ids) + "_" + aggregate)
        if name in names:
            raise ConfigError(f"two layer configs are named {name!r}; give each entry of "
                                "config['layer_configs'] a unique 'name' (edit config.py)")
        names.add(name)
        out.append(LayerConfig(name, resolved, aggregate))
    return out


def plan_run(user: UserConfig, cfg, mode, layer_specs=None) -> list[tuple[str, list[LayerConfig]]]:
    """[(backbone, layer configs)] of a run; user mistakes fail here, before anything is written
    (module paths that need a built model to check: feature_extraction.check_module_paths)."""
    if mode not in user.modes:
        raise UsageError(f"mode {mode!r} is not valid; choose one of {', '.join(user.modes)}")
    if mode == "quick":
        validate_quick(cfg, user.quick)
    plans = []
    for backbone in backbones_of(cfg):
        plans.append((backbone, layer_configs_for(user, cfg, mode, backbone, layer_specs)))
    return plans


# ---------------------------------------------------------------------- the plan

# Each stage's settings: frozen records built here from the validated configuration, holding only
# what their stage reads (field names are config.py's keys). Stages take their record, never the
# configuration dictionary.

@dataclass(frozen=True)
class DataSettings:
    """Which images and ratings: the image folder (or the built-in set), a rated database, the
    counts, the seed of every choice, the working size, and the degradations of the run."""
    dataset: str
    mos: str | None
    mos_reference: str
    mos_bins: int
    mos_orientation: str | None
    n_images_inference: int
    n_images_evaluation: int
    seed: int
    working_size: int
    degradation_sets: list
    degradations: dict


@dataclass(frozen=True)
class ExtractionSettings:
    """The extraction stage: the network, its weights and input size, where and how it runs,
    the images' working size, and the cache it fills."""
    backbone: str
    weights: str
    seed: int
    device: str
    batch_size: int
    image_size: int | None
    num_workers: int | str
    extraction_precision: str
    extraction_threads: int | str
    working_size: int
    cache_dir: str
    cache_dtype: str
    verify_checksums: bool

    def on(self, device: str) -> "ExtractionSettings":
        """The same settings on another device (a torchrun rank's)."""
        return dataclasses.replace(self, device=device)


@dataclass(frozen=True)
class SpaceSettings:
    """Feature spaces from cached activations: the input size the layers saw, the memory
    budget of explicit rows, and the Gram GEMMs' precision and device."""
    image_size: int | None
    max_representation_bytes: int
    gram_precision: str
    device: str


@dataclass(frozen=True)
class ScoringSettings:
    """The grid and how it is scored: layer configs, transforms, models, metrics and their
    parameters, the pixel baselines, the seed, and where the tasks run."""
    layer_configs: list | None
    feature_transforms: list
    distribution_models: list
    distance_metrics: list
    baselines: list
    kid: dict
    cmmd: dict
    seed: int
    jobs: int | str
    dask_scheduler: str | None


@dataclass(frozen=True)
class RankingSettings:
    """The ranking: by what (rank_by), the bootstrap intervals and the top-N of the summary."""
    rank_by: str
    n_resamples: int
    scope: str
    confidence: float
    top_n: int

    @property
    def bootstrap(self) -> dict:
        """config['bootstrap'] as config.py writes it."""
        return {"n_resamples": self.n_resamples, "scope": self.scope, "confidence": self.confidence}


@dataclass(frozen=True)
class OutputSettings:
    """Where the results go, and whether report.html is written ("auto": medium and full)."""
    results_dir: str
    report: bool | str


STAGES = (DataSettings, ExtractionSettings, SpaceSettings, ScoringSettings, RankingSettings,
          OutputSettings)


def stage_settings(kind, cfg: dict):
    """The record `kind` (one of STAGES) of a validated configuration `cfg`."""
    if kind is RankingSettings:
        return kind(cfg["rank_by"], top_n=cfg["top_n"], **cfg["bootstrap"])
    return kind(**{f.name: cfg[f.name] for f in dataclasses.fields(kind)})


def as_config(*records) -> dict:
    """The configuration dictionary of stage records (config.py's keys): what
    config_resolved.json and the results JSON record."""
    out = {}
    for r in records:
        fields = dataclasses.asdict(r)
        if isinstance(r, RankingSettings):
            fields = {"rank_by": r.rank_by, "top_n": r.top_n, "bootstrap": r.bootstrap}
        out.update(fields)
    return out


@dataclass(frozen=True)
class Stages:
    """Every stage's record of one validated configuration."""
    data: DataSettings
    extraction: ExtractionSettings
    spaces: SpaceSettings
    scoring: ScoringSettings
    ranking: RankingSettings
    output: OutputSettings

    @classmethod
    def of(cls, cfg: dict) -> "Stages":
        return cls(*(stage_settings(kind, cfg) for kind in STAGES))

    def config(self) -> dict:
        """The configuration they were made from (as_config): what the results record."""
        return as_config(*(getattr(self, f.name) for f in dataclasses.fields(self)))

    def replace(self, **records) -> "Stages":
        return dataclasses.replace(self, **records)


# The settings a configuration's numbers depend on, taken from the run that ranked it (--apply,
# --save-reference, FeatureMetric).
REPRODUCED = ("working_size", "image_size", "seed", "weights", "cache_dtype", "batch_size",
              "extraction_precision", "kid", "cmmd", "max_representation_bytes", "gram_precision")


def reproduced(settings: dict, leave_out=()) -> dict:
    """The REPRODUCED settings present in `settings` (a run's recorded configuration, or the
    configuration of Stages.config()), but for `leave_out`."""
    return {k: settings[k] for k in REPRODUCED if k in settings and k not in leave_out}


def applied_stages(cfg: dict, settings: dict, keep=(), backbone: str | None = None,
                   what: str = "--image-size") -> Stages:
    """The stages of applying a configuration: `cfg` (config.py's keys) with `settings` (those of
    the run that ranked it, or a caller's) over it, but for the keys in `keep` (set by a flag),
    validated; with `backbone`, its input size checked (`what` names where it was set)."""
    merged = {**cfg, **{k: v for k, v in settings.items() if k not in keep}}
    validate_config(merged)
    if backbone is not None:
        check_input_size(backbone, merged["image_size"], what)
    return Stages.of(merged)


def recorded_stages(results: dict) -> Stages:
    """The stage records of a finished run, from its results JSON: its 'config', with the
    degradations in the run's order ('degradation_order'), which its derived cache keys follow."""
    cfg = results["config"]
    order = results.get("degradation_order") or list(cfg["degradations"])
    return Stages.of({**cfg, "degradations": {name: cfg["degradations"][name] for name in order}})


@dataclass(frozen=True)
class RunPlan:
    """A run, resolved once: nothing after planning reads config.py's globals.

    `stages` holds each stage's record of the validated configuration (the data's
    degradations are the selected sets); `backbones` is ((name, layer configs), ...) in run
    order; `quick` and `enabled_layers` are the UserConfig's QUICK and ENABLED_LAYERS as they
    were when the plan was made."""
    mode: str
    stages: Stages
    backbones: tuple
    quick: dict
    enabled_layers: dict

    def grid(self, backbone: str, lcs) -> list:
        """The configurations of one backbone: QUICK's transform and metric per layer config
        in quick mode, else every (layers, transform, [model,] metric) that can run in
        principle."""
        sc = self.stages.scoring
        if self.mode == "quick":
            transform = next(t for t in sc.feature_transforms if t["name"] == self.quick["transform"])
            return [Configuration(backbone, lc, transform, None, self.quick["metric"]) for lc in lcs]
        return build_grid(backbone, lcs, sc.feature_transforms, sc.distribution_models,
                          sc.distance_metrics)


def make_plan(cfg: dict, mode: str, layer_specs=None, *, user: UserConfig | None = None) -> RunPlan:
    """Validate `cfg` (config.py's keys) and plan a run of `mode`; `layer_specs` (indices or
    module paths, one layer config each) replaces the mode's layers. QUICK, ENABLED_LAYERS and
    MODES come from `user` (default: config.py's). User mistakes fail here, before anything is
    read or written."""
    user = (user or UserConfig.load()).replace(config=cfg)
    validate_user_config(user)
    cfg = with_degradation_sets(cfg)
    plans = plan_run(user, cfg, mode, layer_specs)
    return RunPlan(mode, Stages.of(cfg), tuple((b, tuple(lcs)) for b, lcs in plans),
                   copy.deepcopy(user.quick), copy.deepcopy(user.enabled_layers))


# ---------------------------------------------------------------------- settings from flags


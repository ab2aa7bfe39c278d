"""The grid and its records: a `Configuration` is one row of the grid (backbone, layers,
transform, model, metric), built from what each metric and model declares it needs
(distance_metrics.METRICS, distribution_modeling.MODELS): a pair that can never run
(mahalanobis x kde: a KDE has no covariance) is never generated, and two-sample metrics are not
crossed with models. A `ConfigResult` is what scoring found for one configuration, with the one
method that makes its CSV row (`csv_columns` names the columns)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field


from featrank import distance_metrics as dm
from featrank.distribution_modeling import (MODELS, ModelSpec)
from featrank.errors import UsageError
from featrank.feature_spaces import Transform
from featrank.layer_registry import LayerConfig


SCORED, NOT_RUN, FAILED = "scored", "not_run", "failed"
BASELINE = "baseline"       # the backbone of the full-reference baselines' rows (baseline:psnr)


@dataclass(frozen=True)
class Configuration:
    """One row of the grid. Config-shaped dicts given for the layer config, transform or model
    become their records (LayerConfig, Transform, ModelSpec)."""
    backbone: str
    layer_config: LayerConfig
    transform: Transform
    model: ModelSpec | None
    metric: str

    def __post_init__(self):
        object.__setattr__(self, "layer_config", LayerConfig.of(self.layer_config))
        object.__setattr__(self, "transform", Transform.of(self.transform))
        if self.model is not None:
            object.__setattr__(self, "model", ModelSpec.of(self.model))

    @property
    def label(self) -> str:
        if self.backbone == BASELINE:
            return f"{BASELINE}:{self.metric}"
        parts = [self.backbone, self.layer_config.name, self.transform.name]
        if self.model:
            parts.append(self.model.name)
        return " / ".join(parts + [self.metric])


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


def pair_allowed(metric: str, model: ModelSpec | None) -> bool:
    """Can this metric ever run with this model (declared needs only, no data)?"""
    need = dm.METRICS[metric]
    if not need["model"]:
        return model is None
    return model is not None and (not need["covariance"] or MODELS[model.type]["covariance"])


def build_grid(backbone, layer_configs, transforms, models, metrics) -> list[Configuration]:
    """Every (layers, transform, [model,] metric) that can run in principle, in config order.
    Transforms and models are records or their config entries."""
    transforms = [Transform.of(t) for t in transforms]
    models = [ModelSpec.of(m) for m in models]
    grid = []
    for lc in layer_configs:
        for t in transforms:
            for metric in metrics:
                for m in ([None] if not dm.METRICS[metric]["model"] else models):
                    if pair_allowed(metric, m):
                        grid.append(Configuration(backbone, lc, t, m, metric))
    return grid


@dataclass
class ConfigResult:
    """The outcome of one configuration: its scores and monotonicity, or why it did not run."""
    conf: Configuration
    status: str = SCORED
    reason: str = ""
    per_degradation: dict = field(default_factory=dict)
    mean_spearman: float | None = None
    mean_kendall: float | None = None
    mean_spearman_ci: list | None = None
    n_resamples: int = 0
    confidence: float | None = None
    rank: int | None = None
    ridge: float | None = None          # the model's ridge (0.0: exact covariance)
    notes: list = field(default_factory=list)
    n_reference: int = 0
    n_evaluation: int = 0
    seed: int = 0
    weights: str = ""
    random_init: bool = False
    delta_top: float | None = None      # mean rho of #1 minus this one's
    delta_top_ci: list | None = None    # its paired bootstrap interval
    tied_with_top: bool | None = None   # the interval contains 0 (None: not bootstrapped)
    mos: dict | None = None             # agreement with human opinion scores (--mos runs)
    # runtime state for the bootstrap; never written out
    scorer: object = field(default=None, repr=False, compare=False)
    prepared: dict | None = field(default=None, repr=False, compare=False)
    boot_mean: object = field(default=None, repr=False, compare=False)   # mean rho per resample
    boot_mos: object = field(default=None, repr=False, compare=False)    # set SRCC per resample
    # a --mos run's per-image scores of a per-image metric, one array per rated group
    # (Ratings.image_keys): mos_images.csv; not in the JSON record
    image_scores: list | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        return self.conf.label

    @property
    def scored(self) -> bool:
        return self.status == SCORED

    def fields(self) -> dict:
        """Every outcome, as plain data (the JSON record)."""
        c = self.conf
        return {"label": self.label, "rank": self.rank, "status": self.status, "reason": self.reason,
                "backbone": c.backbone, "layer_config": c.layer_config.name,
                "layers": c.layer_config.layers, "module_paths": c.layer_config.paths,
                "aggregate": c.layer_config.aggregate, "transform": c.transform.name,
                "transform_params": c.transform.params() if c.backbone != BASELINE else {},
                "distribution": c.model.name if c.model else "",
                "distribution_type": c.model.type if c.model else None,
                "distribution_params": c.model.params if c.model else None,
                "metric": c.metric, "mean_spearman": self.mean_spearman,
                "mean_spearman_ci": self.mean_spearman_ci, "mean_kendall": self.mean_kendall,
                "per_degradation": self.per_degradation, "n_resamples": self.n_resamples,
                "confidence": self.confidence, "ridge": self.ridge, "notes": self.notes,
                "n_reference": self.n_reference, "n_evaluation": self.n_evaluation,
                "seed": self.seed, "weights": self.weights, "random_init": self.random_init,
                "delta_rho_top": self.delta_top, "delta_rho_top_ci": self.delta_top_ci,
                "tied_with_top": self.tied_with_top, "mos": self.mos}

    def criterion(self, by: str) -> float:
        """The value ranked on: mean monotonicity, or agreement with human judgments
        (mos_criterion); NaN when the row has none."""
        v = self.mean_spearman if by == "monotonicity" else mos_criterion(self.mos)
        return float("nan") if v is None else float(v)

    def csv_row(self, degradations: dict, mos_types=()) -> dict:
        """One CSV row: scalars only, per-degradation rho, tau, interval and sensitivity."""
        f = self.fields()
        row = {k: f[k] for k in ("label", "rank", "status", "backbone", "layer_config", "aggregate", "transform",
                                 "distribution", "metric", "mean_spearman", "mean_kendall", "ridge",
                                 "n_reference", "n_evaluation", "seed", "weights")}
        row["layers"] = " ".join(map(str, f["layers"]))
        row["module_paths"] = " ".join(f["module_paths"])
        row["transform_params"] = json.dumps(f["transform_params"], sort_keys=True)
        row["distribution_params"] = (json.dumps(f["distribution_params"], sort_keys=True)
                                      if f["distribution_params"] else "")
        row["mean_spearman_ci_low"], row["mean_spearman_ci_high"] = self.mean_spearman_ci or (None, None)
        row["delta_rho_top"] = self.delta_top
        row["delta_rho_top_ci_low"], row["delta_rho_top_ci_high"] = self.delta_top_ci or (None, None)
        row["tied_with_top"] = self.tied_with_top
        col = ColumnNames(degradations, mos_types)
        for d in degradations:
            v = self.per_degradation.get(d, {})
            ci = v.get("spearman_ci") or (None, None)
            row.update({col.of("rho", d): v.get("spearman"), col.of("rho", d, "ci_low"): ci[0],
                        col.of("rho", d, "ci_high"): ci[1], col.of("tau", d): v.get("kendall"),
                        col.of("sensitivity", d): v.get("sensitivity")})
        if self.mos is not None or mos_types:
            row.update(_mos_cells(self.mos, mos_types, col))
        row["reason"] = self.reason
        return row


def mos_criterion(m: dict | None):
    """A --mos row's ranking value: the 2AFC agreement for pairwise judgments, else the
    set-level SRCC with the MOS (None when absent)."""
    if not m:
        return None
    return m["agreement_2afc"] if "agreement_2afc" in m else m["srcc"]


PAIR_COLUMNS = ["agreement_2afc", "agreement_2afc_ci_low", "agreement_2afc_ci_high", "delta_2afc_top",
                "tied_with_top_2afc"]
MOS_COLUMNS = ["srcc_mos", "srcc_mos_ci_low", "srcc_mos_ci_high", "krcc_mos", "plcc_mos",
               "plcc_mos_fit", "delta_srcc_mos_top", "tied_with_top_mos", "srcc_mos_image",
               "krcc_mos_image", "plcc_mos_image"]


class ColumnNames:
    """The CSV's per-degradation and per-type column names. A name of user data (a degradation
    of config.py, a rated database's type) joins its prefix with "_" (`rho_blur`,
    `rho_blur_ci_low`, `srcc_mos_blur`) unless some name would then equal another column
    (a type named `image` gives `srcc_mos_image`; types `blur` and `blur_ci_low`); then every
    such name of the run is written in brackets, `rho[blur]`, `rho[blur]_ci_low`,
    `srcc_mos[image]`, which no fixed column and no other name can equal (names are
    [A-Za-z0-9_.-]+)."""

    def __init__(self, degradations, mos_types=()):
        self.bracket = False
        plain = self._all(degradations, mos_types)
        fixed = set(_FIXED + MOS_COLUMNS + PAIR_COLUMNS)
        self.bracket = len(set(plain)) != len(plain) or bool(fixed & set(plain))

    def _all(self, degradations, mos_types) -> list:
        return ([self.of(p, d, s) for d in degradations
                 for p, s in (("rho", ""), ("rho", "ci_low"), ("rho", "ci_high"), ("tau", ""),
                              ("sensitivity", ""))]
                + [self.of("srcc_mos", t) for t in mos_types])

    def of(self, prefix: str, name: str, suffix: str = "") -> str:
        base = f"{prefix}[{name}]" if self.bracket else f"{prefix}_{name}"
        return f"{base}_{suffix}" if suffix else base


def _mos_cells(m: dict | None, types, col: ColumnNames) -> dict:
    if m is None:
        return {}
    ci = m.get("srcc_ci") or (None, None)
    image = m.get("image") or {}
    cells = {"srcc_mos": m["srcc"], "srcc_mos_ci_low": ci[0], "srcc_mos_ci_high": ci[1],
             "krcc_mos": m["krcc"], "plcc_mos": m["plcc"], "plcc_mos_fit": m["plcc_fit"],
             "delta_srcc_mos_top": m.get("delta_top"), "tied_with_top_mos": m.get("tied_with_top"),
             "srcc_mos_image": image.get("srcc"), "krcc_mos_image": image.get("krcc"),
             "plcc_mos_image": image.get("plcc")}
    for t in types:
        cells[col.of("srcc_mos", t)] = m["srcc_per_type"].get(t)
    if "agreement_2afc" in m:            # pairwise: the ties are the 2AFC agreement's
        ci2 = m.get("agreement_2afc_ci") or (None, None)
        cells.update({"agreement_2afc": m["agreement_2afc"], "agreement_2afc_ci_low": ci2[0],
                      "agreement_2afc_ci_high": ci2[1], "delta_2afc_top": m.get("delta_top"),
                      "tied_with_top_2afc": m.get("tied_with_top"), "delta_srcc_mos_top": None,
                      "tied_with_top_mos": None})
    return cells


def csv_columns(degradations: dict, mos_types=(), pairwise: bool = False) -> list[str]:
    """The CSV header; `mos_types` (the rated database's types) adds the agreement columns,
    `pairwise` the 2AFC ones."""
    col = ColumnNames(degradations, mos_types)
    head = list(_FIXED[:21])
    for d in degradations:
        head += [col.of("rho", d), col.of("rho", d, "ci_low"), col.of("rho", d, "ci_high"),
                 col.of("tau", d), col.of("sensitivity", d)]
    if mos_types:
        head += (PAIR_COLUMNS if pairwise else []) + MOS_COLUMNS + [col.of("srcc_mos", t) for t in mos_types]
    return head + list(_FIXED[21:])


# the columns whose names are not made from user data (before and after the per-name ones)
_FIXED = ["label", "rank", "status", "backbone", "layer_config", "layers", "module_paths", "aggregate",
          "transform", "transform_params", "distribution", "distribution_params", "metric",
          "mean_spearman", "mean_spearman_ci_low", "mean_spearman_ci_high", "mean_kendall",
          "delta_rho_top", "delta_rho_top_ci_low", "delta_rho_top_ci_high", "tied_with_top",
          "ridge", "n_reference", "n_evaluation", "seed", "weights", "reason"]



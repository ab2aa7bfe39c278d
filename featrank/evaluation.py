"""Grid -> scores -> monotonicity -> bootstrap -> ranking.

For one configuration (layers, transform, model, metric) and one degradation, the
evaluation set is scored at level 0 (the undegraded images) and at each level;
monotonicity is Spearman's rho (scipy) between the level position 0..L and the
score, with Kendall's tau beside it. The mean over degradations ranks configurations.

The grid is built from what each metric and model declares it needs
(distance_metrics.METRICS, distribution_modeling.MODELS): a pair that can never run
(mahalanobis x kde: a KDE has no covariance) is never generated, and two-sample metrics are
not crossed with models. A configuration whose space cannot serve it at this data size is
reported as `not_run` with the rule (feature_spaces.Infeasible, model_feasibility); an
error while scoring is `failed`, with its message. Neither is ever skipped for cost.

Configurations sharing features (layers x transform) are scored together (`score_group`):
the space is built once, each evaluation set is visited once, and models fitted once.

Uncertainty: a paired bootstrap over evaluation images — the same resampled image
indices at every level and degradation — recomputes every score and rho; the
percentile interval of rho and of the mean rho, and a sensitivity figure
(score at level 1 minus the clean score, in units of its bootstrap standard
deviation) come from it. Resampled scores reuse each level's prepared state, so
they are exact and cheap (distance_metrics' `prepare` / `score_prepared`).

Ties: every configuration is resampled with the same image indices (the bootstrap's generator
depends on the seed only), so the difference of two configurations' mean rho is paired
resample by resample. `ties_with_top` gives each bootstrapped configuration the percentile
interval of rho_top - rho_this and `tied_with_top` when that interval contains 0: #1 cannot be
told apart from it with these evaluation images.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from featrank import distance_metrics as dm
from featrank import human_agreement as ha
from featrank.distribution_modeling import (MODELS, KernelQuery, KernelRows, ModelError, ModelSpec,
                                   SpanCoordinates, fit_distribution, in_span, model_feasibility)
from featrank.errors import UsageError
from featrank.feature_spaces import CLEAN_KEY, FeatureSpace, Infeasible, Transform, clean_rows
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
        """The value ranked on: mean monotonicity, or set-level SRCC with the MOS."""
        return self.mean_spearman if by == "monotonicity" else self.mos["srcc"]

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
        for d in degradations:
            v = self.per_degradation.get(d, {})
            ci = v.get("spearman_ci") or (None, None)
            row.update({f"rho_{d}": v.get("spearman"), f"rho_{d}_ci_low": ci[0],
                        f"rho_{d}_ci_high": ci[1], f"tau_{d}": v.get("kendall"),
                        f"sensitivity_{d}": v.get("sensitivity")})
        if self.mos is not None or mos_types:
            row.update(_mos_cells(self.mos, mos_types))
        row["reason"] = self.reason
        return row


MOS_COLUMNS = ["srcc_mos", "srcc_mos_ci_low", "srcc_mos_ci_high", "krcc_mos", "plcc_mos",
               "plcc_mos_fit", "delta_srcc_mos_top", "tied_with_top_mos", "srcc_mos_image",
               "krcc_mos_image", "plcc_mos_image"]


def _mos_cells(m: dict | None, types) -> dict:
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
        cells[f"srcc_mos_{t}"] = m["srcc_per_type"].get(t)
    return cells


def csv_columns(degradations: dict, mos_types=()) -> list[str]:
    """The CSV header; `mos_types` (the rated database's types) adds the agreement columns."""
    head = ["label", "rank", "status", "backbone", "layer_config", "layers", "module_paths", "aggregate",
            "transform", "transform_params", "distribution", "distribution_params", "metric",
            "mean_spearman", "mean_spearman_ci_low", "mean_spearman_ci_high", "mean_kendall",
            "delta_rho_top", "delta_rho_top_ci_low", "delta_rho_top_ci_high", "tied_with_top"]
    for d in degradations:
        head += [f"rho_{d}", f"rho_{d}_ci_low", f"rho_{d}_ci_high", f"tau_{d}", f"sensitivity_{d}"]
    if mos_types:
        head += MOS_COLUMNS + [f"srcc_mos_{t}" for t in mos_types]
    return head + ["ridge", "n_reference", "n_evaluation", "seed", "weights", "reason"]


# ------------------------------------------------------------------ monotonicity

CLEAN = CLEAN_KEY          # the key of the clean evaluation set (level position 0)

def spearman_monotonicity(scores) -> float:
    """Spearman rho between severity position (0..L) and score; 0 for a constant score
    (a metric that does not move orders nothing)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.ptp(scores) == 0:
        return 0.0
    return float(stats.spearmanr(np.arange(len(scores)), scores).statistic)


def kendall_monotonicity(scores) -> float:
    """Kendall tau-b between severity position and score; 0 for a constant score."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.ptp(scores) == 0:
        return 0.0
    return float(stats.kendalltau(np.arange(len(scores)), scores).statistic)


def _spearman_rows(scores: np.ndarray) -> np.ndarray:
    """Spearman rho of each row of (B, L+1) scores against 0..L, vectorised (ties averaged). A
    NaN score (a rated group a resample left empty) is left out of its row."""
    if np.isnan(scores).any():
        pos = np.arange(scores.shape[1], dtype=np.float64)
        return ha.spearman_rows(np.where(np.isnan(scores), np.nan, pos[None, :]), scores)
    ranks = stats.rankdata(scores, axis=1)
    pos = np.arange(scores.shape[1], dtype=np.float64)
    pos -= pos.mean()
    ranks -= ranks.mean(axis=1, keepdims=True)
    denom = np.sqrt(np.sum(ranks ** 2, axis=1) * np.sum(pos ** 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = ranks @ pos / denom
    return np.where(denom > 0, rho, 0.0)


# ------------------------------------------------------------------ scoring

def feasibility(conf: Configuration, space: FeatureSpace) -> str | None:
    """None when `conf` can run on `space`, else the rule (from METRICS and MODELS)."""
    if space.form not in dm.METRICS[conf.metric]["forms"]:
        return dm.NEEDS_COORDINATES.get(
            conf.metric, f"{conf.metric} needs explicit rows; this space is held as kernel blocks")
    k = dm.PRDC_K.get(conf.metric)
    if k is not None and min(space.n_ref, space.n_eval) < k + 1:
        return (f"{conf.metric} needs each set's {k}-th nearest neighbour: at least {k + 1} reference "
                f"and evaluation images (here {space.n_ref} and {space.n_eval})")
    if dm.METRICS[conf.metric]["paired"] and CLEAN not in space.keys:
        return f"{conf.metric} compares each image with its clean version; this run has no clean set"
    if conf.model is not None:
        return model_feasibility(conf.model, space.form, space.dim, space.n_ref)
    return None


def scorer_for(metric: str, space: FeatureSpace, model, seed: int, geometries: dict | None = None,
               *, kid: dict | None = None, cmmd: dict | None = None):
    """The metric's reference object, precomputed once; it then scores every evaluation set.
    `kid` and `cmmd` are those metrics' parameters (config['kid'|'cmmd']: what differs from
    dm.METRIC_DEFAULTS). CMMD scores L2-normalised rows (the CMMD reference's embedding), so
    `space` must already be unit rows for it (score_group does that). The distance-based
    metrics of one space share its dm.Geometry, kept in `geometries` ({id(space): Geometry})
    when given."""
    k, c = dm.metric_params("kid", kid or {}), dm.metric_params("cmmd", cmmd or {})
    if metric in dm.MODEL_METRICS:
        return dm.ModelMetricReference(model, metric)
    if dm.METRICS[metric]["paired"]:
        return dm.PairedReference(metric)
    k_rr = space.kernel.rr if space.kernel is not None else None
    rows = space.ref if k_rr is None else None
    if metric in dm.GEOMETRY_METRICS:
        geometries = {} if geometries is None else geometries
        if id(space) not in geometries:
            geometries[id(space)] = dm.Geometry(rows, k_rr)
        geo = geometries[id(space)]
        if metric == "realism":
            return dm.RealismReference(geometry=geo)
        if metric == "energy":
            return dm.EnergyReference(geometry=geo)
        return dm.PRDCReference(metric, geometry=geo)
    if metric == "sliced_wasserstein":
        return dm.SlicedWassersteinReference(rows, seed=seed)
    if metric == "fd_inf":
        return dm.FDInfReference(scorer_for("fid", space, None, seed), seed)
    if space.kernel is not None:
        return dm.KernelReference(metric, space.kernel.rr, space.dim, kid_degree=k["degree"],
                                  kid_gamma=k["gamma"], kid_coef0=k["coef0"], cmmd_sigma=c["sigma"],
                                  cmmd_scale=c["scale"], kid_subsets=k["subsets"],
                                  kid_subset_size=k["subset_size"], seed=seed)
    if metric == "fid":
        return dm.FIDReference(space.ref)
    if metric == "kid":
        return dm.KIDReference(space.ref, k["subsets"], k["subset_size"], k["degree"], k["gamma"],
                               k["coef0"], seed)
    if metric == "cmmd":
        return dm.CMMDReference(space.ref, c["sigma"], c["scale"])
    return dm.MMDRBFReference(space.ref)


def _evaluation_input(metric: str, space: FeatureSpace, key):
    """What `scorer.prepare` takes for evaluation set `key` in this space."""
    if dm.METRICS[metric]["paired"]:
        if space.kernel is None:
            return space.evals[key], clean_rows(space.evals[CLEAN], space.pairs, key)
        k = space.kernel
        return dm.PairedKernel(np.diag(k.ee[key]).copy(),
                               clean_rows(np.diag(k.ee[CLEAN]), space.pairs, key).copy(), k.pair[key])
    if space.kernel is None:
        return space.evals[key]
    if dm.METRICS[metric]["model"]:
        return KernelQuery(space.kernel.re[key].T, np.diag(space.kernel.ee[key]).copy())
    return space.kernel.re[key], space.kernel.ee[key]


def score_group(confs: list, space_fn, degradations: dict, seed: int, base: dict | None = None,
                ratings: ha.Ratings | None = None, *, kid: dict | None = None,
                cmmd: dict | None = None) -> list[ConfigResult]:
    """Score configurations that share one feature space (same layers and transform), KID and
    CMMD with the parameters `kid` and `cmmd` (scorer_for).

    `space_fn()` returns the FeatureSpace (or raises Infeasible / MetricInputError, which
    then applies to every configuration of the group). `base` holds fields common to every
    result (n_reference, weights, ...). With `ratings` (a rated database), each scored
    configuration also gets its agreement with the opinion scores (`agreement`). One function
    (80 lines): the failure states (infeasible, not run, failed) of a group are set in one place."""
    base = base or {}
    results = [ConfigResult(c, **base) for c in confs]
    try:
        space = space_fn()
    except Infeasible as exc:
        return [_set(r, NOT_RUN, str(exc)) for r in results]
    except (dm.MetricInputError, ModelError) as exc:
        return [_set(r, FAILED, str(exc)) for r in results]
    unit = None
    models, spans, geometries = {}, {}, {}
    work = []
    for r in results:
        c = r.conf
        rule = feasibility(c, space)
        if not rule and ratings is not None and not ratings.paired and dm.METRICS[c.metric]["paired"]:
            rule = (f"{c.metric} compares each image with its clean version; a no-reference rated "
                    "set has none")
        if rule:
            _set(r, NOT_RUN, rule)
            continue
        try:
            s = space
            if dm.METRICS[c.metric]["unit_rows"]:
                unit = unit or space.unit()
                s = unit
            model = None
            if c.model is not None:
                mkey = json.dumps([c.model.type, c.model.params], sort_keys=True)
                if mkey not in models:
                    ref = KernelRows(s.kernel.rr, s.dim) if s.kernel is not None else s.ref
                    if id(s) not in spans and in_span(ref):
                        spans[id(s)] = SpanCoordinates(ref)     # shared by the space's models
                    try:
                        models[mkey] = fit_distribution(ref, c.model, seed, spans.get(id(s)))
                    except (ModelError, dm.MetricInputError) as exc:
                        models[mkey] = exc
                model = models[mkey]
                if isinstance(model, Exception):
                    raise model
                r.ridge = float(getattr(model, "ridge", 0.0))
            r.scorer = scorer_for(c.metric, s, model, seed, geometries, kid=kid, cmmd=cmmd)
            r.prepared = {}
            r.notes = list(s.notes)
            work.append((r, s))
        except (dm.MetricInputError, ModelError, ArithmeticError) as exc:
            _set(r, FAILED, str(exc))
    set_keys = {CLEAN_KEY} | {(name, p) for name, spec in degradations.items()
                              for p in range(1, len(spec["levels"]) + 1)}
    for key in space.keys:                 # each evaluation set visited once for the group
        inputs = {}                        # one input object per (space, form): models share it
        for r, s in work:
            if r.status != SCORED:
                continue
            if degradations and key not in set_keys and not dm.METRICS[r.conf.metric]["per_image"]:
                continue                   # a rated group too small to score as a set
            try:
                need = dm.METRICS[r.conf.metric]
                ik = (id(s), need["model"], need["paired"])
                if ik not in inputs:
                    inputs[ik] = _evaluation_input(r.conf.metric, s, key)
                r.prepared[key] = r.scorer.prepare(inputs[ik])
            except (dm.MetricInputError, ModelError, ArithmeticError) as exc:
                _set(r, FAILED, str(exc))
    for r, s in work:
        if r.status == SCORED:
            _monotonicity(r, degradations, space.n_eval)
        if r.status == SCORED and ratings is not None:
            agreement(r, ratings)
    return results


def baseline_configuration(name: str) -> Configuration:
    """The row of a pixel baseline: no layers, no transform, no model."""
    return Configuration(BASELINE, {"name": "pixels", "layers": [], "paths": []}, {"name": "pixels"},
                         None, name)


def score_baseline(name: str, values: dict | None, degradations: dict, base: dict | None = None,
                   ratings: ha.Ratings | None = None, reason: str = "") -> ConfigResult:
    """A full-reference baseline ranked like a configuration: `values` maps each evaluation set
    to the per-image scores (baselines.baseline_values); None with `reason` when it cannot run."""
    r = ConfigResult(baseline_configuration(name), **(base or {}))
    if values is None:
        return _set(r, NOT_RUN, reason)
    r.scorer, r.prepared = dm.PerImage(), {k: np.asarray(v, np.float64) for k, v in values.items()}
    _monotonicity(r, degradations, len(next(iter(values.values()))))
    if r.status == SCORED and ratings is not None:
        agreement(r, ratings)
    return r


def agreement(r: ConfigResult, ratings: ha.Ratings) -> None:
    """Set-level criteria from the groups' scores; image-level ones for per-image metrics, over
    every rated image (their values stay in `image_scores` for mos_images.csv)."""
    sign = dm.orientation(r.conf.metric)        # SRCC with the MOS of "worsens" scores
    scores = [r.per_degradation[t]["scores"][p] for t, p in ratings.keys]
    m = ha.set_level(sign * np.asarray(scores), ratings)
    m.update(group_scores=[float(v) for v in scores], srcc_ci=None, delta_top=None,
             delta_top_ci=None, tied_with_top=None, image=None)
    if dm.METRICS[r.conf.metric]["per_image"]:
        r.image_scores = [np.asarray(r.prepared[k], np.float64) for k in ratings.image_keys]
        m["image"] = ha.image_level([sign * v for v in r.image_scores], ratings)
    r.mos = m


def _set(r: ConfigResult, status: str, reason: str) -> ConfigResult:
    r.status, r.reason, r.scorer, r.prepared = status, reason, None, None
    return r


def _monotonicity(r: ConfigResult, degradations: dict, n_eval: int) -> None:
    r.n_evaluation = n_eval
    if not degradations:          # sets scored on their own (feature_metric.apply)
        return
    per_deg = {}
    try:
        for name, spec in degradations.items():
            keys = [CLEAN] + [(name, p) for p in range(1, len(spec["levels"]) + 1)]
            scores = [r.scorer.score_prepared(r.prepared[k]) for k in keys]
            if not np.all(np.isfinite(scores)):
                _set(r, FAILED, f"{r.conf.metric} gave a non-finite score on {name}")
                return
            oriented = dm.orientation(r.conf.metric) * np.asarray(scores)
            per_deg[name] = {"levels": [None] + list(spec["levels"]), "scores": scores,
                             "spearman": spearman_monotonicity(oriented),
                             "kendall": kendall_monotonicity(oriented)}
    except (ArithmeticError, dm.MetricInputError) as exc:
        _set(r, FAILED, str(exc))
        return
    r.per_degradation = per_deg
    r.mean_spearman = float(np.mean([d["spearman"] for d in per_deg.values()]))
    r.mean_kendall = float(np.mean([d["kendall"] for d in per_deg.values()]))
    r.n_evaluation = n_eval


def bootstrap(result: ConfigResult, degradations: dict, n_resamples: int, confidence: float,
              seed: int, ratings: ha.Ratings | None = None) -> None:
    """Add percentile intervals of rho (per degradation and mean) and sensitivities; with
    `ratings`, the interval of the set-level SRCC with the MOS. The resampled evaluation
    positions are the same at every level, so on a rated database (one image per reference
    in every group) a resample is a bootstrap over references (ha.cluster_indices)."""
    scorer, prepared, n = result.scorer, result.prepared, result.n_evaluation
    rng = np.random.default_rng([seed, 0xB007])
    if ratings is not None and not ratings.complete:     # groups of their own sizes
        idx = ha.resamples(ratings, n_resamples, rng)

        def score(k, b):
            return _resampled_score(scorer, prepared[k], idx[b][k])
    else:
        idx = ha.cluster_indices(n, n_resamples, rng)

        def score(k, b):
            return scorer.score_prepared(prepared[k], idx[b])
    rhos, columns = [], {}
    for name, spec in degradations.items():
        keys = [CLEAN] + [(name, p) for p in range(1, len(spec["levels"]) + 1)]
        boot = np.array([[score(k, b) for k in keys] for b in range(n_resamples)])
        columns.update({k: boot[:, j] for j, k in enumerate(keys)})
        rho = _spearman_rows(dm.orientation(result.conf.metric) * boot)
        rhos.append(rho)
        d = result.per_degradation[name]
        d["spearman_ci"] = ha.interval(rho, confidence)
        d["scores_ci"] = [list(v) for v in zip(*(ha.interval(boot[:, j], confidence)
                                                 for j in range(len(keys))))]
        diff = boot[:, 1] - boot[:, 0]
        sd = np.nanstd(diff, ddof=1) if np.isfinite(diff).sum() > 1 else 0.0
        d["sensitivity"] = (float(dm.orientation(result.conf.metric) * (d["scores"][1] - d["scores"][0])
                                  / sd) if sd > 0 else None)
    mean = np.mean(rhos, axis=0)
    result.mean_spearman_ci = ha.interval(mean, confidence)
    result.n_resamples = n_resamples
    result.boot_mean = mean
    if ratings is not None and result.mos is not None:
        boot = ha.bootstrap_srcc(dm.orientation(result.conf.metric)
                                 * np.stack([columns[k] for k in ratings.keys], axis=1), ratings, idx)
        result.mos["srcc_ci"] = ha.interval(boot, confidence)
        result.boot_mos = boot


def _resampled_score(scorer, state, rows: np.ndarray) -> float:
    """The score of a resample's rows of one set; NaN when it leaves fewer than 2 images or the
    score is undefined there."""
    if len(rows) < 2:
        return float("nan")
    try:
        v = float(scorer.score_prepared(state, rows))
    except (ArithmeticError, ValueError, np.linalg.LinAlgError):
        return float("nan")
    return v if np.isfinite(v) else float("nan")


def ties_with_top_mos(ranked: list[ConfigResult], confidence: float) -> list[ConfigResult]:
    """`ties_with_top` for the set-level SRCC with the MOS: delta_top, its paired interval and
    tied_with_top in each result's `mos`, against the best SRCC among the bootstrapped."""
    booted = [r for r in ranked if r.scored and r.boot_mos is not None]
    if not booted:
        return []
    top = max(booted, key=lambda r: r.mos["srcc"])
    tied = []
    for r in booted:
        if len(r.boot_mos) != len(top.boot_mos):
            continue
        ci = ha.interval(top.boot_mos - r.boot_mos, confidence)
        r.mos.update(delta_top=float(top.mos["srcc"] - r.mos["srcc"]), delta_top_ci=ci,
                     tied_with_top=bool(ci[0] <= 0 <= ci[1]))
        if r.mos["tied_with_top"]:
            tied.append(r)
    return tied


def ties_with_top(ranked: list[ConfigResult], confidence: float) -> list[ConfigResult]:
    """Set delta_top, its paired bootstrap interval and tied_with_top on every bootstrapped
    configuration of `ranked` (best first); returns those tied with #1, #1 included. Nothing is
    set when #1 was not bootstrapped, or when the ranking is not by monotonicity."""
    booted = [r for r in ranked if r.scored and r.boot_mean is not None]
    top_mono = max((r for r in ranked if r.scored), key=lambda r: r.mean_spearman, default=None)
    if not booted or booted[0] is not top_mono:
        return []
    top = booted[0]
    alpha = (1 - confidence) / 2
    tied = []
    for r in booted:
        if len(r.boot_mean) != len(top.boot_mean):
            continue              # another evaluation set or resample count: not paired
        diff = top.boot_mean - r.boot_mean
        r.delta_top = float(top.mean_spearman - r.mean_spearman)
        r.delta_top_ci = [float(np.quantile(diff, alpha)), float(np.quantile(diff, 1 - alpha))]
        r.tied_with_top = bool(r.delta_top_ci[0] <= 0 <= r.delta_top_ci[1])
        if r.tied_with_top:
            tied.append(r)
    return tied


def versus_baseline(ranked: list[ConfigResult], by: str, confidence: float) -> dict | None:
    """The best feature space against the best baseline: the difference of the ranking
    criterion (mean rho, or SRCC with the MOS) and its paired bootstrap interval (the same
    resampled evaluation images for both). None without a scored row of each kind."""
    done = [r for r in ranked if r.scored]
    feature = next((r for r in done if r.conf.backbone != BASELINE), None)
    base = next((r for r in done if r.conf.backbone == BASELINE), None)
    if feature is None or base is None:
        return None
    boot = (lambda r: r.boot_mean) if by == "monotonicity" else (lambda r: r.boot_mos)
    ci = None
    if boot(feature) is not None and boot(base) is not None and len(boot(feature)) == len(boot(base)):
        ci = ha.interval(np.asarray(boot(feature)) - np.asarray(boot(base)), confidence)
    return {"feature": feature.label, "baseline": base.label, "criterion": by,
            "delta": float(feature.criterion(by) - base.criterion(by)), "delta_ci": ci}


RANK_BY = ("monotonicity", "mos")


def rank(results: list[ConfigResult], by: str = "monotonicity") -> list[ConfigResult]:
    """Best first by `by` (mean Spearman monotonicity, or set-level SRCC with the MOS); then
    configurations not run, then failures, in grid order."""
    done = sorted((r for r in results if r.scored), key=lambda r: -r.criterion(by))
    for i, r in enumerate(done, start=1):
        r.rank = i
    return (done + [r for r in results if r.status == NOT_RUN]
            + [r for r in results if r.status == FAILED])


def release(results: list[ConfigResult]) -> None:
    """Drop the bootstrap state (kernel blocks, per-row values) once it is no longer needed."""
    for r in results:
        r.scorer, r.prepared = None, None

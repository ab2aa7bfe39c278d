"""Grid -> scores -> monotonicity -> bootstrap -> ranking.

For one configuration (layers, transform, model, metric) and one degradation, the
evaluation set is scored at level 0 (the undegraded images) and at each level;
monotonicity is Spearman's rho (scipy) between the level position 0..L and the
score, with Kendall's tau beside it. The mean over degradations ranks configurations.

The grid and its records are configurations.py's. A configuration whose space cannot serve it
at this data size is
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

import numpy as np
from scipy import stats

from featrank import distance_metrics as dm
from featrank import human_agreement as ha
from featrank.configurations import (BASELINE, FAILED, NOT_RUN, SCORED, ConfigResult,
                                     Configuration)
from featrank.distribution_modeling import (KernelQuery, KernelRows, ModelError, SpanCoordinates, fit_distribution,
                                   in_span, model_feasibility)
from featrank.feature_spaces import CLEAN_KEY, FeatureSpace, Infeasible, clean_rows

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
    """The metric's reference object, precomputed once by its METRICS row's factory; it then
    scores every evaluation set. `kid` and `cmmd` are those metrics' parameters (config['kid'|
    'cmmd']: what differs from the rows' published defaults). CMMD scores L2-normalised rows (the
    CMMD reference's embedding), so `space` must already be unit rows for it (score_group does
    that). The distance-based metrics of one space share its dm.Geometry, kept in `geometries`
    ({id(space): Geometry}) when given."""
    overrides = {"kid": kid or {}, "cmmd": cmmd or {}}
    geometries = {} if geometries is None else geometries
    k_rr = space.kernel.rr if space.kernel is not None else None
    rows = space.ref if k_rr is None else None

    def geometry() -> dm.Geometry:
        if id(space) not in geometries:
            geometries[id(space)] = dm.Geometry(rows, k_rr)
        return geometries[id(space)]

    inputs = dm.ReferenceInputs(rows=rows, kernel_rr=k_rr, dim=space.dim, model=model, seed=seed,
                                params=dm.metric_params(metric, overrides.get(metric, {})),
                                geometry=geometry)
    return dm.reference_for(metric, inputs)


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
    every rated image (their values stay in `image_scores` for mos_images.csv). Pairwise
    judgments add the 2AFC agreement of per-image metrics; on pairs that could not be scaled
    (a disconnected comparison graph) it is the only criterion."""
    sign = dm.orientation(r.conf.metric)        # SRCC with the MOS of "worsens" scores
    scores = [r.per_degradation[t]["scores"][p] for t, p in ratings.keys]
    if ratings.scaled:
        m = ha.set_level(sign * np.asarray(scores), ratings)
    else:
        m = {"srcc": None, "krcc": None, "plcc": None, "plcc_fit": None, "logistic": None,
             "srcc_per_type": {}}
    m.update(group_scores=[float(v) for v in scores], srcc_ci=None, delta_top=None,
             delta_top_ci=None, tied_with_top=None, image=None)
    if dm.METRICS[r.conf.metric]["per_image"]:
        r.image_scores = [np.asarray(r.prepared[k], np.float64) for k in ratings.image_keys]
        if ratings.scaled:
            m["image"] = ha.image_level([sign * v for v in r.image_scores], ratings)
    if ratings.pairs is not None:
        m["agreement_2afc"], m["agreement_2afc_ci"] = None, None
        if r.image_scores is not None:
            m["agreement_2afc"] = ha.agreement_2afc(_worsening_image_scores(r), ratings.pairs,
                                                    ratings.prefer_b)
    r.mos = m


def _worsening_image_scores(r: ConfigResult) -> np.ndarray:
    """Every rated image's score, oriented higher = worse, in the order of Ratings.pairs."""
    return dm.orientation(r.conf.metric) * np.concatenate([v.ravel() for v in r.image_scores])


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
        idx = ha.resamples(ratings, n_resamples, rng, CLEAN)

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
    if ratings is not None and result.mos is not None and ratings.scaled:
        boot = ha.bootstrap_srcc(dm.orientation(result.conf.metric)
                                 * np.stack([columns[k] for k in ratings.keys], axis=1), ratings, idx)
        result.mos["srcc_ci"] = ha.interval(boot, confidence)
        result.boot_mos = boot
    if ratings is not None and result.mos is not None and ratings.pairs is not None:
        result.boot_mos = None        # pairwise data rank by the 2AFC agreement, resampled by pairs
        if result.mos["agreement_2afc"] is not None:
            flat = _worsening_image_scores(result)
            # the same resamples for every configuration (paired differences), by reference content
            draws = ha.pair_resamples(ratings.pair_clusters, n_resamples, np.random.default_rng([seed, 0x2AFC]))
            boot = np.array([ha.agreement_2afc(flat, ratings.pairs[d], ratings.prefer_b[d]) for d in draws])
            result.mos["agreement_2afc_ci"] = ha.interval(boot, confidence)
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
    """`ties_with_top` for the agreement with human judgments (the set-level SRCC with the MOS,
    or the 2AFC agreement of pairwise judgments): delta_top, its paired interval and
    tied_with_top in each result's `mos`, against the best among the bootstrapped."""
    booted = [r for r in ranked if r.scored and r.boot_mos is not None]
    if not booted:
        return []
    top = max(booted, key=lambda r: r.criterion("mos"))
    tied = []
    for r in booted:
        if len(r.boot_mos) != len(top.boot_mos):
            continue
        ci = ha.interval(top.boot_mos - r.boot_mos, confidence)
        r.mos.update(delta_top=float(top.criterion("mos") - r.criterion("mos")), delta_top_ci=ci,
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
    """Best first by `by` (mean Spearman monotonicity, or agreement with human judgments: the
    set-level SRCC with the MOS, or the 2AFC agreement of pairs); scored rows without that
    criterion (a set-level metric on pairs) after the others; then configurations not run,
    then failures, in grid order."""
    done = sorted((r for r in results if r.scored),
                  key=lambda r: (np.isnan(r.criterion(by)), -np.nan_to_num(r.criterion(by), nan=0.0)))
    for i, r in enumerate(done, start=1):
        r.rank = i
    return (done + [r for r in results if r.status == NOT_RUN]
            + [r for r in results if r.status == FAILED])


def release(results: list[ConfigResult]) -> None:
    """Drop the bootstrap state (kernel blocks, per-row values) once it is no longer needed."""
    for r in results:
        r.scorer, r.prepared = None, None

"""Score every configuration at every severity level and measure monotonicity.

For one configuration (layers, transform, model, metric) and one degradation, the
evaluation set is scored at level 0 (the undegraded images) and at each level;
monotonicity is Spearman's rho (scipy) between the level position 0..L and the
score, with Kendall's tau beside it. The mean over degradations ranks configurations.

Uncertainty: a paired bootstrap over evaluation images — the same resampled image
indices at every level and degradation — recomputes every score and rho; the
percentile interval of rho and of the mean rho, and a sensitivity figure
(score at level 1 minus the clean score, in units of its bootstrap standard
deviation) come from it. Resampled scores reuse each level's prepared state, so
they are exact and cheap (distance_metrics' `prepare` / `score_prepared`).

The grid has no redundant rows: two-sample metrics (fid, kid, cmmd, mmd_rbf) are not
crossed with distribution models; mahalanobis and neg_loglik are crossed with each.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

import distance_metrics as dm
import representations as rp
from config import TWO_SAMPLE_METRICS
from distribution_modeling import ModelError, fit_distribution

@dataclass
class Configuration:
    backbone: str
    layer_config: dict          # {"name", "layers": [index|path], "paths": [...], "aggregate"}
    transform: dict
    model: dict | None
    metric: str

    @property
    def label(self) -> str:
        parts = [self.backbone, self.layer_config["name"], self.transform["name"]]
        if self.model:
            parts.append(self.model["name"])
        return " / ".join(parts + [self.metric])


def build_grid(backbone, layer_configs, transforms, models, metrics) -> list[Configuration]:
    grid = []
    for lc in layer_configs:
        for t in transforms:
            for metric in metrics:
                if metric in TWO_SAMPLE_METRICS:
                    grid.append(Configuration(backbone, lc, t, None, metric))
                else:
                    grid.extend(Configuration(backbone, lc, t, m, metric) for m in models)
    return grid


# ------------------------------------------------------------------ monotonicity

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
    """Spearman rho of each row of (B, L+1) scores against 0..L, vectorised (ties averaged)."""
    ranks = stats.rankdata(scores, axis=1)
    pos = np.arange(scores.shape[1], dtype=np.float64)
    pos -= pos.mean()
    ranks -= ranks.mean(axis=1, keepdims=True)
    denom = np.sqrt(np.sum(ranks ** 2, axis=1) * np.sum(pos ** 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = ranks @ pos / denom
    return np.where(denom > 0, rho, 0.0)


# ------------------------------------------------------------------ features

@dataclass
class FeatureSet:
    """Rows of one configuration's feature space: reference and every evaluation unit,
    or (sample-space route) the linear kernel blocks between them."""
    ref: np.ndarray | None
    evals: dict                        # (degradation, position) -> rows, position 0 = clean
    n_eval: int
    kernel: dict | None = None         # {"rr": K_rr, (deg, pos): (K_re, K_ee)}, "dim": d
    notes: list = field(default_factory=list)


class SkipConfiguration(Exception):
    """The configuration cannot run here; the message is written into the results."""


def scorer_for(metric, ref, model, cfg, seed):
    """The metric's reference object (precomputed once, then scores every level)."""
    if metric == "fid":
        return dm.FIDReference(ref)
    if metric == "kid":
        k = cfg["kid"]
        return dm.KIDReference(ref, k["subsets"], k["subset_size"], k["degree"], k["gamma"],
                               k["coef0"], seed)
    if metric == "cmmd":
        return dm.CMMDReference(ref, cfg["cmmd"]["sigma"], cfg["cmmd"]["scale"])
    if metric == "mmd_rbf":
        return dm.MMDRBFReference(ref)
    return dm.ModelMetricReference(model, metric)


def kernel_scorer_for(metric, k_rr, dim, cfg):
    """The sample-space route's reference object (two-sample metrics only)."""
    if metric not in TWO_SAMPLE_METRICS:
        raise SkipConfiguration(f"{metric} needs explicit features, and this Gram is too "
                                "wide to hold; add use_pca to the transform")
    if metric == "kid" and cfg["kid"]["subsets"] is not None:
        raise SkipConfiguration("KID subsets are not available on the sample-space route; "
                                "set config['kid']['subsets'] = None")
    k = cfg["kid"]
    return dm.KernelReference(metric, k_rr, dim, kid_degree=k["degree"], kid_gamma=k["gamma"],
                              kid_coef0=k["coef0"], cmmd_sigma=cfg["cmmd"]["sigma"],
                              cmmd_scale=cfg["cmmd"]["scale"])


def postprocess(features: FeatureSet, transform: dict) -> FeatureSet:
    """Fit L2 / z-score / PCA on the reference rows and apply them to every set."""
    wants = dict(l2=transform.get("l2_normalize", False), standardize=transform.get("standardize", False),
                 pca_dim=transform.get("pca_dim") if transform.get("use_pca") else None,
                 whiten=transform.get("whiten", False))
    if features.kernel is not None:
        if wants["l2"] or wants["standardize"]:
            raise SkipConfiguration("l2_normalize/standardize are not available on the sample-space "
                                    "route for wide Gram matrices; remove them or use PCA only")
        if wants["pca_dim"] is None:
            return features
        kp = rp.KernelPCA(features.kernel["rr"], wants["pca_dim"], wants["whiten"])
        ref = kp.transform(features.kernel["rr"])
        evals = {key: kp.transform(k_re.T) for key, (k_re, _) in
                 ((k, v) for k, v in features.kernel.items() if isinstance(k, tuple))}
        return FeatureSet(ref, evals, features.n_eval, None,
                          features.notes + ["kernel PCA (sample space)"])
    if not any(wants.values()):
        return features
    pp = rp.PostProcess(features.ref, **wants)
    return FeatureSet(pp.apply(features.ref), {k: pp.apply(v) for k, v in features.evals.items()},
                      features.n_eval, None, features.notes)


class FeatureAssembler:
    """Turns cached activations into FeatureSets, layer by layer, keeping each layer's
    representation in memory for every transform that shares it.

    `caches` maps a module path to its LayerCache; `ref_units` and `eval_units` are the
    cache units. Gram matrices wider than `max_bytes` go the sample-space route; any
    Gram whose cost exceeds `max_gflop` is skipped with the reason."""

    def __init__(self, caches, ref_units, eval_units, input_size, token_layout,
                 max_bytes, max_gflop):
        self.caches, self.ref_units, self.eval_units = caches, ref_units, eval_units
        self.input_size, self.token_layout = input_size, token_layout
        self.max_bytes, self.max_gflop = max_bytes, max_gflop
        self.n_ref = sum(len(u.records) for u in ref_units)
        self.n_eval = len(eval_units[0].records)
        self._memo = {}

    @staticmethod
    def eval_key(unit):
        return (unit.group, unit.position)

    def _prefix_tokens(self, n_tokens):
        if not self.token_layout:
            return 0
        grid = self.input_size // self.token_layout["patch"]
        return n_tokens - grid * grid

    def _shape(self, path):
        return self.caches[path].load(self.ref_units[0]).shape[1:]

    def _explicit(self, path, use_gram, vit_pool):
        key = (path, use_gram, vit_pool)
        if key not in self._memo:
            cache = self.caches[path]
            shape = self._shape(path)
            prefix = self._prefix_tokens(shape[0]) if len(shape) == 2 else 0

            def rows(unit):
                act = cache.load(unit)
                out = [rp.representation(act[i:i + 25], use_gram, vit_pool, prefix)
                       for i in range(0, len(act), 25)]    # bounded float64 copies
                rows_ = np.concatenate(out)
                if not np.isfinite(rows_).all():
                    raise SkipConfiguration(f"layer {path}: NaN or inf in the features of "
                                            f"{unit.relpath}")
                return rows_
            ref = np.concatenate([rows(u) for u in self.ref_units])
            self._memo[key] = (ref, {self.eval_key(u): rows(u) for u in self.eval_units})
        return self._memo[key]

    def _gram_kernel(self, path):
        key = (path, "kernel")
        if key not in self._memo:
            cache = self.caches[path]
            ref = np.concatenate([np.asarray(cache.load(u)) for u in self.ref_units])
            blocks = {"rr": rp.gram_kernel(ref, ref)}
            for u in self.eval_units:
                ev = np.asarray(cache.load(u))
                blocks[self.eval_key(u)] = (rp.gram_kernel(ref, ev), rp.gram_kernel(ev, ev))
            self._memo[key] = blocks
        return self._memo[key]

    def _gram_route(self, path):
        """'explicit' or 'kernel' for a Gram of this layer, or SkipConfiguration."""
        shape = self._shape(path)
        if len(shape) == 1:
            raise SkipConfiguration(f"layer {path} outputs vectors {shape}: a Gram matrix needs "
                                    "spatial positions or tokens")
        c, p = (shape[0], int(np.prod(shape[1:]))) if len(shape) == 3 else (shape[1], shape[0])
        n_total = self.n_ref + self.n_eval * len(self.eval_units)
        explicit_bytes = n_total * rp.gram_dim(c) * 8
        explicit_gflop = n_total * 2.0 * c * c * p / 1e9
        pairs = self.n_ref ** 2 / 2 + len(self.eval_units) * (self.n_ref * self.n_eval + self.n_eval ** 2 / 2)
        kernel_gflop = pairs * 2.0 * p * p * c / 1e9
        if explicit_bytes <= self.max_bytes and explicit_gflop <= self.max_gflop:
            return "explicit"
        if kernel_gflop <= self.max_gflop:
            return "kernel"
        raise SkipConfiguration(
            f"Gram of {path} ({c} channels x {p} positions, {n_total} images): explicit rows need "
            f"{explicit_bytes / 2**30:.1f} GiB and {explicit_gflop:.0f} GFLOP, the sample-space "
            f"route {kernel_gflop:.0f} GFLOP; limits are config['max_representation_bytes'] = "
            f"{self.max_bytes / 2**30:.1f} GiB and config['max_kernel_gflop'] = {self.max_gflop:.0f}. "
            "Raise them, use fewer images, or a layer with fewer channels")

    def features(self, layer_config: dict, transform: dict) -> FeatureSet:
        use_gram = bool(transform.get("use_gram"))
        vit_pool = transform.get("vit_pool", "mean")
        paths, how = layer_config["paths"], layer_config.get("aggregate", "concat")
        routes = [self._gram_route(p) if use_gram else "explicit" for p in paths]
        if "kernel" in routes:
            if how != "concat":
                raise SkipConfiguration("aggregate 'mean' of wide Gram matrices is not available "
                                        "on the sample-space route; use 'concat'")
            # concatenated rows: inner products add up layer by layer
            blocks = [self._gram_kernel(p) if r == "kernel" else self._explicit_kernel(p)
                      for p, r in zip(paths, routes)]
            total = {k: (sum(b[k] for b in blocks) if k == "rr" else
                         tuple(sum(b[k][i] for b in blocks) for i in range(2))) for k in blocks[0]}
            dims = sum(rp.gram_dim(self._gram_channels(p)) for p in paths)
            total["dim"] = dims
            return FeatureSet(None, {}, self.n_eval, total, ["Gram via sample-space kernel"])
        parts = [self._explicit(p, use_gram, vit_pool) for p in paths]
        try:
            ref = rp.aggregate([r for r, _ in parts], how)
            evals = {k: rp.aggregate([e[k] for _, e in parts], how) for k in parts[0][1]}
        except dm.MetricInputError as exc:
            raise SkipConfiguration(str(exc)) from None
        return FeatureSet(ref, evals, self.n_eval)

    def _gram_channels(self, path):
        shape = self._shape(path)
        return shape[0] if len(shape) == 3 else shape[1]

    def _explicit_kernel(self, path):
        ref, evals = self._explicit(path, True, "mean")
        out = {"rr": ref @ ref.T}
        for k, e in evals.items():
            out[k] = (ref @ e.T, e @ e.T)
        return out


# ------------------------------------------------------------------ scoring

def score_configuration(conf: Configuration, features, degradations: dict,
                        cfg: dict, seed: int, memo: dict | None = None) -> dict:
    """Scores at every level (position 0 = clean) and monotonicity per degradation.

    `features` is a FeatureSet or a function returning one; with a `memo` dict shared
    across configurations, post-processed features and fitted models are computed once
    per (layers, transform[, model])."""
    memo = {} if memo is None else memo
    fkey = (conf.layer_config["name"], conf.transform["name"])
    if fkey not in memo:
        try:
            memo[fkey] = postprocess(features() if callable(features) else features, conf.transform)
        except (SkipConfiguration, dm.MetricInputError) as exc:
            memo[fkey] = SkipConfiguration(str(exc))
    if isinstance(memo[fkey], Exception):
        raise memo[fkey]
    feats = memo[fkey]
    model = None
    if feats.kernel is not None:
        scorer = kernel_scorer_for(conf.metric, feats.kernel["rr"], feats.kernel["dim"], cfg)
        states = {k: v for k, v in feats.kernel.items() if isinstance(k, tuple)}
    else:
        if conf.model is not None:
            mkey = fkey + (conf.model["name"],)
            if mkey not in memo:
                try:
                    memo[mkey] = fit_distribution(feats.ref, conf.model, seed)
                except (ModelError, dm.MetricInputError) as exc:
                    memo[mkey] = SkipConfiguration(str(exc))
            if isinstance(memo[mkey], Exception):
                raise memo[mkey]
            model = memo[mkey]
        try:
            scorer = scorer_for(conf.metric, feats.ref, model, cfg, seed)
        except (dm.MetricInputError, ModelError) as exc:
            raise SkipConfiguration(str(exc)) from None
        states = feats.evals
    prepared = {}
    try:
        for key, rows in states.items():
            prepared[key] = scorer.prepare(rows)
    except (dm.MetricInputError, ModelError) as exc:
        raise SkipConfiguration(str(exc)) from None
    per_deg = {}
    for name, spec in degradations.items():
        keys = [("clean", 0)] + [(name, p) for p in range(1, len(spec["levels"]) + 1)]
        scores = [scorer.score_prepared(prepared[k]) for k in keys]
        if not np.all(np.isfinite(scores)):
            raise SkipConfiguration(f"{conf.metric} gave a non-finite score on {name}")
        per_deg[name] = {"levels": [None] + list(spec["levels"]), "scores": scores,
                         "spearman": spearman_monotonicity(scores),
                         "kendall": kendall_monotonicity(scores)}
    mean_rho = float(np.mean([d["spearman"] for d in per_deg.values()]))
    return {"per_degradation": per_deg, "mean_spearman": mean_rho,
            "mean_kendall": float(np.mean([d["kendall"] for d in per_deg.values()])),
            "n_eval": feats.n_eval,
            "_scorer": scorer, "_prepared": prepared, "notes": feats.notes}


def bootstrap(result: dict, degradations: dict, n_resamples: int, confidence: float,
              seed: int) -> None:
    """Add percentile intervals of rho (per degradation and mean) and sensitivities."""
    scorer, prepared, n = result["_scorer"], result["_prepared"], result["n_eval"]
    rng = np.random.default_rng([seed, 0xB007])
    idx = rng.integers(0, n, size=(n_resamples, n))
    alpha = (1 - confidence) / 2
    rhos = []
    for name, spec in degradations.items():
        keys = [("clean", 0)] + [(name, p) for p in range(1, len(spec["levels"]) + 1)]
        boot = np.array([[scorer.score_prepared(prepared[k], i) for k in keys] for i in idx])
        rho = _spearman_rows(boot)
        rhos.append(rho)
        d = result["per_degradation"][name]
        d["spearman_ci"] = [float(np.quantile(rho, alpha)), float(np.quantile(rho, 1 - alpha))]
        d["scores_ci"] = [[float(np.quantile(boot[:, j], alpha)) for j in range(len(keys))],
                          [float(np.quantile(boot[:, j], 1 - alpha)) for j in range(len(keys))]]
        diff = boot[:, 1] - boot[:, 0]
        sd = diff.std(ddof=1)
        d["sensitivity"] = float((d["scores"][1] - d["scores"][0]) / sd) if sd > 0 else None
    mean = np.mean(rhos, axis=0)
    result["mean_spearman_ci"] = [float(np.quantile(mean, alpha)), float(np.quantile(mean, 1 - alpha))]
    result["n_resamples"] = n_resamples


def rank(rows: list[dict]) -> list[dict]:
    """Best mean Spearman first; skipped configurations last, in grid order."""
    done = [r for r in rows if r.get("skipped") is None]
    skipped = [r for r in rows if r.get("skipped") is not None]
    done.sort(key=lambda r: -r["mean_spearman"])
    for i, r in enumerate(done, start=1):
        r["rank"] = i
    return done + skipped



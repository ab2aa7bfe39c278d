"""Monotonicity statistics, bootstrap intervals on known truths, and the grid."""
import numpy as np
import pytest
from scipy import stats

from featrank import distance_metrics as dm
from featrank import evaluation as ev
from featrank import configurations
from featrank.user_config import default_config
from featrank.feature_spaces import FeatureSpace


@pytest.mark.parametrize("scores", [[1, 2, 2, 3, 5], [3, 3, 1, 4, 4, 0], [0, 1, 2, 3], [5, 4, 3, 3]])
def test_spearman_and_kendall_equal_scipy_with_ties(scores):
    x = np.arange(len(scores))
    assert ev.spearman_monotonicity(scores) == pytest.approx(stats.spearmanr(x, scores).statistic)
    assert ev.kendall_monotonicity(scores) == pytest.approx(stats.kendalltau(x, scores).statistic)
    rows = np.array([scores, scores[::-1]], dtype=float)
    assert np.allclose(ev._spearman_rows(rows),
                       [stats.spearmanr(x, r).statistic for r in rows])


def test_constant_score_has_zero_monotonicity():
    assert ev.spearman_monotonicity([2, 2, 2]) == 0.0 and ev.kendall_monotonicity([1, 1]) == 0.0


def _features(shift_per_level, n_eval=40, n_ref=80, dim=6, levels=5, seed=0):
    """Evaluation features whose mean moves by shift_per_level * level (known truth)."""
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(n_ref, dim))
    base = rng.normal(size=(n_eval, dim))
    evals = {("clean", 0): base}
    for p in range(1, levels + 1):
        evals[("d", p)] = base + shift_per_level * p + 0.0 * rng.normal(size=base.shape)
    return FeatureSpace.rows(ref, evals)


DEGS = {"d": {"type": "gaussian_blur", "levels": [1, 2, 3, 4, 5]}}


def _score(features, metric, model=None):
    cfg = default_config()
    conf = ev.Configuration("x", {"name": "l", "layers": [0], "paths": ["p"]},
                            {"name": "raw"}, model, metric)
    (res,) = ev.score_group([conf], lambda: features, DEGS, seed=0, kid=cfg["kid"], cmmd=cfg["cmmd"])
    assert res.status == "scored", res.reason
    ev.bootstrap(res, DEGS, 100, 0.95, seed=0)
    return res


@pytest.mark.parametrize("metric,model", [("fid", None), ("kid", None), ("mmd_rbf", None),
                                          ("mahalanobis", {"name": "g", "type": "gaussian"})])
def test_severity_injected_into_features_gives_rho_one_with_tight_interval(metric, model):
    res = _score(_features(1.0), metric, model)
    d = res.per_degradation["d"]
    assert d["spearman"] == 1.0
    assert d["spearman_ci"][0] >= 0.9 and res.mean_spearman_ci[1] == 1.0
    assert d["sensitivity"] > 2


def test_score_that_ignores_severity_has_interval_containing_zero():
    # the evaluation images are redrawn at each level: nothing depends on the level
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(80, 6))
    evals = {("clean", 0): rng.normal(size=(40, 6))}
    for p in range(1, 6):
        evals[("d", p)] = rng.normal(size=(40, 6))
    res = _score(FeatureSpace.rows(ref, evals), "fid")
    lo, hi = res.per_degradation["d"]["spearman_ci"]
    assert lo < 0 < hi


def test_grid_has_no_redundant_rows_and_no_impossible_pairs():
    cfg = default_config()
    lcs = [{"name": "a", "layers": [0], "paths": ["p"]}, {"name": "b", "layers": [1], "paths": ["q"]}]
    grid = configurations.build_grid("bb", lcs, cfg["feature_transforms"], cfg["distribution_models"],
                         cfg["distance_metrics"])
    n_t, n_m = len(cfg["feature_transforms"]), len(cfg["distribution_models"])
    n_cov = sum(m["type"] != "kde" for m in cfg["distribution_models"])   # a KDE has no covariance
    n_two = sum(not dm.METRICS[m]["model"] for m in cfg["distance_metrics"])     # fid … paired_cosine
    assert n_two == 14                     # fid … paired_cosine, realism
    assert len(grid) == 2 * n_t * (n_two + n_cov + n_m)
    assert all(c.model is None for c in grid if not dm.METRICS[c.metric]["model"])
    assert not any(c.metric == "mahalanobis" and c.model.type == "kde" for c in grid)
    assert len({c.label for c in grid}) == len(grid)


def test_rank_orders_by_mean_rho_then_not_run_then_failed():
    conf = ev.Configuration("x", {"name": "l", "layers": [0], "paths": ["p"]}, {"name": "raw"}, None, "fid")
    rows = [ev.ConfigResult(conf, mean_spearman=0.2), ev.ConfigResult(conf, status="failed", reason="x"),
            ev.ConfigResult(conf, status="not_run", reason="y"), ev.ConfigResult(conf, mean_spearman=0.9)]
    out = ev.rank(rows)
    assert [r.rank for r in out] == [1, 2, None, None] and out[0].mean_spearman == 0.9
    assert [r.status for r in out] == ["scored", "scored", "not_run", "failed"]


def test_two_configurations_with_identical_features_share_nothing_but_content():
    """Two layer configs with the same layers and different aggregates get different
    features, each equal to a direct computation (the memo is keyed by content)."""
    from featrank.feature_spaces import Transform, feature_key
    from featrank.layer_registry import LayerConfig
    t = Transform("raw")
    a = LayerConfig("same", ((0, "p"), (1, "q")), "concat")
    b = LayerConfig("same", ((0, "p"), (1, "q")), "mean")
    assert feature_key(a, t) != feature_key(b, t)
    assert feature_key(a, t) == feature_key(LayerConfig("other", a.resolved), Transform("x"))
    assert feature_key(a, t) != feature_key(a, Transform("raw", l2_normalize=True))


# ---------------------------------------------------------------- ties with #1

def _blind_features(n_eval=40, n_ref=80, dim=6, levels=5, seed=0):
    """Severity-blind: every level's features are the clean ones (known truth: rho = 0)."""
    rng = np.random.default_rng(seed)
    ref, base = rng.normal(size=(n_ref, dim)), rng.normal(size=(n_eval, dim))
    return FeatureSpace.rows(ref, {("clean", 0): base, **{("d", p): base for p in range(1, levels + 1)}})


def test_identical_configurations_are_tied_with_top():
    a, b = _score(_features(0.5), "fid"), _score(_features(0.5), "fid")
    ranked = ev.rank([a, b])
    tied = ev.ties_with_top(ranked, 0.95)
    assert tied == ranked and all(r.tied_with_top for r in ranked)
    assert ranked[1].delta_top_ci == [0.0, 0.0] and ranked[1].delta_top == 0.0


def test_perfect_configuration_is_not_tied_with_a_severity_blind_one():
    perfect, blind = _score(_features(0.5), "fid"), _score(_blind_features(), "fid")
    assert perfect.mean_spearman == 1.0 and blind.mean_spearman == 0.0
    ranked = ev.rank([blind, perfect])
    assert ev.ties_with_top(ranked, 0.95) == [perfect]
    assert perfect.tied_with_top and blind.tied_with_top is False
    assert blind.delta_top == 1.0 and blind.delta_top_ci == [1.0, 1.0]
    row = blind.csv_row(DEGS)
    assert row["tied_with_top"] is False and row["delta_rho_top_ci_low"] == 1.0
    assert set(configurations.csv_columns(DEGS)) >= {"tied_with_top", "delta_rho_top_ci_low", "delta_rho_top_ci_high"}
    assert blind.fields()["delta_rho_top_ci"] == [1.0, 1.0]


def test_the_difference_interval_is_paired():
    """Two configurations whose rho moves together over resamples: the interval of the
    difference is narrower than either interval (unpaired intervals would overlap)."""
    a = _score(_features(0.05, seed=3), "fid")
    b = _score(_features(0.05, seed=3), "kid")
    ranked = ev.rank([a, b])
    ev.ties_with_top(ranked, 0.95)
    second = ranked[1]
    width = second.delta_top_ci[1] - second.delta_top_ci[0]
    assert width <= min(r.mean_spearman_ci[1] - r.mean_spearman_ci[0] for r in ranked) + 1e-12


def test_summary_and_heatmap_name_the_tied_set(tmp_path):
    from featrank import report
    same = ev.rank([_score(_features(0.5), "fid"), _score(_features(0.5), "fid"),
                    _score(_blind_features(), "fid")])
    ev.ties_with_top(same, 0.95)
    text = report.summary(same, 5, {})
    assert "Statistically tied with #1" in text and "#1, #2 of the 3 bootstrapped" in text
    assert "below #1" in text and "tied with #1" in text
    assert report.plot_heatmap(str(tmp_path / "h.png"), [r.fields() for r in same])


def test_bootstrap_equals_the_percentile_bootstrap_written_out():
    """Every interval `bootstrap` sets, recomputed by hand: the same resampled evaluation
    positions at every level (numpy's default_rng([seed, 0xB007]).integers), FID of the
    resampled rows (pytorch-fid's Fréchet distance), scipy's Spearman rho per resample, numpy
    percentiles at (1 - c) / 2 and 1 - (1 - c) / 2, the sensitivity (s1 - s0) / sd(b1 - b0),
    and with opinion scores the set-level SRCC against the resampled references' mean MOS."""
    from featrank import human_agreement as ha
    from pytorch_fid.fid_score import calculate_frechet_distance
    rng = np.random.default_rng(5)
    n, B, conf_level, seed = 12, 40, 0.8, 3
    ref = rng.normal(size=(60, 4))
    base = rng.normal(size=(n, 4))
    degs = {"d": {"type": "gaussian_blur", "levels": [1, 2, 3]},
            "e": {"type": "gaussian_noise", "levels": [5, 9]}}
    evals = {("clean", 0): base}
    for name, spec in degs.items():
        for p in range(1, len(spec["levels"]) + 1):
            evals[(name, p)] = base + (0.3 if name == "d" else -0.2) * p + rng.normal(0, 0.5, base.shape)
    conf = ev.Configuration("x", {"name": "l", "layers": [0], "paths": ["p"]}, {"name": "raw"}, None, "fid")
    keys = tuple(k for k in evals if k[0] != "clean")
    ratings = ha.Ratings(keys, rng.normal(size=(len(keys), n)) - 0.5 * np.arange(len(keys))[:, None])
    (res,) = ev.score_group([conf], lambda: FeatureSpace.rows(ref, evals), degs, seed=0,
                            ratings=ratings)
    ev.bootstrap(res, degs, B, conf_level, seed, ratings)

    def fid(x):
        return calculate_frechet_distance(ref.mean(0), np.cov(ref, rowvar=False), x.mean(0), np.cov(x, rowvar=False))
    idx = np.random.default_rng([seed, 0xB007]).integers(0, n, size=(B, n))
    boot = {k: np.array([fid(v[i]) for i in idx]) for k, v in evals.items()}
    lo, hi = (1 - conf_level) / 2, 1 - (1 - conf_level) / 2
    rhos = []
    for name, spec in degs.items():
        ks = [("clean", 0)] + [(name, p) for p in range(1, len(spec["levels"]) + 1)]
        table = np.stack([boot[k] for k in ks], axis=1)
        rho = np.array([stats.spearmanr(np.arange(len(ks)), row).statistic for row in table])
        rhos.append(rho)
        d = res.per_degradation[name]
        np.testing.assert_allclose(d["spearman_ci"], np.quantile(rho, [lo, hi]), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(d["scores_ci"], [np.quantile(table, lo, axis=0), np.quantile(table, hi, axis=0)],
                                   rtol=1e-6)
        sd = np.std(table[:, 1] - table[:, 0], ddof=1)
        assert d["sensitivity"] == pytest.approx((d["scores"][1] - d["scores"][0]) / sd, rel=1e-6)
    np.testing.assert_allclose(res.mean_spearman_ci, np.quantile(np.mean(rhos, axis=0), [lo, hi]), atol=1e-12)
    assert res.n_resamples == B and len(res.boot_mean) == B
    # opinion scores: the SRCC of the groups' resampled scores with their resampled mean MOS
    srcc = [stats.spearmanr([boot[k][b] for k in keys], ratings.quality[:, idx[b]].mean(axis=1)).statistic
            for b in range(B)]
    srcc = -np.array(srcc)          # FID: lower is better, so quality and score run opposite
    np.testing.assert_allclose(res.boot_mos, srcc, atol=1e-12)
    np.testing.assert_allclose(res.mos["srcc_ci"], np.quantile(srcc, [lo, hi]), atol=1e-12)


def _mos_result(srcc, boot, status="scored"):
    r = ev.ConfigResult(ev.Configuration("x", {"name": f"l{srcc}", "layers": [0], "paths": ["p"]},
                                         {"name": "raw"}, None, "fid"), status=status)
    r.mean_spearman = 0.0
    r.mos = {"srcc": srcc}
    r.boot_mos = None if boot is None else np.asarray(boot, dtype=float)
    return r


def test_ties_with_top_mos_by_hand():
    """delta_top = SRCC of the best minus this one's; its interval is the percentile interval of
    the per-resample differences (paired); tied when it holds 0. The best is the highest SRCC
    among the bootstrapped, wherever it sits in the list."""
    rng = np.random.default_rng(0)
    common = rng.normal(0, 0.05, 200)
    best = _mos_result(0.80, 0.80 + common)
    close = _mos_result(0.78, 0.78 + common + rng.normal(0, 0.02, 200))      # paired: tied
    far = _mos_result(0.40, 0.40 + common + rng.normal(0, 0.02, 200))        # not tied
    unbooted = _mos_result(0.95, None)                                        # no interval: left out
    other_b = _mos_result(0.70, rng.normal(0.7, 0.05, 100))                  # another resample count
    failed = _mos_result(0.99, 0.99 + common, status="failed")
    tied = ev.ties_with_top_mos([far, unbooted, close, other_b, best, failed], 0.9)
    assert tied == [close, best]
    for r in (best, close, far):
        diff = best.boot_mos - r.boot_mos
        assert r.mos["delta_top"] == pytest.approx(0.80 - r.mos["srcc"], abs=1e-15)
        np.testing.assert_allclose(r.mos["delta_top_ci"], np.quantile(diff, [0.05, 0.95]), atol=1e-15)
    assert best.mos["delta_top_ci"] == [0.0, 0.0] and best.mos["tied_with_top"] is True
    assert close.mos["tied_with_top"] is True and far.mos["tied_with_top"] is False
    assert "delta_top" not in unbooted.mos and "delta_top" not in other_b.mos
    assert "delta_top" not in failed.mos
    assert ev.ties_with_top_mos([unbooted], 0.9) == []


def test_spearman_rows_of_two_columns():
    """One level and the clean set: rho is +1, -1 or 0 (a constant row), as scipy's."""
    got = ev._spearman_rows(np.array([[1.0, 2.0], [2.0, 1.0], [1.0, 1.0]]))
    np.testing.assert_array_equal(got, [1.0, -1.0, 0.0])

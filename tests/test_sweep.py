"""sweep.py: which ranked configurations get bootstrap intervals. With scope "top", the first
top_n scored rows, and beyond them every baseline and the best feature space (the summary
compares those two with a paired interval); with scope "all", every scored row; never a row
that did not score."""
from types import SimpleNamespace

import pytest

from featrank import evaluation as ev
from featrank import run_plan
from featrank import user_config
from featrank import sweep


def _row(name, backbone="efficientnet_lite0", scored=True):
    return SimpleNamespace(label=name, scored=scored, scorer=object(), n_resamples=0,
                           conf=SimpleNamespace(backbone=backbone))


def _targets(monkeypatch, ranked, scope, top_n):
    seen = []
    monkeypatch.setattr(ev, "bootstrap", lambda r, *a, **k: seen.append(r.label))
    ranking = run_plan.RankingSettings("auto", n_resamples=10, scope=scope, confidence=0.95,
                                       top_n=top_n)
    scoring = run_plan.Stages.of(user_config.default_config()).scoring
    sweep.bootstrap_top(ranked, ranking, scoring, {}, 1, {})
    return seen


B = ev.BASELINE


@pytest.mark.parametrize("top_n, want", [
    # ranked: psnr, f1, failed, f2, ssim, f3, ms_ssim: baselines ranked among feature spaces
    (1, ["psnr", "f1", "ssim", "ms_ssim"]),          # f1 is the best feature space and is #2
    (2, ["psnr", "f1", "ssim", "ms_ssim"]),
    (3, ["psnr", "f1", "f2", "ssim", "ms_ssim"]),     # the failed row is not counted
    (10, ["psnr", "f1", "f2", "ssim", "f3", "ms_ssim"]),
])
def test_the_top_n_with_the_best_feature_space_and_every_baseline(monkeypatch, top_n, want):
    ranked = [_row("psnr", B), _row("f1"), _row("failed", scored=False), _row("f2"),
              _row("ssim", B), _row("f3"), _row("ms_ssim", B)]
    assert _targets(monkeypatch, ranked, "top", top_n) == want


def test_the_best_feature_space_below_the_top_n_is_bootstrapped(monkeypatch):
    ranked = [_row("psnr", B), _row("ssim", B), _row("ms_ssim", B), _row("f1"), _row("f2")]
    assert _targets(monkeypatch, ranked, "top", 1) == ["psnr", "ssim", "ms_ssim", "f1"]
    assert _targets(monkeypatch, ranked, "all", 1) == ["psnr", "ssim", "ms_ssim", "f1", "f2"]


def test_no_resamples_no_bootstrap(monkeypatch):
    seen = []
    monkeypatch.setattr(ev, "bootstrap", lambda r, *a, **k: seen.append(r.label))
    ranking = run_plan.RankingSettings("auto", n_resamples=0, scope="all", confidence=0.95, top_n=3)
    scoring = run_plan.Stages.of(user_config.default_config()).scoring
    sweep.bootstrap_top([_row("f1")], ranking, scoring, {}, 1, {})
    assert seen == []


def _conf(metric, model=None, params=None):
    return SimpleNamespace(metric=metric, model=None if model is None else
                           SimpleNamespace(type=model, params=params or {}))


def test_schedule_splits_the_group_that_would_be_the_critical_path():
    """sweep.schedule: the most work first (configurations x width); with 2 jobs the group of
    a wide space (90% of the work) becomes 2 tasks, each configuration in exactly one, in grid
    order; a distribution model's configurations stay together (one fit), and so do the
    distance-based metrics (one Geometry); with 1 job nothing is split."""
    wide = [_conf("fid"), _conf("mahalanobis", "gaussian"), _conf("precision"), _conf("kid"),
            _conf("neg_loglik", "gaussian"), _conf("recall"), _conf("mahalanobis", "gmm", {"k": 2}),
            _conf("realism"), _conf("neg_loglik", "gmm", {"k": 2}), _conf("energy"), _conf("cmmd"),
            _conf("mahalanobis", "gmm", {"k": 3})]
    narrow = [_conf("fid"), _conf("kid")]
    small = [_conf("fid")]
    tasks = sweep.schedule([narrow, wide, small], [100, 5000, 100], 2)
    assert len(tasks) == 4 and tasks[2:] == [narrow, small]
    a, b = tasks[:2]
    assert sorted(map(id, a + b)) == sorted(map(id, wide)) and min(len(a), len(b)) >= 4
    # by hand: the units in grid order are fid, gaussian (1, 4), the distances (2, 5, 7, 9), kid,
    # gmm k=2 (6, 8), cmmd, gmm k=3; each goes to the part with fewer configurations (the first
    # on a tie)
    assert [wide.index(c) for c in a] == [0, 2, 5, 7, 9, 10]
    assert [wide.index(c) for c in b] == [1, 3, 4, 6, 8, 11]
    for part in (a, b):
        assert [wide.index(c) for c in part] == sorted(wide.index(c) for c in part)

    def together(pred):
        return sum(any(pred(c) for c in part) for part in (a, b)) == 1
    assert together(lambda c: c.model is not None and c.model.type == "gaussian")
    assert together(lambda c: c.model is not None and c.model.params == {"k": 2})
    assert together(lambda c: c.metric in ("precision", "recall", "realism", "energy"))
    assert len(a) * 5000 >= len(b) * 5000                     # the larger part first

    one = sweep.schedule([narrow, wide, small], [100, 5000, 100], 1)
    assert one == [wide, narrow, small]
    # no group with more than half of the work (200, 180, 100 of 480): nothing is split
    assert sweep.schedule([small, wide, narrow], [100, 15, 100], 2) == [narrow, wide, small]
    # exactly half of the work (200 of 400) is not more than 1/jobs: not split either
    other = [_conf("kid"), _conf("fid")]
    assert sweep.schedule([narrow, other], [100, 100], 2) == [narrow, other]


def test_one_distribution_model_is_one_unit_whatever_the_order_of_its_parameters():
    """Two configurations of a GMM whose parameters differ only in the order they were written:
    one model, fitted once, so one task even with 2 jobs and all the work in that group."""
    confs = [_conf("mahalanobis", "gmm", {"k": 2, "covariance": "diag"}),
             _conf("neg_loglik", "gmm", {"covariance": "diag", "k": 2})]
    assert sweep.schedule([confs], [5000], 2) == [confs]
    other = [_conf("mahalanobis", "gmm", {"k": 2}), _conf("neg_loglik", "gmm", {"k": 3})]
    assert sorted(map(len, sweep.schedule([other], [5000], 2))) == [1, 1]

"""Every transform x model x metric on every output form is scored or not run with a rule:
never an exception, never a NaN in the results, never a configuration skipped for cost."""
import math

import numpy as np
import pytest

from featrank import evaluation as ev
from featrank import configurations
from featrank.user_config import default_config
from featrank.dataset import ImageRecord
from featrank.feature_cache import LayerCache, evaluation_units, reference_units
from featrank.feature_spaces import FeatureAssembler

DEGS = {"blur": {"type": "gaussian_blur", "levels": [1.0, 2.0]}}
RECORDS = [ImageRecord(f"/x/{i}", f"{i:064x}") for i in range(30)]


class FakeCache(LayerCache):
    """A LayerCache (keys, derived artefacts) whose activations are synthetic: their spread
    grows with the level, times `factor`."""

    def __init__(self, root, shape, seed=0, factor=1.0):
        super().__init__(str(root), "fake", 0, "p", {"shape": list(shape), "factor": factor},
                         RECORDS[8:], RECORDS[:8], seed)
        self.shape, self.seed, self.factor = shape, seed, factor

    def load(self, unit, mmap=True):
        rng = np.random.default_rng([self.seed, unit.position, len(unit.group), len(unit.records)])
        x = rng.normal(size=(len(unit.records),) + self.shape) * (1 + 0.5 * unit.position)
        # float16 values, as the cache stores them: times 1000 they stay exact in float32
        return x.astype(np.float16).astype(np.float32) * np.float32(self.factor)


FORMS = {"map": (6, 3, 3), "tokens": (1 + 9, 6), "vector": (10,)}
EXTRA = [{"name": "l2_std", "use_gram": False, "l2_normalize": True, "standardize": True},
         {"name": "pca_white", "use_gram": False, "use_pca": True, "pca_dim": 3, "whiten": True},
         {"name": "cls", "use_gram": False, "vit_pool": "cls"},
         {"name": "cls_mean", "use_gram": False, "vit_pool": "cls_mean"},
         {"name": "gram_l2_pca", "use_gram": True, "l2_normalize": True, "use_pca": True, "pca_dim": 4}]


def run_grid(root, shape, patch=None, max_bytes=2 * 1024**3, transforms=None, factor=1.0,
             metrics=None, precision="float32"):
    cfg = default_config()
    cfg["kid"]["subsets"] = None
    ref_units, eval_units = reference_units(RECORDS[8:]), evaluation_units(RECORDS[:8], DEGS)
    asm = FeatureAssembler({"p": FakeCache(root, shape, factor=factor)}, ref_units, eval_units,
                           9, patch, max_bytes, precision)
    transforms = transforms or cfg["feature_transforms"] + EXTRA
    lc = {"name": "l", "layers": [0], "paths": ["p"], "aggregate": "concat"}
    grid = configurations.build_grid("fake", [lc], transforms, cfg["distribution_models"],
                         metrics or cfg["distance_metrics"])
    out = []
    for t in transforms:
        confs = [c for c in grid if c.transform.name == t["name"]]
        out += ev.score_group(confs, lambda t=t: asm.space(lc, t), DEGS, 0, kid=cfg["kid"],
                              cmmd=cfg["cmmd"])
    for r in out:
        if r.scored:
            scores = [s for d in r.per_degradation.values() for s in d["scores"]]
            assert all(math.isfinite(s) for s in scores), r.label
            assert -1 <= r.mean_spearman <= 1
        else:
            assert len(r.reason) > 15, r.label
            assert "cost" not in r.reason and "limit" not in r.reason, r.reason
    return out


@pytest.mark.parametrize("form", list(FORMS))
def test_every_combination_is_scored_or_not_run_with_a_rule(form, tmp_path):
    out = run_grid(tmp_path, FORMS[form], patch=3 if form == "tokens" else None)
    assert not [r for r in out if r.status == "failed"], [(r.label, r.reason) for r in out if r.status == "failed"]
    assert sum(r.scored for r in out) >= len(out) // 2
    if form == "vector":   # a Gram needs positions
        assert any("Gram matrix needs" in r.reason for r in out if not r.scored)


def test_wide_gram_runs_as_kernel_blocks(tmp_path):
    """2048 channels: explicit rows would exceed the budget given here, so the Gram is held as
    kernel blocks; every two-sample and paired metric, PCA, the Gaussian and the KDE still run."""
    transforms = [{"name": "gram_only", "use_gram": True},
                  {"name": "gram_pca", "use_gram": True, "use_pca": True, "pca_dim": 4}]
    out = run_grid(tmp_path, (2048, 2, 2), max_bytes=2**24, transforms=transforms)
    by = {(r.conf.transform.name, r.conf.model.name if r.conf.model else "", r.conf.metric): r for r in out}
    for metric in ("fid", "kid", "cmmd", "mmd_rbf"):
        assert by[("gram_only", "", metric)].scored
    for key in (("gram_only", "gaussian", "mahalanobis"), ("gram_only", "gaussian", "neg_loglik"),
                ("gram_only", "kde", "neg_loglik")):
        assert by[key].scored, by[key].reason
    assert all(r.scored for r in out if r.conf.transform.name == "gram_pca"), \
        [(r.label, r.reason) for r in out if r.conf.transform.name == "gram_pca" and not r.scored]
    not_run = [r for r in out if not r.scored]
    assert not_run and all(r.status == "not_run" and ("explicit" in r.reason or "kernel blocks" in r.reason)
                           for r in not_run)
    assert {r.conf.metric for r in not_run if "explicit" not in r.reason} == {"sliced_wasserstein"}
    for metric in ("precision", "recall", "density", "coverage", "energy", "fd_inf", "paired_l2",
                   "paired_cosine"):
        assert by[("gram_only", "", metric)].scored, metric
    assert by[("gram_only", "gaussian", "mahalanobis")].ridge > 0     # 22 images, 2.1 M dims


def test_gaussian_model_metrics_through_the_grid_equal_scipy(tmp_path):
    """Values through the grid, not only that it ran: on the map form (6 channels, 22 reference
    images), raw GAP rows with the Gaussian model give scipy's mean Mahalanobis distance and
    mean negative log-density, for every evaluation set."""
    from scipy.spatial.distance import mahalanobis
    from scipy.stats import multivariate_normal
    out = run_grid(tmp_path, FORMS["map"], transforms=[{"name": "raw"}], metrics=["mahalanobis", "neg_loglik"])
    got = {r.conf.metric: [s for d in r.per_degradation.values() for s in d["scores"]]
           for r in out if r.scored and r.conf.model.name == "gaussian"}
    cache = FakeCache(tmp_path, FORMS["map"])

    def gap(u):
        return cache.load(u).astype(np.float64).mean(axis=(2, 3))
    ref = np.concatenate([gap(u) for u in reference_units(RECORDS[8:])])
    mu, cov = ref.mean(0), np.cov(ref, rowvar=False)
    vi = np.linalg.inv(cov)
    for i, u in enumerate(evaluation_units(RECORDS[:8], DEGS)):
        e = gap(u)
        assert got["mahalanobis"][i] == pytest.approx(np.mean([mahalanobis(x, mu, vi) for x in e]), rel=1e-9)
        assert got["neg_loglik"][i] == pytest.approx(-np.mean(multivariate_normal(mu, cov).logpdf(e)), rel=1e-9)

"""Every transform x model x metric on every output form runs or is skipped with a reason:
never an exception, never a NaN in the results."""
import math

import numpy as np
import pytest

import evaluation as ev
from config import default_config
from dataset import ImageRecord
from feature_cache import evaluation_units, reference_units

DEGS = {"blur": {"type": "gaussian_blur", "levels": [1.0, 2.0]}}


class FakeCache:
    """Stands in for a LayerCache: activations whose spread grows with the level."""

    def __init__(self, shape, seed):
        self.shape, self.seed = shape, seed

    def load(self, unit, mmap=True):
        rng = np.random.default_rng([self.seed, unit.position, len(unit.group)])
        x = rng.normal(size=(len(unit.records),) + self.shape).astype(np.float16)
        return x * (1 + 0.5 * unit.position)


FORMS = {
    "map": (6, 3, 3),
    "tokens": (1 + 9, 6),          # CLS + 3x3 patches
    "vector": (10,),
}


def _run(shape, input_size=9, token_layout=None, max_bytes=2 * 1024**3, max_gflop=200.0,
         transforms=None):
    cfg = default_config()
    cfg["kid"]["subsets"] = None
    recs = [ImageRecord(f"/x/{i}", f"{i:064x}") for i in range(30)]
    ref_units, eval_units = reference_units(recs[8:]), evaluation_units(recs[:8], DEGS)
    asm = ev.FeatureAssembler({"p": FakeCache(shape, 0)}, ref_units, eval_units, input_size,
                              token_layout, max_bytes, max_gflop)
    transforms = transforms or cfg["feature_transforms"] + [
        {"name": "l2_std", "use_gram": False, "l2_normalize": True, "standardize": True},
        {"name": "pca_white", "use_gram": False, "use_pca": True, "pca_dim": 3, "whiten": True},
        {"name": "cls", "use_gram": False, "vit_pool": "cls"},
        {"name": "cls_mean", "use_gram": False, "vit_pool": "cls_mean"}]
    lc = {"name": "l", "layers": [0], "paths": ["p"], "aggregate": "concat"}
    grid = ev.build_grid("fake", [lc], transforms, cfg["distribution_models"], cfg["distance_metrics"])
    memo, outcomes = {}, []
    for conf in grid:
        try:
            res = ev.score_configuration(conf, lambda c=conf: asm.features(c.layer_config, c.transform),
                                         DEGS, cfg, 0, memo)
            scores = [s for d in res["per_degradation"].values() for s in d["scores"]]
            assert all(math.isfinite(s) for s in scores), conf.label
            assert -1 <= res["mean_spearman"] <= 1
            outcomes.append(("ran", conf.label))
        except ev.SkipConfiguration as exc:
            assert len(str(exc)) > 15, conf.label
            outcomes.append(("skipped", conf.label, str(exc)))
    return outcomes


@pytest.mark.parametrize("form", list(FORMS))
def test_every_combination_runs_or_is_skipped_with_a_reason(form):
    layout = {"patch": 3, "prefix_tokens": 1} if form == "tokens" else None
    outcomes = _run(FORMS[form], token_layout=layout)
    ran = [o for o in outcomes if o[0] == "ran"]
    assert len(ran) >= len(outcomes) // 3
    if form == "vector":   # a Gram needs positions
        assert any("Gram matrix needs" in o[2] for o in outcomes if o[0] == "skipped")


def test_wide_gram_goes_through_the_sample_space_or_is_skipped():
    transforms = [{"name": "gram_only", "use_gram": True, "use_pca": False},
                  {"name": "gram_pca", "use_gram": True, "use_pca": True, "pca_dim": 4}]
    # 2048 channels, 2x2 positions: explicit rows would exceed the 1 MiB limit given here
    outcomes = _run((2048, 2, 2), max_bytes=2**20, transforms=transforms)
    ran = {o[1].split(" / ")[-1] for o in outcomes if o[0] == "ran" and "gram_only" in o[1]}
    assert {"fid", "kid", "cmmd", "mmd_rbf"} <= ran
    assert any(o[0] == "ran" and "gram_pca" in o[1] and "mahalanobis" in o[1] for o in outcomes)
    skipped = [o for o in outcomes if o[0] == "skipped" and "gram_only" in o[1]]
    assert skipped and all("use_pca" in o[2] or "covariance" in o[2] for o in skipped)
    # and with no compute budget at all, a clear reason instead of a hang
    outcomes = _run((2048, 2, 2), max_bytes=2**20, max_gflop=1e-6, transforms=transforms)
    assert all(o[0] == "skipped" and "max_kernel_gflop" in o[2] for o in outcomes)

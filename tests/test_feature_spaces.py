"""Feature spaces: the streamed Gram kernel route against explicit float64 Gram rows, CMMD
on the unit sphere, content-keyed features, derived artefacts cached and recomputed."""
import json
import logging
import shutil

import numpy as np
import pytest

from featrank import distance_metrics as dm
from featrank import gram_engine as ge
from featrank import representations as rp
from featrank.user_config import default_config
from featrank.feature_cache import cache_info, evaluation_units, reference_units
from featrank.feature_spaces import FeatureAssembler
from test_every_combination import DEGS, RECORDS, FakeCache, run_grid

TWO_SAMPLE = ["fid", "kid", "cmmd", "mmd_rbf"]


def _scores(results):
    return {(r.conf.transform.name, r.conf.metric): [s for d in r.per_degradation.values()
                                                        for s in d["scores"]]
            for r in results if r.scored}


@pytest.mark.parametrize("route", ["rows", "samples"])
def test_streamed_kernel_route_equals_explicit_float64_gram_rows(tmp_path, monkeypatch, route):
    monkeypatch.setattr(ge, "choose_gram_route", lambda costs: route)
    shape = (16, 3, 3)
    transforms = [{"name": "gram_only", "use_gram": True},
                  {"name": "gram_pca", "use_gram": True, "use_pca": True, "pca_dim": 4},
                  {"name": "gram_unit", "use_gram": True, "l2_normalize": True}]
    # a 128 KiB budget: explicit rows (46 images x 136 dims x 8 B) exceed a quarter of it
    out = run_grid(tmp_path, shape, max_bytes=2**17, transforms=transforms,
                   metrics=TWO_SAMPLE + ["paired_l2", "paired_cosine"], precision="float64")
    assert all(r.scored and "kernel blocks" in " ".join(r.notes) for r in out), [(r.label, r.notes) for r in out]
    got = _scores(out)
    cache = FakeCache(tmp_path, shape)
    ref = np.concatenate([rp.gram_upper(cache.load(u)) for u in reference_units(RECORDS[8:])])
    pca = rp.PostProcess(ref, pca_dim=4)
    units = evaluation_units(RECORDS[:8], DEGS)
    clean = rp.gram_upper(cache.load(next(u for u in units if u.group == "clean")))
    for u in units:
        e = rp.gram_upper(cache.load(u))
        i = (["clean"] + [f"blur{p}" for p in (1, 2)]).index(u.group if u.group == "clean" else f"blur{u.position}")
        direct = {"fid": dm.fid(ref, e), "kid": dm.kid(ref, e, degree=3, coef0=1.0),
                  "cmmd": dm.cmmd(dm.unit_rows(ref), dm.unit_rows(e), 10.0, 1000.0),
                  "mmd_rbf": dm.mmd_rbf(ref, e)}
        for metric, value in direct.items():
            assert got[("gram_only", metric)][i] == pytest.approx(value, rel=1e-6), metric
        pr, pe = pca.apply(ref), pca.apply(e)
        assert got[("gram_pca", "fid")][i] == pytest.approx(dm.fid(pr, pe), rel=1e-6)
        assert got[("gram_pca", "mmd_rbf")][i] == pytest.approx(dm.mmd_rbf(pr, pe), rel=1e-6)
        assert got[("gram_only", "paired_l2")][i] == pytest.approx(dm.paired_l2(e, clean), rel=1e-6, abs=1e-12)
        assert got[("gram_only", "paired_cosine")][i] == pytest.approx(dm.paired_cosine(e, clean), rel=1e-6, abs=1e-12)
        ue, uc = dm.unit_rows(e), dm.unit_rows(clean)
        assert got[("gram_unit", "paired_l2")][i] == pytest.approx(dm.paired_l2(ue, uc), rel=1e-6, abs=1e-12)
        assert got[("gram_pca", "paired_l2")][i] == pytest.approx(dm.paired_l2(pe, pca.apply(clean)), rel=1e-6, abs=1e-12)


def test_explicit_rows_score_with_the_published_constants(tmp_path):
    """Explicit rows (GAP and a Gram that fits): every two-sample metric through the pipeline's
    scorers equals the metric on the rows, with the papers' constants written out here: CMMD
    sigma 10 and scale 1000 on unit rows (Jayasumana et al. 2024's reference), KID degree 3,
    gamma 1/d, coef0 1 (Binkowski et al. 2018), RBF-MMD at the median distance."""
    transforms = [{"name": "raw"}, {"name": "gram_only", "use_gram": True}]
    out = run_grid(tmp_path, (6, 3, 3), transforms=transforms, metrics=TWO_SAMPLE, precision="float64")
    assert all(r.scored and "kernel blocks" not in " ".join(r.notes) for r in out)
    got = _scores(out)
    cache = FakeCache(tmp_path, (6, 3, 3))
    rep = {"raw": lambda a: a.astype(np.float64).mean(axis=(2, 3)), "gram_only": rp.gram_upper}
    for name, f in rep.items():
        ref = np.concatenate([f(cache.load(u)) for u in reference_units(RECORDS[8:])])
        for i, u in enumerate(evaluation_units(RECORDS[:8], DEGS)):
            e = f(cache.load(u))
            assert got[(name, "cmmd")][i] == pytest.approx(
                dm.cmmd(dm.unit_rows(ref), dm.unit_rows(e), sigma=10.0, scale=1000.0), rel=1e-9)
            assert got[(name, "kid")][i] == pytest.approx(
                dm.kid(ref, e, degree=3, gamma=1.0 / ref.shape[1], coef0=1.0), rel=1e-9)
            assert got[(name, "fid")][i] == pytest.approx(dm.fid(ref, e), rel=1e-9)
            assert got[(name, "mmd_rbf")][i] == pytest.approx(dm.mmd_rbf(ref, e, sigma="median"), rel=1e-9)


@pytest.mark.parametrize("max_bytes", [2**31, 2**17], ids=["explicit-gram", "kernel-gram"])
def test_cmmd_is_unchanged_when_every_activation_is_multiplied_by_1000(tmp_path, max_bytes):
    transforms = default_config()["feature_transforms"]
    a = _scores(run_grid(tmp_path / "a", (16, 3, 3), max_bytes=max_bytes, transforms=transforms,
                         metrics=["cmmd", "fid"]))
    b = _scores(run_grid(tmp_path / "b", (16, 3, 3), max_bytes=max_bytes, transforms=transforms,
                         metrics=["cmmd", "fid"], factor=1000.0))
    cmmd = [k for k in a if k[1] == "cmmd"]
    assert len(cmmd) == len(transforms)
    for k in cmmd:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-9, atol=0)
    # FID is not scale-free: it does move (the comparison above is not vacuous)
    assert b[("raw", "fid")][1] == pytest.approx(1e6 * a[("raw", "fid")][1], rel=1e-9)


def test_same_layers_with_different_aggregates_give_their_own_features(tmp_path):
    ref_units, eval_units = reference_units(RECORDS[8:]), evaluation_units(RECORDS[:8], DEGS)
    caches = {"p": FakeCache(tmp_path, (6, 3, 3), seed=1), "q": FakeCache(tmp_path / "q", (6, 3, 3), seed=2)}
    asm = FeatureAssembler(caches, ref_units, eval_units, 9, None, 2**30)
    t = {"name": "raw"}
    concat = asm.space({"name": "x", "paths": ["p", "q"], "aggregate": "concat"}, t)
    mean = asm.space({"name": "x", "paths": ["p", "q"], "aggregate": "mean"}, t)

    def gap(name, unit):
        return caches[name].load(unit).astype(np.float64).mean(axis=(2, 3))
    ref_p = np.concatenate([gap("p", u) for u in ref_units])
    ref_q = np.concatenate([gap("q", u) for u in ref_units])
    np.testing.assert_allclose(concat.ref, np.concatenate([ref_p, ref_q], axis=1), rtol=1e-12)
    np.testing.assert_allclose(mean.ref, (ref_p + ref_q) / 2, rtol=1e-12)
    u = eval_units[-1]
    np.testing.assert_allclose(mean.evals[(u.group, u.position)], (gap("p", u) + gap("q", u)) / 2, rtol=1e-12)


def test_derived_kernel_blocks_are_cached_listed_and_recomputed_when_deleted(tmp_path, caplog):
    ref_units, eval_units = reference_units(RECORDS[8:]), evaluation_units(RECORDS[:8], DEGS)
    lc, t = {"name": "l", "paths": ["p"]}, {"name": "g", "use_gram": True}

    def blocks():
        asm = FeatureAssembler({"p": FakeCache(tmp_path, (64, 2, 2))}, ref_units, eval_units, 9, None, 2**17)
        return asm.space(lc, t).kernel
    caplog.set_level(logging.INFO)
    first = blocks()
    assert "kernel blocks in" in caplog.text
    caplog.clear()
    second = blocks()
    assert "from the derived cache" in caplog.text and "kernel blocks in" not in caplog.text
    np.testing.assert_array_equal(first.rr, second.rr)
    rows = [r for r in cache_info(str(tmp_path)) if r["entry"].startswith("derived_")]
    assert rows and rows[0]["kind"] == "gram_kernel" and rows[0]["complete"]
    shutil.rmtree(tmp_path / "fake" / "single_layer_0" / rows[0]["entry"])
    caplog.clear()
    third = blocks()
    assert "kernel blocks in" in caplog.text
    np.testing.assert_array_equal(first.rr, third.rr)
    for k in first.re:
        np.testing.assert_array_equal(first.re[k], third.re[k])


@pytest.mark.slow
def test_float32_gram_gemm_is_within_1e4_of_float64_for_fid_on_a_real_cached_layer(tmp_path, monkeypatch):
    """resnet50 layer3 (random init, 32 px) from a real cache: the float32 GEMM path of the
    kernel route against float64."""
    from featrank import cli
    from helpers import tiny_args, tiny_config
    results = {}
    for precision in ("float32", "float64"):
        user = tiny_config(gram_precision=precision, max_representation_bytes=2**20,
                          feature_transforms=[{"name": "gram_only", "use_gram": True}],
                          distance_metrics=["fid"], baselines=[])
        assert cli.main(tiny_args(tmp_path, "--mode", "medium", "--layers", "7", "--n-inference", "12",
                                   "--n-evaluation", "5", "--n-resamples", "0"), user=user) == 0
        (run,) = [p for p in (tmp_path / "results").iterdir() if p.name not in results.values()]
        results[precision] = run.name
        data = json.loads(next(run.glob("results_*.json")).read_text())
        (r,) = data["results"]
        assert r["status"] == "scored" and "kernel blocks" in " ".join(r["notes"]), r
        results[precision + "_scores"] = [s for d in r["per_degradation"].values() for s in d["scores"]]
    np.testing.assert_allclose(results["float32_scores"], results["float64_scores"], rtol=1e-4)
    # the setting reaches the GEMMs: float32 rounds differently from float64 (if it were
    # ignored, the two runs would give the same bytes)
    assert results["float32_scores"] != results["float64_scores"]

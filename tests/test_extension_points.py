"""Extension points as single tables (issue #42): a metric is a row of distance_metrics.METRICS
and a function, scored in a sweep without touching evaluation.py; a rated format is a row of
rated_database.FORMATS; a backbone's recommended layers are its spec's, and config.py's
ENABLED_LAYERS agrees with them where the user has not changed it."""
import glob
import json
import os
import runpy

import numpy as np
import pytest

from featrank import backbones, cli, perceptual, rated_database
from featrank import distance_metrics as dm
from helpers import tiny_args, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class MeanGapReference:
    """A metric of the test's own: the squared distance between the mean rows, ||mu_e - mu_r||^2
    (the mean term of FID, with nothing of the covariances)."""

    def __init__(self, ref):
        self.mu = np.asarray(ref, np.float64).mean(axis=0)

    def prepare(self, ev):
        return np.asarray(ev, np.float64)

    def score_prepared(self, state, idx=None) -> float:
        rows = state if idx is None else state[idx]
        return float(np.sum((rows.mean(axis=0) - self.mu) ** 2))


def _results(tmp_path) -> dict:
    (path,) = glob.glob(str(tmp_path / "results" / "*" / "results_*.json"))
    with open(path) as f:
        return json.load(f)


def test_a_metric_added_as_a_row_and_a_function_is_scored_in_a_sweep(tmp_path, monkeypatch):
    """Two rows added to METRICS, nothing else: `mean_gap` (a new function) and `fid_twice` (a row
    whose factory is FID's reference). Both are validated, put in the grid, scored and ranked;
    fid_twice's per-level scores equal fid's (the row's factory gets the space's own rows), and
    mean_gap's, FID's mean term, never exceed FID's at the same level (FID = the mean term + a
    covariance term that is >= 0)."""
    monkeypatch.setitem(dm.METRICS, "mean_gap", {**dm.METRICS["fid"], "forms": ("explicit",),
                                                 "reference": lambda m, x: MeanGapReference(x.rows)})
    monkeypatch.setitem(dm.METRICS, "fid_twice", {**dm.METRICS["fid"],
                                                  "reference": lambda m, x: dm.FIDReference(x.rows)})
    user = tiny_config(distance_metrics=["fid", "fid_twice", "mean_gap"], baselines=[],
                       feature_transforms=[{"name": "raw", "use_gram": False}])
    argv = tiny_args(tmp_path, "--mode", "medium", "--layers", "0", "--n-inference", "8",
                     "--n-evaluation", "5", "--jobs", "1", "--n-resamples", "5")
    assert cli.main(argv, user=user) == 0
    rows = {r["metric"]: r for r in _results(tmp_path)["results"]}
    assert {"fid", "fid_twice", "mean_gap"} <= set(rows), sorted(rows)
    for name in ("fid", "fid_twice", "mean_gap"):
        assert rows[name]["status"] == "scored", rows[name].get("reason")
        assert np.isfinite(rows[name]["mean_spearman"])
    fid, twice, gap = ({d: v["scores"] for d, v in rows[n]["per_degradation"].items()}
                       for n in ("fid", "fid_twice", "mean_gap"))
    assert fid and twice == fid
    for deg in fid:
        assert len(gap[deg]) == len(fid[deg]) >= 3
        assert all(0 <= g <= f + 1e-9 for g, f in zip(gap[deg], fid[deg])), deg
    with open(os.path.join(ROOT, "featrank", "evaluation.py")) as f:
        assert "mean_gap" not in f.read() and "fid_twice" not in f.read()


def test_a_row_without_a_reference_factory_is_refused_by_name():
    with pytest.raises(dm.MetricInputError, match="psnr"):
        dm.reference_for("psnr", None)


def test_every_feature_metric_row_has_a_reference_factory_and_every_pixel_row_a_function_or_network():
    for name, row in dm.METRICS.items():
        if row["forms"] == ("pixels",):
            assert row["reference"] is None
            assert (row["pixels"] is not None) != (name in perceptual.NETWORK_BASELINES), name
        else:
            assert callable(row["reference"]), name


def test_a_rated_format_is_one_row_tried_in_order(tmp_path):
    """FORMATS is the table read_ratings walks: a file is read by the first row whose sniff
    accepts it, and the unknown-format message names every row."""
    names = [f.name for f in rated_database.FORMATS]
    assert names == ["kadid10k", "unified", "raise", "pairs", "csv", "tid"]
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n")
    with pytest.raises(rated_database.RatingsError) as err:
        rated_database.read_ratings(str(odd))
    for f in rated_database.FORMATS:
        assert f.shown in str(err.value)


def test_enabled_layers_agree_with_each_specs_recommended_layers():
    """config.py as shipped: ENABLED_LAYERS enables exactly the spec's recommended layers of
    every registered backbone, and QUICK names one of them."""
    shipped = runpy.run_path(os.path.join(ROOT, "config.py"))
    enabled, quick = shipped["ENABLED_LAYERS"], shipped["QUICK"]["layers"]
    assert set(enabled) == set(backbones.BACKBONES)
    for name, spec in backbones.BACKBONES.items():
        assert {i for i, on in enabled[name].items() if on} == set(spec.recommended), name
        assert set(enabled[name]) == set(range(len(spec.layers))), name
        assert set(quick[name]) <= set(range(len(spec.layers))), name

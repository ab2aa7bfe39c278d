"""A medium run on the built-in data: every output file, one CSV row per configuration,
identical results for the same seed."""
import json

import pandas as pd
import pytest
from PIL import Image

from featrank import cli
from helpers import tiny_args, tiny_config


def _run(tmp_path):
    before = set((tmp_path / "results").iterdir()) if (tmp_path / "results").exists() else set()
    assert cli.main(tiny_args(tmp_path, "--mode", "medium", "--n-inference", "12",
                               "--n-evaluation", "5"), user=tiny_config()) == 0
    (run_dir,) = set((tmp_path / "results").iterdir()) - before
    return run_dir


@pytest.mark.slow
def test_medium_run_writes_every_output_and_is_reproducible(tmp_path, monkeypatch, capsys):
    run_dir = _run(tmp_path)
    stamp = run_dir.name.split("_", 1)[1]
    names = {p.name for p in run_dir.iterdir()}
    for f in (f"results_medium_{stamp}.csv", f"results_medium_{stamp}.json", "monotonicity_top1.png",
              "monotonicity_top5.png", "heatmap_mean_rho.png", "config_resolved.json",
              "experiment.log", "summary.txt"):
        assert f in names, f
    out = capsys.readouterr().out
    assert "TOP PERFORMING CONFIGURATIONS" in out and "RANDOM-INIT" in out and "95% CI" in out

    df = pd.read_csv(run_dir / f"results_medium_{stamp}.csv")
    n_t, n_m, n_field = 3, 4, 10
    # layers x transforms x (fid kid cmmd mmd_rbf + the field's 10 other two-sample, paired and per-image (realism)
    # metrics + mahalanobis x 3 models with a covariance + neg_loglik x 4), and 3 baselines
    assert len(df) == 3 * n_t * (4 + n_field + (n_m - 1) + n_m) + 3
    assert set(df[df.backbone == "baseline"].label) == {"baseline:psnr", "baseline:ssim", "baseline:ms_ssim"}
    assert not ((df.metric == "mahalanobis") & (df.distribution == "kde")).any()
    two_sample = df[df.metric.isin(["fid", "kid", "cmmd", "mmd_rbf"])]
    assert len(two_sample) > 0 and two_sample.distribution.isna().all()
    key = ["layer_config", "transform", "distribution", "metric"]
    assert not df.duplicated(subset=key).any()
    assert set(df.status) <= {"scored", "not_run", "failed"}
    scored = df[df.status == "scored"]
    assert len(scored) > 10 and scored["mean_spearman"].between(-1, 1).all()
    assert (df[df.status != "scored"].reason.str.len() > 10).all()
    # every Gram configuration with a two-sample metric or PCA has scores, at every layer
    gram = df[df["transform"].isin(["gram_only", "gram_pca"])]
    needed = gram[gram.metric.isin(["fid", "kid", "cmmd", "mmd_rbf"]) | (gram["transform"] == "gram_pca")]
    knn = needed.reason.fillna("").str.contains("nearest neighbour")     # 5 evaluation images < k + 1
    assert set(needed[knn].metric) == {"density", "coverage"}
    needed = needed[~knn]
    assert len(needed) > 0 and (needed.status == "scored").all(), needed[needed.status != "scored"][["layer_config", "reason"]]
    data = json.loads((run_dir / f"results_medium_{stamp}.json").read_text())
    assert data["counts"]["scored"] == len(scored) and data["counts"]["total"] == len(df)
    assert "not run" in out and "scored" in out
    assert scored["rank"].tolist() == list(range(1, len(scored) + 1))
    assert scored.head(5)["mean_spearman_ci_low"].notna().all()
    assert {"module_paths", "weights", "seed", "n_reference", "rho_blur", "tau_noise",
            "sensitivity_blur"} <= set(df.columns)
    first = data["results"][0]
    assert len(first["per_degradation"]["blur"]["scores"]) == 3     # clean + 2 levels
    for png in ("monotonicity_top1.png", "heatmap_mean_rho.png"):
        with Image.open(run_dir / png) as im:
            assert im.size[0] > 300

    _check_raw_fid_from_the_cache_files(tmp_path / "cache", data)

    # same seed, second run from the warm cache: identical apart from the timestamp
    run2 = _run(tmp_path)
    stamp2 = run2.name.split("_", 1)[1]
    csv1 = (run_dir / f"results_medium_{stamp}.csv").read_text()
    csv2 = (run2 / f"results_medium_{stamp2}.csv").read_text()
    assert csv1 == csv2
    j1 = json.loads((run_dir / f"results_medium_{stamp}.json").read_text())
    j2 = json.loads((run2 / f"results_medium_{stamp2}.json").read_text())
    j1.pop("timestamp"), j2.pop("timestamp")
    assert j1 == j2


def _check_raw_fid_from_the_cache_files(cache_dir, data):
    """The values, not only that it ran: a single-layer raw-GAP FID configuration's scores
    equal pytorch-fid's Fréchet distance on the GAP of the cached .npy files read straight from
    disk, and its per-degradation rho and tau equal scipy's on (severity, score)."""
    import numpy as np
    from pytorch_fid.fid_score import calculate_frechet_distance
    from scipy.stats import kendalltau, spearmanr

    def gap(path):
        a = np.load(path).astype(np.float64)
        return a.reshape(len(a), a.shape[1], -1).mean(axis=2)

    def stats(x):
        return x.mean(0), np.cov(x, rowvar=False)
    candidates = []
    for r in data["results"]:
        if r["status"] == "scored" and r["metric"] == "fid" and r["transform"] == "raw" \
                and len(r["layers"]) == 1:
            layer = cache_dir / "resnet50" / f"single_layer_{r['layers'][0]}"
            (ref_dir,) = layer.glob("ref_*")
            channels = np.load(next(ref_dir.glob("chunk_*.npy")), mmap_mode="r").shape[1]
            candidates.append((channels, r["layers"][0], r, layer))
    assert len(candidates) == 3, candidates
    # the narrowest layer (pytorch-fid's sqrtm of a 2048 x 2048 covariance takes ~17 s)
    _, _, r, layer = min(candidates)
    (ref_dir,) = layer.glob("ref_*")
    (eval_dir,) = layer.glob("eval_*")
    mu_r, s_r = stats(np.concatenate([gap(p) for p in sorted(ref_dir.glob("chunk_*.npy"))]))
    for name, d in r["per_degradation"].items():
        files = [eval_dir / "clean" / "level_00.npy"] + \
            [eval_dir / name / f"level_{i:02d}.npy" for i in range(1, len(d["levels"]))]
        expected = [calculate_frechet_distance(mu_r, s_r, *stats(gap(f))) for f in files]
        np.testing.assert_allclose(d["scores"], expected, rtol=1e-5)
        severity = range(len(expected))
        assert d["spearman"] == pytest.approx(spearmanr(severity, d["scores"])[0], abs=1e-12)
        assert d["kendall"] == pytest.approx(kendalltau(severity, d["scores"])[0], abs=1e-12)

"""The newest surfaces under bad input (issue #35): FeatureMetric and --generator take only uint8
or float images in [0, 1]; spec strings, saved references and results JSONs are checked when
read; report.html escapes every value; cached baseline values carry records; ratings files are
checked when read (images decoded, paths inside the database, headers normalised); flags that
would do nothing are errors. Each bad input is one line, its exit code, no traceback, and
nothing written where it should not be."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from featrank import apply_metric
from featrank import feature_metric as fm
from featrank import metric_spec
from featrank import cli
from featrank import run_plan
from featrank import user_config
from featrank.errors import ConfigError, UsageError
from helpers import tiny_args, tiny_config, write_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = "resnet50:8/concat/gap/kid"


def _one_line(capsys, rc, argv, user=None, code=2):
    capsys.readouterr()
    assert cli.main(argv, user=user or tiny_config()) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("surfaces")
    write_images(tmp / "ref", n=8, seed=1)
    write_images(tmp / "eval", n=6, seed=2)
    return tmp


# ---------------------------------------------------------------------- images at the boundary

def _metric(ref):
    import torch
    return fm.FeatureMetric(SPEC, reference=torch.from_numpy(ref),
                            settings={"weights": "random", "image_size": 32, "working_size": 32,
                                      "batch_size": 4})


def _images(n=6, seed=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def test_only_uint8_and_float_in_0_1_are_scored_and_they_agree():
    """Every dtype and range class: uint8 and float in [0, 1] give the same score; float
    outside [0, 1] (0-255 values, negatives), signed and wider integers, bool, complex, NaN,
    another rank or channel count, the meta device are refused with one line, and the metric
    is as it was (the next compute gives the first score)."""
    import torch
    ref, x = _images(10, 1), _images()
    m = _metric(ref)
    m.update(torch.from_numpy(x))
    want = m.compute()
    m.reset()
    m.update(torch.from_numpy(x).float() / 255.0)
    assert m.compute() == pytest.approx(want, rel=1e-6)
    m.update(torch.from_numpy(x).double() / 255.0)          # float64 in [0, 1] too
    m.reset()
    bad = {"float 0-255": torch.from_numpy(x).float(), "negative": torch.from_numpy(x).float() / 255 - 0.5,
           "int32": torch.from_numpy(x).int(), "int64": torch.from_numpy(x).long(),
           "int8": torch.from_numpy(x // 2).to(torch.int8), "int16": torch.from_numpy(x).short(),
           "bool": torch.from_numpy(x) > 100, "complex": torch.from_numpy(x).to(torch.complex64),
           "nan": torch.full((2, 3, 32, 32), float("nan")), "inf": torch.full((2, 3, 32, 32), float("inf")),
           "rank 3": torch.from_numpy(x[0]), "4 channels": torch.zeros(2, 4, 32, 32, dtype=torch.uint8),
           "empty": torch.zeros(0, 3, 32, 32, dtype=torch.uint8),
           "meta": torch.empty(2, 3, 32, 32, device="meta"), "list": [1, 2, 3], "none": None}
    for name, batch in bad.items():
        m.update(torch.from_numpy(x[:2]))                    # state before the refused batch
        before = len(m._pending)
        with pytest.raises(UsageError) as exc:
            m.update(batch)
        assert "\n" not in str(exc.value), name
        assert len(m._pending) == before, name
        m.reset()
    m.update(torch.from_numpy(x))
    assert m.compute() == pytest.approx(want, rel=1e-6)
    m.reset()
    m.update(features=np.ones((3, 2048)))
    with pytest.raises(UsageError, match="width 7"):
        m.update(features=np.ones((3, 7)))


def test_a_batch_of_another_size_is_refused_and_the_state_kept():
    """Three batch sizes (1, 3 and 5 images) of one image size score as the same images given at
    once; a batch of another height or width is one line naming both sizes, and the metric is
    as it was (the next compute gives the first score); reset() accepts a new size."""
    import torch
    ref, x = _images(10, 1), _images(9, 4)
    m = _metric(ref)
    m.update(torch.from_numpy(x))
    want = m.compute()
    m.reset()
    for part in (x[:1], x[1:4], x[4:]):
        m.update(torch.from_numpy(part))
    pending, rows = len(m._pending), len(m._rows)
    for other in ((2, 3, 32, 40), (2, 3, 24, 32)):
        with pytest.raises(UsageError, match=r"images of \d+x\d+ px, but the images so far are 32x32") as exc:
            m.update(torch.zeros(other, dtype=torch.uint8))
        assert "\n" not in str(exc.value)
        assert (len(m._pending), len(m._rows)) == (pending, rows)
    assert m.compute() == pytest.approx(want, rel=1e-6)
    m.reset()
    m.update(torch.zeros((5, 3, 40, 40), dtype=torch.uint8))     # a new size after reset()
    assert np.isfinite(m.compute())


def test_the_running_fid_refuses_nan_and_other_widths():
    import torch
    m = fm.FeatureMetric("resnet50:8/concat/gap/fid", reference=torch.from_numpy(_images(10, 1)),
                         settings={"weights": "random", "image_size": 32, "working_size": 32})
    assert m.running
    bad = torch.from_numpy(_images()).float() / 255
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(UsageError, match="NaN"):
        m.update(bad)
    m.update(features=np.ones((2, 2048)))
    with pytest.raises(UsageError, match="width 10"):
        m.update(features=np.ones((2, 10)))


def test_a_growing_rows_state_says_so_once(caplog, monkeypatch):
    import logging
    import torch
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(fm, "STATE_WARN_BYTES", 10_000)
    m = fm.FeatureMetric("resnet50:8/concat/gram/kid", reference=torch.from_numpy(_images(10, 1)),
                         settings={"weights": "random", "image_size": 32, "working_size": 32,
                                   "batch_size": 4})
    for _ in range(3):
        m.update(torch.from_numpy(_images(4)))
    said = [r for r in caplog.records if "keeps every image's rows" in r.getMessage()]
    assert len(said) == 1 and "reset()" in said[0].getMessage()


GENERATORS = '''
import numpy as np
import torch
def good(n):
    return torch.from_numpy(np.random.default_rng(n).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8))
def good_float(n):
    return good(n).float() / 255
def float255(n):
    return good(n).float()
def int64(n):
    return good(n).long()
def nothing(n):
    return None
def a_list(n):
    return [good(1)[0] for _ in range(n)]
def yields(n):
    yield good(n)
def nan(n):
    return torch.full((n, 3, 32, 32), float("nan"))
'''


def test_generator_batches_are_checked_like_update(folders, tmp_path, capsys, monkeypatch):
    (tmp_path / "gens.py").write_text(GENERATORS)
    monkeypatch.chdir(tmp_path)
    base = tiny_args(tmp_path, "--apply", SPEC, str(folders / "ref"), "--n", "5")
    scores = []
    for fn in ("good", "good_float"):
        capsys.readouterr()
        assert cli.main(base + ["--generator", f"gens:{fn}"], user=tiny_config()) == 0
        scores.append(capsys.readouterr().out.split(" kid = ")[1].split()[0])
    assert scores[0] == scores[1]
    for fn, named in (("float255", "[0, 1]"), ("int64", "int64"), ("nothing", "NoneType"),
                      ("a_list", "list"), ("yields", "generator"), ("nan", "NaN")):
        line = _one_line(capsys, 2, base + ["--generator", f"gens:{fn}"])
        assert named in line and "--generator" in line, line


# ---------------------------------------------------------------------- what --apply reads

@pytest.mark.parametrize("spec", ["resnet50:7+/concat/gap/fid", "resnet50:/concat/gap/fid",
                                  "resnet50:7//gap/fid", "resnet50:7/concat/gap,/fid",
                                  "resnet50:7/concat/gap/gaussian,/mahalanobis", "resnet50:7/concat/gap/"])
def test_a_spec_with_an_empty_part_is_refused(spec):
    with pytest.raises(UsageError, match="empty"):
        metric_spec.parse_spec(spec)


def _results_folder(tmp_path, content):
    d = tmp_path / "run"
    d.mkdir(exist_ok=True)
    (d / "results_medium_1.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return d


@pytest.mark.parametrize("content", ['{"results": 5}', '{"results": [1, 2]}', "[]", "null",
                                     '{"results": [{"rank": 1}]}', '{"results": [{"rank": 1, "label": 3, '
                                     '"backbone": "resnet50", "layer_config": 5}]}', "{not json"])
def test_a_malformed_results_json_for_apply_is_one_line(folders, tmp_path, capsys, content):
    run = _results_folder(tmp_path, content)
    line = _one_line(capsys, 2, tiny_args(tmp_path, "--apply", f"{run}#1", str(folders / "ref"),
                                          str(folders / "eval")))
    assert "results" in line or "rank" in line


def test_a_rank_that_is_not_a_number_is_one_line(folders, tmp_path, capsys):
    run = _results_folder(tmp_path, {"results": []})
    for rank in ("²", "x", "0", "-1"):
        line = _one_line(capsys, 2, tiny_args(tmp_path, "--apply", f"{run}#{rank}", str(folders / "ref"),
                                              str(folders / "eval")))
        assert "rank" in line


@pytest.fixture(scope="module")
def saved(folders, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("saved")
    out = tmp / "ref.npz"
    assert cli.main(tiny_args(tmp, "--save-reference", SPEC, str(folders / "ref"), str(out)),
                     user=tiny_config()) == 0
    with np.load(out) as f:
        return tmp, out, f["rows"], str(f["record"])


@pytest.mark.parametrize("rows, record, named", [
    (np.ones(5), None, "rows"), (np.full((4, 2048), np.nan), None, "NaN"),
    (np.full((4, 2048), np.inf), None, "NaN or inf"), (np.ones((1, 2048)), None, "rows"),
    (np.ones((0, 2048)), None, "rows"), (np.ones((4, 2048), np.int64), None, "int64"),
    (np.array([["a"] * 3] * 3), None, "rows"), (np.ones((4, 2048), np.complex128), None, "complex"),
    (None, "3", "record"), (None, "[1, 2]", "record"), (None, "null", "record")])
def test_a_bad_saved_reference_is_one_line(saved, folders, tmp_path, capsys, rows, record, named):
    tmp, _, good_rows, good_record = saved
    bad = tmp_path / "bad.npz"
    np.savez(bad, rows=good_rows if rows is None else rows,
             record=np.array(good_record if record is None else record))
    line = _one_line(capsys, 2, tiny_args(tmp_path, "--apply", SPEC, str(bad), str(folders / "eval")))
    assert named in line and "--save-reference" in line, line


def test_a_garbage_npz_never_advises_unsafe_loading(folders, tmp_path, capsys):
    bad = tmp_path / "garbage.npz"
    np.savez(bad, rows=np.array([{"a": 1}], dtype=object), record=np.array("{}"))
    line = _one_line(capsys, 2, tiny_args(tmp_path, "--apply", SPEC, str(bad), str(folders / "eval")))
    assert "allow_pickle" not in line and "--save-reference" in line
    bad.write_bytes(b"PK\x03\x04 not a zip at all")
    line = _one_line(capsys, 2, tiny_args(tmp_path, "--apply", SPEC, str(bad), str(folders / "eval")))
    assert "allow_pickle" not in line


def test_a_non_utf8_eval_folder_name_keeps_its_scores(folders, tmp_path, capsys):
    name = os.fsdecode(b"eval_\xff")
    shutil.copytree(folders / "eval", tmp_path / name)
    out = tmp_path / "scores.csv"
    capsys.readouterr()
    assert cli.main(tiny_args(tmp_path, "--apply", SPEC, str(folders / "ref"), str(tmp_path / name),
                               "--out", str(out)), user=tiny_config()) == 0
    printed = capsys.readouterr().out
    assert "kid = " in printed and "\\udcff" in printed
    assert not list(tmp_path.glob("*.tmp")) and "\\udcff" in out.read_text(encoding="utf-8")


def test_a_failure_after_scoring_prints_the_scores_and_leaves_no_tmp(folders, tmp_path, capsys,
                                                                   monkeypatch):
    out = tmp_path / "scores.csv"

    def broken(path, *a, **k):
        open(path + ".tmp", "w").close()
        os.unlink(path + ".tmp")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(apply_metric, "write_scores", broken)
    capsys.readouterr()
    assert cli.main(tiny_args(tmp_path, "--apply", SPEC, str(folders / "ref"), str(folders / "eval"),
                               "--out", str(out)), user=tiny_config()) == 1
    captured = capsys.readouterr()
    assert "kid = " in captured.out and "No space left" in captured.err and "Traceback" not in captured.err
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_apply_checks_a_read_only_cache_before_any_work_and_cache_info_reads_one(folders, tmp_path,
                                                                                   capsys):
    if os.geteuid() == 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        pytest.skip("root writes to read-only folders")   # CI runs as root: see the next line
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        line = _one_line(capsys, 2, ["--apply", SPEC, str(folders / "ref"), str(folders / "eval"),
                                     "--cache-dir", str(ro / "cache"), "--weights", "random",
                                     "--image-size", "32", "-q"])
        assert "--cache-dir" in line
        assert cli.main(["--cache-info", "--cache-dir", str(ro)], user=tiny_config()) == 0
    finally:
        os.chmod(ro, 0o755)


def test_read_only_caches_as_another_user(folders):
    """As a user who cannot write the cache (root writes anywhere, so the check runs as user
    65534 in a subprocess, on a readable copy of the project): --apply refuses before
    extracting, --cache-info lists the cache."""
    import tempfile
    from helpers import readable_copy, run_as_nobody
    if os.geteuid() != 0:
        pytest.skip("needs root to run a command as another user (the test above runs as this one)")
    base = tempfile.mkdtemp(prefix="readonly_")
    try:
        os.chmod(base, 0o755)
        project = readable_copy(base)
        shutil.copytree(folders / "ref", os.path.join(base, "ref"))
        shutil.copytree(folders / "eval", os.path.join(base, "eval"))
        cache = os.path.join(base, "cache")
        os.mkdir(cache, 0o755)                     # root's: not writable by user 65534
        main_py = os.path.join(project, "main.py")
        out = run_as_nobody([main_py, "--apply", SPEC, os.path.join(base, "ref"), os.path.join(base, "eval"),
                             "--cache-dir", cache, "--weights", "random", "--image-size", "32", "-q"], base)
        assert out.returncode == 2 and "--cache-dir" in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert os.listdir(cache) == []
        assert run_as_nobody([main_py, "--cache-info", "--cache-dir", cache], base).returncode == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------- flags that do nothing

@pytest.mark.parametrize("extra, named", [
    (["--mode", "medium", "--rank-by", "mos"], "--mos"),
    (["--mode", "medium", "--mos-bins", "4"], "--mos"),
    (["--mode", "medium", "--mos-orientation", "higher-better"], "--mos"),
    (["--mode", "quick", "--n", "4"], "--apply"),
    (["--mode", "quick", "--out", "x.csv"], "--apply"),
    (["--mode", "quick", "--generator", "a:b"], "--apply")])
def test_a_flag_that_would_do_nothing_is_named(tmp_path, capsys, extra, named):
    line = _one_line(capsys, 2, tiny_args(tmp_path, *extra))
    assert named in line
    assert not (tmp_path / "results").exists()


def test_n_and_eval_folders_and_degradations_that_would_do_nothing(folders, tmp_path, capsys):
    line = _one_line(capsys, 2, tiny_args(tmp_path, "--apply", SPEC, str(folders / "ref"),
                                          str(folders / "eval"), "--n", "4"))
    assert "--generator" in line
    line = _one_line(capsys, 2, tiny_args(tmp_path, "--apply", SPEC, str(folders / "ref"),
                                          str(folders / "eval"), "--generator", "x:y", "--n", "4"))
    assert "EVAL" in line
    (tmp_path / "r.csv").write_text("image,mos\n")
    line = _one_line(capsys, 2, tiny_args(tmp_path, "--mode", "medium", "--mos", str(tmp_path / "r.csv"),
                                          "--degradations", "kadid10k"))
    assert "--degradations" in line and "--mos" in line


# ---------------------------------------------------------------------- every config key's type

WRONG = {"a float": 2.5, "a string": "nonsense", "a list": ["x"], "a dict": {"x": 1}, "True": True,
         "None": None, "a negative int": -3}
# what each key takes, written out here (not read from run_plan), so a lost check fails
VALID = {"dataset": ("a string",), "mos": ("a string", "None"), "mos_reference": ("a string",),
         "mos_bins": (), "mos_orientation": ("None",), "rank_by": (), "seed": (),
         "working_size": (), "n_images_inference": ("None",), "n_images_evaluation": ("None",),
         "backbone": (), "weights": ("a string",), "device": (), "batch_size": (), "image_size": ("None",),
         "num_workers": (), "cache_dir": ("a string",), "results_dir": ("a string",), "cache_dtype": (),
         "jobs": (), "dask_scheduler": ("a string", "None"), "extraction_precision": (),
         "extraction_threads": (), "verify_checksums": ("True",), "layer_configs": ("None",),
         "feature_transforms": (), "distribution_models": (), "distance_metrics": (), "baselines": (),
         "kid": (), "cmmd": (), "degradation_sets": (), "degradations": (), "bootstrap": (),
         "top_n": (), "report": ("True",), "max_representation_bytes": (), "gram_precision": ()}


def test_every_config_key_checks_its_type():
    assert set(VALID) == set(user_config.CONFIG_KEYS)
    base = user_config.default_config()
    for key in user_config.CONFIG_KEYS:
        for what, value in WRONG.items():
            if what in VALID[key]:
                continue
            with pytest.raises(ConfigError) as exc:
                run_plan.validate_config({**base, key: value})
            assert "\n" not in str(exc.value), (key, what)


# ---------------------------------------------------------------------- the report

PAYLOAD = '"><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def _poison(obj):
    if isinstance(obj, dict):
        return {k: _poison(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_poison(v) for v in obj]
    return PAYLOAD if isinstance(obj, str) else obj


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reportrun")
    assert cli.main(tiny_args(tmp, "--mode", "medium", "--layers", "0", "--n-inference", "12",
                               "--n-evaluation", "5", "--no-baselines", "--n-resamples", "10"),
                     user=tiny_config(report=True)) == 0
    return next((tmp / "results").iterdir())


def _poisoned_copy(run_dir, tmp_path, keep=("config", "degradation_order")):
    d = tmp_path / "poisoned"
    shutil.copytree(run_dir, d)
    path = next(d.glob("results_*.json"))
    data = json.loads(path.read_text())
    for k in data:
        if k not in keep:
            data[k] = _poison(data[k])
    for r in data["results"]:                  # every string of every row, rank and status too
        r["rank"], r["status"] = PAYLOAD, PAYLOAD
    path.write_text(json.dumps(data))
    return d


def test_every_string_of_a_results_json_is_text_on_the_page(run_dir, tmp_path, capsys):
    from html.parser import HTMLParser
    d = _poisoned_copy(run_dir, tmp_path)
    capsys.readouterr()
    assert cli.main(["--report", str(d), "-q"], user=tiny_config()) == 0, capsys.readouterr().err
    page = (d / "report.html").read_text()

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.scripts, self.onerror = 0, 0

        def handle_starttag(self, tag, attrs):
            self.scripts += tag == "script"
            self.onerror += any(k.startswith("on") for k, _ in attrs)
    tags = Tags()
    tags.feed(page)
    assert tags.scripts == 1 and tags.onerror == 0           # the template's own script only
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page


def test_the_report_of_an_older_or_foreign_json_is_one_line(run_dir, tmp_path, capsys):
    for i, damage in enumerate((lambda d: d["results"][0].pop("per_degradation"),
                                lambda d: d.pop("counts"), lambda d: d.__setitem__("results", [{"x": 1}]),
                                lambda d: d["config"].pop("degradations"))):
        d = tmp_path / f"old{i}"
        shutil.copytree(run_dir, d)
        path = next(d.glob("results_*.json"))
        data = json.loads(path.read_text())
        damage(data)
        path.write_text(json.dumps(data))
        (d / "report.html").unlink(missing_ok=True)
        capsys.readouterr()
        rc = cli.main(["--report", str(d), "-q"], user=tiny_config())
        err = capsys.readouterr().err
        assert rc in (0, 2) and "Traceback" not in err, err
        if rc == 2:
            assert len(err.strip().splitlines()) == 1


def test_a_dollar_in_a_label_is_plain_text_in_the_plots(run_dir, tmp_path):
    """A backbone or layer named with $ (an hf:/path folder, a module path) is drawn as text,
    not parsed as matplotlib mathtext (an unbalanced $x^$ would raise)."""
    import io
    from featrank import report
    data = json.loads(next(run_dir.glob("results_*.json")).read_text())
    rows = data["results"]
    for r in rows:
        r["label"] = "hf:/models/my$net / layer $x^$ \\frac{"
        r["backbone"] = "hf:/models/my$net"
        r["module_paths"] = ["enc.$x^$"]
    scored = [r for r in rows if r["status"] == "scored"]
    report.plot_monotonicity(io.BytesIO(), scored[0], 1)
    report.plot_heatmap(str(tmp_path / "heatmap.png"), rows, "monotonicity")
    assert (tmp_path / "heatmap.png").stat().st_size > 1000


# ---------------------------------------------------------------------- the baseline cache

def test_a_tampered_or_unrecorded_baseline_value_is_recomputed(tmp_path, caplog):
    import logging
    from featrank import baselines
    from featrank.dataset import builtin_sources, ImageRecord, builtin_identity
    from featrank.feature_cache import evaluation_units
    caplog.set_level(logging.WARNING)
    recs = [ImageRecord(s, builtin_identity(s)) for s in builtin_sources()[:4]]
    units = evaluation_units(recs, {"blur": {"type": "gaussian_blur", "levels": [1.0, 2.0]}})
    first = baselines.baseline_values(["psnr"], units, 48, 0, str(tmp_path)).values["psnr"]
    files = sorted((tmp_path / "baselines" / "psnr").glob("*.npy"))
    assert len(files) == 3 and all(os.path.exists(str(f) + ".record.json") for f in files)
    tampered = files[1]
    np.save(tampered, np.zeros(4))                      # a valid array, another value
    os.unlink(str(files[2]) + ".record.json")           # a file without its record
    again = baselines.baseline_values(["psnr"], units, 48, 0, str(tmp_path)).values["psnr"]
    for k in first:
        np.testing.assert_array_equal(again[k], first[k])
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "checksum mismatch" in said or "size" in said
    assert "no record" in said


# ---------------------------------------------------------------------- ratings files

def _ratings_db(root, n=4):
    from featrank.dataset import builtin_sources, load_rgb
    from featrank import degradation_generator as dg
    img = root / "img"
    img.mkdir(parents=True)
    rows = []
    for i in range(n):
        ref = load_rgb(builtin_sources()[300 + i], 40)
        Image.fromarray(ref).save(img / f"ref{i}.png")
        for t, d in enumerate(("gaussian_blur", "gaussian_noise", "jpeg_compression")):
            out = dg.apply_degradation(ref, d, (1.5, 20, 20)[t], 0, f"r{i}")
            Image.fromarray(out).save(img / f"d{i}_{t}.png")
            rows.append([f"img/d{i}_{t}.png", f"img/ref{i}.png", 3.0 - t * 0.5 + i * 0.01, f"t{t}", 1])
    return rows


def _write_csv(path, header, rows, encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _mos_run(tmp_path, ratings, capsys, code=2):
    return _one_line(capsys, code, tiny_args(tmp_path, "--mode", "medium", "--layers", "0", "--mos",
                                             str(ratings), "--no-baselines", "--n-resamples", "0"))


@pytest.mark.parametrize("how, named", [("not an image", "does not decode"), ("truncated", "does not decode"),
                                        ("empty", "is empty"), ("bomb", "pixel limit")])
def test_a_bad_image_in_a_ratings_file_is_named_with_its_line(tmp_path, capsys, monkeypatch, how, named):
    from featrank import dataset
    rows = _ratings_db(tmp_path / "db")
    target = tmp_path / "db" / "img" / "d2_1.png"
    if how == "not an image":
        target.write_text("hello")
    elif how == "truncated":
        target.write_bytes(target.read_bytes()[:200])
    elif how == "empty":
        target.write_bytes(b"")
    else:
        monkeypatch.setattr(dataset, "MAX_PIXELS", 1000)     # 40 x 40 = 1600 px over the limit
    _write_csv(tmp_path / "db" / "r.csv", ["image", "reference", "mos", "type", "level"], rows)
    line = _mos_run(tmp_path, tmp_path / "db" / "r.csv", capsys)
    assert named in line, line
    if how != "bomb":
        assert "d2_1.png" in line and ":9:" in line
    assert not (tmp_path / "results").exists()


def test_headers_in_any_case_quoted_spaced_and_latin1_are_read(tmp_path, capsys):
    rows = _ratings_db(tmp_path / "db")
    _write_csv(tmp_path / "db" / "upper.csv", [" IMAGE ", "Reference", '"MOS"', "Type", "LEVEL"], rows)
    capsys.readouterr()
    assert cli.main(tiny_args(tmp_path, "--mode", "medium", "--layers", "0", "--mos",
                               str(tmp_path / "db" / "upper.csv"), "--no-baselines", "--n-resamples", "0"),
                     user=tiny_config()) == 0, capsys.readouterr().err
    latin = tmp_path / "db" / "latin_name.csv"          # an image name in Latin-1
    shutil.copy(tmp_path / "db" / "img" / "d0_0.png", tmp_path / "db" / "img" / "d\xe9.png")
    body = [r for r in rows if r[0] != "img/d0_0.png"] + [["img/d\xe9.png", "img/ref0.png", 3.0, "t0", 1]]
    _write_csv(latin, ["image", "reference", "mos", "type", "level"], body, "latin-1")
    capsys.readouterr()
    assert cli.main(tiny_args(tmp_path, "--mode", "medium", "--layers", "0", "--mos", str(latin),
                               "--no-baselines", "--n-resamples", "0"), user=tiny_config()) == 0


@pytest.mark.parametrize("header, rows_fn, named", [
    (["image", "reference", "mos", "mos", "type", "level"], lambda r: [[*x[:3], x[2], *x[3:]] for x in r],
     "given twice"),
    (["image", "reference", "mos", "dmos", "type", "level"], lambda r: [[*x[:3], x[2], *x[3:]] for x in r],
     "both"),
    (["image", "reference", "mos", "type", "level"], lambda r: [[*x[:2], 1e308, *x[3:]] for x in r], "1e+308"),
])
def test_ambiguous_or_absurd_ratings_are_refused(tmp_path, capsys, header, rows_fn, named):
    rows = _ratings_db(tmp_path / "db")
    _write_csv(tmp_path / "db" / "r.csv", header, rows_fn(rows))
    assert named in _mos_run(tmp_path, tmp_path / "db" / "r.csv", capsys)


def test_database_paths_stay_in_the_database(tmp_path, capsys):
    """KADID's ref_img is checked like dist_img; TID's reference is refused when two files
    could be it."""
    from featrank.dataset import builtin_sources, load_rgb
    kadid = tmp_path / "kadid"
    (kadid / "images").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    ref = load_rgb(builtin_sources()[300], 40)
    Image.fromarray(ref).save(tmp_path / "outside" / "I01.png")
    rows = []
    for t in (1, 2, 3):
        Image.fromarray(ref).save(kadid / "images" / f"I01_{t:02d}_01.png")
        rows.append([f"I01_{t:02d}_01.png", "../../outside/I01.png", 3.0, 0.1])
    _write_csv(kadid / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    line = _mos_run(tmp_path, kadid / "dmos.csv", capsys)
    assert "outside" in line and ":2:" in line
    tid = tmp_path / "tid"
    (tid / "distorted_images").mkdir(parents=True)
    (tid / "reference_images").mkdir()
    Image.fromarray(ref).save(tid / "reference_images" / "I01.BMP")
    (tid / "reference_images" / "I01.txt").write_text("notes")
    lines = []
    for t in (1, 2, 3):
        Image.fromarray(ref).save(tid / "distorted_images" / f"i01_{t:02d}_1.bmp")
        lines.append(f"3.0 i01_{t:02d}_1.bmp")
    (tid / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    line = _mos_run(tmp_path, tid / "mos_with_names.txt", capsys)
    assert "ambiguous" in line and "I01.BMP" in line and "I01.txt" in line


def test_a_bad_tid_line_is_quoted_itself(tmp_path, capsys):
    tid = tmp_path / "tid"
    (tid / "distorted_images").mkdir(parents=True)
    (tid / "reference_images").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tid / "distorted_images" / "i01_01_1.bmp")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tid / "reference_images" / "I01.BMP")
    (tid / "mos_with_names.txt").write_text("3.0 i01_01_1.bmp\n2.5 not_a_tid_name.bmp\n")
    line = _mos_run(tmp_path, tid / "mos_with_names.txt", capsys)
    assert ":2:" in line and "not_a_tid_name.bmp" in line and "i01_01_1" not in line


@pytest.mark.slow
def test_a_poisoned_report_runs_nothing_in_a_real_browser(run_dir, tmp_path, capsys):
    """The same page in Chromium: the payload's script never ran, no element carries an event
    handler, and the page's text shows the payload as written."""
    from selenium.webdriver.common.by import By
    from test_report import _browser
    d = _poisoned_copy(run_dir, tmp_path)
    assert cli.main(["--report", str(d), "-q"], user=tiny_config()) == 0, capsys.readouterr().err
    driver = _browser()
    try:
        driver.get((d / "report.html").as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        assert driver.execute_script("return window.__pwned === undefined")
        handlers = driver.execute_script(
            "return Array.from(document.querySelectorAll('*')).filter(e => Array.from(e.attributes)"
            ".some(a => a.name.startsWith('on'))).length")
        assert handlers == 0
        assert len(driver.find_elements(By.TAG_NAME, "script")) == 1
        assert "<script>window.__pwned=1</script>" in driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()


@pytest.mark.parametrize("spec, size", [("inception_fid:15/concat/gap/fid", 40),
                                        ("efficientnet_lite0:11/concat/gap/fid", 16),
                                        ("stlpips_alex:9/concat/gap/fid", 20)])
def test_every_command_that_builds_a_network_checks_its_input_size(folders, tmp_path, capsys, spec, size):
    """--apply, --save-reference and FeatureMetric refuse an image size below the backbone's
    smallest input (BackboneSpec.min_input_size, from the architecture) with one line naming
    where the size was set, before building anything; nothing is written."""
    name = spec.split(":")[0]
    for argv in (["--apply", spec, str(folders / "ref"), str(folders / "eval")],
                 ["--save-reference", spec, str(folders / "ref"), str(tmp_path / "ref.npz")]):
        args = tiny_args(tmp_path, *argv)
        args[args.index("--image-size") + 1] = str(size)
        line = _one_line(capsys, 2, args)
        assert f"--image-size {size} is below {name}'s smallest input" in line, line
    assert not (tmp_path / "ref.npz").exists() and not (tmp_path / "cache").exists()
    with pytest.raises(UsageError, match=rf"settings\['image_size'\] {size} is below {name}'s"):
        fm.FeatureMetric(spec, reference_features=np.zeros((4, 3)), settings={"image_size": size})

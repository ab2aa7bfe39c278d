"""The bad-input catalogue: every kind of bad file or value gets a one-line message naming it
and the fix, the documented exit code (2 usage/configuration, 1 runtime), no traceback, and
loses nothing already done."""
import errno
import json
import logging
import os
import subprocess
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from featrank import run_plan
from featrank import dataset
from featrank import cli
from helpers import build_cache, cache_hits, tiny_args, tiny_config, write_images
from test_cli import _one_line_error


def _err(capsys):
    return _one_line_error(capsys)


# ------------------------------------------------------------------ images

def test_truncated_jpeg_is_skipped_with_a_warning_naming_it(tmp_path, monkeypatch, caplog):
    user = tiny_config()
    write_images(tmp_path / "imgs", n=9)
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "imgs" / "cut.jpg", quality=95)
    data = (tmp_path / "imgs" / "cut.jpg").read_bytes()
    (tmp_path / "imgs" / "cut.jpg").write_bytes(data[:len(data) // 2])
    assert build_cache(tmp_path, user=user) == 0
    assert "cut.jpg" in caplog.text and "unreadable" in caplog.text


def test_16_bit_png_is_scaled_not_white(tmp_path):
    a = (np.arange(40 * 40).reshape(40, 40) * 40).astype(np.uint16)       # 0 .. 63960
    Image.fromarray(a).save(tmp_path / "deep.png")              # uint16 -> mode I;16
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")
    got = dataset.load_rgb(str(tmp_path / "deep.png"), 40)
    expected = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
    assert np.array_equal(got[..., 0], expected) and np.array_equal(got[..., 2], expected)


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = 255                                          # left half white
    exif = Image.Exif()
    exif[0x0112] = 6                                         # rotate 90 degrees clockwise to display
    Image.fromarray(a).save(tmp_path / "rot.jpg", exif=exif, quality=100)
    shown = dataset.load_rgb(str(tmp_path / "rot.jpg"), 20)  # displayed 20 wide, 40 tall: top kept
    assert shown[:, :, 0].mean(axis=1)[:5].mean() > 200     # the white half is now on top


def test_tiny_images_are_warned_about(tmp_path, monkeypatch, caplog):
    write_images(tmp_path / "imgs", n=9)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8) + 90).save(tmp_path / "imgs" / "tiny.png")
    caplog.set_level(logging.WARNING)
    dataset.select_images(str(tmp_path / "imgs"), 3, 7, 0)
    assert "tiny.png" in caplog.text and "upscaled" in caplog.text


# ------------------------------------------------------------------ flags and folders

@pytest.mark.parametrize("argv,flag", [
    (["--image-size", "100000"], "--image-size"), (["--seed", "-1"], "--seed"),
    (["--n-inference", "1"], "--n-inference"), (["--batch-size", "0"], "--batch-size"),
    (["--n-evaluation", "0"], "--n-evaluation"), (["--n-resamples", "-3"], "--n-resamples")])
def test_bad_flag_values_name_the_flag(tmp_path, monkeypatch, capsys, argv, flag):
    user = tiny_config()
    assert cli.main(tiny_args(tmp_path, *argv), user=user) == 2
    assert flag in _err(capsys)
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_missing_weights_file_is_a_usage_error(tmp_path, monkeypatch, capsys):
    user = tiny_config()
    args = tiny_args(tmp_path)
    args[args.index("random")] = str(tmp_path / "none.pth")
    assert cli.main(args, user=user) == 2
    err = _err(capsys)
    assert "--weights" in err and "none.pth" in err


@pytest.mark.parametrize("which", ["cache", "results", "results-parent"])
def test_output_folder_that_is_a_file_fails_before_any_work(tmp_path, monkeypatch, capsys, which):
    user = tiny_config()
    (tmp_path / "afile").write_text("x")
    args = tiny_args(tmp_path)
    target = {"cache": "--cache-dir", "results": "--results-dir", "results-parent": "--results-dir"}[which]
    args[args.index(target) + 1] = str(tmp_path / "afile" / "sub" if which == "results-parent"
                                       else tmp_path / "afile")
    assert cli.main(args, user=user) == 2
    msg = _err(capsys)
    assert target in msg and "afile" in msg
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


UNWRITABLE_RUN = """
import runpy, sys
from featrank import cli
helpers = runpy.run_path({helpers!r})
sys.exit(cli.main({args!r}, user=helpers["tiny_config"]()))
"""


def test_unwritable_cache_folder(tmp_path, monkeypatch, capsys):
    """A cache folder the user may not write to: exit 2 with one line, nothing written. Root
    may write anywhere, so as root (CI) the run is a subprocess as user 65534 (setpriv)."""
    if os.geteuid() != 0:
        user = tiny_config()
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        args = tiny_args(tmp_path)
        args[args.index("--cache-dir") + 1] = str(ro / "cache")
        assert cli.main(args, user=user) == 2 and "not writable" in _err(capsys)
        assert not (ro / "cache").exists()
        return
    import shutil
    import tempfile
    from helpers import readable_copy, run_as_nobody
    base = tempfile.mkdtemp(prefix="unwritable_")        # /tmp/pytest-of-root is 0700
    try:
        os.chmod(base, 0o755)
        root = readable_copy(base)                       # the checkout may be private too
        ro, out = os.path.join(base, "ro"), os.path.join(base, "out")
        os.mkdir(ro, 0o755)                              # root's: not writable by user 65534
        os.mkdir(out)
        os.chmod(out, 0o777)
        args = tiny_args(tmp_path)
        args[args.index("--cache-dir") + 1] = os.path.join(ro, "cache")
        args[args.index("--results-dir") + 1] = os.path.join(out, "results")
        code = UNWRITABLE_RUN.format(helpers=os.path.join(root, "tests", "helpers.py"), args=args)
        p = run_as_nobody(["-c", code], out, cwd=root)      # -c: the copy's featrank first
        assert p.returncode == 2, p.stderr[-2000:]
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert "not writable" in lines[-1] and os.path.join(ro, "cache") in lines[-1], p.stderr
        assert not os.path.exists(os.path.join(ro, "cache"))
        assert not os.path.exists(os.path.join(out, "results"))
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ configuration

@pytest.mark.parametrize("edit,needle", [
    (lambda c: c["distribution_models"].__setitem__(1, {"name": "g", "type": "gmm", "n_component": 3}),
     "n_component"),
    (lambda c: c.__setitem__("layer_configs", [{"name": "a", "layers": [7], "agregate": "mean"}]), "agregate"),
    (lambda c: c["kid"].__setitem__("subset", 10), "subset"),
    (lambda c: c["feature_transforms"].append({"name": "p", "use_pca": True, "pca_dims": 4}), "pca_dims"),
    (lambda c: c["feature_transforms"].append({"name": "v", "vit_pool": "max"}), "vit_pool"),
    (lambda c: c["cmmd"].__setitem__("sigma", 0), "sigma"),
    (lambda c: c.__setitem__("num_workers", -1), "num_workers"),
    (lambda c: c.__setitem__("seed", -1), "seed"),
    (lambda c: c.__setitem__("layer_configs", [{"name": "a", "layers": [7]}, {"name": "a", "layers": [8]}]),
     "named twice"),
    (lambda c: c.__setitem__("distance_metrics", ["fid", "kid", "fid"]),
     "config['distance_metrics'] lists 'fid' more than once"),
    (lambda c: c.__setitem__("baselines", ["psnr", "ssim", "psnr"]),
     "config['baselines'] lists 'psnr' more than once"),
])
def test_config_mistakes_name_the_key_and_list_valid_ones(tmp_path, monkeypatch, capsys, edit, needle):
    user = tiny_config()
    cfg = user.config
    edit(cfg)
    assert cli.main(tiny_args(tmp_path), user=user) == 2
    assert needle in _err(capsys)


def test_backbone_missing_from_quick_or_enabled_layers(tmp_path, monkeypatch, capsys):
    user = tiny_config()
    user = user.replace(quick={**user.quick, "layers": {"resnet50": [8]}})
    assert cli.main(tiny_args(tmp_path), user=user) == 2
    assert "QUICK['layers']" in _err(capsys)


def test_quick_transform_must_be_configured(tmp_path, monkeypatch, capsys):
    user = tiny_config()
    cfg = user.config
    cfg["feature_transforms"] = [{"name": "gram_only", "use_gram": True}]
    assert cli.main(tiny_args(tmp_path), user=user) == 2
    assert "QUICK['transform']" in _err(capsys)


# ------------------------------------------------------------------ cache files

@pytest.mark.parametrize("content", [b"{}", b"[1, 2]", b'{"files": []}', b"\xff\xfe not utf-8"])
def test_unusable_manifest_is_rebuilt_from_the_file_records(built, caplog, content):
    (meta,) = [p for p in built.glob("cache/*/*/ref_*/metadata.json")]
    before = json.loads(meta.read_text())["files"]
    meta.write_bytes(content)
    caplog.clear()
    assert build_cache(built, user=tiny_config()) == 0
    assert "manifest" in caplog.text
    hits, misses = cache_hits(caplog)
    assert hits and not misses                       # nothing extracted again
    assert json.loads(meta.read_text())["files"] == before


@pytest.mark.parametrize("content", [b"{}", b"\xff\xfe not utf-8"])
def test_unusable_manifest_without_records_means_a_rebuild(built, caplog, content):
    (meta,) = [p for p in built.glob("cache/*/*/ref_*/metadata.json")]
    for record in meta.parent.glob("*.record.json"):
        record.unlink()
    meta.write_bytes(content)
    caplog.clear()
    assert build_cache(built, user=tiny_config()) == 0
    assert "manifest" in caplog.text
    hits, misses = cache_hits(caplog)
    assert misses and json.loads(meta.read_text())["files"]


def test_cache_files_follow_the_umask(built):
    umask = os.umask(0o022)
    os.umask(umask)
    for f in built.glob("cache/*/*/*/*.npy"):
        assert (f.stat().st_mode & 0o777) == (0o666 & ~umask), f


def test_full_disk_names_the_folder_keeps_completed_files_and_marks_the_run_failed(
        tmp_path, monkeypatch, capsys):
    user = tiny_config()
    write_images(tmp_path / "imgs", n=12)
    calls = {"n": 0}
    real = np.save

    def save(f, arr, **kw):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(f, arr, **kw)
    monkeypatch.setattr(np, "save", save)
    code = cli.main(tiny_args(tmp_path, "--mode", "quick", "--dataset", str(tmp_path / "imgs"),
                               "--n-inference", "5", "--n-evaluation", "3"), user=user)
    assert code == 1
    msg = _err(capsys)
    assert "no space left" in msg and "cache" in msg and "MiB" in msg
    kept = list(tmp_path.glob("cache/*/*/*/*.npy")) + list(tmp_path.glob("cache/*/*/*/*/*.npy"))
    assert len(kept) == 2                                    # the completed files are still there
    assert not list(tmp_path.glob("cache/**/.tmp_*"))
    (run,) = (tmp_path / "results").iterdir()
    assert "no space left" in (run / "FAILED.txt").read_text()
    assert "run failed" in (run / "experiment.log").read_text()
    monkeypatch.setattr(np, "save", real)
    assert cli.main(tiny_args(tmp_path, "--mode", "quick", "--dataset", str(tmp_path / "imgs"),
                               "--n-inference", "5", "--n-evaluation", "3"), user=user) == 0


# ------------------------------------------------------------------ issue #21: new surfaces

def _nothing_written(tmp_path, *names):
    """No cache or results folder under tmp_path, and none of `names` beside it."""
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results").exists()
    for n in names:
        assert not os.path.exists(n), n


@pytest.mark.parametrize("name", ["../../../../escape", "a/b", "..", "", "x y"])
def test_degradation_names_that_are_not_folder_names(tmp_path, capsys, name):
    user = tiny_config(degradations={name: {"type": "gaussian_blur", "levels": [1.0]}})
    assert cli.main(tiny_args(tmp_path), user=user) == 2
    msg = _err(capsys)
    assert repr(name) in msg and "letters, digits" in msg
    _nothing_written(tmp_path, str(tmp_path.parent.parent / "escape"))


def test_save_stats_output_is_checked_before_any_work(tmp_path, capsys, caplog):
    write_images(tmp_path / "imgs", n=4)
    common = ["--weights", "random", "--image-size", "75", "--cache-dir", str(tmp_path / "cache")]
    bad = str(tmp_path / "no" / "such" / "s.npz")
    assert cli.main(["--save-stats", str(tmp_path / "imgs"), bad, *common], user=tiny_config()) == 2
    assert "does not exist" in _err(capsys) and "extracted" not in caplog.text
    (tmp_path / "folder.npz").mkdir()
    assert cli.main(["--save-stats", str(tmp_path / "imgs"), str(tmp_path / "folder.npz"), *common],
                     user=tiny_config()) == 2
    assert "is a folder" in _err(capsys) and "extracted" not in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.npz", "imgs"]


@pytest.mark.parametrize("mu,sigma,needle", [
    (np.zeros(3), np.diag([1.0, np.inf, 1.0]), "NaN or inf"),
    (np.array([0.0, np.nan, 0.0]), np.eye(3), "NaN or inf"),
    (np.zeros(3), -np.eye(3), "positive semi-definite"),
    (np.zeros(3), np.array([[1.0, 0.5, 0], [0, 1.0, 0], [0, 0, 1.0]]), "not symmetric"),
    (np.array(["a", "b", "c"]), np.eye(3), "numeric"),
    (np.zeros(3), np.eye(4), "square covariance"),
])
def test_fid_stats_files_are_checked(tmp_path, capsys, mu, sigma, needle):
    good = tmp_path / "good.npz"
    np.savez(good, mu=np.zeros(3), sigma=np.eye(3))
    bad = tmp_path / "bad.npz"
    np.savez(bad, mu=mu, sigma=sigma)
    assert cli.main(["--fid-stats", str(good), str(bad)], user=tiny_config()) == 2
    msg = _err(capsys)
    assert needle in msg and "bad.npz" in msg
    assert cli.main(["--fid-stats", str(good), str(good)], user=tiny_config()) == 0


@pytest.mark.parametrize("env,needle", [
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR and MASTER_PORT"),
    ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT"),
])
def test_torchrun_variables_without_torchrun(tmp_path, capsys, monkeypatch, env, needle):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert cli.main(tiny_args(tmp_path, "--build-cache", "--layers", "8"), user=tiny_config()) == 2
    msg = _err(capsys)
    assert needle in msg and "torchrun" in msg
    _nothing_written(tmp_path)


def test_a_rank_without_rank_0_stops_and_names_it(monkeypatch):
    """RANK=1 of 2 with torchrun's variables but no rank 0: not a silent wait of 7 days."""
    import socket
    from featrank import parallel
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(parallel, "RENDEZVOUS_TIMEOUT", parallel.datetime.timedelta(seconds=3))
    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
    ranks = parallel.Ranks.from_env()
    with pytest.raises(parallel.ParallelError) as err:
        ranks.start("cpu")
    msg = str(err.value)
    assert "rank 1 of 2 found no rank 0" in msg and f"127.0.0.1:{port}" in msg and "MASTER_PORT" in msg


@pytest.mark.parametrize("address,needle", [("foo://bar:baz", "foo://bar:baz"), ("", "--dask-scheduler ''")])
def test_bad_dask_scheduler_addresses(tmp_path, capsys, address, needle):
    pytest.importorskip("distributed")
    assert cli.main(tiny_args(tmp_path, "--dask-scheduler", address), user=tiny_config()) == 2
    assert needle in _err(capsys)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


@pytest.mark.parametrize("how", ["main.py beside it", "--config"])
def test_a_config_py_that_does_not_run_is_one_line(tmp_path, how):
    """The config.py beside a main.py is the one it reads (a copy of main.py in another folder
    reads that folder's); --config FILE reads FILE. Either, broken, is one line and exit 2."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    (tmp_path / "config.py").write_text("CONFIG = {\n    'seed': 0,\n    'batch_size' 16,\n}\n")
    if how == "--config":
        argv = ["-m", "featrank", "--config", str(tmp_path / "config.py")]
    else:
        shutil.copy(os.path.join(root, "main.py"), tmp_path / "main.py")
        argv = [str(tmp_path / "main.py")]
    p = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=root, timeout=120)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "config.py line 3" in lines[0]


def test_garbage_and_folder_weights(tmp_path, capsys):
    write_images(tmp_path / "imgs", n=8)
    garbage = tmp_path / "w.pth"
    garbage.write_bytes(b"\x80\x04\x95 not a checkpoint at all" * 10)
    args = tiny_args(tmp_path, "--build-cache", "--layers", "8", "--dataset", str(tmp_path / "imgs"),
                     "--n-inference", "4", "--n-evaluation", "2")
    weights = args.index("--weights") + 1
    args[weights] = str(garbage)
    assert cli.main(args, user=tiny_config()) == 1
    msg = _err(capsys)
    assert "w.pth" in msg and "weights_only" not in msg
    args[weights] = str(tmp_path / "imgs")                    # a folder
    assert cli.main(args, user=tiny_config()) == 2
    assert "is a folder" in _err(capsys)


def test_image_size_below_the_backbones_minimum(tmp_path, capsys):
    assert cli.main(tiny_args(tmp_path, "--backbone", "inception_fid", "--image-size", "64"),
                     user=tiny_config()) == 2
    assert "75" in _err(capsys)
    _nothing_written(tmp_path)


def test_cache_info_on_a_file(tmp_path, capsys):
    f = tmp_path / "notacache"
    f.write_text("x")
    assert cli.main(["--cache-info", "--cache-dir", str(f)], user=tiny_config()) == 2
    assert "is a file" in _err(capsys)


def test_hidden_files_are_skipped_with_a_warning(tmp_path, caplog):
    write_images(tmp_path / "imgs", n=6)
    (tmp_path / "imgs" / ".DS_Store").write_bytes(b"\0\0")
    (tmp_path / "imgs" / "._im0.png").write_bytes(b"\0\0")
    caplog.set_level(logging.WARNING)
    images, _ = dataset.list_image_files(str(tmp_path / "imgs"))
    assert len(images) == 6
    assert ".DS_Store" in caplog.text and "._im0.png" in caplog.text and "hidden" in caplog.text


KILL_RUN = """
import runpy, sys
from featrank import cli
helpers = runpy.run_path({helpers!r})
sys.exit(cli.main({args!r}, user=helpers["tiny_config"]()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_killing_a_parallel_sweep_leaves_no_worker_behind(tmp_path, sig):
    """The main process of a --jobs 2 sweep is killed while its loky workers score: every
    process it started (recorded before the kill) is gone within 30 s. SIGTERM also exits 143
    with one line and leaves FAILED.txt in the run's folder."""
    import signal
    import time
    psutil = pytest.importorskip("psutil")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    write_images(tmp_path / "imgs", n=20)
    args = tiny_args(tmp_path, "--mode", "medium", "--layers", "7", "8", "--dataset", str(tmp_path / "imgs"),
                     "--n-inference", "12", "--n-evaluation", "6", "--jobs", "2", "--bootstrap-all",
                     "--n-resamples", "20000")
    code = KILL_RUN.format(helpers=os.path.join(root, "tests", "helpers.py"), args=args)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=tmp_path)
    main_proc = psutil.Process(p.pid)
    deadline = time.time() + 240
    workers = []
    while time.time() < deadline and p.poll() is None:
        workers = [c for c in main_proc.children(recursive=True)
                   if "loky" in " ".join(c.cmdline()) or "joblib" in " ".join(c.cmdline())]
        if len(workers) >= 2 and "scoring" in open_log(tmp_path):
            break
        time.sleep(0.5)
    assert p.poll() is None and len(workers) >= 2, "the sweep ended before its workers could be seen"
    children = main_proc.children(recursive=True)
    time.sleep(1.0)
    p.send_signal(getattr(signal, sig))
    out, err = p.communicate(timeout=60)
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [(c.pid, c.cmdline()) for c in alive]
    if sig == "SIGTERM":
        lines = [x for x in err.splitlines() if x.strip()]
        assert p.returncode == 143 and lines[-1].startswith("error: terminated"), err[-2000:]
        assert "Traceback" not in err
        (run,) = (tmp_path / "results").iterdir()
        assert "Terminated" in (run / "FAILED.txt").read_text()
    else:
        assert p.returncode == -signal.SIGKILL


def open_log(tmp_path):
    logs = list((tmp_path / "results").glob("*/experiment.log")) if (tmp_path / "results").exists() else []
    return logs[0].read_text() if logs else ""


@pytest.mark.parametrize("shape", [5, None, "7x7"])
def test_a_bad_record_without_its_manifest_is_extracted_again(built, caplog, shape):
    entry = next((built / "cache").glob("resnet50/*/eval_*"))
    (entry / "metadata.json").unlink()
    record = next(entry.rglob("*.record.json"))
    info = json.loads(record.read_text())
    info["shape"] = shape
    record.write_text(json.dumps(info))
    caplog.clear()
    assert build_cache(built) == 0
    assert "is not a record" in caplog.text
    hits, misses = cache_hits(caplog)
    assert misses and "1 of 5 evaluation" in misses[0], misses
    assert build_cache(built) == 0                 # and the next run is whole again


def test_a_manifest_with_a_string_context(built, capsys, caplog):
    entry = next((built / "cache").glob("resnet50/*/eval_*"))
    meta = json.loads((entry / "metadata.json").read_text())
    meta["context"] = "not a dict"
    (entry / "metadata.json").write_text(json.dumps(meta))
    assert cli.main(["--cache-info", "--cache-dir", str(built / "cache")], user=tiny_config()) == 0
    assert "not a manifest" in caplog.text
    assert build_cache(built) == 0


def test_images_over_the_pixel_limit_are_skipped_as_too_large(tmp_path, monkeypatch, caplog):
    """MAX_PIXELS (64 MP) is lowered here so that a small file stands for an 11000 x 11000 one:
    it is named as too large (not 'unreadable') and nothing of it is decoded."""
    write_images(tmp_path / "imgs", n=8)                       # 36 x 36 = 1296 px each
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "imgs" / "huge.png")
    monkeypatch.setattr(dataset, "MAX_PIXELS", 2000)
    caplog.set_level(logging.WARNING)
    ev, ref = dataset.select_images(str(tmp_path / "imgs"), 3, 5, 0)
    assert "huge.png" not in " ".join(r.source for r in ev + ref)
    assert "huge.png" in caplog.text and "megapixels" in caplog.text and "unreadable" not in caplog.text
    assert dataset.MAX_PIXELS == 2000 and 50 * 50 > 2000


# ------------------------------------------------------------------ hf: models

def _hf_args(tmp_path, folder, *extra):
    return tiny_args(tmp_path, "--mode", "quick", "--backbone", f"hf:{folder}", "--layers", "layers.0",
                     "--n-inference", "6", "--n-evaluation", "4", *extra)


def test_hf_text_model_is_refused(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "bert"
    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64).save_pretrained(folder)
    assert cli.main(_hf_args(tmp_path, folder), user=tiny_config()) == 2
    msg = _err(capsys)
    assert "not a vision model" in msg and "BertModel" in msg
    assert cli.main(["--list-layers", f"hf:{folder}"], user=tiny_config()) == 2
    assert "not a vision model" in _err(capsys)


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not readable JSON"),
    ('{"do_normalize": true, "image_mean": [0.5, 0.5, 0.5], "image_std": null}', "image_std = None"),
    ('{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0, 0.5]}', "must be positive"),
    ('[1, 2, 3]', "does not hold a preprocessor config"),
])
def test_hf_broken_preprocessor_config(tmp_path, capsys, content, needle):
    pytest.importorskip("transformers")
    from test_backbone_specs import _tiny_vit
    folder = tmp_path / "vit"
    _tiny_vit(folder, with_weights=False)
    (folder / "preprocessor_config.json").write_text(content)
    assert cli.main(_hf_args(tmp_path, folder), user=tiny_config()) == 2
    msg = _err(capsys)
    assert needle in msg and "preprocessor_config.json" in msg
    assert cli.main(["--list-layers", f"hf:{folder}"], user=tiny_config()) == 2
    assert needle in _err(capsys)


def test_hf_corrupt_safetensors_with_weights_auto(tmp_path, capsys):
    pytest.importorskip("transformers")
    from test_backbone_specs import _tiny_vit
    folder = tmp_path / "vit"
    _tiny_vit(folder)
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    args = _hf_args(tmp_path, folder)
    args[args.index("--weights") + 1] = "auto"
    assert cli.main(args, user=tiny_config()) == 1
    msg = _err(capsys)
    assert "cannot load the weights" in msg and str(folder) in msg


def test_a_full_results_disk_names_the_folder(tmp_path, capsys, monkeypatch):
    import errno as _errno
    from featrank import report
    def full(*a, **k):
        raise OSError(_errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(report, "write_run", full)
    assert cli.main(tiny_args(tmp_path, "--n-inference", "4", "--n-evaluation", "3", "--n-resamples", "0"),
                     user=tiny_config()) == 1
    msg = _err(capsys)
    assert "no space left" in msg and str(tmp_path / "results") in msg and "(output)" not in msg
    (run,) = (tmp_path / "results").iterdir()
    assert (run / "FAILED.txt").exists()

"""CLI: flags, exit codes, and bad input that leaves nothing half-written."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from featrank import cli
from helpers import tiny_args, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*argv):
    return subprocess.run([sys.executable, "main.py", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_help_documents_every_flag():
    out = run_cli("--help")
    assert out.returncode == 0
    for flag in ("--mode", "--build-cache", "--backbone", "--layers", "--n-inference",
                 "--n-evaluation", "--dataset", "--cache-dir", "--results-dir", "--weights",
                 "--device", "--batch-size", "--image-size", "--seed", "--list-layers",
                 "--verbose", "--quiet", "--cache-info", "--preview-degradations"):
        assert flag in out.stdout, flag
    for choice in ("quick", "medium", "full", "resnet50", "clip_vit", "all", "pretrained"):
        assert choice in out.stdout


@pytest.mark.parametrize("argv,needle", [
    (["--mode", "fast"], "invalid choice"),
    (["--backbone", "alexnet"], "unknown backbone 'alexnet'"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--n-inference", "ten"], "invalid int"),
])
def test_usage_errors_exit_2(argv, needle):
    out = run_cli(*argv)
    assert out.returncode == 2 and needle in out.stderr


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


def test_build_cache_without_layers(tmp_path, monkeypatch, capsys):
    user = tiny_config()
    assert cli.main(tiny_args(tmp_path, "--build-cache"), user=user) == 2
    assert "--layers" in _one_line_error(capsys)
    assert not (tmp_path / "cache").exists()


def test_missing_dataset_folder(tmp_path, monkeypatch, capsys):
    user = tiny_config()
    assert cli.main(tiny_args(tmp_path, "--dataset", str(tmp_path / "nope")), user=user) == 2
    assert "does not exist" in _one_line_error(capsys)
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_empty_dataset_folder(tmp_path, monkeypatch, capsys):
    user = tiny_config()
    (tmp_path / "empty").mkdir()
    assert cli.main(tiny_args(tmp_path, "--dataset", str(tmp_path / "empty")), user=user) == 2
    assert "no images" in _one_line_error(capsys)
    assert not (tmp_path / "results").exists()


def _write_images(folder, n, size=40, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(folder / f"im{i:03d}.png")


def test_too_few_images_says_how_many_and_which_flag(tmp_path, monkeypatch, capsys):
    user = tiny_config()
    _write_images(tmp_path / "imgs", 5)
    assert cli.main(tiny_args(tmp_path, "--dataset", str(tmp_path / "imgs"),
                               "--n-inference", "6", "--n-evaluation", "3"), user=user) == 2
    msg = _one_line_error(capsys)
    assert "found 5" in msg and "--n-inference" in msg
    assert not (tmp_path / "results").exists()


def test_unreadable_files_are_skipped_with_a_warning(tmp_path, monkeypatch, capsys, caplog):
    user = tiny_config()
    _write_images(tmp_path / "imgs" / "sub", 8)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "imgs" / "notes.txt").write_text("hello")
    rc = cli.main(tiny_args(tmp_path, "--dataset", str(tmp_path / "imgs"), "--n-inference", "4",
                             "--n-evaluation", "3"), user=user)
    assert rc == 0
    assert "broken.jpg" in caplog.text and "notes.txt" in caplog.text


@pytest.mark.parametrize("key,value,needle", [
    ("backbone", "alexnet", "resnet50"),
    ("distance_metrics", ["fid", "frechet"], "mahalanobis"),
    ("feature_transforms", [{"name": "x", "use_gram": True, "use_pca": True}], "pca_dim"),
    ("degradations", {"blur": {"type": "gaussian_blurr", "levels": [1]}}, "gaussian_blur"),
    ("degradations", {"blur": {"type": "gaussian_blur", "levels": [-1]}}, "level -1"),
    ("degradations", {"j": {"type": "jpeg_compression", "levels": [101]}}, "1..100"),
    ("degradations", {"j": {"type": "jpeg_compression", "levels": [0]}}, "1..100"),
    ("degradations", {"a": {"type": "downsample_upsample", "levels": [0.5]}}, ">= 1"),
    ("degradations", {"j": {"type": "jpeg_compression", "levels": [10, 90]}}, "order"),
    ("bootstrap", {"n_resamples": 20, "scope": "top", "confidence": "0.95"}, "confidence = '0.95'"),
    ("bootstrap", {"n_resamples": 20, "scope": "top", "confidence": True}, "confidence = True"),
    ("verify_checksums", "no", "verify_checksums'] = 'no' must be True or False"),
    ("seed", True, "seed'] = True"),
    ("dataset", 5, "dataset'] = 5"),
])
def test_invalid_config_fails_at_startup(tmp_path, monkeypatch, capsys, key, value, needle):
    user = tiny_config(**{key: value})
    assert cli.main(tiny_args(tmp_path, "--n-inference", "4", "--n-evaluation", "3"), user=user) == 2
    assert needle in _one_line_error(capsys)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("key", ["cache_dir", "results_dir"])
def test_output_folders_in_config_must_be_paths(tmp_path, monkeypatch, capsys, key):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--weights", "random", "-q"], user=tiny_config(**{key: 5})) == 2
    assert f"config['{key}'] = 5 must be a folder path" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_unknown_mode_in_enabled_layers(tmp_path, monkeypatch, capsys):
    user = tiny_config()
    user.enabled_layers["resnet50"] = {99: True}
    assert cli.main(tiny_args(tmp_path, "--mode", "medium", "--n-inference", "4",
                               "--n-evaluation", "3"), user=user) == 2
    assert "0..15" in _one_line_error(capsys)


def test_layer_index_out_of_range_and_unknown_path(tmp_path, monkeypatch, capsys):
    user = tiny_config()
    assert cli.main(tiny_args(tmp_path, "--build-cache", "--layers", "42"), user=user) == 2
    assert "0..15" in _one_line_error(capsys)
    assert cli.main(tiny_args(tmp_path, "--build-cache", "--layers", "layer3.2.conv9"), user=user) == 2
    msg = _one_line_error(capsys)
    assert "layer3.2.conv1" in msg and "--list-layers resnet50" in msg
    assert not (tmp_path / "cache").exists()


def test_list_layers_lpips_shows_13_convs_and_timm_models():
    out = run_cli("--list-layers", "lpips_vgg")
    assert out.returncode == 0
    rows = [l for l in out.stdout.splitlines() if "Conv2d" in l]
    assert len(rows) == 13 and "net.slice5.28" in rows[-1]
    out = run_cli("--list-layers", "timm:resnet18")
    assert out.returncode == 0 and "layer4.1.conv2" in out.stdout
    out = run_cli("--list-layers", "vgg91")
    assert out.returncode == 2 and "vgg19" in out.stderr


def test_vit_image_size_must_be_a_multiple_of_the_patch(tmp_path, monkeypatch, capsys):
    user = tiny_config()
    args = tiny_args(tmp_path, "--backbone", "dinov2_vitb14", "--build-cache", "--layers", "3")
    args[args.index("--image-size") + 1] = "64"
    assert cli.main(args, user=user) == 2
    msg = _one_line_error(capsys)
    assert "patch size 14" in msg and "56" in msg and "70" in msg
    assert not (tmp_path / "cache").exists()

"""Any model of timm, torchvision or transformers as a backbone; pytorch-fid's statistics.

Independent references: pytorch-fid's own CLI (`python -m pytorch_fid`) on the same stand-in
checkpoint, the libraries' own loaders, and state dicts written by hand."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from featrank import backbones
from featrank import cli
from helpers import tiny_args, tiny_config, torch_hub_standin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FID_FILE = "pt_inception-2015-12-05-6726825d.pth"


def _summary(capsys):
    out = capsys.readouterr()
    return out.out, out.err


# ---------------------------------------------------------------- library models, end to end

def _quick(tmp_path, backbone, layer, *extra):
    return cli.main(tiny_args(tmp_path, "--mode", "quick", "--backbone", backbone, "--layers",
                               layer, "--n-inference", "6", "--n-evaluation", "4", *extra), user=tiny_config())


@pytest.mark.parametrize("backbone,layer", [("timm:resnet18", "layer3"),
                                            ("torchvision:resnet18", "layer2")])
def test_library_model_runs_quick_mode_and_names_its_weights(tmp_path, monkeypatch, capsys,
                                                             backbone, layer):
    assert _quick(tmp_path, backbone, layer) == 0
    out, _ = _summary(capsys)
    assert f"Weights ({backbone}): RANDOM-INIT weights (seed 0)" in out
    assert f"Backbone: {backbone}" in out
    # the cache folder is named after the model, and a rerun is a full hit
    name = backbone.replace(":", "-")
    assert os.listdir(tmp_path / "cache") == [name]
    assert _quick(tmp_path, backbone, layer, "-v") == 0
    assert "CACHE MISS" not in capsys.readouterr().err


def _tiny_vit(folder, with_weights=True, seed=0):
    import transformers
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, image_size=32, patch_size=8)
    torch.manual_seed(seed)
    model = transformers.ViTModel(cfg)
    (model if with_weights else cfg).save_pretrained(folder)
    return model


def test_hf_folder_loads_offline_with_its_weights(tmp_path, monkeypatch, capsys):
    user = tiny_config()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "vit2"
    model = _tiny_vit(folder)
    name = f"hf:{folder}"
    bb = backbones.build_backbone(name, "auto")
    own = bb.module.state_dict()
    assert all(torch.equal(own[k], v) for k, v in model.state_dict().items())
    assert bb.provenance.source == "pretrained"
    args = tiny_args(tmp_path, "--mode", "quick", "--backbone", name, "--layers", "layers.1",
                     "--n-inference", "6", "--n-evaluation", "4")
    args[args.index("--weights") + 1] = "auto"
    assert cli.main(args, user=user) == 0
    out, _ = _summary(capsys)
    assert f"Weights ({name}): pretrained {folder}" in out
    # the transformer's CLS token is counted as a prefix token: 1 + (32 / 8)^2 tokens
    with torch.inference_mode():
        x = torch.rand(2, 3, 32, 32)
        assert bb.forward(x).last_hidden_state.shape[1] == 17


def test_hf_config_only_folder_is_random_init_and_says_so(tmp_path, monkeypatch, capsys):
    user = tiny_config()
    folder = tmp_path / "vitcfg"
    _tiny_vit(folder, with_weights=False)
    args = tiny_args(tmp_path, "--mode", "quick", "--backbone", f"hf:{folder}", "--layers",
                     "layers.0", "--n-inference", "6", "--n-evaluation", "4")
    args[args.index("--weights") + 1] = "auto"
    assert cli.main(args, user=user) == 0
    out, err = _summary(capsys)
    assert "RANDOM-INIT" in out and "has a config but no weights" in err


def test_torchvision_pretrained_from_torch_home(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(4)
    ref = torchvision.models.resnet18(weights=None)
    torch_hub_standin(tmp_path, "resnet18-f37072fd.pth", ref.state_dict())
    bb = backbones.build_backbone("torchvision:resnet18", "pretrained", allow_download=False)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(),
                                                  bb.module.state_dict().values()))
    assert bb.provenance.model_id == "ResNet18_Weights.IMAGENET1K_V1"
    spec = backbones.get_spec("torchvision:resnet18")   # the weights' own transforms
    assert (spec.input_size, spec.interpolation) == (224, "bilinear")


def test_timm_pretrained_from_hf_cache_offline(tmp_path):
    """timm:resnet18's stand-in weights in a temporary Hugging Face cache (a subprocess:
    huggingface_hub reads its cache path at import)."""
    import timm
    from safetensors.torch import save_file
    repo = tmp_path / "hf" / "models--timm--resnet18.a1_in1k"
    snap = repo / "snapshots" / ("1" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("1" * 40)
    torch.manual_seed(6)
    save_file(timm.create_model("resnet18").state_dict(), str(snap / "model.safetensors"))
    code = ("import torch; from featrank import backbones; from safetensors.torch import load_file\n"
            "bb = backbones.build_backbone('timm:resnet18', 'pretrained')\n"
            f"sd = load_file(r'{snap / 'model.safetensors'}')\n"
            "own = bb.module.state_dict()\n"
            "assert all(torch.equal(own[k], v) for k, v in sd.items()), 'weights differ'\n"
            "print(bb.provenance.label)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf"),
           "HF_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("pretrained timm/resnet18.a1_in1k sha256:")


@pytest.mark.parametrize("argv,needle", [
    (["--backbone", "timm:resnet1800", "--layers", "layer3"], "timm has no model 'resnet1800'"),
    (["--backbone", "torchvision:resnet180", "--layers", "layer3"], "close: resnet18"),
    (["--backbone", "resnt50"], "close: resnet50"),
    (["--backbone", "hf:/no/such/folder", "--layers", "x"], "hf:/no/such/folder"),
    (["--backbone", "timm:resnet18"], "pass --layers MODULE_PATH"),
    (["--backbone", "timm:resnet18", "--layers", "7"], "give module paths"),
    (["--backbone", "timm:resnet18", "--layers", "layer9"], "no module 'layer9'"),
])
def test_bad_backbones_and_layers_are_usage_errors(tmp_path, monkeypatch, capsys, argv, needle):
    user = tiny_config()
    assert cli.main(tiny_args(tmp_path, "--mode", "quick", *argv), user=user) == 2
    _, err = _summary(capsys)
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_list_layers_of_presets_and_library_models(capsys):
    assert cli.main(["--list-layers", "inception_fid"]) == 0
    out, _ = _summary(capsys)
    row = next(line for line in out.splitlines() if " pool3 " in line)
    assert "2048x1x1" in row
    assert cli.main(["--list-layers", "timm:resnet18"]) == 0
    out, _ = _summary(capsys)
    assert "layer3.1" in out and "256x14x14" in out


# ---------------------------------------------------------------- pytorch-fid's statistics

def _fid_standin(torch_home):
    """A stand-in FID Inception checkpoint: seeded random weights, BatchNorm statistics
    calibrated on noise so that pool3 features are O(1) (with BN at its init they vanish)."""
    spec = backbones.get_spec("inception_fid")
    torch.manual_seed(3)
    model = spec.build(299)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        spec.forward(model, 299)(torch.rand(16, 3, 299, 299) * 2 - 1)
    torch_hub_standin(torch_home, FID_FILE, model.state_dict())


def _pngs(folder, n, shift, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for i in range(n):
        img = np.clip(rng.integers(0, 200, (299, 299, 3)) + shift, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"im{i}.png")


def _pytorch_fid(*args, env):
    out = subprocess.run([sys.executable, "-m", "pytorch_fid", "--device", "cpu", "--num-workers",
                          "0", "--batch-size", "7", *args], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow
def test_save_stats_and_fid_stats_equal_pytorch_fid(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    _fid_standin(tmp_path / "th")
    _pngs(tmp_path / "a", 10, 0, 0)
    _pngs(tmp_path / "b", 10, 40, 1)
    # what pytorch-fid does not read is not read here either: a subfolder, an upper-case
    # extension; and an EXIF rotation is not applied (pytorch-fid decodes with convert("RGB"))
    _pngs(tmp_path / "a" / "sub", 2, 90, 2)
    Image.open(tmp_path / "a" / "im0.png").save(tmp_path / "a" / "extra.PNG")
    exif = Image.Exif()
    exif[0x0112] = 6                       # "rotate 90 degrees" to a viewer
    Image.open(tmp_path / "b" / "im0.png").save(tmp_path / "b" / "im0.png", exif=exif)
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "th")}
    common = ["--device", "cpu", "--weights", "pretrained", "-q"]
    assert cli.main(["--save-stats", str(tmp_path / "a"), str(tmp_path / "ours.npz"), *common]) == 0
    assert "inception_fid pool3; weights: pretrained " + FID_FILE in capsys.readouterr().out
    _pytorch_fid("--save-stats", str(tmp_path / "a"), str(tmp_path / "theirs.npz"), env=env)
    ours, theirs = np.load(tmp_path / "ours.npz"), np.load(tmp_path / "theirs.npz")
    assert ours["mu"].shape == (2048,) and ours["sigma"].shape == (2048, 2048)
    assert np.abs(theirs["mu"]).max() > 1e-3, "stand-in features vanished"
    np.testing.assert_allclose(ours["mu"], theirs["mu"], rtol=1e-5, atol=1e-5 * np.abs(theirs["mu"]).max())
    np.testing.assert_allclose(ours["sigma"], theirs["sigma"], rtol=1e-4,
                               atol=1e-4 * np.abs(theirs["sigma"]).max())

    assert cli.main(["--fid-stats", str(tmp_path / "a"), str(tmp_path / "b"), *common]) == 0
    ours_fid = float(capsys.readouterr().out.split("FID:")[1])
    theirs_fid = float(_pytorch_fid(str(tmp_path / "a"), str(tmp_path / "b"), env=env).split("FID:")[1])
    assert theirs_fid > 1.0
    assert ours_fid == pytest.approx(theirs_fid, rel=1e-5)
    # a .npz of either tool on one side gives the same number
    assert cli.main(["--fid-stats", str(tmp_path / "theirs.npz"), str(tmp_path / "b"), *common]) == 0
    assert float(capsys.readouterr().out.split("FID:")[1]) == pytest.approx(theirs_fid, rel=1e-5)


def test_fid_stats_bad_inputs_are_usage_errors(tmp_path, capsys):
    np.savez(tmp_path / "x.npz", mu=np.zeros(3), sigma=np.eye(3))
    np.savez(tmp_path / "y.npz", mu=np.zeros(4), sigma=np.eye(4))
    np.savez(tmp_path / "z.npz", mean=np.zeros(3))
    for argv, needle in ((["--fid-stats", str(tmp_path / "x.npz"), str(tmp_path / "y.npz")], "same backbone"),
                         (["--fid-stats", str(tmp_path / "x.npz"), str(tmp_path / "z.npz")], "no 'mu'"),
                         (["--fid-stats", str(tmp_path / "x.npz"), str(tmp_path / "nope")], "no such file"),
                         (["--save-stats", str(tmp_path), str(tmp_path / "out.txt")], "must end in .npz")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err
    assert cli.main(["--fid-stats", str(tmp_path / "x.npz"), str(tmp_path / "x.npz")]) == 0
    assert float(capsys.readouterr().out.split("FID:")[1]) == 0.0


def _accepts(forward, size: int) -> bool:
    import torch
    try:
        with torch.inference_mode():
            forward(torch.zeros(1, 3, size, size))
        return True
    except (RuntimeError, ValueError):
        return False


@pytest.mark.parametrize("name", [n for n, s in backbones.BACKBONES.items() if s.layers and not s.patch])
def test_min_input_size_comes_from_the_architecture(name):
    """Each convolutional backbone's smallest --image-size is the larger of the smallest input its
    random-init forward accepts (found here by trying every size) and its output stride (the
    input size over its deepest map's side in the layer table): below it the network fails, or
    its deepest layer sees padding only. The stride is the power of two nearest the input size
    over the deepest spatial map's side (ceil-padded maps: 240 px gives 8, not 7.5)."""
    import math
    import torch
    spec = backbones.get_spec(name)
    torch.manual_seed(0)
    module = spec.build(spec.input_size).eval()
    forward = spec.forward(module, spec.input_size)
    smallest = next(s for s in range(1, 400) if _accepts(forward, s))
    assert all(_accepts(forward, s) for s in range(smallest, smallest + 8)), name
    maps = [layer.shape[-1] for layer in spec.layers if len(layer.shape) == 3 and layer.shape[-1] > 1]
    stride = 2 ** round(math.log2(spec.input_size / min(maps)))
    assert spec.min_input_size == max(smallest, stride), (name, smallest, stride)


# ---------------------------------------------------------------- preprocessing, written out
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))       # torchvision / timm ImageNet
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))                       # [-1, 1]: LPIPS, TF Inception, VAE
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
LITE = ((127 / 255,) * 3, (128 / 255,) * 3)                     # EfficientNet-Lite: (x - 127) / 128
# backbone: (input size, interpolation, antialias, (mean, std)). Each value is part of every cache
# key of the backbone (test_feature_cache.py); changing one here is changing what its features are.
PREPROCESSING = {
    "resnet50": (224, "bicubic", True, IMAGENET), "mobilenet_v2": (224, "bilinear", True, IMAGENET),
    "vgg19": (224, "bicubic", True, IMAGENET), "dinov2_vitb14": (518, "bicubic", True, IMAGENET),
    "dinov2_vitl14": (224, "bicubic", True, IMAGENET), "sd_vae": (256, "bicubic", True, HALF),
    "lpips_vgg": (224, "bicubic", True, HALF), "stlpips_vgg": (224, "bicubic", True, HALF),
    "stlpips_alex": (224, "bicubic", True, HALF), "inception_fid": (299, "bilinear", False, HALF),
    "clip_vit": (224, "bicubic", True, OPENAI_CLIP), "clip_vit_l14_336": (336, "bicubic", False, OPENAI_CLIP),
    "efficientnet_lite0": (224, "bicubic", True, LITE), "efficientnet_lite1": (240, "bicubic", True, LITE),
    "efficientnet_lite2": (260, "bicubic", True, LITE)}


@pytest.mark.parametrize("name", sorted(backbones.BACKBONES))
def test_each_backbones_preprocessing_is_the_written_one(name):
    spec = backbones.BACKBONES[name]
    size, interpolation, antialias, (mean, std) = PREPROCESSING[name]
    assert spec.input_size == size, f"{name}: input_size"
    assert spec.interpolation == interpolation, f"{name}: interpolation"
    assert spec.antialias is antialias, f"{name}: antialias"
    assert np.allclose(spec.mean, mean, rtol=0, atol=1e-7), f"{name}: mean"
    assert np.allclose(spec.std, std, rtol=0, atol=1e-7), f"{name}: std"

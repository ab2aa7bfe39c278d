"""Weights load through each library's standard cache, offline; bad files fail clearly."""
import hashlib
import os
import subprocess
import sys

import pytest
import torch

from featrank import backbones
from featrank import weight_sources
from featrank import cli
from helpers import tiny_args, tiny_config, torch_hub_standin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _standin(name, seed=5):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        spec = backbones.get_spec(name)
        return spec.build(spec.input_size)


def test_torchvision_pretrained_from_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = _standin("resnet50")
    ckpt = torch_hub_standin(tmp_path, "resnet50-0676ba61.pth", model.state_dict())
    bb = backbones.build_backbone("resnet50", "pretrained", allow_download=False)
    for (k, a), b in zip(model.state_dict().items(), bb.module.state_dict().values()):
        assert torch.equal(a, b), k
    assert bb.provenance.source == "pretrained"
    assert bb.provenance.sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert backbones.resolve_weights("resnet50", "auto", allow_download=False).source == "pretrained"


def test_lpips_trunk_from_torchvision_vgg16_checkpoint(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(3)
    vgg = torchvision.models.vgg16(weights=None)
    torch_hub_standin(tmp_path, "vgg16-397923af.pth", vgg.state_dict())
    bb = backbones.build_backbone("lpips_vgg", "pretrained", allow_download=False)
    mods = dict(bb.module.named_modules())
    assert torch.equal(mods["net.slice4.19"].weight, vgg.features[19].weight)
    assert torch.equal(mods["net.slice1.0"].bias, vgg.features[0].bias)


def test_pretrained_absent_offline_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(backbones.WeightsError, match="resnet50-0676ba61.pth"):
        backbones.resolve_weights("resnet50", "pretrained", allow_download=False)
    prov = backbones.resolve_weights("resnet50", "auto", seed=7, allow_download=False)
    assert prov.as_dict() == {"source": "random-init", "seed": 7, "label": "random-init seed 7"}


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = backbones.build_backbone("resnet50", "random", seed=1, allow_download=False)
    after = torch.rand(1)
    b = backbones.build_backbone("resnet50", "random", seed=1, allow_download=False)
    assert torch.equal(before, after)
    assert torch.equal(a.module.conv1.weight, b.module.conv1.weight)


def test_hf_cache_pretrained_timm_offline(tmp_path):
    """A stand-in DINOv2 checkpoint in a temporary Hugging Face cache loads with
    HF_HUB_OFFLINE=1 (run in a subprocess: huggingface_hub reads its cache path at import)."""
    from safetensors.torch import save_file
    cache = tmp_path / "hf"
    snap = cache / "models--timm--vit_base_patch14_dinov2.lvd142m" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (cache / "models--timm--vit_base_patch14_dinov2.lvd142m" / "refs").mkdir()
    (cache / "models--timm--vit_base_patch14_dinov2.lvd142m" / "refs" / "main").write_text("0" * 40)
    model = _standin("dinov2_vitb14")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(snap / "model.safetensors"))
    code = ("import torch; from featrank import backbones; from safetensors.torch import load_file; "
            f"bb = backbones.build_backbone('dinov2_vitb14', 'pretrained'); "
            f"sd = load_file(r'{snap / 'model.safetensors'}'); "
            "own = bb.module.state_dict(); "
            "assert all(torch.equal(own[k], sd[k]) for k in sd), 'weights differ'; "
            "print(bb.provenance.source, bb.provenance.model_id)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pretrained timm/vit_base_patch14_dinov2.lvd142m" in out.stdout


def test_hf_absent_offline_names_the_model_id(tmp_path):
    code = ("from featrank import backbones\n"
            "try:\n backbones.resolve_weights('clip_vit', 'pretrained')\n"
            "except backbones.WeightsError as e:\n print(e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert "openai/clip-vit-base-patch32" in out.stdout and "--weights" in out.stdout


def test_mismatched_and_corrupt_weight_files_fail_clearly(tmp_path, monkeypatch, capsys):
    import torchvision
    user = tiny_config()
    wrong = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(backbones.WeightsError, match="shape mismatch|missing keys"):
        backbones.build_backbone("resnet50", str(wrong))
    partial = tmp_path / "partial.pth"
    sd = _standin("resnet50").state_dict()
    sd.pop("fc.weight")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, partial)
    with pytest.raises(backbones.WeightsError, match="missing keys: fc.weight.*unexpected keys: extra.weight"):
        backbones.build_backbone("resnet50", str(partial))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x04garbage")
    args = tiny_args(tmp_path, "--build-cache", "--layers", "8", "--n-inference", "3", "--n-evaluation", "2")
    args[args.index("--weights") + 1] = str(corrupt)
    assert cli.main(args, user=user) == 1
    err = capsys.readouterr().err
    assert "cannot read weights file" in err and "Traceback" not in err


@pytest.mark.parametrize("env", [{}, {"TORCH_HOME": "/tmp/th"}, {"XDG_CACHE_HOME": "/tmp/xdg"}])
def test_torch_hub_dir_follows_torch_rule(monkeypatch, env):
    for k in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert weight_sources.torch_hub_dir() == torch.hub.get_dir()


# ---------------------------------------------------------------------- a bounded, verified download

@pytest.mark.parametrize("how", ["drip", "html", "HTML", "half", "cut", "hang"])
def test_a_bad_server_leaves_no_file_and_no_folder_and_a_drip_is_stopped(tmp_path, how):
    """Against a loopback server, a file name without a sha256 prefix (so the hash cannot save
    it): a server that drips bytes is stopped at the total bound, an HTML page sent with 200 is
    refused by its type, a body shorter than announced by its length, a cut connection without
    a length because the file does not load as a checkpoint, a server that never answers by
    the per-read timeout. None leaves a file, a .partial file, or the folder it would have made."""
    import time
    import torch
    from featrank import weight_sources
    from test_efficientnet_lite import _Server
    buf = tmp_path / "w.pth"
    torch.save({"w": torch.arange(20000, dtype=torch.float32)}, buf)
    server = _Server({"/f/model.pth": (buf.read_bytes(), how)})
    home = tmp_path / "torch"
    target = home / "hub" / "checkpoints" / "model.pth"
    t0 = time.perf_counter()
    try:
        with pytest.raises((OSError, ValueError, weight_sources.WeightsError)) as err:
            weight_sources.download_file(f"{server.url}/f/model.pth", str(target), timeout=1.0, total=1.5)
    finally:
        server.close()
    elapsed = time.perf_counter() - t0
    assert not home.exists(), os.listdir(home)
    assert elapsed < 1.5 + 1.0 + 1.0, elapsed           # the total, one read's timeout, slack
    why = {"drip": "longer than 1.5 s", "html": "text/html", "HTML": "text/html", "half": "closed after",
           "cut": "cannot read weights file", "hang": "timed out"}[how]
    assert why in str(err.value), str(err.value)


def test_a_complete_download_without_a_hash_is_verified_and_kept(tmp_path):
    import torch
    from featrank import weight_sources
    from test_efficientnet_lite import _Server
    buf = tmp_path / "w.pth"
    torch.save({"w": torch.arange(800_000, dtype=torch.float32)}, buf)    # 3.2 MB: several reads
    server = _Server({"/f/model.pth": (buf.read_bytes(), "full")})
    target = tmp_path / "torch" / "hub" / "checkpoints" / "model.pth"
    try:
        weight_sources.download_file(f"{server.url}/f/model.pth", str(target))
    finally:
        server.close()
    assert target.read_bytes() == buf.read_bytes() and os.listdir(target.parent) == ["model.pth"]


def test_a_hash_prefixed_name_is_checked_and_the_partial_file_lies_beside_the_target(tmp_path, monkeypatch):
    """torch.hub's `name-<sha256 prefix>.ext`: a file whose hash starts so is kept, written first
    to a temporary `<name>.….partial<ext>` in the target's own folder (a rename across
    filesystems would fail); one whose hash does not is refused and leaves nothing, and a folder
    that was there before stays."""
    import hashlib
    import torch
    from featrank import weight_sources
    from test_efficientnet_lite import _Server
    buf = tmp_path / "w.pth"
    torch.save({"w": torch.arange(10, dtype=torch.float32)}, buf)
    data = buf.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    wrong = "0123abcd" if not digest.startswith("0123abcd") else "fedc3210"
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)                          # there already
    renames = []
    real = os.replace
    monkeypatch.setattr(weight_sources.os, "replace",
                        lambda src, dst: renames.append((src, dst)) or real(src, dst))
    server = _Server({"/good.pth": (data, "full"), "/bad.pth": (data, "full")})
    try:
        good = folder / f"model-{digest[:8]}.pth"
        weight_sources.download_file(f"{server.url}/good.pth", str(good))
        with pytest.raises(ValueError, match=f"does not start with {wrong}"):
            weight_sources.download_file(f"{server.url}/bad.pth", str(folder / f"model-{wrong}.pth"))
    finally:
        server.close()
    assert good.read_bytes() == data and sorted(os.listdir(folder)) == [good.name]
    (src, dst), = renames
    assert dst == str(good) and os.path.dirname(src) == str(folder)
    assert os.path.basename(src).startswith(good.name + ".") and src.endswith(".partial.pth")


class Pickled:
    """An object a pickle would rebuild by running this module's code."""


def test_read_state_dict_reads_each_format_and_refuses_pickled_code(tmp_path):
    """safetensors, a torch.save of tensors (also under 'state_dict'), a TorchScript archive
    (its parameters and buffers); a pickle of anything but tensors is refused (weights_only:
    loading it would run its code)."""
    import torch
    from safetensors.torch import save_file
    from featrank import weight_sources
    tensors = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a.bias": torch.ones(2)}
    save_file(tensors, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": tensors}, tmp_path / "w.pth")
    net = torch.nn.Linear(3, 2)
    torch.jit.save(torch.jit.script(net), str(tmp_path / "w.pt"))
    for name, want in (("w.safetensors", tensors), ("w.pth", tensors),
                       ("w.pt", {"weight": net.weight, "bias": net.bias})):
        got = weight_sources.read_state_dict(str(tmp_path / name))
        assert got.keys() == want.keys(), name
        assert all(torch.equal(got[k].detach(), want[k].detach()) for k in want), name
    torch.save({"w": torch.ones(2), "extra": Pickled()}, tmp_path / "code.pth")
    with pytest.raises(weight_sources.WeightsError, match="cannot read weights file"):
        weight_sources.read_state_dict(str(tmp_path / "code.pth"))

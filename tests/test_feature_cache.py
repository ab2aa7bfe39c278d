"""The activation cache: content keys, no model on a full hit, crash safety, corruption."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from featrank import backbones
from featrank import cli
from helpers import build_cache, cache_hits, tiny_args, tiny_config, write_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_second_build_is_a_hit(built, caplog):
    assert build_cache(built, user=tiny_config()) == 0
    hits, misses = cache_hits(caplog)
    assert hits and not misses


@pytest.mark.parametrize("change", ["image contents", "weights", "input size", "working size",
                                    "levels", "dtype", "precision", "layer"])
def test_any_parameter_change_is_a_miss(built, caplog, monkeypatch, change):
    extra, layers, user = [], ("8",), tiny_config()
    if change == "image contents":   # same file names, new pixels
        write_images(built / "imgs", seed=1)
    elif change == "weights":
        torch = pytest.importorskip("torch")
        ckpt = built / "w.pth"
        m = backbones.get_spec("resnet50").build(32)
        torch.save(m.state_dict(), ckpt)
        extra = ["--weights", str(ckpt)]
    elif change == "input size":
        extra = ["--image-size", "64"]
    elif change == "working size":  # same files, decoded to another size before the backbone's resize
        user.config["working_size"] = 48
    elif change == "levels":
        user.config["degradations"]["blur"]["levels"] = [1.0, 2.0]
    elif change == "dtype":
        user.config["cache_dtype"] = "float32"
    elif change == "precision":
        user.config["extraction_precision"] = "bfloat16"
    elif change == "layer":
        layers = ("7",)
    args = tiny_args(built, "--build-cache", "--layers", *layers, "--dataset", str(built / "imgs"),
                     "--n-inference", "5", "--n-evaluation", "3", *extra)
    if change == "weights":      # tiny_args says --weights random; the later flag wins
        args = args[:args.index("--weights")] + args[args.index("--weights") + 2:]
    assert cli.main(args, user=user) == 0
    hits, misses = cache_hits(caplog)
    assert misses, f"{change}: expected a CACHE MISS, got {hits}"
    if change == "levels":      # only the changed level (blur 3.0 -> 2.0) is extracted again
        assert "0 of 1 reference chunk(s), 1 of 5 evaluation file(s)" in misses[0], misses
    else:                       # everything else changes every file's key
        assert "1 of 1 reference chunk(s), 5 of 5 evaluation file(s)" in misses[0], misses


def test_noise_seed_changes_evaluation_keys_only(tmp_path):
    """Same images, another seed: every evaluation file's key changes (the noise is
    redrawn), the reference chunks' keys do not."""
    from featrank.dataset import ImageRecord
    from featrank.feature_cache import LayerCache, evaluation_units, reference_units
    recs = [ImageRecord(f"/x/{i}.png", f"{i:064x}") for i in range(8)]
    ctx = {"weights": {"source": "random-init", "seed": 0}, "dtype": "float16"}
    degs = {"noise": {"type": "gaussian_noise", "levels": [5, 10]}}
    a = LayerCache(str(tmp_path), "resnet50", 8, "layer4", ctx, recs[:5], recs[5:], seed=0)
    b = LayerCache(str(tmp_path), "resnet50", 8, "layer4", ctx, recs[:5], recs[5:], seed=1)
    for u in evaluation_units(recs[5:], degs):
        if u.degradation is not None:
            assert a.unit_key(u) != b.unit_key(u)
    for u in reference_units(recs[:5]):
        assert a.unit_key(u) == b.unit_key(u)
    u = evaluation_units(recs[5:], degs)[1]
    assert a.check(u) == "absent"


# ------------------------------------------------------------------ the key's fields, by name
# What a cached activation depends on, written out: the context every key of one (backbone,
# layer) holds (cache_fill.open_caches builds it), and where each of its values comes from. A
# field dropped from the key, or a setting or constant that no longer reaches it, fails below
# with the field's name; the golden hashes (test_cache_keys_golden.py) are only the safety net.
CONTEXT_FIELDS = {"backbone", "module_path", "weights", "capture", "input_size", "working_size",
                  "code", "mean", "std", "dtype", "precision"}
CODE_FIELDS = {"libraries", "loader", "degradations", "preprocess", "interpolation"}
# (the extraction setting, a changed value, the context field it must reach)
SETTING_FIELDS = [("image_size", 64, "input_size"), ("working_size", 48, "working_size"),
                  ("cache_dtype", "float32", "dtype"), ("extraction_precision", "bfloat16", "precision")]
# (the module, its constant, the field of code_identity it must reach)
CODE_CONSTANTS = [("featrank.dataset", "LOADER_VERSION", "loader"),
                  ("featrank.degradation_generator", "DEGRADATION_VERSION", "degradations"),
                  ("featrank.feature_cache", "PREPROCESS_VERSION", "preprocess")]


def _caches(tmp_path, ext=None, backbone="resnet50", prov=None):
    from featrank import cache_fill, run_plan
    from featrank.dataset import ImageRecord
    from featrank.user_config import default_config
    ext = ext or run_plan.Stages.of({**default_config(), "cache_dir": str(tmp_path),
                                     "image_size": None}).extraction
    prov = prov or backbones.Provenance.of("random-init", seed=0)
    ref = [ImageRecord(f"/r/{i}", f"{i + 100:064x}") for i in range(4)]
    ev = [ImageRecord(f"/e/{i}", f"{i:064x}") for i in range(3)]
    (cache,) = cache_fill.open_caches(ext, backbone, [(8, "layer4")], prov, ref, ev).values()
    return cache, ext, ref, ev


def _all_keys(cache, ref, ev) -> list:
    from featrank.feature_cache import evaluation_units, reference_units
    units = reference_units(ref) + evaluation_units(ev, {"blur": {"type": "gaussian_blur",
                                                                   "levels": [1.0, 2.0]}})
    return [cache.ref_dir, cache.eval_dir] + [cache.unit_key(u) for u in units]


def test_the_key_holds_every_field_written_here(tmp_path):
    cache, *_ = _caches(tmp_path)
    assert set(cache.context) == CONTEXT_FIELDS, set(cache.context) ^ CONTEXT_FIELDS
    assert set(cache.context["code"]) == CODE_FIELDS, set(cache.context["code"]) ^ CODE_FIELDS
    assert set(cache.context["code"]["libraries"]) >= {"torch", "torchvision", "numpy", "scipy",
                                                      "pillow"}


@pytest.mark.parametrize("field", sorted(CONTEXT_FIELDS - {"code"}) + [f"code.{f}" for f in
                                                                       sorted(CODE_FIELDS)])
def test_each_field_of_the_context_changes_every_key(tmp_path, field):
    from featrank.feature_cache import LayerCache
    cache, ext, ref, ev = _caches(tmp_path)
    ctx = json.loads(json.dumps(cache.context))
    outer, _, inner = field.partition(".")
    where, name = (ctx["code"], inner) if inner else (ctx, outer)
    where[name] = {"changed": repr(where[name])}
    ctx.pop("backbone"), ctx.pop("module_path")
    backbone = "vgg19" if field == "backbone" else "resnet50"
    path = "layer3" if field == "module_path" else "layer4"
    other = LayerCache(str(tmp_path), backbone, 8, path, ctx, ref, ev, seed=0)
    before, after = _all_keys(cache, ref, ev), _all_keys(other, ref, ev)
    assert all(a != b for a, b in zip(before, after)), f"{field} left a key unchanged"


@pytest.mark.parametrize("setting,value,field", SETTING_FIELDS, ids=[s[0] for s in SETTING_FIELDS])
def test_each_extraction_setting_reaches_its_field(tmp_path, setting, value, field):
    cache, ext, ref, ev = _caches(tmp_path)
    changed, *_ = _caches(tmp_path, dataclasses.replace(ext, **{setting: value}))
    assert cache.context[field] != changed.context[field], f"{setting} does not reach '{field}'"
    assert {k for k in CONTEXT_FIELDS if cache.context[k] != changed.context[k]} == {field}
    assert all(a != b for a, b in zip(_all_keys(cache, ref, ev), _all_keys(changed, ref, ev)))


@pytest.mark.parametrize("module,constant,field", CODE_CONSTANTS, ids=[c[1] for c in CODE_CONSTANTS])
def test_each_code_version_reaches_its_field(tmp_path, monkeypatch, module, constant, field):
    import importlib
    cache, ext, ref, ev = _caches(tmp_path)
    owner = importlib.import_module(module)
    monkeypatch.setattr(owner, constant, getattr(owner, constant) + 1)
    changed, *_ = _caches(tmp_path, ext)
    assert changed.context["code"][field] == cache.context["code"][field] + 1, f"{constant} -> code.{field}"
    assert all(a != b for a, b in zip(_all_keys(cache, ref, ev), _all_keys(changed, ref, ev)))


def test_the_backbones_preprocessing_and_weights_reach_the_key(tmp_path, monkeypatch):
    """The spec's mean, std, interpolation and (off) antialias, a library's version and the
    weights' identity are each in the context; a weights file's location is not."""
    cache, ext, ref, ev = _caches(tmp_path)
    spec = backbones.get_spec("resnet50")
    assert (cache.context["mean"], cache.context["std"]) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert cache.context["code"]["interpolation"] == spec.interpolation
    fid, *_ = _caches(tmp_path, backbone="inception_fid")
    assert fid.context["code"]["antialias"] is False and fid.context["code"]["interpolation"] == "bilinear"
    monkeypatch.setitem(backbones.BACKBONES, "resnet50", dataclasses.replace(spec, mean=(0.5, 0.456, 0.406)))
    moved, *_ = _caches(tmp_path)
    assert moved.context["mean"][0] == 0.5 and moved.ref_dir != cache.ref_dir
    a = backbones.Provenance.of("local", path="/a/w.pth", sha256="ab" * 32)
    b = backbones.Provenance.of("local", path="/b/w.pth", sha256="ab" * 32)
    c = backbones.Provenance.of("local", path="/a/w.pth", sha256="cd" * 32)
    ka, kb, kc = (_caches(tmp_path, ext, prov=p)[0] for p in (a, b, c))
    assert ka.ref_dir == kb.ref_dir and ka.ref_dir != kc.ref_dir      # content, not location
    from featrank import feature_cache
    monkeypatch.setattr(feature_cache, "library_versions", lambda libs: {lib: "9.9" for lib in libs})
    lib, *_ = _caches(tmp_path, ext)
    assert lib.ref_dir != cache.ref_dir


def test_each_field_of_a_unit_changes_its_key_and_the_seed_only_degraded_ones(tmp_path):
    """A unit's own fields: its kind, position and images; an evaluation file's group,
    degradation, level and noise seed. The seed leaves the clean level and the references."""
    from featrank.feature_cache import LayerCache, Unit
    cache, ext, ref, ev = _caches(tmp_path)
    ctx = {k: v for k, v in cache.context.items() if k not in ("backbone", "module_path")}
    reseeded = LayerCache(str(tmp_path), "resnet50", 8, "layer4", ctx, ref, ev, seed=1)
    base = Unit("eval", "blur", 1, "gaussian_blur", 1.0, tuple(ev))
    changes = {"kind": dict(kind="ref"), "position": dict(position=2), "images": dict(records=tuple(ev[:2])),
               "group": dict(group="blur2"), "degradation": dict(degradation="gaussian_noise"),
               "level": dict(level=2.0)}
    for name, change in changes.items():
        assert cache.unit_key(dataclasses.replace(base, **change)) != cache.unit_key(base), name
    assert reseeded.unit_key(base) != cache.unit_key(base)
    clean, chunk = Unit("eval", "clean", 0, None, None, tuple(ev)), Unit("ref", "", 0, None, None, tuple(ref))
    assert cache.unit_key(clean) != cache.unit_key(chunk)
    assert reseeded.unit_key(chunk) == cache.unit_key(chunk)


@pytest.mark.slow
def test_medium_run_after_build_cache_never_builds_the_backbone(built, caplog, monkeypatch):
    # ENABLED_LAYERS steers both runs: two of resnet50's, conv1 and layer1 (small Grams: the
    # layers are not what is checked)
    user = tiny_config()
    user.enabled_layers["resnet50"] = {i: i in (0, 2) for i in user.enabled_layers["resnet50"]}
    enabled = [str(i) for i, on in user.enabled_layers["resnet50"].items() if on]
    assert enabled == ["0", "2"]
    assert build_cache(built, layers=enabled, user=user) == 0
    caplog.clear()

    def boom(*a, **k):
        raise AssertionError("backbone constructed on a full cache hit")
    monkeypatch.setitem(backbones.BACKBONES, "resnet50",
                        dataclasses.replace(backbones.BACKBONES["resnet50"], build=boom))
    monkeypatch.setattr(backbones, "build_backbone", boom)
    assert cli.main(tiny_args(built, "--mode", "medium", "--dataset", str(built / "imgs"),
                               "--n-inference", "5", "--n-evaluation", "3"), user=user) == 0
    hits, misses = cache_hits(caplog)
    assert len(hits) == len(enabled) and not misses


def test_nan_activations_are_refused_naming_the_layer(tmp_path):
    from featrank.dataset import ImageRecord
    from featrank.feature_cache import CacheError, LayerCache, reference_units
    recs = [ImageRecord(f"/x/{i}", f"{i:064x}") for i in range(3)]
    cache = LayerCache(str(tmp_path), "resnet50", 8, "layer4", {}, recs, recs[:2], seed=0)
    bad = np.ones((3, 4, 2, 2), np.float32)
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(CacheError, match="resnet50/layer4.*NaN"):
        cache.write(reference_units(recs)[0], bad, "float16", 1)
    big = np.full((3, 4, 2, 2), 1e6, np.float32)
    with pytest.raises(CacheError, match="float32"):
        cache.write(reference_units(recs)[0], big, "float16", 1)


def _chunks(root):
    out = {}
    for dp, _, fs in os.walk(root):
        for f in fs:
            if f.endswith(".npy"):
                out[os.path.relpath(os.path.join(dp, f), root)] = np.load(os.path.join(dp, f))
    return out


def test_corrupt_files_are_detected_and_extracted_again(built, caplog):
    clean = _chunks(built / "cache")
    chunk = next(p for p in clean if p.endswith("chunk_000.npy"))
    level = next(p for p in clean if p.endswith("level_02.npy"))
    with open(built / "cache" / chunk, "r+b") as f:      # truncated
        f.truncate(100)
    arr = clean[level]
    np.save(built / "cache" / level, np.zeros(arr.shape[:1] + (3,), arr.dtype))  # wrong shape
    assert build_cache(built, user=tiny_config()) == 0
    text = caplog.text
    assert "corrupt" in text and "extracted again" in text
    after = _chunks(built / "cache")
    for k in clean:
        assert np.array_equal(after[k], clean[k]), k


def test_checksum_mismatch_is_detected(built, caplog):
    clean = _chunks(built / "cache")
    chunk = next(p for p in clean if p.endswith("chunk_000.npy"))
    path = built / "cache" / chunk
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF                                     # same size and shape, other bytes
    path.write_bytes(bytes(data))
    assert build_cache(built, user=tiny_config()) == 0
    assert "checksum" in caplog.text
    assert np.array_equal(np.load(path), clean[chunk])


def test_float16_storage_keeps_metrics_within_1e3_of_float32(tmp_path, monkeypatch):
    """At the backbone's own input size (224), on the same images, for layers 7 and 8 (one
    extraction per dtype gives both)."""
    from featrank import distance_metrics as dm
    from featrank import representations as rp
    user = tiny_config(working_size=64)
    write_images(tmp_path / "imgs", n=40)
    scores = {}
    for dtype in ("float16", "float32"):
        user.config["cache_dtype"] = dtype
        args = tiny_args(tmp_path, "--build-cache", "--layers", "7", "8", "--dataset",
                         str(tmp_path / "imgs"), "--n-inference", "30", "--n-evaluation", "8")
        args[args.index("--image-size") + 1] = "224"
        assert cli.main(args, user=user) == 0
        files = {k: v for k, v in _chunks(tmp_path / "cache").items() if v.dtype == np.dtype(dtype)}
        for layer in ("single_layer_7", "single_layer_8"):          # the cache's layer folders
            mine = {k: v for k, v in files.items() if k.split(os.sep)[1] == layer}
            ref = next(v for k, v in mine.items() if "chunk_000" in k)
            evs = [v for k, v in sorted(mine.items()) if "level_" in k]
            assert len(evs) == 5                           # clean and 2 x 2 levels
            r = rp.gap(ref)
            scores[dtype, layer] = ([dm.fid(r, rp.gap(e)) for e in evs] +
                                    [dm.kid(r, rp.gap(e)) for e in evs])
    for layer in ("single_layer_7", "single_layer_8"):
        a, b = np.array(scores["float16", layer]), np.array(scores["float32", layer])
        assert np.all(np.abs(a - b) <= 1e-3 * np.abs(b) + 1e-12), layer


def test_cache_info_lists_entries(built, capsys):
    assert cli.main(["--cache-info", "--cache-dir", str(built / "cache")], user=tiny_config()) == 0
    out = capsys.readouterr().out
    assert "single_layer_8" in out and "layer4" in out and "complete" in out


def test_deleting_one_layer_folder_invalidates_only_that_layer(built, caplog):
    assert build_cache(built, layers=("7", "8"), user=tiny_config()) == 0
    import shutil
    shutil.rmtree(built / "cache" / "resnet50" / "single_layer_7")
    caplog.clear()
    assert build_cache(built, layers=("7", "8"), user=tiny_config()) == 0
    hits, misses = cache_hits(caplog)
    assert any("layer4" in h for h in hits) and any("layer3" in m for m in misses)


BUILD_SCRIPT = (
    "import sys\nfrom featrank import cli, run_plan\n"
    "user = run_plan.UserConfig.load(working_size=32, batch_size=4, num_workers=0, degradations="
    "{'blur': {'type': 'gaussian_blur', 'levels': [1.0, 2.0, 3.0]},"
    " 'noise': {'type': 'gaussian_noise', 'levels': [5, 10, 20]}})\n"
    "sys.exit(cli.main(sys.argv[1:], user=user))\n")


def _build_cmd(tmp_path, cache):
    return [sys.executable, "-c", BUILD_SCRIPT, "--build-cache", "--layers", "7", "8",
            "--dataset", str(tmp_path / "imgs"), "--n-inference", "45", "--n-evaluation", "12",
            "--image-size", "32", "--weights", "random", "-q", "--cache-dir", str(cache)]


@pytest.fixture(scope="module")
def clean_build(tmp_path_factory):
    """(folder holding imgs/, the files of one uninterrupted build of them): what the crash
    tests below compare with."""
    tmp = tmp_path_factory.mktemp("clean_build")
    write_images(tmp / "imgs", n=60)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(_build_cmd(tmp, tmp / "clean"), cwd=ROOT, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]
    clean = _chunks(tmp / "clean")
    assert len(clean) == 2 * (1 + 1 + 6)
    return tmp, clean


@pytest.mark.slow
def test_two_processes_building_the_same_entry_do_not_corrupt_it(clean_build, tmp_path):
    images, clean = clean_build
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    shared = tmp_path / "shared"
    procs = [subprocess.Popen(_build_cmd(images, shared), cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait() for p in procs] == [0, 0]
    both = _chunks(shared)
    assert both.keys() == clean.keys()
    for k in clean:
        assert np.array_equal(both[k], clean[k]), k
    for dp, _, fs in os.walk(shared):
        if "metadata.json" in fs:
            meta = json.loads(open(os.path.join(dp, "metadata.json")).read())
            assert meta["complete"] and all(os.path.exists(os.path.join(dp, f)) for f in meta["files"])


@pytest.mark.slow
def test_sigkill_during_build_then_resume_equals_clean_build(clean_build, tmp_path):
    """Kill --build-cache at several points; every rerun completes and the final files
    equal an uninterrupted build's."""
    images, clean = clean_build
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def cmd(cache):
        return _build_cmd(images, cache)

    crash_dir = tmp_path / "crash"
    for delay in (2.0, 3.5, 5.0):
        p = subprocess.Popen(cmd(crash_dir), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert subprocess.run(cmd(crash_dir), cwd=ROOT, env=env, capture_output=True).returncode == 0
    resumed = _chunks(crash_dir)
    assert resumed.keys() == clean.keys()
    for k in clean:
        assert np.array_equal(resumed[k], clean[k]), k
    leftovers = [f for dp, _, fs in os.walk(crash_dir) for f in fs if f.startswith(".tmp_")]
    assert len(leftovers) <= 3    # at most one interrupted temp file per kill, never read


def test_batches_never_cross_a_cache_file():
    from featrank.feature_extraction import unit_batches
    batches = unit_batches([5, 3, 8], 4)
    assert batches == [[0, 1, 2, 3], [4], [5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]

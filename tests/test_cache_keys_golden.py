"""Cache keys of every registered backbone, pinned: a refactor that changes any field of the
key (or the way it is built) fails here, before any user's cache silently goes cold. Library
versions are fixed so the keys do not depend on what is installed; a deliberate change of a
key's fields bumps CACHE_FORMAT_VERSION (or a stage's version) and records new values here."""
import hashlib

import pytest

import backbones
import feature_cache
import pipeline
from run_plan import default_config
from dataset import ImageRecord
from feature_cache import evaluation_units, reference_units

GOLDEN = {"resnet50": "e9df4d6da5abcdd7", "vgg19": "76104f758ecf081c",
          "dinov2_vitb14": "c342c2fc36a27758", "sd_vae": "1b195eb4fd3680bc",
          "lpips_vgg": "521073d8117dcdf8", "clip_vit": "8660ddcae75b65a6",
          "inception_fid": "70cbcfc98826f658", "dinov2_vitl14": "b8dd911058fca33a",
          "clip_vit_l14_336": "2a98eca55ebd7921"}


def _keys(name, tmp_path):
    """One digest of the entry folders and unit keys of the first and last registry layers,
    for 4 reference and 3 evaluation images under config.py's degradations."""
    cfg = {**default_config(), "cache_dir": str(tmp_path), "image_size": None}
    spec = backbones.get_spec(name)
    layers = pipeline.layers_of(name, [spec.layers[0].index, spec.layers[-1].index])
    prov = backbones.Provenance.of("random-init", seed=0)
    ev = [ImageRecord(f"/e/{i}", f"{i:064x}") for i in range(3)]
    ref = [ImageRecord(f"/r/{i}", f"{i + 100:064x}") for i in range(4)]
    caches = pipeline.open_caches(cfg, name, layers, prov, ref, ev)
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

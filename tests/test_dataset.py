"""Built-in dataset and folder sampling: deterministic, disjoint, content-identified."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from featrank import dataset


def test_builtin_has_enough_distinct_images_for_full_mode():
    sources = dataset.builtin_sources()
    assert len(sources) >= 1100 and len(set(sources)) == len(sources)
    assert any("photo" in s for s in sources) and any("leaves" in s for s in sources)
    # a sample of them: RGB, >= 256x256, pairwise distinct contents
    sample = sources[::37]
    hashes = set()
    for s in sample:
        img = dataset.load_builtin(s)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert min(img.shape[:2]) >= 256
        hashes.add(img.tobytes())
    assert len(hashes) == len(sample)


def test_builtin_selection_is_deterministic_and_disjoint():
    e1, r1 = dataset.select_images("builtin", 10, 30, seed=3)
    e2, r2 = dataset.select_images("builtin", 10, 30, seed=3)
    assert e1 == e2 and r1 == r2
    assert not {r.sha256 for r in e1} & {r.sha256 for r in r1}
    e3, _ = dataset.select_images("builtin", 10, 30, seed=4)
    assert e3 != e1
    # more reference images never change the evaluation set; the reference grows as a prefix
    e4, r4 = dataset.select_images("builtin", 10, 40, seed=3)
    assert e4 == e1 and r4[:30] == r1


def test_builtin_images_are_identical_across_processes():
    code = ("import hashlib; from featrank import dataset; "
            "print(hashlib.sha256(dataset.load_builtin('builtin:leaves:7').tobytes()).hexdigest())")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    import hashlib
    assert out.stdout.strip() == hashlib.sha256(dataset.load_builtin("builtin:leaves:7").tobytes()).hexdigest()


def test_folder_walk_is_recursive_covers_formats_and_samples_deterministically(tmp_path):
    rng = np.random.default_rng(0)
    formats = ["png", "jpg", "webp", "bmp", "tiff"]
    for i in range(15):
        sub = tmp_path / f"d{i % 3}" / "deeper"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
            sub / f"img{i}.{formats[i % 5]}")
    ev, ref = dataset.select_images(str(tmp_path), 4, 9, seed=1)
    assert len(ev) == 4 and len(ref) == 9
    assert {os.path.splitext(r.source)[1] for r in ev + ref} <= {".png", ".jpg", ".webp", ".bmp", ".tiff"}
    assert (ev, ref) == dataset.select_images(str(tmp_path), 4, 9, seed=1)
    assert not {r.source for r in ev} & {r.source for r in ref}
    img = dataset.load_rgb(ev[0].source, 16)
    assert img.shape == (16, 16, 3)


def test_identity_follows_content_not_name(tmp_path):
    a = np.zeros((10, 10, 3), np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    (e,), _ = dataset.select_images(str(tmp_path), 1, 0, seed=0)
    Image.fromarray(a + 1).save(tmp_path / "x.png")
    (e2,), _ = dataset.select_images(str(tmp_path), 1, 0, seed=0)
    assert e.source == e2.source and e.sha256 != e2.sha256


def test_builtin_identity_follows_the_generator(monkeypatch):
    a = dataset.builtin_identity("builtin:leaves:3")
    assert a != dataset.builtin_identity("builtin:leaves:4")
    assert a == dataset.builtin_identity("builtin:leaves:3")
    monkeypatch.setattr(dataset, "DEAD_LEAVES_VERSION", dataset.DEAD_LEAVES_VERSION + 1)
    assert dataset.builtin_identity("builtin:leaves:3") != a
    photo = dataset.builtin_identity("builtin:photo:china.jpg:256:0:0")
    monkeypatch.setattr(np, "__version__", "0.0.0")   # another renderer, another identity
    assert dataset.builtin_identity("builtin:photo:china.jpg:256:0:0") != photo


def test_byte_identical_copies_count_once(tmp_path):
    """Two names, one content: the copy is one image, so it can never sit in both sets, and the
    count of distinct images says so when there are too few."""
    rng = np.random.default_rng(2)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"a{i}.png")
    (tmp_path / "copy_of_a0.png").write_bytes((tmp_path / "a0.png").read_bytes())
    for seed in range(5):
        ev, ref = dataset.select_images(str(tmp_path), 2, 2, seed=seed)
        digests = [r.sha256 for r in ev + ref]
        assert len(set(digests)) == 4
    import pytest
    with pytest.raises(dataset.DatasetError, match="found 4 readable distinct images"):
        dataset.select_images(str(tmp_path), 2, 3, seed=0)


# ------------------------------------------------------------------ the version in the cache key
# sha256 (16 hex) of load_rgb at working size 32 on three written files (a wide 8-bit RGB PNG, a
# tall 16-bit grey PNG, a palette PNG with transparency), per dataset.LOADER_VERSION. A failure
# means decoding, bit-depth scaling, the Lanczos resize or the centre crop changed their output:
# bump LOADER_VERSION (part of every cache key; old caches then miss) and record the new value.
GOLDEN_LOADER = {2: "a4fbe1f58f21b404"}


def _golden_files(folder):
    y, x = np.mgrid[0:40, 0:60]
    rgb = np.stack([x * 4, y * 6, (x + y) * 2], -1).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "wide.png")
    grey = ((np.mgrid[0:70, 0:45][0] * 900) % 65536).astype(np.uint16)
    Image.fromarray(grey).save(folder / "tall16.png")
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(folder / "palette.png", transparency=0)
    return [folder / n for n in ("wide.png", "tall16.png", "palette.png")]


def test_the_loader_matches_its_golden_hash_for_this_version(tmp_path):
    import hashlib
    h = hashlib.sha256()
    for f in _golden_files(tmp_path):
        arr = dataset.load_rgb(str(f), 32)
        assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
        h.update(arr.tobytes())
    assert h.hexdigest()[:16] == GOLDEN_LOADER[dataset.LOADER_VERSION], \
        "load_rgb's output changed: bump dataset.LOADER_VERSION and record the new hash here"

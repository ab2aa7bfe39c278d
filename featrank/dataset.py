"""Where images come from: the built-in dataset or a folder, split into disjoint sets.

Every image is identified by a sha256 of its content, so cache keys follow the content,
not names: the file's bytes for a folder; for a built-in image, the exact inputs of its
deterministic generator (image id, generator version, the numpy and Pillow versions that
render it, and the sha256 of the source photograph), which fix its pixels without rendering
them (a test checks the pixels are identical across processes).

Built-in dataset (no download, deterministic):
* crops of the real photographs shipped inside installed packages
  (scikit-learn's `china.jpg` and `flower.jpg`, matplotlib's `grace_hopper.jpg`),
  at three scales on a grid, each resized to 256x256;
* dead-leaves images (Matheron's model, used by ISO/IEEE camera tests to measure
  texture loss): opaque disks with radius density ∝ r^-3, colours drawn from the
  photographs' pixels, which gives natural-image-like 1/f spectra and occlusions.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from featrank.errors import UserError
from featrank.host import file_sha256

log = logging.getLogger(__name__)
# The most pixels an image may have (decoded as RGB that is 3 bytes each: 192 MB at the limit);
# larger files are skipped with a warning. PIL refuses them too (MAX_IMAGE_PIXELS).
MAX_PIXELS = 64 * 10**6
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
BUILTIN_SIZE = 256
# Bump when load_rgb (decoding, EXIF, bit-depth scaling, resize and crop to the working size)
# changes its output: part of every cache key.
LOADER_VERSION = 2
N_DEAD_LEAVES = 900
DEAD_LEAVES_RADII = (4.0, 120.0)      # min / max disk radius in pixels
DEAD_LEAVES_DISKS = 2000              # enough to cover ~99.8 % of the image
DEAD_LEAVES_VERSION = 3               # bump when the generator changes
PHOTO_CROP_SIZES = (256, 320, 400)    # crop sides taken from each photo, resized to 256
PHOTO_CROP_STRIDE = 40


class DatasetError(UserError):
    """A user-facing problem with the images; the message says what to change."""


@dataclass(frozen=True)
class ImageRecord:
    """One image: where to get it (`source`) and what it is (`sha256` of its content)."""
    source: str        # a file path, or "builtin:photo:<file>:<size>:<y>:<x>" / "builtin:leaves:<i>"
    sha256: str


# ------------------------------------------------------------------ built-in

def _photo_paths() -> list[str]:
    import matplotlib
    import sklearn
    sk = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images")
    mpl = os.path.join(matplotlib.get_data_path(), "sample_data")
    return [os.path.join(sk, "china.jpg"), os.path.join(sk, "flower.jpg"),
            os.path.join(mpl, "grace_hopper.jpg")]


@functools.lru_cache(maxsize=None)
def _photo(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def builtin_sources() -> list[str]:
    """Every built-in image id, in a fixed order (over 1,100 distinct images)."""
    ids = []
    for path in _photo_paths():
        h, w = Image.open(path).size[::-1]
        for size in PHOTO_CROP_SIZES:
            for y in range(0, h - size + 1, PHOTO_CROP_STRIDE):
                for x in range(0, w - size + 1, PHOTO_CROP_STRIDE):
                    ids.append(f"builtin:photo:{os.path.basename(path)}:{size}:{y}:{x}")
    ids += [f"builtin:leaves:{i}" for i in range(N_DEAD_LEAVES)]
    return ids


@functools.lru_cache(maxsize=1)
def _palette() -> np.ndarray:
    pixels = np.concatenate([_photo(p).reshape(-1, 3) for p in _photo_paths()])
    return pixels[:: 97]  # a fixed subsample of real colours


def dead_leaves(index: int, size: int = BUILTIN_SIZE) -> np.ndarray:
    """One dead-leaves image (size, size, 3) uint8, a pure function of `index`.

    Disks (radius density ∝ r^-3 on DEAD_LEAVES_RADII, centres uniform over the image and a
    margin) are painted back to front with Pillow, so the first disk drawn lies on top of the
    others; DEAD_LEAVES_DISKS of them cover about 99.8 % of the image (Boolean model:
    1 - exp(-N * pi E[r^2] / area)); a background colour shows through what is left."""
    from PIL import ImageDraw
    rng = np.random.default_rng([DEAD_LEAVES_VERSION, index])
    palette = _palette()
    rmin, rmax = DEAD_LEAVES_RADII
    n = DEAD_LEAVES_DISKS
    u = rng.random(n)
    radii = 1.0 / np.sqrt(1 / rmin**2 - u * (1 / rmin**2 - 1 / rmax**2))   # inverse CDF of r^-3
    centres = rng.uniform(-rmax / 4, size + rmax / 4, (n, 2))
    colours = palette[rng.integers(0, len(palette), n)]
    img = Image.new("RGB", (size, size), tuple(int(c) for c in palette[rng.integers(len(palette))]))
    draw = ImageDraw.Draw(img)
    for r, (cx, cy), c in zip(radii[::-1], centres[::-1], colours[::-1]):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(int(c[0]), int(c[1]), int(c[2])))
    return np.asarray(img)


@functools.lru_cache(maxsize=None)
def _file_sha256(path: str) -> str:
    """file_sha256 of an installed package's photo, remembered (it does not change)."""
    return file_sha256(path)


def builtin_identity(source: str) -> str:
    """sha256 of everything that determines a built-in image's pixels."""
    import PIL
    parts = {"source": source, "size": BUILTIN_SIZE, "numpy": np.__version__, "pillow": PIL.__version__}
    if ":leaves:" in source:
        parts.update(generator=DEAD_LEAVES_VERSION, radii=DEAD_LEAVES_RADII, disks=DEAD_LEAVES_DISKS,
                     palette=[_file_sha256(p) for p in _photo_paths()])
    else:
        fname = source.split(":")[2]
        parts["photo"] = _file_sha256(next(p for p in _photo_paths() if os.path.basename(p) == fname))
    return _sha256_bytes(json.dumps(parts, sort_keys=True).encode())


def load_builtin(source: str) -> np.ndarray:
    """Pixels (256, 256, 3) uint8 of a built-in id."""
    parts = source.split(":")
    if parts[1] == "leaves":
        return dead_leaves(int(parts[2]))
    fname, size, y, x = parts[2], int(parts[3]), int(parts[4]), int(parts[5])
    path = next(p for p in _photo_paths() if os.path.basename(p) == fname)
    crop = _photo(path)[y:y + size, x:x + size]
    if size != BUILTIN_SIZE:
        crop = np.asarray(Image.fromarray(crop).resize((BUILTIN_SIZE, BUILTIN_SIZE),
                                                       Image.Resampling.LANCZOS))
    return crop


# ------------------------------------------------------------------ loading

TINY_SIDE = 32                       # images with a shorter side below this are warned about


def to_rgb(im: Image.Image) -> Image.Image:
    """An 8-bit RGB image of any Pillow image: EXIF orientation applied (as viewers show it);
    16-bit and 32-bit integer or float greyscale scaled to 0-255 by the range of their type
    (I;16: /257), not clipped to white; palettes and alpha converted by Pillow."""
    from PIL import ImageOps
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        full = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        if im.mode == "F" and a.max(initial=0) <= 1.0:
            full = 1.0
        a = np.clip(np.rint(a * (255.0 / full)), 0, 255).astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    return im.convert("RGB")


@functools.lru_cache(maxsize=256)   # an evaluation image is read once per degradation level
def load_rgb(source: str, working_size: int) -> np.ndarray:
    """Decode `source`, resize its shorter side to `working_size` (Lanczos) and
    centre-crop to a square. Returns (working_size, working_size, 3) uint8, read-only.
    An unreadable file raises DatasetError naming it."""
    if source.startswith("builtin:"):
        arr = load_builtin(source)
        img = Image.fromarray(arr)
    else:
        try:
            with Image.open(source) as im:
                img = to_rgb(im)
        except Exception as exc:   # truncated, corrupt, vanished since it was selected
            raise DatasetError(f"cannot decode image {source!r} ({type(exc).__name__}: {exc}); "
                               "remove or replace the file and rerun") from None
    w, h = img.size
    if (w, h) != (working_size, working_size):
        scale = working_size / min(w, h)
        nw, nh = max(working_size, round(w * scale)), max(working_size, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.LANCZOS)
        left, top = (nw - working_size) // 2, (nh - working_size) // 2
        img = img.crop((left, top, left + working_size, top + working_size))
    arr = np.array(img, dtype=np.uint8)
    arr.flags.writeable = False        # shared by the cache: degradations return new arrays
    return arr


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _header(path: str) -> str:
    """'ok', 'large' (more pixels than MAX_PIXELS) or 'bad' (no readable image header), from
    one read of the header; nothing is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return "large" if im.size[0] * im.size[1] > MAX_PIXELS else "ok"
    except Image.DecompressionBombError:       # PIL's own refusal, past twice its limit
        return "large"
    except Exception:
        return "bad"


def _decodes(path: str) -> bool:
    """A complete decode (Image.verify() does not decode the pixel data, so a truncated JPEG
    would pass it); `_header` is the cheap check before it."""
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:
        return False


def _size(path: str) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def list_image_files(folder: str) -> tuple[list[str], list[str]]:
    """(image files, other files) under `folder`, recursively, sorted."""
    images, others, hidden = [], [], []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.startswith("."):      # .DS_Store, macOS '._x.jpg' resource forks
                hidden.append(os.path.join(root, name))
                continue
            path = os.path.join(root, name)
            (images if name.lower().endswith(IMAGE_EXTENSIONS) else others).append(path)
    if hidden:
        log.warning("skipped %d hidden file(s) (names starting with '.') in %s: %s%s", len(hidden),
                    folder, ", ".join(hidden[:5]), " …" if len(hidden) > 5 else "")
    return images, others


def _candidates(dataset: str) -> tuple[list[str], list[str]]:
    """The image files of folder `dataset` whose headers read within the pixel limit, in
    listing order, and those that do not read; skipped files are warned about."""
    if not os.path.exists(dataset):
        raise DatasetError(f"dataset folder {dataset!r} does not exist; pass --dataset FOLDER "
                           "with images in it, or --dataset builtin")
    if not os.path.isdir(dataset):
        raise DatasetError(f"--dataset {dataset!r} is a file; pass the folder that holds the images")
    images, others = list_image_files(dataset)
    if others:
        log.warning("ignored %d file(s) without an image extension in %s: %s%s", len(others),
                    dataset, ", ".join(others[:5]), " …" if len(others) > 5 else "")
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {dataset!r}")
    header = {p: _header(p) for p in images}
    large = [p for p in images if header[p] == "large"]
    if large:
        log.warning("skipped %d image(s) larger than %d megapixels (the pixel limit: a larger one "
                    "would take GBs to decode, and is usually a broken or hostile file): %s%s",
                    len(large), MAX_PIXELS // 10**6, ", ".join(large[:5]), " …" if len(large) > 5 else "")
    bad = [p for p in images if header[p] == "bad"]
    images = [p for p in images if header[p] == "ok"]
    if not images:
        raise DatasetError(f"no readable images ({', '.join(IMAGE_EXTENSIONS)}) found under "
                           f"{dataset!r}" + (f"; {len(bad)} unreadable file(s)" if bad else ""))
    return images, bad


def folder_records(folder: str) -> list[ImageRecord]:
    """Every readable image under `folder` (recursively), in sorted path order, with its digest:
    the REF and EVAL folders of --apply. Unreadable and oversized files are skipped with a warning."""
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder!r} is not a folder; pass a folder of images")
    images, bad = _candidates(folder)
    records = []
    for path in images:
        if not _decodes(path):
            bad.append(path)
            continue
        with open(path, "rb") as f:
            records.append(ImageRecord(os.path.abspath(path), _sha256_bytes(f.read())))
    if bad:
        log.warning("skipped %d unreadable image file(s) in %s: %s%s", len(bad), folder,
                    ", ".join(bad[:5]), " …" if len(bad) > 5 else "")
    return records


def select_images(dataset: str, n_eval: int, n_ref: int, seed: int) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Deterministically sample disjoint (evaluation, reference) sets.

    The candidates are shuffled with `seed`; the evaluation set is taken first, so
    changing n_ref never changes the evaluation images (and the reference set for a
    smaller n_ref is a prefix of the one for a larger n_ref).
    """
    need = n_eval + n_ref
    rng = np.random.default_rng(seed)
    if dataset == "builtin":
        sources = builtin_sources()
        if need > len(sources):
            raise DatasetError(f"the built-in dataset has {len(sources)} images but "
                               f"{need} were requested ({n_ref} reference + {n_eval} evaluation); "
                               "lower --n-inference/--n-evaluation or pass --dataset FOLDER")
        order = rng.permutation(len(sources))[:need]
        records = [ImageRecord(sources[i], builtin_identity(sources[i])) for i in order]
        return records[:n_eval], records[n_eval:]

    images, bad = _candidates(dataset)
    records, seen = [], set()
    for i in rng.permutation(len(images)):
        if len(records) == need:
            break
        path = images[i]
        if not _decodes(path):
            bad.append(path)
            continue
        with open(path, "rb") as f:
            digest = _sha256_bytes(f.read())
        if digest in seen:  # identical copies would leak between the two sets
            continue
        seen.add(digest)
        records.append(ImageRecord(os.path.abspath(path), digest))
    if bad:
        log.warning("skipped %d unreadable image file(s): %s%s", len(bad), ", ".join(bad[:5]),
                    " …" if len(bad) > 5 else "")
    tiny = [(r.source, _size(r.source)) for r in records if min(_size(r.source)) < TINY_SIDE]
    if tiny:
        log.warning("%d image(s) are smaller than %d px on a side and will be upscaled to the "
                    "working size, e.g. %s (%dx%d); their features describe the upscaling more "
                    "than the content", len(tiny), TINY_SIDE, tiny[0][0], *tiny[0][1])
    if len(records) < need:
        raise DatasetError(
            f"found {len(records)} readable distinct images under {dataset!r} but {need} are "
            f"needed ({n_ref} reference + {n_eval} evaluation); lower --n-inference "
            f"(reference) or --n-evaluation, or add images")
    return records[:n_eval], records[n_eval:]

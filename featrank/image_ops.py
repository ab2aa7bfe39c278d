"""Pixel operations shared by the seed's degradations (degradation_generator.py) and
KADID-10k's (kadid10k.py): on (H, W, 3) uint8 RGB images, returning the same."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Round to the nearest integer and clip to 0..255."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise, standard deviation `sigma` on the 0–255 scale."""
    return to_uint8(img.astype(np.float64) + rng.normal(0.0, sigma, img.shape))


def jpeg_compression(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG with Pillow at `quality` (1–100, 4:2:0 chroma subsampling) and decode."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))

"""From raw activations to one feature row per image. Pure numpy, no I/O (the torch engine
for Gram kernels of wide layers is gram_engine.py).

Activations arrive as (n, C, H, W) feature maps, (n, T, D) transformer tokens
(CLS first, then patches) or (n, C) vectors.

* GAP: spatial mean of a map; for tokens the pooling is `vit_pool`: `mean` of the
  patch tokens, the `cls` token, or `cls_mean` (both, concatenated) — the ViT note.
* Gram: G = F F^T / (C·H·W) with F the (C, H·W) matrix of the map (the course notes);
  a ViT's tokens act as positions (F = tokens^T, all T tokens). A row holds the
  C(C+1)/2 entries of the upper triangle, off-diagonal ones times sqrt(2), so that
  Euclidean geometry on rows equals the Frobenius geometry of the Gram matrices.
* Wide layers: a 2048-channel Gram has 2.1 M entries per image. `gram_kernel`
  gives <G_a, G_b>_F = ||F_a^T F_b||_F^2 / (C·P)^2 from the (P, P) products of
  positions, never forming a C x C matrix (the reference form; gram_engine.py computes the
  same kernels in batched GEMMs); distance_metrics' `*_from_kernel` functions and `KernelPCA`
  work from them.
* Post-processing fitted on the reference only: L2 row normalisation, z-scoring,
  PCA to `pca_dim` (optionally whitened).
"""
from __future__ import annotations

import numpy as np
from scipy import linalg

from featrank.distance_metrics import MetricInputError


def as_positions(act: np.ndarray) -> np.ndarray:
    """(n, C, H, W) -> (n, C, H*W); (n, T, D) tokens -> (n, D, T). float64."""
    act = np.asarray(act, dtype=np.float64)
    if act.ndim == 4:
        return act.reshape(act.shape[0], act.shape[1], -1)
    if act.ndim == 3:
        return act.transpose(0, 2, 1)
    raise MetricInputError(f"a Gram matrix needs spatial positions or tokens; this layer "
                           f"outputs vectors of shape {act.shape[1:]}")


def prefix_tokens(shape: tuple, input_size: int, patch: int | None) -> int:
    """Tokens before the patch tokens (CLS, registers) in a layer output of per-image `shape`:
    tokens - (input_size / patch)^2 for (tokens, width) outputs of a transformer, else 0."""
    if len(shape) != 2 or not patch:
        return 0
    grid = input_size // patch
    return shape[0] - grid * grid


def gap(act: np.ndarray, vit_pool: str = "mean", prefix_tokens: int = 1) -> np.ndarray:
    """Global average pooling -> (n, C) float64; tokens pooled per `vit_pool`."""
    act = np.asarray(act)
    if act.ndim == 4:   # float64 accumulator, no float64 copy of the whole map
        return act.reshape(act.shape[0], act.shape[1], -1).mean(axis=2, dtype=np.float64)
    act = act.astype(np.float64)
    if act.ndim == 2:
        return act
    if act.ndim == 3:
        if prefix_tokens == 0:  # e.g. patch embeddings: no CLS token yet
            return act.mean(axis=1) if vit_pool == "mean" else _no_cls(vit_pool)
        cls, patches = act[:, 0], act[:, prefix_tokens:].mean(axis=1)
        return {"cls": cls, "mean": patches,
                "cls_mean": np.concatenate([cls, patches], axis=1)}[vit_pool]
    raise MetricInputError(f"cannot pool activations of shape {act.shape}")


def _no_cls(pool):
    raise MetricInputError(f"vit_pool={pool!r} needs a CLS token; this layer has none "
                           "(use vit_pool 'mean')")


def gram_dim(channels: int) -> int:
    return channels * (channels + 1) // 2


def gram_upper(act: np.ndarray) -> np.ndarray:
    """(n, C(C+1)/2) rows: upper triangle of F F^T / (C*P), off-diagonal entries x sqrt(2)."""
    f = as_positions(act)
    n, c, p = f.shape
    iu = np.triu_indices(c)
    weight = np.where(iu[0] == iu[1], 1.0, np.sqrt(2.0))
    out = np.empty((n, len(iu[0])))
    for i in range(n):
        g = f[i] @ f[i].T / (c * p)
        out[i] = g[iu] * weight
    return out


def gram_kernel(act_a: np.ndarray, act_b: np.ndarray) -> np.ndarray:
    """<G_a, G_b>_F for every pair of images: (na, nb) float64, from (P, P) products only.
    A direct float64 reference implementation; the pipeline uses `gram_kernel_blocks`."""
    fa, fb = as_positions(act_a), as_positions(act_b)
    c, p = fa.shape[1], fa.shape[2]
    if fb.shape[1:] != (c, p):
        raise MetricInputError(f"gram_kernel: shapes differ {fa.shape[1:]} vs {fb.shape[1:]}")
    out = np.empty((len(fa), len(fb)))
    for i in range(len(fa)):
        prod = np.einsum("cp,ncq->npq", fa[i], fb, optimize=True)   # F_a^T F_b for every b
        out[i] = np.sum(prod * prod, axis=(1, 2))
    return out / (c * p) ** 2


def aggregate(per_layer: list[np.ndarray], how: str) -> np.ndarray:
    """Combine several layers' rows: `concat` along features or elementwise `mean`."""
    if len(per_layer) == 1:
        return per_layer[0]
    if how == "concat":
        return np.concatenate(per_layer, axis=1)
    dims = {x.shape[1] for x in per_layer}
    if len(dims) != 1:
        raise MetricInputError(f"aggregate 'mean' needs layers of equal width; got {sorted(dims)} "
                               "(use aggregate 'concat')")
    return np.mean(per_layer, axis=0)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise MetricInputError("l2_normalize: some rows are all zeros")
    return x / norms


def _top_right_singular(xc: np.ndarray, k: int):
    """Top-k singular values and right singular vectors of centred rows (n, d).
    With n < d, through the n x n Gram matrix (O(n^2 d)) rather than an SVD of the rows."""
    n, d = xc.shape
    if n >= d:
        _, s, vt = linalg.svd(xc, full_matrices=False)
        return s[:k], vt[:k]
    w, u = linalg.eigh(xc @ xc.T)
    order = np.argsort(w)[::-1][:k]
    w = w[order]
    # eigenvalues of the Gram carry rounding of ~eps x the largest: below 1e-12 of it a
    # component is zero (a threshold on their square roots would let the rounding through)
    if np.any(w <= 1e-12 * max(w[0], 1e-300)):
        raise MetricInputError("PCA: fewer non-zero components than pca_dim; lower pca_dim")
    s = np.sqrt(w)
    return s, (u[:, order].T @ xc) / s[:, None]


class PostProcess:
    """L2 rows -> z-score -> PCA(pca_dim, whiten), each step fitted on the reference rows."""

    def __init__(self, ref: np.ndarray, l2: bool = False, standardize: bool = False,
                 pca_dim: int | None = None, whiten: bool = False):
        self.l2, self.standardize, self.whiten = l2, standardize, whiten
        x = l2_normalize(ref) if l2 else ref
        if standardize:
            self.mean, self.std = x.mean(axis=0), x.std(axis=0, ddof=1)
            const = np.flatnonzero(self.std == 0)
            if const.size:
                raise MetricInputError(f"standardize: {const.size} feature column(s) are constant "
                                       f"over the reference images (e.g. column {const[0]}); "
                                       "z-scores would be infinite. Drop standardize for this transform")
            x = (x - self.mean) / self.std
        self.components = None
        if pca_dim is not None:
            n, d = x.shape
            if pca_dim > min(n - 1, d):
                raise MetricInputError(f"pca_dim={pca_dim} exceeds min(n_ref - 1, dim) = "
                                       f"{min(n - 1, d)}; lower pca_dim or use more images")
            self.center = x.mean(axis=0)
            s, vt = _top_right_singular(x - self.center, pca_dim)
            self.components = vt
            self.scale = s[:pca_dim] / np.sqrt(n - 1) if whiten else np.ones(pca_dim)
            if whiten and np.any(self.scale <= 1e-12 * max(self.scale[0], 1e-300)):
                raise MetricInputError("whiten: a PCA component has zero variance; lower pca_dim")

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.l2:
            x = l2_normalize(x)
        if self.standardize:
            x = (x - self.mean) / self.std
        if self.components is not None:
            x = (x - self.center) @ self.components.T / self.scale
        return x


class KernelPCA:
    """Linear PCA computed from a kernel matrix (sample space): the exact PCA of the
    rows that produced the kernel, for features too wide to hold (Gram of wide layers).
    Fitted on the reference block K_rr; `transform(K_xr)` projects other rows given
    their kernel with the reference rows."""

    def __init__(self, k_rr: np.ndarray, pca_dim: int, whiten: bool = False, at_most: bool = False):
        """`at_most`: keep the non-zero components among the first `pca_dim` (a display
        projection) instead of failing when there are fewer."""
        n = k_rr.shape[0]
        if pca_dim > n - 1:
            raise MetricInputError(f"pca_dim={pca_dim} exceeds n_ref - 1 = {n - 1}")
        self.row_mean = k_rr.mean(axis=0)
        self.all_mean = k_rr.mean()
        kc = k_rr - self.row_mean[:, None] - self.row_mean[None, :] + self.all_mean
        w, v = linalg.eigh(kc)
        order = np.argsort(w)[::-1][:pca_dim]
        w, v = np.clip(w[order], 0, None), v[:, order]
        null = w <= 1e-12 * max(w[0], 1e-300)
        if np.any(null) and not at_most:
            raise MetricInputError("kernel PCA: fewer non-zero components than pca_dim; lower it")
        w, v, pca_dim = w[~null], v[:, ~null], int((~null).sum())
        # projection of x onto component j: (kc_x . v_j) / sqrt(w_j)
        self.proj = v / np.sqrt(w)
        self.scale = np.sqrt(w / (n - 1)) if whiten else np.ones(pca_dim)

    def transform(self, k_xr: np.ndarray) -> np.ndarray:
        kc = k_xr - k_xr.mean(axis=1, keepdims=True) - self.row_mean[None, :] + self.all_mean
        return kc @ self.proj / self.scale

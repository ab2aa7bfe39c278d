"""From raw activations to one feature row per image. Pure numpy, no I/O.

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
  positions, never forming a C x C matrix; distance_metrics' `*_from_kernel`
  functions and `KernelPCA` work from it.
* Post-processing fitted on the reference only: L2 row normalisation, z-scoring,
  PCA to `pca_dim` (optionally whitened).
"""
from __future__ import annotations

import numpy as np
from scipy import linalg

from distance_metrics import MetricInputError


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


# ------------------------------------------------------------------ Gram kernels of any layer
#
# A C-channel Gram has C(C+1)/2 entries per image (2.1 M for 2048 channels), too many to hold
# for thousands of images. Every two-sample metric, kernel PCA, the Gaussian model and the KDE
# need only the linear kernel between Gram rows, <G_a, G_b>_F, for the pairs (ref, ref),
# (ref, eval) and (eval, eval) within each evaluation set. Two exact routes compute it:
#
# * "rows": explicit Gram entries in row blocks of `bs` channels, for every image, by batched
#   GEMM (F_a[block] F_a^T), then the kernel blocks by GEMM on those entries. Only the upper
#   block-triangle is formed (columns right of a diagonal block weigh sqrt(2)), so the work is
#   about n C^2 P for the entries plus pairs x C^2 for the kernel, and memory is bounded by
#   the block size.
# * "samples": <G_a, G_b> = ||F_a^T F_b||_F^2 / (C P)^2 from (P x P) products of positions:
#   pairs x 2 P^2 C. Cheaper when positions are few (P^2 << C, e.g. pooled vectors).
#
# Each image's activations are divided by their Frobenius norm (in float64) before the
# arithmetic and the norms are multiplied back into the kernel in float64, so a constant factor
# on the activations changes no rounding at all; the GEMMs run in `precision` (float32 by
# default: the cache stores float16) and the kernel blocks accumulate in float64.
# Costs are priced by this machine's measured throughput (BENCHMARKS.md, bench/bench_gram.py).

# Throughput by device (GFLOP/s of float32 GEMM, GB/s of writing per-image Gram blocks, GB/s of
# squaring and summing the (P x P) products of the sample route), measured with
# bench/bench_gram.py: "cpu" on this project's 2-core machine, "cuda" on an H100 (BENCHMARKS.md).
DEVICE_RATES = {"cpu": {"gemm": 250.0, "gram_write": 3.0, "sample_reduce": 0.2},
                "cuda": {"gemm": 30000.0, "gram_write": 8.0, "sample_reduce": 50.0}}
# Host side, either device: normalising the activations in float64 (GB/s of float64), and
# reading them back from the scratch file when they exceed the budget (GB/s).
NORMALISE_GBPS, SPILL_READ_GBPS = 1.0, 2.0
GRAM_KERNEL_VERSION = 1    # bump when gram_kernel_blocks changes its numbers


def gram_shape(shape: tuple) -> tuple[int, int]:
    """(channels C, positions P) of one image's activation shape: (C, H, W) or (T, D) tokens."""
    if len(shape) == 3:
        return int(shape[0]), int(shape[1] * shape[2])
    if len(shape) == 2:
        return int(shape[1]), int(shape[0])
    raise MetricInputError(f"a Gram matrix needs spatial positions or tokens; this layer "
                           f"outputs vectors of shape {tuple(shape)}")


def gram_pairs(n_ref: int, n_eval: int, n_units: int) -> float:
    """Pairs of images whose kernel the pipeline needs: ref x ref (half), ref x eval, eval x eval
    within each evaluation set (half)."""
    return n_ref * (n_ref + 1) / 2 + n_ref * n_eval * n_units + n_units * n_eval * (n_eval + 1) / 2


def gram_block_size(n_images: int, channels: int, budget_bytes: int) -> int:
    """Channels per row block so that one block of entries for every image fits the budget."""
    return int(max(1, min(channels, budget_bytes // max(1, n_images * channels * 4))))


def gram_route_costs(channels: int, positions: int, n_ref: int, n_eval: int, n_units: int,
                     budget_bytes: int, device: str = "cpu") -> dict:
    """Estimated seconds of each route on `device` (see DEVICE_RATES)."""
    rate = DEVICE_RATES["cuda" if str(device).startswith("cuda") else "cpu"]
    c, p = channels, positions
    n = n_ref + n_eval * n_units
    pairs = gram_pairs(n_ref, n_eval, n_units)
    bs = gram_block_size(n, c, budget_bytes // 4)
    entries = c * (c + bs) / 2                       # upper block-triangle, per image
    rows = (n * 2 * entries * p + pairs * 2 * entries) / (rate["gemm"] * 1e9) \
        + n * entries * 4 / (rate["gram_write"] * 1e9)
    samples = pairs * (2 * p * p * c / (rate["gemm"] * 1e9) + p * p * 4 / (rate["sample_reduce"] * 1e9))
    act = n * c * p * 4                              # normalised activations, float32
    host = 2 * act / (NORMALISE_GBPS * 1e9)
    spilled = act > budget_bytes
    if spilled:                                      # rows re-reads them once per row block
        rows += -(-c // bs) * act / (SPILL_READ_GBPS * 1e9)
        samples += act / (SPILL_READ_GBPS * 1e9)
    return {"rows": rows + host, "samples": samples + host}


def choose_gram_route(costs: dict) -> str:
    return min(costs, key=costs.get)


def _torch_dtype(precision: str):
    import torch
    return {"float32": torch.float32, "float64": torch.float64}[precision]


class _Images:
    """All images of a kernel computation as one index space: reference chunks first, then
    every evaluation set. `get(s, e)` gives images [s, e) as a (m, C, P) tensor, each divided
    by its Frobenius norm (in float64, then cast to `precision`); the norms are kept in
    `scale`. The normalised images stay in memory when they fit `budget_bytes`, else in a
    scratch file read back with plain reads (no memory map, so they never count as resident)."""

    def __init__(self, ref: list, evals: list, device, precision: str, budget_bytes: int):
        import torch
        self.parts = list(ref) + list(evals)
        self.starts = np.cumsum([0] + [len(a) for a in self.parts])
        self.n = int(self.starts[-1])
        self.n_ref = int(sum(len(a) for a in ref))
        self.c, self.p = gram_shape(tuple(self.parts[0].shape[1:]))
        self.device, self.dtype = device, _torch_dtype(precision)
        self.np_dtype = np.float32 if precision == "float32" else np.float64
        self.sq_norm = np.empty(self.n)               # ||F||_F^2 of every image, float64
        self.image_bytes = self.c * self.p * np.dtype(self.np_dtype).itemsize
        self.resident, self.spill = None, None
        if self.n * self.image_bytes <= budget_bytes:
            self.resident = torch.empty((self.n, self.c, self.p), dtype=self.dtype)
        else:
            import tempfile
            self.spill = tempfile.TemporaryFile(prefix="gram_")
        for s, f in self._normalised():
            if self.resident is not None:
                self.resident[s:s + len(f)] = f
            else:
                self.spill.write(f.numpy().tobytes())
        if self.resident is not None:
            self.resident = self.resident.to(self.device)

    def _normalised(self, chunk: int = 64):
        """(start, (m, C, P) CPU tensor in `precision`) over all images: each image divided by
        its Frobenius norm in float64 (recorded in sq_norm), then rounded."""
        import torch
        for k, a in enumerate(self.parts):
            for i in range(0, len(a), chunk):
                x = torch.from_numpy(np.array(a[i:i + chunk])).to(torch.float64)
                s = int(self.starts[k]) + i
                flat = x.view(len(x), -1)
                sq = torch.einsum("ij,ij->i", flat, flat)
                if bool((sq == 0).any()):
                    raise MetricInputError("an image has all-zero activations: its Gram matrix "
                                           "is zero and cannot be normalised")
                self.sq_norm[s:s + len(x)] = sq.numpy()
                flat.mul_(torch.rsqrt(sq)[:, None])
                f = x.view(len(x), self.c, self.p) if x.dim() == 4 else x.transpose(1, 2)
                yield s, f.to(self.dtype)

    def get(self, s: int, e: int):
        """Images [s, e), normalised: a (e - s, C, P) tensor on the device."""
        import torch
        if self.resident is not None:
            return self.resident[s:e]
        out = np.empty((e - s, self.c, self.p), dtype=self.np_dtype)
        self.spill.seek(s * self.image_bytes)
        self.spill.readinto(memoryview(out).cast("B"))
        return torch.from_numpy(out).to(self.device)

    def close(self):
        if self.spill is not None:
            self.spill.close()

    @property
    def scale(self) -> np.ndarray:
        """Per-image factor: <G_a, G_b> = scale_a scale_b <Gn_a, Gn_b>, Gn the normalised Grams."""
        return self.sq_norm / (self.c * self.p)


def _ranges(s: int, e: int, step: int) -> list[tuple[int, int]]:
    return [(i, min(e, i + step)) for i in range(s, e, step)]


def gram_kernel_blocks(ref: list, evals: list, route: str = "rows", precision: str = "float32",
                       device: str = "cpu", budget_bytes: int = 2 * 1024**3):
    """Linear kernel of the Gram rows, <G_a, G_b>_F with G = F F^T / (C P), for the pairs the
    metrics need. `ref` is a list of reference activation chunks and `evals` one array per
    evaluation set, each (m, C, H, W) or (m, T, D) (memory-mapped arrays are read chunk by
    chunk). Returns float64 (K_rr (n_ref, n_ref), K_re (n_ref, U * n_eval), K_ee (U, n_eval,
    n_eval)). Peak memory stays near `budget_bytes`."""
    import torch
    images = _Images(ref, evals, torch.device(device), precision, budget_bytes)
    n_ref, n_units, n = images.n_ref, len(evals), images.n
    n_eval = len(evals[0]) if evals else 0
    c, p = images.c, images.p
    kr = np.zeros((n_ref, n_ref))
    kre = np.zeros((n_ref, n_eval * n_units))
    kee = np.zeros((n_units, n_eval, n_eval))
    units = [(n_ref + u * n_eval, n_ref + (u + 1) * n_eval) for u in range(n_units)]
    if route == "rows":
        bs = gram_block_size(n, c, budget_bytes // 4)
        chunk = max(1, min(64, (budget_bytes // 8) // max(1, bs * c * images.image_bytes // images.p)))
        store = torch.empty(n * bs * c, dtype=images.dtype, device=images.device)
        for a0 in range(0, c, bs):
            a1 = min(c, a0 + bs)
            k = (a1 - a0) * (c - a0)                  # entries of this row block, per image
            buf = store[:n * k].view(n, k)
            for s, e in _ranges(0, n, chunk):
                f = images.get(s, e)
                h = buf[s:e].view(e - s, a1 - a0, c - a0)
                torch.bmm(f[:, a0:a1], f[:, a0:].transpose(1, 2), out=h)
                h[:, :, a1 - a0:] *= np.sqrt(2.0)    # entries right of the diagonal block count twice
            r = buf[:n_ref]
            kr += (r @ r.T).double().cpu().numpy()
            kre += (r @ buf[n_ref:].T).double().cpu().numpy()
            for u, (s, e) in enumerate(units):
                kee[u] += (buf[s:e] @ buf[s:e].T).double().cpu().numpy()
        del store
    elif route == "samples":
        step = int(max(1, min(256, np.sqrt(budget_bytes / 16) // max(1, p))))

        def x(s, e):        # rows are positions: (m P, C)
            return images.get(s, e).transpose(1, 2).reshape((e - s) * p, c)

        def pair(xa, xb):
            m = (xa @ xb.T).view(len(xa) // p, p, len(xb) // p, p)
            return (m * m).sum(dim=(1, 3), dtype=torch.float64).cpu().numpy()

        ref_ranges = _ranges(0, n_ref, step)
        eval_ranges = _ranges(n_ref, n, step)
        for i, (s1, e1) in enumerate(ref_ranges):
            xa = x(s1, e1)
            for s2, e2 in ref_ranges[i:]:
                k = pair(xa, x(s2, e2))
                kr[s1:e1, s2:e2], kr[s2:e2, s1:e1] = k, k.T
            for s2, e2 in eval_ranges:
                kre[s1:e1, s2 - n_ref:e2 - n_ref] = pair(xa, x(s2, e2))
        for u, (s, e) in enumerate(units):
            ur = _ranges(s, e, step)
            for i, (s1, e1) in enumerate(ur):
                xa = x(s1, e1)
                for s2, e2 in ur[i:]:
                    k = pair(xa, x(s2, e2))
                    kee[u, s1 - s:e1 - s, s2 - s:e2 - s] = k
                    kee[u, s2 - s:e2 - s, s1 - s:e1 - s] = k.T
    else:
        raise ValueError(f"unknown Gram route {route!r}; choose 'rows' or 'samples'")
    images.close()
    scale = images.scale
    sr, se = scale[:n_ref], scale[n_ref:]
    kr *= sr[:, None] * sr[None, :]
    kre *= sr[:, None] * se[None, :]
    for u, (s, e) in enumerate(units):
        su = scale[s:e]
        kee[u] *= su[:, None] * su[None, :]
    return kr, kre, kee


def gram_rows(act: np.ndarray, precision: str = "float32", device: str = "cpu") -> np.ndarray:
    """Explicit Gram rows (n, C(C+1)/2) float64, the same entries as `gram_upper` (upper
    triangle, off-diagonal x sqrt(2)), computed by batched GEMM in `precision` on normalised
    activations (as gram_kernel_blocks), for layers narrow enough to hold them."""
    import torch
    images = _Images([act], [], torch.device(device), precision, 2**31)
    c = images.c
    iu = np.triu_indices(c)
    flat = torch.from_numpy(iu[0] * c + iu[1]).to(images.device)
    weight = torch.from_numpy(np.where(iu[0] == iu[1], 1.0, np.sqrt(2.0))).to(images.device, images.dtype)
    out = np.empty((images.n, len(iu[0])))
    for s, e in _ranges(0, images.n, 16):
        f = images.get(s, e)
        g = torch.bmm(f, f.transpose(1, 2)).reshape(e - s, -1)
        out[s:e] = (g[:, flat] * weight).double().cpu().numpy()
    return out * images.scale[:, None]


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

    def __init__(self, k_rr: np.ndarray, pca_dim: int, whiten: bool = False):
        n = k_rr.shape[0]
        if pca_dim > n - 1:
            raise MetricInputError(f"pca_dim={pca_dim} exceeds n_ref - 1 = {n - 1}")
        self.row_mean = k_rr.mean(axis=0)
        self.all_mean = k_rr.mean()
        kc = k_rr - self.row_mean[:, None] - self.row_mean[None, :] + self.all_mean
        w, v = linalg.eigh(kc)
        order = np.argsort(w)[::-1][:pca_dim]
        w, v = np.clip(w[order], 0, None), v[:, order]
        if np.any(w <= 1e-12 * max(w[0], 1e-300)):
            raise MetricInputError("kernel PCA: fewer non-zero components than pca_dim; lower it")
        # projection of x onto component j: (kc_x . v_j) / sqrt(w_j)
        self.proj = v / np.sqrt(w)
        self.scale = np.sqrt(w / (n - 1)) if whiten else np.ones(pca_dim)

    def transform(self, k_xr: np.ndarray) -> np.ndarray:
        kc = k_xr - k_xr.mean(axis=1, keepdims=True) - self.row_mean[None, :] + self.all_mean
        return kc @ self.proj / self.scale

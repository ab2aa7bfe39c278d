"""Gram kernels and Gram rows of any layer, by batched GEMM in torch, on the CPU or a GPU.

The numbers equal representations.gram_upper / gram_kernel (the float64 reference forms, checked
by tests/test_gram_engine.py); this module adds the arithmetic that makes wide layers affordable:
routes priced by a device cost model, blocks bounded by a memory budget, and a scratch file
when the activations exceed it.
"""
from __future__ import annotations

import numpy as np

from featrank.distance_metrics import MetricInputError

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
# Costs are priced by this machine's measured throughput (docs/benchmarks.md, bench/bench_gram.py).

# Throughput by device (GFLOP/s of float32 GEMM, GB/s of writing per-image Gram blocks, GB/s of
# squaring and summing the (P x P) products of the sample route), measured with
# bench/bench_gram.py: "cpu" on this project's 2-core machine, "cuda" on an H100 (docs/benchmarks.md).
DEVICE_RATES = {"cpu": {"gemm": 250.0, "gram_write": 3.0, "sample_reduce": 0.2},
                "cuda": {"gemm": 30000.0, "gram_write": 8.0, "sample_reduce": 50.0}}
# Host side, either device: normalising the activations in float64 (GB/s of float64), and
# reading them back from the scratch file when they exceed the budget (GB/s).
NORMALISE_GBPS, SPILL_READ_GBPS = 1.0, 2.0
GRAM_KERNEL_VERSION = 2    # bump when gram_kernel_blocks changes its numbers (2: K_pair added)


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


def _pair_rows(units: list, clean, pairs) -> list:
    """For each evaluation set, the index (into the whole image space) of each row's clean
    version, or None when the set has no pairing (another size than the clean set, no pairs)."""
    out = []
    for u, (s, e) in enumerate(units):
        p = pairs[u] if pairs is not None else None
        if p is not None:
            out.append(clean[0] + np.asarray(p, dtype=np.int64))
        elif e - s == clean[1] - clean[0]:
            out.append(np.arange(clean[0], clean[1]))
        else:
            out.append(None)
    return out


def gram_kernel_blocks(ref: list, evals: list, route: str = "rows", precision: str = "float32",
                       device: str = "cpu", budget_bytes: int = 2 * 1024**3, pair_with: int = 0,
                       pairs: list | None = None):
    """Linear kernel of the Gram rows, <G_a, G_b>_F with G = F F^T / (C P), for the pairs the
    metrics need. `ref` is a list of reference activation chunks and `evals` one array per
    evaluation set, each (m, C, H, W) or (m, T, D) (memory-mapped arrays are read chunk by
    chunk; sets may differ in size). Returns float64 (K_rr (n_ref, n_ref), K_re (n_ref, sum of
    the set sizes), K_ee, K_pair): with sets of one size K_ee is (U, n, n) and K_pair (U, n),
    else K_ee is every set's block flattened and concatenated and K_pair the sets' rows
    concatenated. K_pair pairs row i of set u with row pairs[u][i] of set `pair_with` (the
    clean set: the paired metrics), row i when `pairs` is None and the sizes agree, and is 0
    for a set with no pairing. Peak memory stays near `budget_bytes`. One function (104 lines):
    both routes share the block loops and the float64 accumulators, which split apart would
    be passed around."""
    import torch
    images = _Images(ref, evals, torch.device(device), precision, budget_bytes)
    n_ref, n = images.n_ref, images.n
    c, p = images.c, images.p
    sizes = [len(a) for a in evals]
    starts = n_ref + np.cumsum([0] + sizes)
    units = [(int(starts[u]), int(starts[u + 1])) for u in range(len(evals))]
    clean = units[pair_with] if units else None
    partner = _pair_rows(units, clean, pairs) if units else []
    kr = np.zeros((n_ref, n_ref))
    kre = np.zeros((n_ref, n - n_ref))
    kee = [np.zeros((e - s, e - s)) for s, e in units]
    kpair = [np.zeros(e - s) for s, e in units]
    if route == "rows":
        bs = gram_block_size(n, c, budget_bytes // 4)
        chunk = max(1, min(64, (budget_bytes // 8) // max(1, bs * c * images.image_bytes // images.p)))
        store = torch.empty(n * bs * c, dtype=images.dtype, device=images.device)
        gather = [None if q is None else torch.from_numpy(q).to(images.device) for q in partner]
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
                if gather[u] is not None:
                    kpair[u] += (buf[s:e] * buf[gather[u]]).sum(1, dtype=torch.float64).cpu().numpy()
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
                    kee[u][s1 - s:e1 - s, s2 - s:e2 - s] = k
                    kee[u][s2 - s:e2 - s, s1 - s:e1 - s] = k.T
            if u == pair_with or partner[u] is None:
                continue      # the clean set: its own norms (below); no pairing: 0
            for s1, e1 in ur:  # row i of set u with its clean row, a range at a time
                fa = images.get(s1, e1).transpose(1, 2)
                rows = partner[u][s1 - s:e1 - s]
                contiguous = bool(np.all(np.diff(rows) == 1))
                fb = (images.get(int(rows[0]), int(rows[-1]) + 1) if contiguous
                      else torch.cat([images.get(int(j), int(j) + 1) for j in rows]))
                m = torch.bmm(fa, fb)
                kpair[u][s1 - s:e1 - s] = (m * m).sum(dim=(1, 2), dtype=torch.float64).cpu().numpy()
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
        if partner[u] is not None:
            kpair[u] *= su * scale[partner[u]]
    if units:                 # the clean set with itself: its norms, so its paired distance is 0
        kpair[pair_with] = np.diag(kee[pair_with]).copy()
    if len(set(sizes)) <= 1:
        return kr, kre, np.stack(kee) if kee else np.zeros((0, 0, 0)), \
            np.stack(kpair) if kpair else np.zeros((0, 0))
    return kr, kre, np.concatenate([k.ravel() for k in kee]), np.concatenate(kpair)


_ROWS_BLOCK_BYTES = 32 << 20    # gram_rows: bytes of C x C products per batched GEMM


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
    # images per GEMM: their C x C products within _ROWS_BLOCK_BYTES (one at least, 16 at most),
    # in two buffers used again for every block and written straight into `out` (a block of
    # fresh temporaries is fresh pages to fault in: the time of this function, for wide layers)
    step = int(np.clip(_ROWS_BLOCK_BYTES // (c * c * images.dtype.itemsize), 1, 16))
    products = torch.empty((step, c, c), dtype=images.dtype, device=images.device)
    upper = torch.empty((step, len(iu[0])), dtype=images.dtype, device=images.device)
    for s, e in _ranges(0, images.n, step):
        f = images.get(s, e)
        g = torch.bmm(f, f.transpose(1, 2), out=products[:e - s]).view(e - s, -1)
        torch.index_select(g, 1, flat, out=upper[:e - s])
        torch.from_numpy(out[s:e]).copy_(upper[:e - s].mul_(weight))
    out *= images.scale[:, None]
    return out

"""`FeatureMetric`: a ranked configuration as a metric in a training loop (update / compute /
reset), in the style of torchmetrics, on the images' device, equal to `--apply` on the same
images (the extraction's batches, the cache dtype's rounding and the sweep's own pooling and
scoring are reproduced), and correct under torch.distributed (rows gathered, or FID's moments
merged, in rank order)."""

import logging
import os

import numpy as np

from featrank.dataset import folder_records
from featrank.metric_spec import Applied, configuration_from

from featrank import distance_metrics as dm
from featrank.errors import RuntimeFailure, UsageError
from featrank.evaluation import (SCORED, score_group)
from featrank.run_plan import (applied_stages, spec_of)


log = logging.getLogger("iqm")

APPLY_KEY = ("apply", 1)           # the EVAL folder's set in the feature space


# ---------------------------------------------------------------------- in a training loop

def folder_images(folder: str, what: str) -> list:
    """The readable images of `folder` (sorted paths), at least two."""
    records = folder_records(folder)
    if len(records) < 2:
        raise UsageError(f"{what} {folder!r} has {len(records)} readable image(s); a score needs at "
                         "least two")
    return records


def image_batches(records, working_size: int, size: int):
    """(B, 3, S, S) uint8 tensors of `records` read at the working size, `size` at a time."""
    import torch
    from featrank.dataset import load_rgb
    for s in range(0, len(records), size):
        images = np.stack([load_rgb(r.source, working_size) for r in records[s:s + size]])
        yield torch.from_numpy(images).permute(0, 3, 1, 2)


STATE_WARN_BYTES = 1 << 30     # a FeatureMetric holding more than this says so, once


def check_images(images, where: str):
    """`images` as a float (B, 3, H, W) tensor in [0, 1] on their device, checked once where they
    arrive: uint8 (0-255) or floating point in [0, 1], finite, of that shape, on a device that
    holds data. Anything else (wider or signed integers, bool, complex, floats outside [0, 1]
    such as 0-255 values, NaN, another shape, the meta device) is a UsageError naming what was
    given and how to convert it; nothing is kept of a refused batch."""
    import torch
    try:
        x = torch.as_tensor(images)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{where}: a {type(images).__name__} is not a batch of images "
                         f"({type(exc).__name__}); give a (B, 3, H, W) tensor or array, uint8 or "
                         "float in [0, 1]") from None
    if x.device.type == "meta":
        raise UsageError(f"{where}: a tensor on the 'meta' device holds no pixels; give images on "
                         "the CPU or a GPU")
    if x.ndim != 4 or x.shape[1] != 3 or 0 in tuple(x.shape):
        raise UsageError(f"{where} takes (B, 3, H, W) images; got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div(255.0)
    if not x.is_floating_point():
        raise UsageError(f"{where}: {x.dtype} images are not read: give uint8 (0-255) or float in "
                         f"[0, 1] (e.g. x.to(torch.uint8) for 0-255 integers, x.float() / 255)")
    if not bool(torch.isfinite(x).all()):
        raise UsageError(f"{where}: the images hold NaN or inf pixels; give finite values in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise UsageError(f"{where}: float pixels must lie in [0, 1]; these run from {lo:g} to "
                         f"{hi:g} (divide 0-255 values by 255, or give uint8)")
    return x.float()


class FeatureMetric:
    """A configuration as a metric inside a training loop, in the style of torchmetrics:

        m = FeatureMetric("results/medium_20261201_120000#1", reference="real_images/")
        for batch in loader:
            m.update(batch)            # (B, 3, H, W) uint8, or float in [0, 1]
        score = m.compute()
        m.reset()

    `config` is what --apply takes (a results folder[#rank], its JSON, a spec string) or an
    Applied. `reference` is a folder (read at the working size, as --apply reads it) or a
    (N, 3, H, W) tensor; `reference_features` gives the reference rows directly. The backbone
    runs on the images' device in batches of config['batch_size'] taken from the stream of
    images, whatever sizes update() receives (CPU convolutions round differently in other
    batch compositions; so the extraction's batches are reproduced); its layer outputs are rounded to
    the cache's storage dtype and pooled (GAP) or turned into Gram rows by the sweep's own
    functions, so the score equals --apply's on the same images. Only the rows are kept, or, for
    FID on a space without post-processing, the running mean and scatter matrix (O(d^2) for any
    number of images). The cache is never written. Under torch.distributed, compute() gathers
    every rank's rows (or merges their sums) in rank order: each rank gets the score of all the
    images. `settings` overrides the run's settings (run_plan.default_config keys)."""

    def __init__(self, config, reference=None, *, reference_features=None,
                 settings: dict | None = None, keep_rows: bool = False):
        from featrank.backbones import build_backbone
        from featrank.user_config import default_config
        self.applied = config if isinstance(config, Applied) else configuration_from(config)
        self.conf = self.applied.conf
        self.stages = applied_stages(default_config(), {**self.applied.settings, **(settings or {})},
                                     backbone=self.conf.backbone, what="settings['image_size']")
        ext = self.stages.extraction
        self.spec = spec_of(self.conf.backbone)
        self.backbone = build_backbone(self.conf.backbone, ext.weights, ext.seed, ext.image_size,
                                       allow_download=False)
        self.batch_size = ext.batch_size
        self._forward_bytes = False          # the memory estimate's, made at the first batch
        t, metric = self.conf.transform, self.conf.metric
        self.running = not keep_rows and metric == "fid" and not (
            t.use_gram or t.use_pca or t.standardize or t.l2_normalize)
        if reference_features is not None:
            self.reference = dm.check_features(reference_features, "reference_features")
        elif reference is not None:
            self.reference = self._reference_rows(reference)
        else:
            raise UsageError("FeatureMetric needs a reference: a folder, a tensor of images, or "
                             "reference_features")
        self.reset()

    # -- state
    def reset(self) -> None:
        """Forget every image given to update()."""
        self._rows, self._n, self._mean, self._scatter, self._pending = [], 0, None, None, []
        self._size = None               # (H, W) of the images given since the last reset()
        self._warned = False

    def state_bytes(self) -> int:
        """Bytes held for the images given so far (rows, or mean and scatter)."""
        pending = sum(x.nelement() * x.element_size() for x in self._pending)
        rows = sum(r.nbytes for r in self._rows)
        if self.running and self._mean is not None:
            return pending + rows + self._mean.nbytes + self._scatter.nbytes
        return pending + rows

    def update(self, images=None, *, features=None) -> None:
        """Add a batch: (B, 3, H, W) images (uint8, or float in [0, 1]), or feature rows (B, d) of
        the reference's width. A refused batch (check_images) leaves the metric as it was."""
        if features is not None:
            rows = dm.check_features(features, "features", 1)
            self._check_width(rows.shape[1], "features")
            self._add(rows)
            return
        batch = check_images(images, "FeatureMetric.update")
        size = tuple(batch.shape[-2:])
        if self._size is not None and size != self._size:
            raise UsageError(f"FeatureMetric.update: images of {size[0]}x{size[1]} px, but the "
                             f"images so far are {self._size[0]}x{self._size[1]}: one metric scores "
                             "images of one size (as --apply reads every image at the working "
                             "size); resize them first, or reset() to start over")
        self._size = size
        self._pending.extend(batch)
        while len(self._pending) >= self.batch_size:
            self._flush(self.batch_size)

    def _check_width(self, width: int, what: str) -> None:
        if width != self.reference.shape[1]:
            raise UsageError(f"FeatureMetric.update: {what} of width {width}, but the reference rows "
                             f"(and every row so far) have {self.reference.shape[1]}: give rows of "
                             f"{self.conf.label}'s space, or images")

    def _flush(self, n: int) -> None:
        import torch
        batch, self._pending = torch.stack(self._pending[:n]), self._pending[n:]
        self._add(self.features(batch))

    def _add(self, rows: np.ndarray) -> None:
        self._rows.append(rows)
        if not self._warned and self.state_bytes() > STATE_WARN_BYTES:
            self._warned = True
            log.warning("FeatureMetric keeps every image's rows for %s (%.2f GiB now, %d dims per "
                        "image; only FID without post-processing keeps running moments): call "
                        "compute() and reset() between evaluations", self.conf.label,
                        self.state_bytes() / 2**30, rows.shape[1])
        # FID: rows are merged into the mean and scatter once as many as their dimension wait
        # (so the state stays under twice d + d^2 numbers, and merging costs O(d^2) per d rows)
        if self.running and sum(len(r) for r in self._rows) >= rows.shape[1]:
            self._merge_rows()

    def _merge_rows(self) -> None:
        if self._rows:
            rows, self._rows = np.concatenate(self._rows), []
            self._n, self._mean, self._scatter = _merge(self._n, self._mean, self._scatter,
                                                        *_moments(rows))

    def compute(self) -> float:
        """The score of every image given so far (on every rank) against the reference."""
        if self._pending:
            self._flush(len(self._pending))
        if self.running:
            self._merge_rows()
            n, mean, scatter = _gather_moments(self._n, self._mean, self._scatter)
            if n < 2:
                raise UsageError(f"FeatureMetric.compute needs at least two images; got {n}")
            mu_r, sigma_r = dm.gaussian_stats(self.reference)
            return float(dm.frechet_distance(mu_r, sigma_r, mean, scatter / (n - 1)))
        r = self.result()
        return float(r.scorer.score_prepared(r.prepared[APPLY_KEY]))

    def result(self):
        """The evaluation.ConfigResult of the rows given so far (not for the running FID): its
        scorer and prepared state also give resampled scores."""
        if self._pending:
            self._flush(len(self._pending))
        rows = _gather_rows(np.concatenate(self._rows) if self._rows else np.empty((0, 0)))
        if len(rows) < 1:
            raise UsageError("FeatureMetric.compute: no images were given to update()")
        from featrank.feature_spaces import CLEAN_KEY, FeatureSpace, postprocess
        evals = {APPLY_KEY: rows}
        if dm.METRICS[self.conf.metric]["paired"]:
            if len(rows) != len(self.reference):
                raise UsageError(f"{self.conf.metric} pairs image i with reference image i: "
                                 f"{len(rows)} images for {len(self.reference)} references")
            evals[CLEAN_KEY] = self.reference
        space = FeatureSpace.rows(self.reference, evals)
        (r,) = score_group([self.conf], lambda: postprocess(space, self.conf.transform), {},
                           self.stages.scoring.seed, kid=self.stages.scoring.kid,
                           cmmd=self.stages.scoring.cmmd)
        if r.status != SCORED:
            raise RuntimeFailure(f"{self.conf.label} cannot score these images: {r.reason}")
        return r

    # -- features
    def features(self, images) -> np.ndarray:
        """The configuration's rows (n, d) of (B, 3, H, W) images (uint8, or float in [0, 1]),
        before post-processing, computed in batches of `batch_size` as given."""
        import torch
        from featrank.feature_extraction import (capture_layers, check_memory, forward_bytes, resize,
                                                 run_captured)
        from featrank import gram_engine as ge
        from featrank import representations as rp
        from featrank.feature_extraction import cpu_threads
        # a contiguous NCHW batch, as the extraction's DataLoader collates one: convolutions on
        # a channels-last view round differently
        x = check_images(images, "FeatureMetric.features").contiguous()
        lc, t = self.conf.layer_config, self.conf.transform
        if self._forward_bytes is False:    # one meta forward pass per metric, not per update
            self._forward_bytes = forward_bytes(self.backbone, lc.paths)
        check_memory(self.backbone, lc.paths, x.device, min(self.batch_size, len(x)), images=len(x),
                     flag="settings['batch_size']", loader=False, est=self._forward_bytes)
        module = self.backbone.module.to(x.device)
        threads = torch.get_num_threads()
        if x.device.type == "cpu":      # the extraction's thread count: CPU sums depend on it
            torch.set_num_threads(cpu_threads(self.stages.extraction.extraction_threads))
        size = self.backbone.input_size
        mean = torch.tensor(self.spec.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std, device=x.device).view(1, 3, 1, 1)
        store_dtype = getattr(np, self.stages.extraction.cache_dtype)
        per_path = {p: [] for p in lc.paths}
        try:
            with capture_layers(module, lc.paths) as store, torch.inference_mode():
                for chunk in x.split(self.batch_size):
                    xin = ((resize(chunk, size, self.spec.interpolation, self.spec.antialias) - mean)
                           / std).contiguous()
                    for p, act in run_captured(self.backbone.forward, xin, store).items():
                        if p in per_path:
                            per_path[p].append(act.float().cpu().numpy().astype(store_dtype))
        finally:
            torch.set_num_threads(threads)
        parts = []
        for p in lc.paths:
            act = np.ascontiguousarray(np.concatenate(per_path[p]))
            if t.use_gram:
                parts.append(ge.gram_rows(act, self.stages.spaces.gram_precision, "cpu"))
            else:
                prefix = rp.prefix_tokens(act.shape[1:], size, self.spec.patch)
                parts.append(rp.gap(act, t.vit_pool, prefix))
        return rp.aggregate(parts, lc.aggregate)

    def _reference_rows(self, reference) -> np.ndarray:
        if isinstance(reference, (str, os.PathLike)):
            from featrank.feature_cache import CHUNK_SIZE
            records = folder_images(str(reference), "reference")
            # the cache's chunks, each in batches of batch_size (self.features splits them)
            return np.concatenate([self.features(chunk) for chunk in image_batches(
                records, self.stages.extraction.working_size, CHUNK_SIZE)])
        return self.features(reference)


def _moments(rows: np.ndarray):
    """(n, mean, scatter) of rows: scatter = sum of (x - mean)(x - mean)^T."""
    mean = rows.mean(axis=0)
    c = rows - mean
    return len(rows), mean, c.T @ c


def _merge(n_a, mean_a, scatter_a, n_b, mean_b, scatter_b):
    """Chan et al.'s pairwise update: the moments of two sets joined (exact, one pass)."""
    if n_a == 0:
        return n_b, mean_b, scatter_b
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / n), scatter_a + scatter_b + np.outer(delta, delta) * (n_a * n_b / n)


def _distributed():
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def _comm_device(dist):
    import torch
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"


def _gather_rows(rows: np.ndarray) -> np.ndarray:
    """Every rank's rows, in rank order (this rank's alone outside torch.distributed)."""
    dist = _distributed()
    if dist is None:
        return rows
    import torch
    dev = _comm_device(dist)
    world = dist.get_world_size()
    shape = torch.tensor([rows.shape[0], rows.shape[1] if rows.ndim == 2 else 0], device=dev)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    n_max, d = max(int(s[0]) for s in shapes), max(int(s[1]) for s in shapes)
    padded = torch.zeros((n_max, d), dtype=torch.float64, device=dev)
    if len(rows):
        padded[:len(rows)] = torch.as_tensor(rows, dtype=torch.float64, device=dev)
    out = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return np.concatenate([o[:int(s[0])].cpu().numpy() for o, s in zip(out, shapes)])


def _gather_moments(n, mean, scatter):
    """Every rank's (n, mean, scatter) merged in rank order."""
    dist = _distributed()
    if dist is None:
        return n, mean, scatter
    import torch
    dev = _comm_device(dist)
    world = dist.get_world_size()
    d = torch.tensor([0 if mean is None else mean.size], device=dev)
    ds = [torch.zeros_like(d) for _ in range(world)]
    dist.all_gather(ds, d)
    dim = max(int(x) for x in ds)
    flat = torch.zeros(1 + dim + dim * dim, dtype=torch.float64, device=dev)
    if n:
        flat[0] = n
        flat[1:1 + dim] = torch.as_tensor(mean, dtype=torch.float64, device=dev)
        flat[1 + dim:] = torch.as_tensor(scatter, dtype=torch.float64, device=dev).reshape(-1)
    out = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(out, flat)
    total = (0, None, None)
    for o in out:
        o = o.cpu().numpy()
        if o[0]:
            total = _merge(*total, int(o[0]), o[1:1 + dim], o[1 + dim:].reshape(dim, dim))
    return total



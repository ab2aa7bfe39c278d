"""From cached activations to the feature space of one configuration (layers x transform).

Data flow: feature_cache.py (raw activations per layer) -> representations.py (GAP rows,
Gram rows or Gram kernel blocks: pure numerics) -> here (layers aggregated, post-processing
fitted on the reference rows) -> a `FeatureSpace` that distribution_modeling.py and
distance_metrics.py consume.

A FeatureSpace has one of two forms:

* ``explicit``: reference rows (n_ref, d) and rows (n_eval, d) per evaluation set;
* ``kernel``: the linear kernel blocks K_rr, K_re and K_ee of each evaluation set, and the
  dimension d of the rows behind them. The Gram matrices of wide layers (2.1 M entries per
  image for 2048 channels) are held this way; every two-sample metric, PCA (kernel PCA), the
  Gaussian model (in the reference span) and the KDE are exact on it.

A layer's Gram is explicit when the rows of every image fit in a quarter of
`config['max_representation_bytes']` (float64), else kernel blocks computed by the cheaper
exact route (`representations.gram_route_costs`, logged). Both, and the GAP rows of every
layer, are cached as derived artefacts beside the layer's raw entries
(`feature_cache.DerivedCache`), so the next sweep reads them.

Features are memoised by content (module paths, aggregate, the transform's parameters),
never by names. A configuration that cannot run on a space raises `Infeasible` with the rule.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from featrank import gram_engine as ge
from featrank import representations as rp
from featrank.distance_metrics import MetricInputError, unit_kernel, unit_rows
from featrank.feature_cache import CLEAN
from featrank.host import resolve_device
from featrank.layer_registry import LayerConfig

log = logging.getLogger(__name__)

# The transform vocabulary: keys of a config['feature_transforms'] entry and their defaults.
TRANSFORM_DEFAULTS = {"use_gram": False, "use_pca": False, "pca_dim": None, "whiten": False,
                      "standardize": False, "l2_normalize": False, "vit_pool": "mean"}
VIT_POOLS = ("mean", "cls", "cls_mean")
AGGREGATIONS = ("concat", "mean")
GAP_CHUNK = 25                     # images pooled at a time (bounded float64 copies)
GAP_VERSION = 1                    # bump when representations.gap changes its output
CLEAN_KEY = (CLEAN, 0)             # the key of the clean evaluation set (level position 0)


class TransformError(ValueError):
    """A config['feature_transforms'] entry is invalid; the message names the key and the fix."""


def validate_transform(t: dict, where: str) -> None:
    """Raise TransformError naming the first unknown key or bad value of a transform entry."""
    extra = set(t) - {"name"} - set(TRANSFORM_DEFAULTS)
    if extra:
        raise TransformError(f"{where} has unknown key(s) {sorted(extra)}; valid keys: name, "
                             f"{', '.join(TRANSFORM_DEFAULTS)}")
    p = {**TRANSFORM_DEFAULTS, **{k: v for k, v in t.items() if k != "name"}}
    for key in ("use_gram", "use_pca", "whiten", "standardize", "l2_normalize"):
        if not isinstance(p[key], bool):
            raise TransformError(f"{where}: {key} = {p[key]!r} must be True or False")
    if p["use_pca"] and (not isinstance(p["pca_dim"], int) or isinstance(p["pca_dim"], bool)
                         or p["pca_dim"] < 1):
        raise TransformError(f"{where}: use_pca needs an integer pca_dim >= 1 (got {p['pca_dim']!r})")
    if p["whiten"] and not p["use_pca"]:
        raise TransformError(f"{where}: whiten needs use_pca: True")
    if p["vit_pool"] not in VIT_POOLS:
        raise TransformError(f"{where}: vit_pool = {p['vit_pool']!r} is not valid; choose one of: "
                             f"{', '.join(VIT_POOLS)}")


class Infeasible(Exception):
    """A configuration cannot run on this space at this data size; the message is the rule."""


@dataclass(frozen=True)
class Transform:
    """One config['feature_transforms'] entry, validated, its defaults filled in
    (TRANSFORM_DEFAULTS says what each key means)."""
    name: str
    use_gram: bool = False
    use_pca: bool = False
    pca_dim: int | None = None
    whiten: bool = False
    standardize: bool = False
    l2_normalize: bool = False
    vit_pool: str = "mean"

    @classmethod
    def of(cls, entry, where: str = "a feature transform") -> "Transform":
        """The record of a config entry {"name", key: value, ...}; TransformError when invalid."""
        if isinstance(entry, Transform):
            return entry
        validate_transform(entry, where)
        return cls(**entry)

    def params(self) -> dict:
        """Every parameter, the name aside: what the features depend on."""
        return {k: getattr(self, k) for k in TRANSFORM_DEFAULTS}

    @property
    def pca(self) -> int | None:
        """The PCA dimension, None without PCA."""
        return self.pca_dim if self.use_pca else None


def feature_key(layer_config, transform) -> tuple:
    """What the features of a configuration depend on: content, never names. Records or their
    config entries (LayerConfig.of, Transform.of)."""
    layer_config, transform = LayerConfig.of(layer_config), Transform.of(transform)
    return (tuple(layer_config.paths), layer_config.aggregate,
            tuple(sorted(transform.params().items())))


@dataclass
class KernelBlocks:
    """Linear kernel blocks of rows of dimension `dim`: rr (n_ref, n_ref), and per evaluation
    set key: re (n_ref, n_eval), ee (n_eval, n_eval) and pair (n_eval,), the inner product of
    each image's row with its clean row (set CLEAN_KEY, the same position unless the space's
    `pairs` say which; the paired metrics). Sets may differ in size."""
    rr: np.ndarray
    re: dict
    ee: dict
    dim: int
    pair: dict | None = None

    def combine(self, other: "KernelBlocks") -> "KernelBlocks":
        """Kernel of concatenated rows: inner products add up."""
        pair = ({k: v + other.pair[k] for k, v in self.pair.items()}
                if self.pair is not None and other.pair is not None else None)
        return KernelBlocks(self.rr + other.rr, {k: v + other.re[k] for k, v in self.re.items()},
                            {k: v + other.ee[k] for k, v in self.ee.items()}, self.dim + other.dim,
                            pair)

    def unit(self, pairs: dict | None = None) -> "KernelBlocks":
        """The kernel of the L2-normalised rows (`pairs`: FeatureSpace.pairs)."""
        r_sq = np.diag(self.rr)
        re, ee = {}, {}
        for k in self.re:
            e_sq = np.diag(self.ee[k])
            re[k], ee[k] = unit_kernel(self.re[k], r_sq, e_sq), unit_kernel(self.ee[k], e_sq, e_sq)
        pair = None
        if self.pair is not None:
            c_sq = np.diag(self.ee[CLEAN_KEY])
            pair = {k: _unit_pair(v, np.diag(self.ee[k]), c_sq, pairs, k)
                    for k, v in self.pair.items()}
        return KernelBlocks(unit_kernel(self.rr, r_sq, r_sq), re, ee, self.dim, pair)


def _unit_pair(v, e_sq, c_sq, pairs, key) -> np.ndarray:
    """Each row's inner product with its clean row, after both are L2-normalised (0 where a set
    has no pairing)."""
    if len(v) != len(c_sq) and not (pairs and key in pairs):
        return np.zeros(len(v))
    return np.diag(unit_kernel(np.diag(v), e_sq, clean_rows(c_sq, pairs, key))).copy()


def clean_rows(clean, pairs: dict | None, key):
    """The rows (or values) of the clean set that pair with evaluation set `key`'s rows: the
    same positions, or those `pairs[key]` names (a rated group of an incomplete design)."""
    p = None if pairs is None else pairs.get(key)
    return clean if p is None else clean[np.asarray(p)]


@dataclass
class FeatureSpace:
    """One configuration's features: explicit rows or kernel blocks (see the module doc).
    `n_eval` is the smallest evaluation set's size; `pairs` maps the key of a set whose rows
    do not pair with the clean set's rows position by position to the clean row of each."""
    ref: np.ndarray | None
    evals: dict | None                 # (degradation, position) -> rows; position 0 = clean
    kernel: KernelBlocks | None
    n_eval: int
    dim: int
    notes: list = field(default_factory=list)
    pairs: dict | None = None

    @property
    def form(self) -> str:
        return "kernel" if self.kernel is not None else "explicit"

    @property
    def n_ref(self) -> int:
        return len(self.kernel.rr) if self.kernel is not None else len(self.ref)

    @property
    def keys(self) -> list:
        return list(self.kernel.re) if self.kernel is not None else list(self.evals)

    @classmethod
    def rows(cls, ref, evals, notes=(), pairs=None):
        return cls(ref, evals, None, min(len(v) for v in evals.values()), ref.shape[1], list(notes),
                   pairs)

    @classmethod
    def kernels(cls, blocks: KernelBlocks, notes=(), pairs=None):
        return cls(None, None, blocks, min(len(v) for v in blocks.ee.values()), blocks.dim,
                   list(notes), pairs)

    def unit(self) -> "FeatureSpace":
        """The same space with every row L2-normalised (CMMD's embedding sphere)."""
        if self.kernel is not None:
            return FeatureSpace.kernels(self.kernel.unit(self.pairs),
                                        self.notes + ["L2-normalised rows"], self.pairs)
        return FeatureSpace.rows(unit_rows(self.ref), {k: unit_rows(v) for k, v in self.evals.items()},
                                 self.notes + ["L2-normalised rows"], self.pairs)


def explicit_kernel(ref: np.ndarray, evals: dict, pairs: dict | None = None) -> KernelBlocks:
    clean = evals.get(CLEAN_KEY)
    ee = {k: e @ e.T for k, e in evals.items()}
    pair = None
    if clean is not None:     # the clean set with itself: its norms, so its paired distance is 0
        pair = {k: np.diag(ee[k]).copy() if k == CLEAN_KEY
                else np.einsum("ij,ij->i", e, clean_rows(clean, pairs, k))
                if len(e) == len(clean) or (pairs and k in pairs) else np.zeros(len(e))
                for k, e in evals.items()}
    return KernelBlocks(ref @ ref.T, {k: ref @ e.T for k, e in evals.items()}, ee, ref.shape[1], pair)


def postprocess(space: FeatureSpace, transform: Transform) -> FeatureSpace:
    """Fit L2 / z-score / PCA on the reference rows and apply them to every set: explicit
    rows through representations.PostProcess; kernel blocks by normalising the kernel and
    kernel PCA (exact). z-scores need per-dimension statistics, hence explicit rows."""
    pca_dim = transform.pca
    if pca_dim is not None and pca_dim > min(space.n_ref - 1, space.dim):
        raise Infeasible(f"pca_dim = {pca_dim} needs at least pca_dim + 1 reference images and "
                         f"dimensions (here {space.n_ref} images, {space.dim} dims)")
    if space.kernel is not None:
        if transform.standardize:
            raise Infeasible(f"standardize needs explicit rows; this Gram ({space.dim} dims) is held as "
                             "kernel blocks (raise config['max_representation_bytes'] or drop standardize)")
        blocks = space.kernel.unit(space.pairs) if transform.l2_normalize else space.kernel
        if pca_dim is None:
            return FeatureSpace.kernels(blocks, space.notes, space.pairs)
        kp = rp.KernelPCA(blocks.rr, pca_dim, transform.whiten)
        return FeatureSpace.rows(kp.transform(blocks.rr), {k: kp.transform(v.T) for k, v in blocks.re.items()},
                                 space.notes + ["kernel PCA (exact PCA of the Gram rows)"], space.pairs)
    if not (transform.l2_normalize or transform.standardize or pca_dim is not None):
        return space
    pp = rp.PostProcess(space.ref, l2=transform.l2_normalize, standardize=transform.standardize,
                        pca_dim=pca_dim, whiten=transform.whiten)
    return FeatureSpace.rows(pp.apply(space.ref), {k: pp.apply(v) for k, v in space.evals.items()},
                             space.notes, space.pairs)


def gemm_device(device: str) -> str:
    """The device of the Gram GEMMs: config['device'] resolved as for extraction, except that
    MPS runs them on the CPU (the kernel blocks accumulate in float64, which MPS lacks)."""
    dev = resolve_device(device).type
    return "cpu" if dev == "mps" else dev


class FeatureAssembler:
    """Turns cached activations into FeatureSpaces, keeping each layer's representation in
    memory for every transform that shares it.

    `caches` maps a module path to its LayerCache; `ref_units` and `eval_units` are the cache
    units; `patch` is a transformer's patch size (None for other backbones: tokens = prefix
    tokens + (input_size / patch)^2); `max_bytes` bounds explicit Gram rows and the working memory of kernel routes;
    `precision` and `device` are those of the Gram GEMMs."""

    def __init__(self, caches, ref_units, eval_units, input_size, patch, max_bytes: int,
                 precision: str = "float32", device: str = "cpu"):
        self.caches, self.ref_units, self.eval_units = caches, ref_units, eval_units
        self.input_size, self.patch = input_size, patch
        self.max_bytes, self.precision, self.device = max_bytes, precision, device
        self.n_ref = sum(len(u.records) for u in ref_units)
        self.sizes = [len(u.records) for u in eval_units]     # sets may differ (rated groups)
        self.n_eval = min(self.sizes)
        self.pairs = {self.eval_key(u): u.pairs for u in eval_units if u.pairs is not None} or None
        self._layers, self._spaces = {}, {}
        self.token = uuid.uuid4().hex   # one sweep's assembler: worker processes keep theirs by it

    def __getstate__(self):
        """Pickled for a worker process without what it has computed (paths travel, not data)."""
        return {**self.__dict__, "_layers": {}, "_spaces": {}}

    @staticmethod
    def eval_key(unit):
        return (unit.group, unit.position)

    def _shape(self, path):
        return self.caches[path].load(self.ref_units[0]).shape[1:]

    def _stack(self, arrays: list) -> np.ndarray:
        """Every evaluation set's rows in one array: stacked (U, n, ...) when the sets are of one
        size (the layout derived caches have always had), else concatenated (sum n, ...)."""
        return np.stack(arrays) if len(set(self.sizes)) == 1 else np.concatenate(arrays)

    def _split(self, a: np.ndarray) -> list:
        """The per-set arrays of `_stack`'s result."""
        if len(set(self.sizes)) == 1:
            return list(a)
        return np.split(a, np.cumsum(self.sizes)[:-1])

    # -------------------------------------------------------------- one layer
    def _gap(self, path, vit_pool):
        """GAP rows of one layer, from the derived cache when a sweep already pooled them."""
        from featrank.feature_cache import DerivedCache
        key = (path, "gap", vit_pool)
        if key not in self._layers:
            cache = self.caches[path]
            prefix = rp.prefix_tokens(self._shape(path), self.input_size, self.patch)
            derived = DerivedCache(cache, self.ref_units + self.eval_units, "gap",
                                   {"vit_pool": vit_pool, "prefix_tokens": prefix, "version": GAP_VERSION})
            with derived.computing():
                arrays = derived.load()
                if arrays is None:
                    arrays = self._gap_rows(cache, path, vit_pool, prefix)
                    derived.save(arrays)
            keys = [self.eval_key(u) for u in self.eval_units]
            self._layers[key] = FeatureSpace.rows(arrays["ref"], dict(zip(keys, self._split(arrays["eval"]))),
                                                  pairs=self.pairs)
        return self._layers[key]

    def _gap_rows(self, cache, path, vit_pool, prefix) -> dict:
        def rows(unit):
            act = cache.load(unit)
            out = np.concatenate([rp.gap(act[i:i + GAP_CHUNK], vit_pool, prefix)
                                  for i in range(0, len(act), GAP_CHUNK)])
            if not np.isfinite(out).all():
                raise MetricInputError(f"layer {path}: NaN or inf in the features of {unit.relpath}")
            return out
        return {"ref": np.concatenate([rows(u) for u in self.ref_units]),
                "eval": self._stack([rows(u) for u in self.eval_units])}

    def _gram(self, path):
        key = (path, "gram")
        if key not in self._layers:
            self._layers[key] = self._compute_gram(path)
        if isinstance(self._layers[key], Exception):
            raise self._layers[key]
        return self._layers[key]

    def _gram_derived(self, path):
        """(DerivedCache of the layer's Gram, explicit rows?, channels, positions, dims)."""
        from featrank.feature_cache import DerivedCache
        shape = self._shape(path)
        if len(shape) == 1:
            raise Infeasible(f"layer {path} outputs vectors {tuple(shape)}: a Gram matrix needs "
                             "spatial positions or tokens")
        c, p = ge.gram_shape(shape)
        dim = rp.gram_dim(c)
        explicit = self._explicit(dim)
        # both kernel routes are exact: the route is recorded with the artefact, not part of its
        # key, so a warm sweep finds it without choosing a device. K_pair follows the pairing of
        # an incomplete rated design, so that is part of the kernels' key (when there is one)
        params = {"precision": self.precision, "version": ge.GRAM_KERNEL_VERSION}
        if self.pairs and not explicit:
            params["pairs"] = {f"{g}/{p}": list(v) for (g, p), v in self.pairs.items()}
        derived = DerivedCache(self.caches[path], self.ref_units + self.eval_units,
                               "gram_rows" if explicit else "gram_kernel", params)
        return derived, explicit, c, p, dim

    def _explicit(self, dim: int) -> bool:
        """Whether Gram rows of `dim` dims are held as explicit rows (else as kernel blocks)."""
        return (self.n_ref + sum(self.sizes)) * dim * 8 <= self.max_bytes // 4

    def width(self, layer_config, transform) -> int:
        """The width of (layers, transform)'s rows as its metrics read them, summed over its
        layers, without reading any activation: channels for GAP, the Gram's dims for explicit
        Gram rows, the number of images for kernel blocks, at most pca_dim after a PCA; 0 for
        a Gram of vectors. What a feature group's scoring work grows with (sweep's schedule)."""
        layer_config, transform = LayerConfig.of(layer_config), Transform.of(transform)
        total = 0
        for path in layer_config.paths:
            shape = self._shape(path)
            if len(shape) == 1:
                total += 0 if transform.use_gram else int(shape[0])
                continue
            c = ge.gram_shape(shape)[0]
            if transform.use_gram:
                dim = rp.gram_dim(c)
                c = dim if self._explicit(dim) else self.n_ref + sum(self.sizes)
            total += c
        return min(total, transform.pca) if transform.pca else total

    def prepare_grams(self, paths) -> list:
        """Compute the Gram artefacts of `paths` missing from the derived cache now, with every
        thread of this process: the GEMMs are multi-threaded, and a thread count fixed here, not
        by where a sweep's tasks run, keeps the float32 kernels the same whatever the number of
        jobs. Returns the paths computed."""
        done = []
        for path in paths:
            try:
                if self._gram_derived(path)[0].ready():
                    continue
                self._gram(path)
                done.append(path)
            except Infeasible:
                pass                    # reported by the configurations that need it
        return done

    def forget(self) -> None:
        """Drop what this assembler holds in memory (artefacts stay in the derived cache)."""
        self._layers, self._spaces = {}, {}

    def _compute_gram(self, path):
        try:
            derived, explicit, c, p, dim = self._gram_derived(path)
        except Infeasible as exc:
            return exc
        n_units = len(self.eval_units)
        n_total = self.n_ref + sum(self.sizes)
        cache = self.caches[path]
        keys = [self.eval_key(u) for u in self.eval_units]
        what = f"Gram of {path} ({c} channels x {p} positions, {n_total} images)"
        if explicit:
            with derived.computing():
                arrays = derived.load()
                if arrays is None:
                    arrays = self._gram_rows(cache, derived, what, dim)
                else:
                    log.info("%s: explicit rows from the derived cache", what)
            return FeatureSpace.rows(arrays["ref"], dict(zip(keys, self._split(arrays["eval"]))),
                                     [f"Gram as explicit rows ({dim} dims)"], self.pairs)
        with derived.computing():      # one process computes; the others wait, then read it
            arrays = derived.load()
            if arrays is None:
                arrays = self._gram_kernel(cache, derived, what, dim, c, p, n_units)
                route = derived.info["route"]
            else:
                route = derived.info.get("route", "?")
                log.info("%s: kernel blocks from the derived cache (route %s)", what, route)
        starts = np.cumsum([0] + self.sizes)
        k_ee, k_pair = arrays["k_ee"], arrays["k_pair"]
        if len(set(self.sizes)) > 1:         # ragged sets: flattened blocks, concatenated rows
            ends = np.cumsum([0] + [n * n for n in self.sizes])
            k_ee = [k_ee[ends[i]:ends[i + 1]].reshape(n, n) for i, n in enumerate(self.sizes)]
            k_pair = np.split(k_pair, starts[1:-1])
        blocks = KernelBlocks(arrays["k_rr"], {k: arrays["k_re"][:, starts[i]:starts[i + 1]]
                                               for i, k in enumerate(keys)},
                              dict(zip(keys, k_ee)), dim,
                              dict(zip(keys, k_pair)) if CLEAN_KEY in keys else None)
        return FeatureSpace.kernels(blocks, [f"Gram as kernel blocks ({dim} dims, route {route})"],
                                    self.pairs)

    def _gram_rows(self, cache, derived, what, dim) -> dict:
        t0 = time.perf_counter()
        device = gemm_device(self.device)
        arrays = {"ref": np.concatenate([ge.gram_rows(cache.load(u), self.precision, device)
                                         for u in self.ref_units]),
                  "eval": self._stack([ge.gram_rows(cache.load(u), self.precision, device)
                                       for u in self.eval_units])}
        derived.save(arrays)
        log.info("%s: explicit rows (%d dims) in %.1fs on %s", what, dim, time.perf_counter() - t0,
                 device)
        return arrays

    def _gram_kernel(self, cache, derived, what, dim, c, p, n_units) -> dict:
        device = gemm_device(self.device)
        costs = ge.gram_route_costs(c, p, self.n_ref, round(sum(self.sizes) / n_units), n_units,
                                    self.max_bytes, device)
        route = ge.choose_gram_route(costs)
        log.info("%s: %d dims, held as kernel blocks; route '%s' on %s (estimated %s)", what, dim,
                 route, device, ", ".join(f"{k} {v:.1f}s" for k, v in costs.items()))
        t0 = time.perf_counter()
        keys = [self.eval_key(u) for u in self.eval_units]
        kr, kre, kee, kpair = ge.gram_kernel_blocks(
            [cache.load(u) for u in self.ref_units], [cache.load(u) for u in self.eval_units],
            route, self.precision, device, self.max_bytes,
            keys.index(CLEAN_KEY) if CLEAN_KEY in keys else 0, [u.pairs for u in self.eval_units])
        arrays = {"k_rr": kr, "k_re": kre, "k_ee": kee, "k_pair": kpair}
        derived.save(arrays, {"route": route, "device": device})
        log.info("%s: kernel blocks in %.1fs on %s (%s)", what, time.perf_counter() - t0, device,
                 derived.dir)
        return arrays

    # -------------------------------------------------------------- a configuration
    def space(self, layer_config, transform) -> FeatureSpace:
        """The post-processed space of (layers, transform), memoised by content. Records or
        their config entries (LayerConfig.of, Transform.of)."""
        layer_config, transform = LayerConfig.of(layer_config), Transform.of(transform)
        key = feature_key(layer_config, transform)
        if key not in self._spaces:
            try:
                self._spaces[key] = postprocess(self._aggregate(layer_config, transform), transform)
            except (Infeasible, MetricInputError) as exc:
                self._spaces[key] = exc
        if isinstance(self._spaces[key], Exception):
            raise self._spaces[key]
        return self._spaces[key]

    def _aggregate(self, layer_config, transform) -> FeatureSpace:
        how = layer_config.aggregate
        parts = [self._gram(path) if transform.use_gram else self._gap(path, transform.vit_pool)
                 for path in layer_config.paths]
        if len(parts) == 1:
            return parts[0]
        if all(s.kernel is None for s in parts):
            ref = rp.aggregate([s.ref for s in parts], how)
            return FeatureSpace.rows(ref, {k: rp.aggregate([s.evals[k] for s in parts], how)
                                           for k in parts[0].evals}, pairs=self.pairs)
        if how != "concat":
            raise Infeasible("aggregate 'mean' of Gram matrices held as kernel blocks needs the "
                             "kernels between layers; use aggregate 'concat'")
        total = None
        for s in parts:
            blocks = s.kernel if s.kernel is not None else explicit_kernel(s.ref, s.evals, self.pairs)
            total = blocks if total is None else total.combine(blocks)
        return FeatureSpace.kernels(total, ["concatenated layers as kernel blocks"], self.pairs)

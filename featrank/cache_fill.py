"""Filling the cache for a run: which images (a folder, the built-in set, or a rated
database), which cache entries, and what is extracted where: this process, one `Shard` of it
(SLURM arrays), or every torchrun rank's share, meeting at a barrier. pipeline.py composes it
with the sweep; `pipeline.build_cache(s)` are these functions."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from featrank.backbones import BACKBONE_NAMES
from featrank.errors import UsageError
from featrank.layer_registry import CAPTURE
from featrank.parallel import Ranks, Shard
from featrank.run_plan import (DataSettings, ExtractionSettings, SpaceSettings, Stages, backbones_of,
                      check_writable, layers_of, spec_of, validate_config,
                      with_degradation_sets)

log = logging.getLogger("iqm")

def select(data: DataSettings):
    """(evaluation records, reference records): disjoint, seeded."""
    from featrank.dataset import select_images
    return select_images(data.dataset, data.n_images_evaluation, data.n_images_inference, data.seed)


@dataclass
class RunData:
    """The images of a run and how they are degraded: a selection from `dataset` degraded by
    `degradations`, or a rated database (`--mos`) whose groups are files, with its ratings."""
    ref_records: list
    eval_records: list
    degradations: dict           # name -> {"type", "levels"}: what the monotonicity reads
    eval_units: list
    database: object = None      # rated_database.RatedDatabase
    ratings: object = None       # human_agreement.Ratings

    @property
    def ref_units(self) -> list:
        from featrank.feature_cache import reference_units
        return reference_units(self.ref_records)

    @property
    def units(self) -> list:
        return self.ref_units + self.eval_units


def run_data(d: DataSettings, given=frozenset()) -> RunData:
    """The images of a run (its DataSettings `d`). With a rated database (`d.mos`), the
    evaluation sets are the database's groups: (type, level) of a full-reference database, whose
    references are the clean level and, unless `mos_reference` (a folder or "builtin") names
    others, the reference set; or the MOS bins of a no-reference set, whose reference set (and
    clean level) is `mos_reference`, required there. `given`: the settings a flag set (a
    --mos-bins that would shape no group is refused)."""
    from featrank.feature_cache import evaluation_units, rated_units
    if not d.mos:
        eval_records, ref_records = select(d)
        return RunData(ref_records, eval_records, d.degradations,
                       evaluation_units(eval_records, d.degradations))
    from featrank.dataset import select_images
    from featrank.rated_database import read_ratings
    from featrank.rated_design import NO_REFERENCE
    refs = None
    if d.mos_reference != "database":
        refs = select_images(d.mos_reference, 0, d.n_images_inference, d.seed)[1]
    db = read_ratings(d.mos, bins=d.mos_bins, orientation=d.mos_orientation,
                      exclude=frozenset(r.sha256 for r in refs or ()))
    if db.kind == NO_REFERENCE and refs is None:
        raise UsageError(f"--mos {d.mos}: a no-reference rated set (realism ratings, no "
                         "reference per image) is compared with real photographs: give --dataset "
                         "FOLDER (or config['mos_reference'])")
    if "mos_bins" in given and not db.uses_bins:
        raise UsageError(f"--mos-bins {d.mos_bins} does nothing with {db.path}: every type of this "
                         f"{db.format} database has its own levels (bins group a no-reference set, "
                         "a pairwise set or types without levels); drop --mos-bins")
    refs = refs if refs is not None else list(db.references)
    clean = list(db.references) if db.kind != NO_REFERENCE else refs
    groups = db.all_groups()
    units = rated_units(clean, [k for k, _, _ in groups],
                        [[db.records[im.image] for im in ims] for _, _, ims in groups],
                        None if db.complete else [db.pairs(ims) for _, _, ims in groups])
    log.info("rated database %s (%s, %s, %s is better): %d images in %d groups (%d scored) of "
             "%d references; reference set: %s (%d images)", db.path, db.format, db.kind,
             "higher" if db.higher_is_better else "lower", db.n_images, len(groups), len(db.groups),
             len(db.references), "the database's references" if d.mos_reference == "database"
             else d.mos_reference, len(refs))
    if db.excluded:
        log.warning("%d rated image(s) equal to a reference image (same sha256) left out of the "
                 "evaluation", db.excluded)
    if db.binned:
        log.info("MOS-quantile bins (%d) instead of levels for: %s", d.mos_bins,
                 ", ".join(db.binned))
    for row in db.group_rows():
        if not row["scored"]:
            log.info("group %s level %g not scored as a set: %s", row["type"], row["level"], row["reason"])
    return RunData(refs, clean, db.degradations(), units, db, db.ratings(len(clean)))


def feature_assembler(spaces: SpaceSettings, backbone, caches, ref_units, eval_units):
    """The FeatureAssembler of one backbone's `caches` ({module path: LayerCache}) for a run's
    units, with the settings `spaces`: what the sweep and the report's feature maps read their
    spaces from."""
    from featrank.feature_spaces import FeatureAssembler
    spec = spec_of(backbone)
    return FeatureAssembler(caches, ref_units, eval_units, spaces.image_size or spec.input_size,
                            spec.patch, spaces.max_representation_bytes, spaces.gram_precision,
                            spaces.device)


# ---------------------------------------------------------------------- cache fill

def open_caches(ext: ExtractionSettings, backbone, layers, provenance, ref_records,
                eval_records) -> dict:
    """{module path: LayerCache} of `layers` ([(index, path)]) for these images and weights,
    with the extraction settings `ext`."""
    from featrank.feature_cache import LayerCache, code_identity
    spec = spec_of(backbone)
    input_size = ext.image_size or spec.input_size
    context = {"weights": provenance.identity(), "capture": CAPTURE,
               "input_size": input_size, "working_size": ext.working_size,
               "code": code_identity(spec.library, spec.interpolation, spec.antialias),
               "mean": list(spec.mean), "std": list(spec.std),
               "dtype": ext.cache_dtype, "precision": ext.extraction_precision}
    return {path: LayerCache(ext.cache_dir, spec.key_name, index, path, context, ref_records,
                             eval_records, ext.seed, ext.verify_checksums)
            for index, path in layers}


def shard_units(shard: Shard, units: list) -> list:
    """`shard`'s units: its positions among the reference chunks, and among the evaluation files
    on their own, so that shards started with different --n-inference (another reference set,
    the same evaluation set) still share the evaluation files out instead of repeating them."""
    return (shard.share([u for u in units if u.kind == "ref"])
            + shard.share([u for u in units if u.kind != "ref"]))


def ensure_cached(ext: ExtractionSettings, backbone, caches, units, provenance, progress=True,
                  shard: Shard | None = None) -> int:
    """Extract whatever the caches miss (only `shard`'s files when given); on a full hit
    nothing is built or even imported. Returns the number of files extracted."""
    from featrank.feature_cache import plan_extraction
    todo = plan_extraction(backbone, caches, units)
    if todo and shard is not None:
        mine = {u.id for u in shard_units(shard, units)}
        n_all = len(todo)
        todo = {uid: paths for uid, paths in todo.items() if uid in mine}
        log.info("shard %s: %d of the %d missing file(s) are this shard's; the other shards "
                 "extract the rest", shard, len(todo), n_all)
    if todo:
        from featrank.feature_extraction import fill_cache   # torch and the model libraries
        fill_cache(ext, backbone, caches, units, todo, provenance, progress)
    return len(todo)


@dataclass
class CacheBuild:
    """What `build_cache` did for one backbone."""
    backbone: str
    layers: list                 # [(index or None, module path)]
    cache_dir: str
    weights: str                 # provenance label
    extracted: int               # unit files extracted by this process
    missing: int                 # unit files still missing (other shards' share)


def check_module_paths(backbone: str, layers, image_size, module=None) -> None:
    """Unknown module paths fail now, with close matches, before any extraction. `module` is
    the built backbone when the caller has it (else a random-init one is built)."""
    others = [p for i, p in layers if i is None]
    if not others:
        return
    from featrank.backbones import build_backbone        # torch and the model libraries
    from featrank.feature_extraction import find_modules
    if module is None:
        module = build_backbone(backbone, "random", 0, image_size, allow_download=False).module
    try:
        find_modules(module, others)
    except KeyError as exc:
        raise UsageError(f"{backbone}: {exc.args[0]}. List valid names with "
                         f"`python main.py --list-layers {backbone}`") from None


def build_cache(cfg, backbone: str, layers, shard: Shard | None = None, *,
                progress: bool = True, data: RunData | None = None) -> CacheBuild:
    """Extract and cache `layers` (indices or module paths) of `backbone` for cfg's reference
    and evaluation images, or only `shard`'s share of the files. Safe to run in N processes at
    once on one cache folder (local or shared filesystem)."""
    _needs_layers(layers)
    return _build(Stages.of(cfg).extraction,
                  data or run_data(Stages.of(with_degradation_sets(cfg)).data),
                  backbone, layers, shard, progress)


def _needs_layers(layers) -> None:
    if not layers:
        raise UsageError("--build-cache needs --layers (indices or module paths), e.g. "
                         "--build-cache --backbone resnet50 --layers 7 8 9")


def _build(ext: ExtractionSettings, data: RunData, backbone: str, layers, shard,
           progress) -> CacheBuild:
    """build_cache with the extraction settings `ext` and the run's images `data`."""
    from featrank.backbones import resolve_weights
    from featrank.feature_cache import plan_extraction
    check_writable(ext.cache_dir, "--cache-dir")
    resolved = layers_of(backbone, layers)
    check_module_paths(backbone, resolved, ext.image_size)
    prov = resolve_weights(backbone, ext.weights, ext.seed)
    caches = open_caches(ext, backbone, resolved, prov, data.ref_records, data.eval_records)
    units = data.units
    n = ensure_cached(ext, backbone, caches, units, prov, progress, shard)
    missing = 0
    if shard is not None and shard.count > 1:
        with _quiet(logging.getLogger("feature_cache")):
            missing = len(plan_extraction(backbone, caches, units))
    return CacheBuild(backbone, resolved, ext.cache_dir, prov.label, n, missing)


def build_caches(cfg, layers, shard: Shard | None = None, *, progress: bool = True,
                 given=frozenset()) -> list[CacheBuild]:
    """`build_cache` for every backbone of cfg (config['backbone'] may be 'all'). Under torchrun
    each rank extracts its share on its own GPU, then every rank waits for the others; rank 0
    checks that the cache is complete (logging CACHE HIT) and returns the builds, the other
    ranks return []."""
    validate_config(cfg, BACKBONE_NAMES)
    cfg = with_degradation_sets(cfg)
    _needs_layers(layers)
    ranks = Ranks.from_env()
    if ranks is not None and shard is not None:
        raise UsageError(f"--shard {shard} under torchrun: the shard comes from RANK/WORLD_SIZE; "
                         "drop --shard")
    names = backbones_of(cfg)
    data = run_data(Stages.of(cfg).data, given)
    ext = Stages.of(cfg).extraction
    if ranks is None:
        return [_build(ext, data, b, layers, shard, progress) for b in names]
    local = extract_on_ranks(ext, ranks, [(b, layers) for b in names], data, progress)
    if not ranks.leader:
        return []
    return [_build(local, data, b, layers, None, progress) for b in names]


def extract_on_ranks(ext: ExtractionSettings, ranks: Ranks, work, data,
                     progress) -> ExtractionSettings:
    """Each torchrun rank extracts its share of every (backbone, layers) of `work` on its own
    device, then waits for the others. Returns `ext` with this rank's device."""
    local = ext.on(ranks.start(ext.device))
    try:
        for backbone, layers in work:
            _build(local, data, backbone, layers, ranks.shard, progress and ranks.leader)
        ranks.barrier()
    finally:
        ranks.stop()
    return local


class _quiet:
    """Silence a logger below WARNING for a block."""

    def __init__(self, logger):
        self.logger = logger

    def __enter__(self):
        self.level = self.logger.level
        self.logger.setLevel(logging.WARNING)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)

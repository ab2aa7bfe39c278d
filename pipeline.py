"""The pipeline as a library: fill the cache, run an experiment. main.py only parses flags.

    import pipeline, run_plan
    cfg = run_plan.default_config()
    cfg.update(n_images_inference=200, n_images_evaluation=30, jobs=2)
    pipeline.build_cache(cfg, "resnet50", ["7", "8"], shard=parallel.Shard(0, 2))
    exp = pipeline.run_experiment(cfg, "medium", ["7", "8"])
    exp.results[0].mean_spearman, exp.out_dir

`cfg` is a configuration dict as config.py defines it (`run_plan.default_config()` plus changes);
`run_plan.make_plan` validates it and resolves the run once. Errors a user can fix derive from
`errors.UserError` (exit 2), runtime failures from `errors.RuntimeFailure` (exit 1).

Extraction: `build_cache` extracts what the cache misses, optionally only a `Shard` of it.
Under torchrun (RANK / WORLD_SIZE set) `build_caches` and `run_experiment` split extraction over
the ranks, meet at a barrier, and the experiment goes on in rank 0 alone.

Scoring: configurations sharing features (layers x transform) form one task; tasks run through
parallel.sweep_map (config['jobs'] processes, or a Dask cluster with config['dask_scheduler']).
Results are put back in grid order and every random choice is seeded per configuration, so the
CSV does not depend on the number of workers.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import os
import sys
import time
from dataclasses import dataclass, field


from backbones import BACKBONE_NAMES
from errors import RuntimeFailure, UsageError
from layer_registry import CAPTURE
from parallel import ParallelError, Ranks, Shard, dask_session, prestart, resolve_jobs, sweep_map
from run_plan import (RunPlan, UserConfig, backbones_of, check_module_paths, check_writable, layers_of,
                      make_plan, spec_of, validate_config, with_degradation_sets)

log = logging.getLogger("iqm")


def setup_logging(verbose: bool, quiet: bool) -> None:
    """Console at the chosen verbosity (stderr, prefixed with the torchrun rank when there is
    one); experiment.log, added per run, always gets INFO."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = next((h for h in root.handlers if getattr(h, "_iqm", False)), None)
    if console is None:
        console = logging.StreamHandler(sys.stderr)
        try:
            ranks = Ranks.from_env()
        except ParallelError:        # reported by the command itself
            ranks = None
        prefix = f"[rank {ranks.rank}/{ranks.world_size}] " if ranks else ""
        console.setFormatter(logging.Formatter(prefix + "%(levelname)s %(message)s"))
        console._iqm = True
        root.addHandler(console)
    console.stream = sys.stderr     # the current stderr, also when a caller swapped it
    console.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for noisy in ("PIL", "matplotlib", "urllib3", "httpx", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# what a scoring worker imports (started ahead of the sweep by parallel.prestart)
SWEEP_MODULES = ("pipeline", "evaluation", "feature_spaces", "sklearn.mixture")


@dataclass(frozen=True)
class LayerTable:
    """`--list-layers`: a backbone's spec and its layers, (index, module path, kind, output
    shape, level) each; for a library model (registry False) every extractable module, with
    no index or level."""
    spec: object
    registry: bool
    rows: list


def layer_table(name: str) -> LayerTable:
    """The registry's layers of `name`, or the extractable modules of a timm/torchvision/hf
    model (built with random weights, never downloaded)."""
    spec = spec_of(name)
    if spec.layers:
        return LayerTable(spec, True, [(x.index, x.path, x.kind, x.shape, x.level) for x in spec.layers])
    from backbones import build_backbone
    from feature_extraction import list_extractable_layers
    bb = build_backbone(name, "random", 0, allow_download=False)
    rows = list_extractable_layers(bb.module, bb.forward, spec.input_size)
    return LayerTable(spec, False, [(None, path, kind, shape, None) for _, path, kind, shape in rows])


def preview_degradations(cfg) -> str:
    """`--preview-degradations`: a collage of every degradation level of the run on three
    images, written to config['results_dir']; returns its path."""
    from dataset import load_rgb, select_images
    from degradation_generator import preview_collage
    records, _ = select_images(cfg["dataset"], 3, 0, cfg["seed"])
    images = [(r.sha256, load_rgb(r.source, cfg["working_size"])) for r in records]
    check_writable(cfg["results_dir"], "--results-dir")
    os.makedirs(cfg["results_dir"], exist_ok=True)
    path = os.path.join(cfg["results_dir"], "degradation_preview.png")
    preview_collage(images, with_degradation_sets(cfg)["degradations"], cfg["seed"]).save(path)
    return path


def select(cfg):
    """(evaluation records, reference records): disjoint, seeded."""
    from dataset import select_images
    return select_images(cfg["dataset"], cfg["n_images_evaluation"], cfg["n_images_inference"], cfg["seed"])


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
        from feature_cache import reference_units
        return reference_units(self.ref_records)

    @property
    def units(self) -> list:
        return self.ref_units + self.eval_units


def run_data(cfg) -> RunData:
    """The images of cfg's run. With config['mos'], the evaluation sets are the rated
    database's (type, level) groups and its references are the clean level; the reference set
    is the database's references, or `mos_reference` (a folder or "builtin") when set."""
    from feature_cache import evaluation_units, rated_units
    if not cfg["mos"]:
        eval_records, ref_records = select(cfg)
        return RunData(ref_records, eval_records, cfg["degradations"],
                       evaluation_units(eval_records, cfg["degradations"]))
    from dataset import select_images
    from human_agreement import Ratings
    from rated_database import read_ratings
    db = read_ratings(cfg["mos"])
    refs = list(db.references)
    if cfg["mos_reference"] != "database":
        refs = select_images(cfg["mos_reference"], 0, cfg["n_images_inference"], cfg["seed"])[1]
    groups = [db.groups[(t, lv)] for t in db.types for lv in db.levels(t)]
    units = rated_units(list(db.references), db.group_keys(),
                        [[db.records[im.image] for im in g] for g in groups])
    log.info("rated database %s (%s, %s is better): %d images in %d groups of %d references; "
             "reference set: %s (%d images)", db.path, db.format,
             "higher" if db.higher_is_better else "lower", db.n_images, len(groups),
             len(db.references), "the database's references" if cfg["mos_reference"] == "database"
             else cfg["mos_reference"], len(refs))
    return RunData(refs, list(db.references), db.degradations(), units, db,
                   Ratings(tuple(db.group_keys()), db.quality()))


# ---------------------------------------------------------------------- cache fill

def open_caches(cfg, backbone, layers, provenance, ref_records, eval_records) -> dict:
    """{module path: LayerCache} of `layers` ([(index, path)]) for these images and weights."""
    from feature_cache import LayerCache, code_identity, weights_identity
    spec = spec_of(backbone)
    input_size = cfg["image_size"] or spec.input_size
    context = {"weights": weights_identity(provenance), "capture": CAPTURE,
               "input_size": input_size, "working_size": cfg["working_size"],
               "code": code_identity(spec.library, spec.interpolation, spec.antialias),
               "mean": list(spec.mean), "std": list(spec.std),
               "dtype": cfg["cache_dtype"], "precision": cfg["extraction_precision"]}
    return {path: LayerCache(cfg["cache_dir"], spec.key_name, index, path, context, ref_records,
                             eval_records, cfg["seed"], cfg["verify_checksums"])
            for index, path in layers}


def ensure_cached(cfg, backbone, caches, units, provenance, progress=True,
                  shard: Shard | None = None) -> int:
    """Extract whatever the caches miss (only `shard`'s files when given); on a full hit
    nothing is built or even imported. Returns the number of files extracted."""
    from feature_cache import plan_extraction
    todo = plan_extraction(backbone, caches, units)
    if todo and shard is not None:
        mine = {u.id for u in shard.share(units)}
        n_all = len(todo)
        todo = {uid: paths for uid, paths in todo.items() if uid in mine}
        log.info("shard %s: %d of the %d missing file(s) are this shard's; the other shards "
                 "extract the rest", shard, len(todo), n_all)
    if todo:
        from feature_extraction import fill_cache   # torch and the model libraries
        fill_cache(cfg, backbone, caches, units, todo, provenance, progress)
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


def build_cache(cfg, backbone: str, layers, shard: Shard | None = None, *,
                progress: bool = True, data: RunData | None = None) -> CacheBuild:
    """Extract and cache `layers` (indices or module paths) of `backbone` for cfg's reference
    and evaluation images, or only `shard`'s share of the files. Safe to run in N processes at
    once on one cache folder (local or shared filesystem)."""
    from backbones import resolve_weights
    from feature_cache import plan_extraction
    if not layers:
        raise UsageError("--build-cache needs --layers (indices or module paths), e.g. "
                         "--build-cache --backbone resnet50 --layers 7 8 9")
    check_writable(cfg["cache_dir"], "--cache-dir")
    data = data or run_data(with_degradation_sets(cfg))
    resolved = layers_of(backbone, layers)
    check_module_paths(backbone, resolved, cfg["image_size"])
    prov = resolve_weights(backbone, cfg["weights"], cfg["seed"])
    caches = open_caches(cfg, backbone, resolved, prov, data.ref_records, data.eval_records)
    units = data.units
    n = ensure_cached(cfg, backbone, caches, units, prov, progress, shard)
    missing = 0
    if shard is not None and shard.count > 1:
        with _quiet(logging.getLogger("feature_cache")):
            missing = len(plan_extraction(backbone, caches, units))
    return CacheBuild(backbone, resolved, cfg["cache_dir"], prov["label"], n, missing)


def build_caches(cfg, layers, shard: Shard | None = None, *, progress: bool = True) -> list[CacheBuild]:
    """`build_cache` for every backbone of cfg (config['backbone'] may be 'all'). Under torchrun
    each rank extracts its share on its own GPU, then every rank waits for the others; rank 0
    checks that the cache is complete (logging CACHE HIT) and returns the builds, the other
    ranks return []."""
    validate_config(cfg, BACKBONE_NAMES)
    cfg = with_degradation_sets(cfg)
    if not layers:
        raise UsageError("--build-cache needs --layers (indices or module paths), e.g. "
                         "--build-cache --backbone resnet50 --layers 7 8 9")
    ranks = Ranks.from_env()
    if ranks is not None and shard is not None:
        raise UsageError(f"--shard {shard} under torchrun: the shard comes from RANK/WORLD_SIZE; "
                         "drop --shard")
    names = backbones_of(cfg)
    data = run_data(cfg)
    if ranks is None:
        return [build_cache(cfg, b, layers, shard, progress=progress, data=data) for b in names]
    local = _extract_on_ranks(cfg, ranks, [(b, layers) for b in names], data, progress)
    if not ranks.leader:
        return []
    return [build_cache(local, b, layers, None, progress=progress, data=data) for b in names]


def _extract_on_ranks(cfg, ranks: Ranks, work, data, progress) -> dict:
    """Each torchrun rank extracts its share of every (backbone, layers) of `work` on its own
    device, then waits for the others. Returns cfg with this rank's device."""
    local = {**cfg, "device": ranks.start(cfg["device"])}
    try:
        for backbone, layers in work:
            build_cache(local, backbone, layers, ranks.shard, progress=progress and ranks.leader,
                        data=data)
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


# ---------------------------------------------------------------------- experiment

@dataclass
class Experiment:
    """What `run_experiment` found; the same is written under `out_dir`."""
    mode: str
    out_dir: str
    results: list                 # evaluation.ConfigResult, ranked (scored, then not run, failed)
    weights: dict                 # backbone -> provenance
    summary: str
    scoring_seconds: float = 0.0
    jobs: int = 1
    files: dict = field(default_factory=dict)

    @property
    def scored(self) -> list:
        return [r for r in self.results if r.scored]


def new_results_dir(cfg, mode) -> tuple[str, str]:
    """(out_dir, stamp): results/<mode>_<timestamp>[-k], created."""
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    out_dir = os.path.join(cfg["results_dir"], f"{mode}_{stamp}")
    suffix = 1
    while os.path.exists(out_dir):           # two runs within one second
        suffix += 1
        out_dir = os.path.join(cfg["results_dir"], f"{mode}_{stamp}-{suffix}")
    os.makedirs(out_dir)
    return out_dir, os.path.basename(out_dir).split("_", 1)[1]


def run_experiment(cfg, mode: str, layer_specs=None, *, user: UserConfig | None = None,
                   progress: bool = True) -> Experiment | None:
    """Extract what is missing, score every configuration of `mode` and write the report into
    a new folder under config['results_dir']. `layer_specs` (indices or module paths, one layer
    config each) replaces the mode's layers; QUICK and ENABLED_LAYERS come from `user` (default:
    config.py's). Under torchrun, extraction is split over the ranks and rank 0 alone scores;
    the other ranks return None."""
    plan = make_plan(cfg, mode, layer_specs, user=user)
    cfg, plans = plan.cfg, plan.backbones
    jobs = resolve_jobs(cfg["jobs"])
    data = run_data(cfg)
    cfg = {**cfg, "degradations": data.degradations}
    check_writable(cfg["cache_dir"], "--cache-dir")
    check_writable(cfg["results_dir"], "--results-dir")
    ranks = Ranks.from_env()
    if ranks is not None:
        _extract_on_ranks(cfg, ranks, [(b, sorted({str(i) if i is not None else p for lc in lcs
                                                   for i, p in lc["resolved"]})) for b, lcs in plans],
                          data, progress)
        if not ranks.leader:
            return None
    if not cfg["dask_scheduler"] and (mode != "quick" or sum(len(lcs) for _, lcs in plans) > 1):
        prestart(jobs, SWEEP_MODULES)     # workers start while the cache is checked
    with dask_session(cfg["dask_scheduler"], SWEEP_MODULES):   # an unreachable cluster fails before any output
        out_dir, stamp = new_results_dir(cfg, mode)
        handler = logging.FileHandler(os.path.join(out_dir, "experiment.log"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        level = root.level
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)           # experiment.log always gets INFO
        try:
            return _experiment(cfg, plan, data, out_dir, stamp, jobs, progress)
        except BaseException as exc:   # the folder says the run failed, and why; never a silent half
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.error("run failed: %s", text)
            with contextlib.suppress(OSError):      # on a full disk this may not fit either
                with open(os.path.join(out_dir, "FAILED.txt"), "w") as f:
                    f.write(f"this run did not finish: {text}\ncompleted cache files are kept; rerun "
                            "the same command to resume\n")
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RuntimeFailure(f"no space left on the device of {out_dir} while writing "
                                     f"{exc.filename or 'the results'}; free some space or pass another "
                                     "--results-dir, then rerun: completed cache files are kept") from None
            raise
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
            handler.close()


def rank_by(cfg) -> str:
    """config['rank_by'] resolved: "auto" ranks a --mos run by agreement with the MOS."""
    if cfg["rank_by"] == "auto":
        return "mos" if cfg["mos"] else "monotonicity"
    if cfg["rank_by"] == "mos" and not cfg["mos"]:
        raise UsageError("--rank-by mos needs --mos FILE (a rated database); or rank by "
                         "monotonicity")
    return cfg["rank_by"]


def _experiment(cfg, plan: RunPlan, data: RunData, out_dir, stamp, jobs, progress) -> Experiment:
    """Extraction, scoring and report of `run_experiment`, logging into out_dir/experiment.log.
    `cfg` is the plan's, with the run data's degradations."""
    mode, plans = plan.mode, plan.backbones
    from backbones import resolve_weights
    from evaluation import rank, release, ties_with_top, ties_with_top_mos, versus_baseline
    import report

    ref_records, eval_records = data.ref_records, data.eval_records
    by = rank_by(cfg)
    log.info("run %s: %d reference + %d evaluation images from %s; results in %s", mode,
             len(ref_records), len(eval_records), cfg["mos"] or cfg["dataset"], out_dir)
    report.write_json(os.path.join(out_dir, "config_resolved.json"),
                      {"mode": mode, "config": cfg, "enabled_layers": plan.enabled_layers})

    ref_units, eval_units = data.ref_units, data.eval_units
    results, weights, seconds, tasks = [], {}, 0.0, {}
    for backbone, lcs in plans:
        prov = resolve_weights(backbone, cfg["weights"], cfg["seed"])
        weights[backbone] = prov
        layers = sorted({(i, p) for lc in lcs for i, p in lc["resolved"]}, key=str)
        caches = open_caches(cfg, backbone, layers, prov, ref_records, eval_records)
        ensure_cached(cfg, backbone, caches, ref_units + eval_units, prov, progress)
        t0 = time.perf_counter()
        scored, origin = score_backbone(cfg, plan.grid(backbone, lcs), backbone, lcs, caches,
                                        ref_units, eval_units, prov, jobs, data.ratings)
        seconds += time.perf_counter() - t0
        results += scored
        tasks.update(origin)

    if mode != "quick" and cfg["baselines"]:
        t0 = time.perf_counter()
        results += score_baselines(cfg, data)
        log.info("baselines %s scored in %.2fs", ", ".join(cfg["baselines"]), time.perf_counter() - t0)
    ranked = rank(results, by)
    t0 = time.perf_counter()
    bootstrap_top(ranked, cfg, jobs, tasks, data.ratings)
    ties_with_top(ranked, cfg["bootstrap"]["confidence"])
    if data.ratings is not None:
        ties_with_top_mos(ranked, cfg["bootstrap"]["confidence"])
    boot = time.perf_counter() - t0
    log.info("scored %d configuration(s) in %.2fs (scores %.2fs, bootstrap %.2fs; %s)", len(ranked),
             seconds + boot, seconds, boot, f"Dask cluster {cfg['dask_scheduler']}"
             if cfg["dask_scheduler"] else f"{jobs} job(s)")
    seconds += boot
    versus = versus_baseline(ranked, by, cfg["bootstrap"]["confidence"])
    release(ranked)
    for r in ranked:
        r.confidence = cfg["bootstrap"]["confidence"]

    files, text = report.write_run(out_dir, f"results_{mode}_{stamp}", ranked, {
        "mode": mode, "timestamp": stamp, "weights": weights, "rank_by": by, "config": cfg,
        "versus_baseline": versus},
        data.database, data.ratings, [r.source for r in ref_records],
        [r.source for r in eval_records])
    return Experiment(mode, out_dir, ranked, weights, text, seconds, jobs, files)


# ---------------------------------------------------------------------- scoring

def score_baselines(cfg, data: RunData) -> list:
    """config['baselines'] (PSNR, SSIM, MS-SSIM of each evaluation image against its clean
    version) as ranked rows `baseline:<name>`."""
    from baselines import baseline_values
    from evaluation import score_baseline
    values, reasons = baseline_values(cfg["baselines"], data.eval_units, cfg["working_size"],
                                      cfg["seed"], cfg["cache_dir"])
    base = {"n_reference": len(data.ref_records), "seed": cfg["seed"]}
    return [score_baseline(n, values.get(n), cfg["degradations"], base, data.ratings, reasons.get(n, ""))
            for n in cfg["baselines"]]


@dataclass
class SweepTask:
    """Configurations sharing one feature space, scored together in one worker."""
    assembler: object            # feature_spaces.FeatureAssembler (paths to the cache, no data)
    confs: list                  # evaluation.Configuration
    cfg: dict
    base: dict                   # fields common to every result (n_reference, weights, ...)
    keep_state: bool             # keep what the bootstrap needs (in-process runs)
    bootstrap: bool = False      # bootstrap every scored configuration before returning
    capture_logs: bool = False   # send this task's log records back (worker processes)
    ratings: object = None       # human_agreement.Ratings of a --mos run


@dataclass
class TaskOutcome:
    results: list                # evaluation.ConfigResult, in the task's order
    log_records: list            # logging.LogRecord of the task, when captured


def score_backbone(cfg, grid, backbone, lcs, caches, ref_units, eval_units, prov, jobs,
                   ratings=None):
    """Every configuration of `grid` (one backbone's, from the plan) in grid order, scored
    through parallel.sweep_map; and {configuration id: its task}, to score a configuration
    again for the bootstrap."""
    from feature_spaces import FeatureAssembler, feature_key, transform_params
    spec = spec_of(backbone)
    assembler = FeatureAssembler(caches, ref_units, eval_units, cfg["image_size"] or spec.input_size,
                                 spec.patch, cfg["max_representation_bytes"],
                                 cfg["gram_precision"], cfg["device"])
    groups = {}
    for conf in grid:            # configurations that share features are scored together
        groups.setdefault(feature_key(conf.layer_config, conf.transform), []).append(conf)
    # tasks leave this process with several jobs and several tasks (parallel.sweep_map runs a
    # single task here), or on a Dask cluster
    remote = (jobs > 1 and len(groups) > 1) or bool(cfg["dask_scheduler"])
    all_boot = cfg["bootstrap"]["scope"] == "all" and cfg["bootstrap"]["n_resamples"] > 0
    base = {"n_reference": assembler.n_ref, "n_evaluation": assembler.n_eval, "seed": cfg["seed"],
            "weights": prov["label"], "random_init": prov["source"] == "random-init"}
    tasks = [SweepTask(assembler, confs, cfg, base, keep_state=not remote, bootstrap=all_boot and remote,
                       capture_logs=remote, ratings=ratings) for confs in groups.values()]
    # The longest tasks first: GAP spaces (model fits on explicit rows of up to thousands of
    # dims), then Gram spaces (kernel blocks or explicit rows, read from the derived cache).
    transforms = [t["name"] for t in cfg["feature_transforms"]]
    layer_pos = {lc["name"]: k for k, lc in enumerate(lcs)}
    tasks.sort(key=lambda t: (transform_params(t.confs[0].transform)["use_gram"],
                              transforms.index(t.confs[0].transform["name"]),
                              layer_pos[t.confs[0].layer_config["name"]]))
    grams = sorted({p for c in grid if transform_params(c.transform)["use_gram"]
                    for p in c.layer_config["paths"]})
    if grams:            # here, with every thread; the tasks then read them
        t0 = time.perf_counter()
        made = assembler.prepare_grams(grams)
        if made:
            log.info("%s: Gram artefacts of %s computed in %.1fs", backbone, " ".join(made),
                     time.perf_counter() - t0)
        if remote:
            assembler.forget()
    log.info("%s: scoring %d configuration(s) in %d feature group(s)", backbone, len(grid), len(tasks))
    scored = _gather(sweep_map(score_task, tasks, jobs, cfg["dask_scheduler"]))
    order = {_conf_id(c): i for i, c in enumerate(grid)}
    scored.sort(key=lambda r: order[_conf_id(r.conf)])
    for r in scored:
        if not r.scored:
            log.info("%s %s: %s", r.status.replace("_", " "), r.label, r.reason)
    _WORKER_STATE.clear()         # the in-process assembler's memory goes with this backbone
    # in-process results keep their scorers for the bootstrap; those from workers may have to
    # be scored again, by their task
    return scored, ({_conf_id(c): t for t in tasks for c in t.confs} if remote else {})


def _gather(outcomes) -> list:
    """The results of every task, replaying the log records of tasks run elsewhere."""
    out = []
    for o in outcomes:
        for rec in o.log_records:
            logging.getLogger(rec.name).handle(rec)
        out += o.results
    return out


def _conf_id(conf) -> tuple:
    """A configuration's identity that survives pickling (worker processes return copies)."""
    return (conf.backbone, conf.layer_config["name"], conf.transform["name"],
            conf.model["name"] if conf.model else None, conf.metric)


_WORKER_STATE: dict = {}


def _shared_assembler(assembler):
    """The assembler this process already holds for the same sweep (its layers and spaces stay
    in memory across the tasks a worker runs), else `assembler`."""
    held = _WORKER_STATE.get("assembler")
    if held is None or held.token != assembler.token:
        _WORKER_STATE["assembler"] = held = assembler
    return held


def score_task(task: SweepTask) -> TaskOutcome:
    """Score one feature group (in a worker process, or here when jobs == 1)."""
    from evaluation import bootstrap, release, score_group
    with _LogCapture(task.capture_logs) as records, single_threaded():
        assembler = _shared_assembler(task.assembler)
        lc, t = task.confs[0].layer_config, task.confs[0].transform
        results = score_group(task.confs, lambda: assembler.space(lc, t), task.cfg["degradations"],
                              task.cfg, task.cfg["seed"], task.base, task.ratings)
        b = task.cfg["bootstrap"]
        if task.bootstrap:
            for r in results:
                if r.scored:
                    bootstrap(r, task.cfg["degradations"], b["n_resamples"], b["confidence"],
                              task.cfg["seed"], task.ratings)
        if not task.keep_state:
            release(results)
    return TaskOutcome(results, records)


def bootstrap_top(ranked, cfg, jobs, tasks: dict, ratings=None) -> None:
    """Bootstrap intervals for the top_n scored configurations (or all, per config). Results
    scored in this process still hold their scorers; those scored in workers are scored again
    there, with the bootstrap (same code, same seeds: the same scores, checked)."""
    from evaluation import BASELINE, bootstrap
    from feature_spaces import feature_key
    b = cfg["bootstrap"]
    if b["n_resamples"] == 0:
        return
    targets = [r for r in ranked if r.scored]
    if b["scope"] == "top":      # the top-N, and the best feature space and baselines (versus_baseline)
        best = next((r for r in targets if r.conf.backbone != BASELINE), None)
        targets = targets[:cfg["top_n"]] + [r for r in targets[cfg["top_n"]:]
                                            if r.conf.backbone == BASELINE or r is best]
    redo = {}
    for r in targets:
        if r.scorer is not None:
            bootstrap(r, cfg["degradations"], b["n_resamples"], b["confidence"], cfg["seed"], ratings)
        elif not r.n_resamples:
            key = (r.conf.backbone, feature_key(r.conf.layer_config, r.conf.transform))
            redo.setdefault(key, []).append(r)
    if not redo:
        return
    again = []
    for rs in redo.values():
        t = tasks[_conf_id(rs[0].conf)]
        again.append(SweepTask(t.assembler, [r.conf for r in rs], cfg, t.base, keep_state=False,
                               bootstrap=True, capture_logs=True, ratings=ratings))
    redone = {_conf_id(x.conf): x for x in _gather(sweep_map(score_task, again, jobs,
                                                               cfg["dask_scheduler"]))}
    for rs in redo.values():
        for r in rs:
            x = redone[_conf_id(r.conf)]
            if [d["scores"] for d in x.per_degradation.values()] != \
                    [d["scores"] for d in r.per_degradation.values()]:
                raise RuntimeError(f"{r.label}: scored again for the bootstrap, it gave other scores; "
                                   "this is a bug, please report it (--jobs 1 avoids it)")
            r.per_degradation, r.mean_spearman_ci, r.n_resamples, r.boot_mean = (
                x.per_degradation, x.mean_spearman_ci, x.n_resamples, x.boot_mean)
            r.mos, r.boot_mos = x.mos, x.boot_mos


class single_threaded:
    """BLAS, OpenMP and torch on one thread for a block: every task computes its scores with
    the same arithmetic, in this process or a worker, so the results do not depend on how many
    jobs run (a multi-threaded reduction may add in another order)."""

    def __enter__(self):
        from threadpoolctl import threadpool_limits
        self.limits = threadpool_limits(1)
        self.torch = None
        import sys
        if "torch" in sys.modules:
            import torch
            self.torch = torch.get_num_threads()
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        self.limits.restore_original_limits()
        if self.torch is not None:
            import torch
            torch.set_num_threads(self.torch)


class _LogCapture:
    """Collect the log records of a task run in a worker process, as plain messages, so the
    parent replays them and experiment.log tells the whole story whatever ran where."""

    def __init__(self, active: bool):
        self.active, self.records = active, []

    def _keep(self, record):
        record.msg, record.args, record.exc_info, record.exc_text = record.getMessage(), None, None, None
        self.records.append(record)

    def __enter__(self):
        if self.active:
            root = logging.getLogger()
            self.handler = logging.Handler(logging.INFO)
            self.handler.emit = self._keep
            self.level = root.level
            root.addHandler(self.handler)
            root.setLevel(logging.INFO)
        return self.records

    def __exit__(self, *exc):
        if self.active:
            root = logging.getLogger()
            root.removeHandler(self.handler)
            root.setLevel(self.level)

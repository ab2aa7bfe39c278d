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

This module is the composition; the jobs it composes live in cache_fill.py (which images, which
cache entries, extraction by process, shard or torchrun rank) and sweep.py (tasks, workers,
bootstrap, log capture).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import logging
import os
import sys
import time
from dataclasses import dataclass, field

from featrank.cache_fill import (CacheBuild, RunData, build_cache, build_caches, check_module_paths, ensure_cached,
                        open_caches, run_data, extract_on_ranks)
from featrank import report
from featrank.errors import RuntimeFailure, UsageError, UserError
from featrank.parallel import ParallelError, Ranks, dask_session, prestart
from featrank.host import resolve_jobs
from featrank.run_plan import (DataSettings, RankingSettings, RunPlan, Stages, UserConfig, check_writable,
                      layers_of, make_plan, recorded_stages, spec_of, with_degradation_sets)
from featrank.sweep import SWEEP_MODULES, bootstrap_top, score_backbone, score_baselines

log = logging.getLogger("iqm")

# The library API (featrank/__init__.py lists it; docs/metric.md): the cache fill, the experiment, and the small commands.
__all__ = ["build_cache", "build_caches", "run_experiment", "layer_table", "preview_degradations",
           "setup_logging", "layers_of", "open_caches", "run_data", "rebuild_report", "CacheBuild", "Experiment",
           "RunData", "LayerTable"]


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
    from featrank.backbones import build_backbone
    from featrank.feature_extraction import list_extractable_layers
    bb = build_backbone(name, "random", 0, allow_download=False)
    rows = list_extractable_layers(bb.module, bb.forward, spec.input_size)
    return LayerTable(spec, False, [(None, path, kind, shape, None) for _, path, kind, shape in rows])


def cache_entries(path: str) -> list[dict]:
    """`--cache-info`: the entries of the cache folder `path` (config['cache_dir'];
    feature_cache.cache_info). Only read: a read-only cache is listed too."""
    from featrank.feature_cache import cache_info
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--cache-dir {path!r} is a file, not a folder; pass the cache folder")
    if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK):
        raise UsageError(f"--cache-dir {path!r} is not readable by this user; pass a cache you can read")
    return cache_info(path)


def preview_degradations(cfg) -> str:
    """`--preview-degradations`: a collage of every degradation level of the run on three
    images, written to config['results_dir']; returns its path."""
    from featrank.dataset import load_rgb, select_images
    from featrank.degradation_generator import preview_collage
    stages = Stages.of(with_degradation_sets(cfg))
    d, results_dir = stages.data, stages.output.results_dir
    records, _ = select_images(d.dataset, 3, 0, d.seed)
    images = [(r.sha256, load_rgb(r.source, d.working_size)) for r in records]
    check_writable(results_dir, "--results-dir")
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, "degradation_preview.png")
    preview_collage(images, d.degradations, d.seed).save(path)
    return path


def degradation_strip(d: DataSettings, data: RunData, path: str) -> None:
    """The report's strip: every level of every degradation of the run on its first evaluation
    image (as extracted), or for a rated database each type's images of its first reference
    (a no-reference set: a reference image, then one image of each MOS bin)."""
    from featrank.dataset import load_rgb
    from featrank.degradation_generator import collage, preview_collage
    size = d.working_size
    if data.database is None:
        first = data.eval_records[0]
        image = preview_collage([(first.sha256, load_rgb(first.source, size))], data.degradations,
                                d.seed, tile=112)
    else:
        db = data.database        # the first reference's image in each group (else its first)
        ref = db.references[0] if db.references else data.ref_records[0]

        def shown(group):
            return next((im for im in group if im.reference == ref.source), group[0]).image
        rows = [(t, ["reference"] + [f"{lv:g}" for lv in db.levels(t)],
                 [load_rgb(ref.source, size)] + [load_rgb(shown(db.groups[(t, lv)]), size)
                                                 for lv in db.levels(t)]) for t in db.types]
        image = collage(rows, tile=112)
    image.save(path, optimize=False, compress_level=6)


# ---------------------------------------------------------------------- experiment

@dataclass
class Experiment:
    """What `run_experiment` found; the same is written under `out_dir`."""
    mode: str
    out_dir: str
    results: list                 # evaluation.ConfigResult, ranked (scored, then not run, failed)
    weights: dict                 # backbone -> Provenance.as_dict()
    summary: str
    scoring_seconds: float = 0.0
    jobs: int = 1
    files: dict = field(default_factory=dict)

    @property
    def scored(self) -> list:
        return [r for r in self.results if r.scored]


def new_results_dir(results_dir: str, mode) -> tuple[str, str]:
    """(out_dir, stamp): results_dir/<mode>_<timestamp>[-k], created."""
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    out_dir = os.path.join(results_dir, f"{mode}_{stamp}")
    suffix = 1
    while os.path.exists(out_dir):           # two runs within one second
        suffix += 1
        out_dir = os.path.join(results_dir, f"{mode}_{stamp}-{suffix}")
    os.makedirs(out_dir)
    return out_dir, os.path.basename(out_dir).split("_", 1)[1]


def run_experiment(cfg, mode: str, layer_specs=None, *, user: UserConfig | None = None,
                   progress: bool = True, command: str | None = None,
                   given=frozenset()) -> Experiment | None:
    """Extract what is missing, score every configuration of `mode` and write the report into
    a new folder under config['results_dir']. `layer_specs` (indices or module paths, one layer
    config each) replaces the mode's layers; QUICK and ENABLED_LAYERS come from `user` (default:
    config.py's). Under torchrun, extraction is split over the ranks and rank 0 alone scores;
    the other ranks return None. `command` is recorded in the results (main.py passes the
    command line); `given`, the settings its flags set."""
    plan = make_plan(cfg, mode, layer_specs, user=user)
    stages, plans = plan.stages, plan.backbones
    for backbone, lcs in plans:     # one model built for every module path (a library model's)
        check_module_paths(backbone, sorted({x for lc in lcs for x in lc.resolved}, key=str),
                           stages.extraction.image_size)
    jobs = resolve_jobs(stages.scoring.jobs)
    data = run_data(stages.data, given)
    stages = stages.replace(data=dataclasses.replace(stages.data, degradations=data.degradations))
    check_writable(stages.extraction.cache_dir, "--cache-dir")
    check_writable(stages.output.results_dir, "--results-dir")
    ranks = Ranks.from_env()
    scheduler = stages.scoring.dask_scheduler
    if ranks is not None:
        work = [(b, sorted({str(i) if i is not None else p for lc in lcs for i, p in lc.resolved}))
                for b, lcs in plans]
        extract_on_ranks(stages.extraction, ranks, work, data, progress)
        if not ranks.leader:
            return None
    if not scheduler and (mode != "quick" or sum(len(lcs) for _, lcs in plans) > 1):
        prestart(jobs, SWEEP_MODULES)     # workers start while the cache is checked
    with dask_session(scheduler, SWEEP_MODULES):   # an unreachable cluster fails before any output
        out_dir, stamp = new_results_dir(stages.output.results_dir, mode)
        handler = logging.FileHandler(os.path.join(out_dir, "experiment.log"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        level = root.level
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)           # experiment.log always gets INFO
        try:
            return _experiment(stages, plan, data, out_dir, stamp, jobs, progress,
                               command or f"pipeline.run_experiment(cfg, {mode!r}, {layer_specs!r})")
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


def rank_by(ranking: RankingSettings, mos: str | None) -> str:
    """config['rank_by'] resolved: "auto" ranks a --mos run (`mos`) by agreement with the MOS."""
    if ranking.rank_by == "auto":
        return "mos" if mos else "monotonicity"
    if ranking.rank_by == "mos" and not mos:
        raise UsageError("--rank-by mos needs --mos FILE (a rated database); or rank by "
                         "monotonicity")
    return ranking.rank_by


def _experiment(stages: Stages, plan: RunPlan, data: RunData, out_dir, stamp, jobs, progress,
                command: str) -> Experiment:
    """Extraction, scoring and report of `run_experiment`, logging into out_dir/experiment.log.
    `stages` are the plan's, with the run data's degradations."""
    mode, plans = plan.mode, plan.backbones
    from featrank.backbones import resolve_weights
    from featrank.evaluation import rank, release, ties_with_top, ties_with_top_mos, versus_baseline

    d, ext, sc, ranking = stages.data, stages.extraction, stages.scoring, stages.ranking
    ref_records, eval_records = data.ref_records, data.eval_records
    by = rank_by(ranking, d.mos)
    log.info("run %s: %d reference + %d evaluation images from %s; results in %s", mode,
             len(ref_records), len(eval_records), d.mos or d.dataset, out_dir)
    config = stages.config()
    report.write_json(os.path.join(out_dir, "config_resolved.json"),
                      {"mode": mode, "config": config, "enabled_layers": plan.enabled_layers})

    ref_units, eval_units = data.ref_units, data.eval_units
    results, weights, seconds, tasks, provenances = [], {}, 0.0, {}, {}
    for backbone, lcs in plans:
        prov = provenances[backbone] = resolve_weights(backbone, ext.weights, ext.seed)
        weights[backbone] = prov.as_dict()
        layers = sorted({(i, p) for lc in lcs for i, p in lc.resolved}, key=str)
        caches = open_caches(ext, backbone, layers, prov, ref_records, eval_records)
        ensure_cached(ext, backbone, caches, ref_units + eval_units, prov, progress)
        t0 = time.perf_counter()
        scored, origin = score_backbone(sc, ranking, stages.spaces, d.degradations,
                                        plan.grid(backbone, lcs), backbone, caches, ref_units,
                                        eval_units, prov, jobs, data.ratings)
        seconds += time.perf_counter() - t0
        results += scored
        tasks.update(origin)

    if mode != "quick" and sc.baselines:
        t0 = time.perf_counter()
        results += score_baselines(sc, ext, data)
        log.info("baselines %s scored in %.2fs", ", ".join(sc.baselines), time.perf_counter() - t0)
    ranked = rank(results, by)
    t0 = time.perf_counter()
    bootstrap_top(ranked, ranking, sc, d.degradations, jobs, tasks, data.ratings)
    ties_with_top(ranked, ranking.confidence)
    if data.ratings is not None:
        ties_with_top_mos(ranked, ranking.confidence)
    boot = time.perf_counter() - t0
    log.info("scored %d configuration(s) in %.2fs (scores %.2fs, bootstrap %.2fs; %s)", len(ranked),
             seconds + boot, seconds, boot, f"Dask cluster {sc.dask_scheduler}"
             if sc.dask_scheduler else f"{jobs} job(s)")
    seconds += boot
    versus = versus_baseline(ranked, by, ranking.confidence)
    release(ranked)
    for r in ranked:
        r.confidence = ranking.confidence

    files, text, rows = report.write_run(out_dir, f"results_{mode}_{stamp}", ranked, {
        "mode": mode, "timestamp": stamp, "weights": weights, "rank_by": by, "config": config,
        "versus_baseline": versus, "command": command}, d.degradations, d.dataset, ranking.top_n,
        data.database, [r.source for r in ref_records], [r.source for r in eval_records])
    if stages.output.report is True or (stages.output.report == "auto" and mode != "quick"):
        files["report"] = _write_report(out_dir, stages, data, rows, provenances, jobs=jobs)
    return Experiment(mode, out_dir, ranked, weights, text, seconds, jobs, files)


def _write_report(out_dir, stages: Stages, data: RunData, rows: list, provenances: dict,
                  check_cache: bool = False, jobs: int = 1) -> str:
    """report.html of a finished run, after its strip and feature maps (when missing; their
    t-SNE in `jobs` processes)."""
    from featrank.feature_maps import write_maps
    from featrank.html_report import write_report
    t0 = time.perf_counter()
    strip = os.path.join(out_dir, report.STRIP_FILE)
    if not os.path.isfile(strip):
        degradation_strip(stages.data, data, strip)
    if not os.path.isfile(os.path.join(out_dir, report.MAPS_FILE)):
        write_maps(out_dir, rows, stages.extraction, stages.spaces, data, provenances, check_cache,
                   jobs)
    path = write_report(out_dir)
    log.info("report written in %.1fs: %s", time.perf_counter() - t0, path)
    return path


def rebuild_report(out_dir: str) -> str:
    """`--report RESULTS_DIR`: report.html of a finished run, from its results JSON (nothing is
    scored again). The strip and the feature maps the run wrote are reused; a run that had the
    report off gets them from its images and cache (nothing is extracted), when those are still
    there. Returns the report's path."""
    from featrank.html_report import load_results
    path, results = load_results(out_dir)
    check_writable(out_dir, "--report")
    try:
        return _rebuild_report(out_dir, results)
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise UsageError(f"{path!r} is not a results JSON this version can report on "
                         f"({type(exc).__name__}: {str(exc)[:80]}); rerun the experiment to write "
                         "it again") from None


def _rebuild_report(out_dir: str, results: dict) -> str:
    from featrank.html_report import write_report
    if all(os.path.isfile(os.path.join(out_dir, f)) for f in (report.STRIP_FILE, report.MAPS_FILE)):
        return write_report(out_dir)
    stages = recorded_stages(results)     # the run's order of the degradations: its derived cache keys
    try:
        data = run_data(stages.data)
    except UserError as exc:
        log.warning("the report of %s has no degradation strip or feature maps: the run's images "
                    "cannot be read (%s)", out_dir, exc)
        return write_report(out_dir)
    return _write_report(out_dir, stages, data, results["results"], {}, check_cache=True,
                         jobs=resolve_jobs(stages.scoring.jobs))

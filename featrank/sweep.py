"""The sweep: configurations sharing features (layers x transform) form one task; tasks run
through parallel.sweep_map (config['jobs'] loky processes, or a Dask cluster), each on one
thread so that scores do not depend on the worker count; results come back in grid order;
the top-N (or every) configuration is bootstrapped, in this process when it still holds the
scorer, else scored again in a worker with the same seeds (checked equal). Worker logs are
captured and replayed here. The baselines are scored beside the configurations."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from featrank.cache_fill import feature_assembler
from featrank.parallel import sweep_map
from featrank.run_plan import ExtractionSettings, RankingSettings, ScoringSettings, SpaceSettings

# what a scoring worker imports (started ahead of the sweep by parallel.prestart): the task
# function and what it unpickles
SWEEP_MODULES = ("featrank.sweep", "featrank.evaluation", "featrank.feature_spaces", "sklearn.mixture")

log = logging.getLogger("iqm")

# ---------------------------------------------------------------------- scoring

def score_baselines(sc: ScoringSettings, ext: ExtractionSettings, data) -> list:
    """The baselines of `sc` (PSNR, SSIM, MS-SSIM, LPIPS, DISTS of each evaluation image against
    its clean version) as ranked rows `baseline:<name>`; `data` is the run's cache_fill.RunData,
    `ext` says the images' working size, the cache and LPIPS/DISTS's weights and device."""
    from featrank.baselines import baseline_values
    from featrank.evaluation import score_baseline
    if data.ratings is not None and not data.ratings.paired:
        why = "a full-reference baseline needs each image's clean version; a no-reference rated set has none"
        return [score_baseline(n, None, data.degradations, {"n_reference": len(data.ref_records),
                                                            "seed": sc.seed}, data.ratings, why)
                for n in sc.baselines]
    got = baseline_values(sc.baselines, data.eval_units, ext.working_size, sc.seed, ext.cache_dir,
                          ext.weights, ext.device)
    base = {"n_reference": len(data.ref_records), "seed": sc.seed}
    out = []
    for n in sc.baselines:
        prov = got.weights.get(n)            # LPIPS and DISTS: their VGG16 trunk
        trunk = {"weights": prov.label, "random_init": prov.random_init} if prov else {}
        r = score_baseline(n, got.values.get(n), data.degradations, {**base, **trunk},
                           data.ratings, got.reasons.get(n, ""))
        if prov is not None and prov.random_init:
            r.notes.append(f"{n} with a RANDOM-INIT VGG16 trunk (no torchvision VGG16 weights in "
                           "torch.hub's cache): not the published metric")
        out.append(r)
    return out


@dataclass
class SweepTask:
    """Configurations sharing one feature space, scored together in one worker."""
    assembler: object            # feature_spaces.FeatureAssembler (paths to the cache, no data)
    confs: list                  # evaluation.Configuration
    scoring: ScoringSettings
    ranking: RankingSettings     # the bootstrap's
    degradations: dict           # the run's: name -> {"type", "levels"}
    base: dict                   # fields common to every result (n_reference, weights, ...)
    keep_state: bool             # keep what the bootstrap needs (in-process runs)
    bootstrap: bool = False      # bootstrap every scored configuration before returning
    capture_logs: bool = False   # send this task's log records back (worker processes)
    ratings: object = None       # human_agreement.Ratings of a --mos run


@dataclass
class TaskOutcome:
    results: list                # evaluation.ConfigResult, in the task's order
    log_records: list            # logging.LogRecord of the task, when captured


def score_backbone(sc: ScoringSettings, ranking: RankingSettings, spaces: SpaceSettings,
                   degradations: dict, grid, backbone, caches, ref_units, eval_units, prov, jobs,
                   ratings=None):
    """Every configuration of `grid` (one backbone's, from the plan) in grid order, scored
    through parallel.sweep_map; and {configuration id: its task}, to score a configuration
    again for the bootstrap."""
    from featrank.feature_spaces import feature_key
    assembler = feature_assembler(spaces, backbone, caches, ref_units, eval_units)
    groups = {}
    for conf in grid:            # configurations that share features are scored together
        groups.setdefault(feature_key(conf.layer_config, conf.transform), []).append(conf)
    # tasks leave this process with several jobs and several tasks (parallel.sweep_map runs a
    # single task here), or on a Dask cluster
    remote = (jobs > 1 and len(groups) > 1) or bool(sc.dask_scheduler)
    all_boot = ranking.scope == "all" and ranking.n_resamples > 0
    base = {"n_reference": assembler.n_ref, "n_evaluation": assembler.n_eval, "seed": sc.seed,
            "weights": prov.label, "random_init": prov.random_init}
    widths = [assembler.width(confs[0].layer_config, confs[0].transform) for confs in groups.values()]
    tasks = [SweepTask(assembler, confs, sc, ranking, degradations, base, keep_state=not remote,
                       bootstrap=all_boot and remote, capture_logs=remote, ratings=ratings)
             for confs in schedule(list(groups.values()), widths, jobs if remote else 1)]
    grams = sorted({p for c in grid if c.transform.use_gram
                    for p in c.layer_config.paths})
    if grams:            # here, with every thread; the tasks then read them
        t0 = time.perf_counter()
        made = assembler.prepare_grams(grams)
        if made:
            log.info("%s: Gram artefacts of %s computed in %.1fs", backbone, " ".join(made),
                     time.perf_counter() - t0)
        if remote:
            assembler.forget()
    log.info("%s: scoring %d configuration(s) in %d feature group(s)%s", backbone, len(grid),
             len(groups), f" ({len(tasks)} tasks)" if len(tasks) != len(groups) else "")
    scored = _gather(sweep_map(score_task, tasks, jobs, sc.dask_scheduler))
    order = {_conf_id(c): i for i, c in enumerate(grid)}
    scored.sort(key=lambda r: order[_conf_id(r.conf)])
    for r in scored:
        if not r.scored:
            log.info("%s %s: %s", r.status.replace("_", " "), r.label, r.reason)
    _WORKER_STATE.clear()         # the in-process assembler's memory goes with this backbone
    # in-process results keep their scorers for the bootstrap; those from workers may have to
    # be scored again, by their task
    return scored, ({_conf_id(c): t for t in tasks for c in t.confs} if remote else {})


def schedule(groups: list, widths: list, jobs: int) -> list:
    """The feature groups (lists of configurations sharing a space, `widths` their rows' widths,
    FeatureAssembler.width) as tasks, the most work first (work: configurations x width; the
    grid's order among equals). With several jobs, a group holding more than 1/jobs of all the
    work is split into up to `jobs` tasks, else that one task is the whole critical path (a
    Gram of a wide layer as explicit rows: 17 of a 600-image run's 24 scoring seconds). A split
    keeps the configurations of one distribution model together, so it is fitted once, and the
    distance-based metrics (dm.GEOMETRY_METRICS), which share the space's distances; each part
    reads the space again (from the derived cache, or the worker's memory)."""
    from featrank import distance_metrics as dm
    total = sum(w * len(g) for w, g in zip(widths, groups))
    parts = []
    for w, confs in zip(widths, groups):
        units = {}
        for c in confs:
            key = (("model", c.model.type, json.dumps(c.model.params, sort_keys=True))
                   if c.model is not None else ("geometry",) if c.metric in dm.GEOMETRY_METRICS
                   else ("metric", c.metric))
            units.setdefault(key, []).append(c)
        k = min(jobs, len(units)) if jobs > 1 and w * len(confs) * jobs > total else 1
        split = [[] for _ in range(k)]
        for unit in units.values():          # each to the part with the fewest configurations
            min(split, key=len).extend(unit)
        position = {id(c): i for i, c in enumerate(confs)}
        parts += [(w * len(p), sorted(p, key=lambda c: position[id(c)])) for p in split]
    order = sorted(range(len(parts)), key=lambda i: -parts[i][0])
    return [parts[i][1] for i in order]


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
    return (conf.backbone, conf.layer_config.name, conf.transform.name,
            conf.model.name if conf.model else None, conf.metric)


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
    from featrank.evaluation import bootstrap, release, score_group
    with _LogCapture(task.capture_logs) as records, single_threaded():
        assembler = _shared_assembler(task.assembler)
        lc, t = task.confs[0].layer_config, task.confs[0].transform
        sc, b = task.scoring, task.ranking
        results = score_group(task.confs, lambda: assembler.space(lc, t), task.degradations,
                              sc.seed, task.base, task.ratings, kid=sc.kid, cmmd=sc.cmmd)
        if task.bootstrap:
            for r in results:
                if r.scored:
                    bootstrap(r, task.degradations, b.n_resamples, b.confidence, sc.seed,
                              task.ratings)
        if not task.keep_state:
            release(results)
    return TaskOutcome(results, records)


def bootstrap_top(ranked, b: RankingSettings, sc: ScoringSettings, degradations: dict, jobs,
                  tasks: dict, ratings=None) -> None:
    """Bootstrap intervals for the top_n scored configurations (or all, per `b`). Results
    scored in this process still hold their scorers; those scored in workers are scored again
    there, with the bootstrap (same code, same seeds: the same scores, checked)."""
    from featrank.evaluation import BASELINE, bootstrap
    from featrank.feature_spaces import feature_key
    if b.n_resamples == 0:
        return
    targets = [r for r in ranked if r.scored]
    if b.scope == "top":      # the top-N, and the best feature space and baselines (versus_baseline)
        best = next((r for r in targets if r.conf.backbone != BASELINE), None)
        targets = targets[:b.top_n] + [r for r in targets[b.top_n:]
                                       if r.conf.backbone == BASELINE or r is best]
    redo = {}
    for r in targets:
        if r.scorer is not None:
            bootstrap(r, degradations, b.n_resamples, b.confidence, sc.seed, ratings)
        elif not r.n_resamples:
            key = (r.conf.backbone, feature_key(r.conf.layer_config, r.conf.transform))
            redo.setdefault(key, []).append(r)
    if not redo:
        return
    again = []
    for rs in redo.values():
        t = tasks[_conf_id(rs[0].conf)]
        again.append(SweepTask(t.assembler, [r.conf for r in rs], sc, b, degradations, t.base,
                               keep_state=False, bootstrap=True, capture_logs=True, ratings=ratings))
    redone = {_conf_id(x.conf): x for x in _gather(sweep_map(score_task, again, jobs,
                                                               sc.dask_scheduler))}
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

"""Use the winner on your own folders: `--apply`, `--save-reference`, `--generator`.

`apply(stages, conf, ref, evals)` scores each EVAL folder against the REF folder exactly as the
sweep scores an evaluation set against its reference set: the images are read at the working
size, extracted through the cache (a folder already extracted is a CACHE HIT), and the same
feature space, model and metric score them. Paired metrics compare each EVAL image with the REF
image at the same sorted position. The interval is a percentile bootstrap over EVAL's images.
A REF saved by `save_reference` (--save-reference) holds REF's rows and the record of what they
were made for; `--generator MODULE:FUNCTION --n N` scores generated images without writing them.
"""

import csv
import json
import logging
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from featrank.feature_metric import (APPLY_KEY, FeatureMetric, check_images, folder_images,
                                    image_batches)
from featrank.metric_spec import Applied, configuration_from, spec_string

from featrank import distance_metrics as dm
from featrank.cache_fill import ensure_cached, feature_assembler, open_caches
from featrank.errors import RuntimeFailure, UsageError
from featrank.evaluation import (SCORED, Configuration, score_group)
from featrank.feature_cache import CLEAN, Unit, reference_units
from featrank.run_plan import (Stages, applied_stages, check_output_file, check_writable, reproduced)


log = logging.getLogger("iqm")


@dataclass
class AppliedScore:
    """The score of one EVAL folder against REF, with its bootstrap interval."""
    eval: str
    n_images: int
    metric: str
    score: float
    ci: list | None
    n_resamples: int
    confidence: float



# ---------------------------------------------------------------------- scoring folders

def reference_record(stages: Stages, conf: Configuration, prov) -> dict:
    """What a saved reference was made for: the configuration, the settings and the weights."""
    return {"configuration": spec_string(conf), "weights": prov.identity(),
            "settings": reproduced(stages.config(), leave_out=("batch_size",))}


def save_reference(stages: Stages, applied: Applied, ref: str, out: str) -> tuple[int, object]:
    """`--save-reference CONFIG REF OUT.npz`: REF's rows under the configuration (before the
    transform's post-processing, which is fitted on them when scoring) and the record of what
    they were made for. Returns (images, Provenance)."""
    from featrank.backbones import resolve_weights
    check_output_file(out, "--save-reference output", ".npz")
    prov = resolve_weights(applied.conf.backbone, stages.extraction.weights, stages.extraction.seed)
    m = FeatureMetric(Applied(applied.conf, stages.config(), applied.source), reference=ref,
                      keep_rows=True)
    tmp = out[:-4] + ".tmp.npz"
    np.savez_compressed(tmp, rows=m.reference,
                        record=np.array(json.dumps(reference_record(stages, applied.conf, prov),
                                                   sort_keys=True)))
    os.replace(tmp, out)
    return len(m.reference), prov


def load_reference(path: str, stages: Stages, conf: Configuration, prov) -> np.ndarray:
    """The rows of a --save-reference file, refused (UsageError) unless its record is this
    configuration's, with these settings and weights."""
    how = "save one with python main.py --save-reference CONFIG REF OUT.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            rows, record = np.asarray(f["rows"]), json.loads(str(f["record"]))
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        # numpy's own text may advise allow_pickle=True, which would run the file's code: never
        raise UsageError(f"{path!r} is not a reference saved by --save-reference "
                         f"({type(exc).__name__}); {how}") from None
    if not isinstance(record, dict):
        raise UsageError(f"{path!r}: its record is a {type(record).__name__}, not the record "
                         f"--save-reference writes; {how}")
    if rows.dtype.kind != "f" or rows.ndim != 2 or len(rows) < 2 or rows.shape[1] < 1:
        raise UsageError(f"{path!r}: its rows are {rows.dtype} {rows.shape}, not real feature rows "
                         f"(n >= 2, d) of floats; {how}")
    if not np.isfinite(rows).all():
        raise UsageError(f"{path!r}: its rows hold NaN or inf; {how}")
    want = json.loads(json.dumps(reference_record(stages, conf, prov), sort_keys=True))
    for key in ("configuration", "weights", "settings"):
        if record.get(key) != want[key]:
            raise UsageError(f"{path!r} was saved for {key} {record.get(key)!r}, not {want[key]!r}; save "
                             f"it again: python main.py --save-reference '{want['configuration']}' REF {path}")
    return dm.check_features(rows, path)


def apply(stages: Stages, conf: Configuration, ref: str, evals: list, progress: bool = True):
    """([AppliedScore] of each EVAL folder against the REF folder under `conf`, the weights'
    Provenance), with the settings `stages` (cache, weights, working size, bootstrap)."""
    ext = stages.extraction
    from featrank.backbones import resolve_weights
    from featrank.dataset import DatasetError
    saved = ref.endswith(".npz")
    ref_records = None if saved else folder_images(ref, "REF")      # bad folders fail before any work
    for folder in evals:
        if not os.path.isdir(folder):
            raise DatasetError(f"EVAL {shown(folder)!r} is not a folder; pass folders of images")
    if not saved:              # the images go through the cache: it must take them
        check_writable(ext.cache_dir, "--cache-dir")
    prov = resolve_weights(conf.backbone, ext.weights, ext.seed)
    rows = load_reference(ref, stages, conf, prov) if saved else None   # a bad file: before any word
    if prov.random_init:
        log.warning("%s has RANDOM-INIT weights here: the scores are not the ranked metric's", conf.backbone)
    if saved:
        return _apply_saved(stages, conf, rows, evals), prov
    paired = dm.METRICS[conf.metric]["paired"]
    out = []
    for folder in evals:
        ev = folder_images(folder, "EVAL")
        if paired and len(ev) != len(ref_records):
            raise UsageError(f"{conf.metric} compares each EVAL image with the REF image at the same "
                             f"sorted position: {folder!r} has {len(ev)} images, REF {len(ref_records)}")
        units = [Unit("eval", CLEAN, 0, None, None, tuple(ref_records))] if paired else []
        units.append(Unit("eval", APPLY_KEY[0], APPLY_KEY[1], None, None, tuple(ev)))
        ref_units = reference_units(ref_records)
        caches = open_caches(ext, conf.backbone, list(conf.layer_config.resolved), prov,
                             ref_records, list(ev) + (list(ref_records) if paired else []))
        ensure_cached(ext, conf.backbone, caches, ref_units + units, prov, progress)
        assembler = feature_assembler(stages.spaces, conf.backbone, caches, ref_units, units)
        sc = stages.scoring
        (r,) = score_group([conf], lambda: assembler.space(conf.layer_config, conf.transform), {},
                           sc.seed, kid=sc.kid, cmmd=sc.cmmd)
        if r.status != SCORED:
            raise RuntimeFailure(f"{conf.label} cannot score {folder!r}: {r.reason}")
        out.append(_with_interval(r, folder, len(ev), stages))
    return out, prov


def _apply_saved(stages: Stages, conf: Configuration, rows: np.ndarray, evals: list) -> list:
    """--apply with a saved reference: each EVAL folder through FeatureMetric (no cache)."""
    out = []
    for folder in evals:
        records = folder_images(folder, "EVAL")
        m = FeatureMetric(Applied(conf, stages.config(), ""), reference_features=rows,
                          keep_rows=True)
        ext = stages.extraction
        for batch in image_batches(records, ext.working_size, ext.batch_size):
            m.update(batch)
        out.append(_with_interval(m.result(), folder, len(records), stages))
    return out


def _with_interval(r, folder: str, n: int, stages: Stages) -> AppliedScore:
    state = r.prepared[APPLY_KEY]
    score = float(r.scorer.score_prepared(state))
    b, conf_level = stages.ranking.n_resamples, stages.ranking.confidence
    ci = None
    if b > 0:
        rng = np.random.default_rng([stages.scoring.seed, 0xA991])
        vals = np.array([r.scorer.score_prepared(state, rng.integers(0, n, n)) for _ in range(b)])
        tail = (1 - conf_level) / 2 * 100
        ci = [float(np.percentile(vals, tail)), float(np.percentile(vals, 100 - tail))]
    return AppliedScore(folder, n, r.conf.metric, score, ci, b, conf_level)


def shown(path: str) -> str:
    """A path as text that any UTF-8 output takes: bytes of a name that is not UTF-8 (kept by
    Python as surrogates) are written as backslash escapes."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


def write_scores(path: str, scores: list, applied: Applied, weights: str) -> None:
    """The scores as a small CSV (one row per EVAL folder; names shown as `shown` writes them),
    written to a temporary file renamed into place; nothing is left behind on a failure."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["eval", "n_images", "metric", "score", "ci_low", "ci_high", "n_resamples",
                        "confidence", "configuration", "source", "weights"])
            for s in scores:
                lo, hi = s.ci if s.ci else ("", "")
                w.writerow([shown(s.eval), s.n_images, s.metric, repr(s.score), lo, hi, s.n_resamples,
                            s.confidence, spec_string(applied.conf), shown(applied.source), weights])
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_generator(spec: str):
    """`module:function` -> the function. MODULE is the user's: a `MODULE.py` (or package folder;
    dots are folders) in the current folder, else an installed module; sys.path is not edited."""
    import importlib
    import importlib.util
    import sys
    name, sep, attr = spec.partition(":")
    if not sep or not name or not attr:
        raise UsageError(f"--generator {spec!r} must be MODULE:FUNCTION, e.g. my_gan:sample")
    here = os.path.join(os.getcwd(), *name.split("."))
    path = next((p for p in (here + ".py", os.path.join(here, "__init__.py")) if os.path.isfile(p)), None)
    try:
        if path is None:
            module = importlib.import_module(name)
        else:
            found = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(found)
            sys.modules[name] = module
            found.loader.exec_module(module)
        fn = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--generator {spec!r}: {exc}; give MODULE:FUNCTION, MODULE.py in the "
                         "current folder or an installed module") from None
    if not callable(fn):
        raise UsageError(f"--generator {spec!r} is not a function")
    return fn


def generated_score(stages: Stages, applied: Applied, ref: str, generator: str,
                    n: int) -> AppliedScore:
    """The score of `n` images from `generator(batch_size)` (a function returning a batch of
    (B, 3, H, W) images, uint8 or float in [0, 1], as clean-fid's `gen=`) against REF (a
    folder or a saved reference), with its bootstrap interval, through FeatureMetric: nothing is written to disk."""
    if n is None or n < 2:
        raise UsageError(f"--generator needs --n N (at least 2 images); got {n}")
    fn = load_generator(generator)
    given = Applied(applied.conf, stages.config(), applied.source)
    ext = stages.extraction
    if ref.endswith(".npz"):
        from featrank.backbones import resolve_weights
        prov = resolve_weights(applied.conf.backbone, ext.weights, ext.seed)
        m = FeatureMetric(given, reference_features=load_reference(ref, stages, applied.conf, prov),
                          keep_rows=True)
    else:
        m = FeatureMetric(given, reference=ref, keep_rows=True)
    got = 0
    while got < n:
        out = fn(min(ext.batch_size, n - got))
        if out is None or isinstance(out, (list, tuple, dict, str)) or hasattr(out, "__next__"):
            raise UsageError(f"--generator {generator!r} returned {type(out).__name__}; it must return "
                             "one batch of (B, 3, H, W) images (a tensor or array) per call")
        batch = check_images(out, f"--generator {generator!r}")[: n - got]
        m.update(batch)
        got += len(batch)
    return _with_interval(m.result(), f"{generator} ({n} images)", n, stages)


def command(cfg: dict, args: list, out: str | None, given=(), progress: bool = True,
            generator: str | None = None, n: int | None = None) -> list[str]:
    """`--apply CONFIG REF EVAL [EVAL ...] [--out FILE.csv]`, or `--apply CONFIG REF --generator
    MODULE:FUNCTION --n N`: the lines main.py prints. The settings of a results row replace
    cfg's, but for those in `given` (set by a flag)."""
    if len(args) < (2 if generator else 3):
        raise UsageError(f"--apply needs CONFIG REF EVAL [EVAL ...] (or CONFIG REF with --generator); "
                         f"got {len(args)} argument(s) (docs/metric.md)")
    if generator and len(args) > 2:
        raise UsageError(f"--apply CONFIG REF with --generator scores generated images: the EVAL "
                         f"folder(s) {', '.join(map(shown, args[2:]))} would do nothing; drop them or "
                         "drop --generator")
    if n is not None and not generator:
        raise UsageError("--n counts generated images: give --generator MODULE:FUNCTION with it, "
                         "or drop --n")
    if out is not None:
        check_output_file(out, "--out", ".csv")
    applied, stages = _with_settings(args[0], cfg, given)
    if generator:
        from featrank.backbones import resolve_weights
        scores = [generated_score(stages, applied, args[1], generator, n)]
        ext = stages.extraction
        prov = resolve_weights(applied.conf.backbone, ext.weights, ext.seed)
    else:
        scores, prov = apply(stages, applied.conf, args[1], args[2:], progress)
    lines = [f"configuration {spec_string(applied.conf)} ({shown(applied.source)}); weights {prov.label}"]
    for s in scores:
        ci = f"  [{s.confidence:.0%} CI {s.ci[0]:.6g}, {s.ci[1]:.6g}]" if s.ci else ""
        lines.append(f"{shown(s.eval)}: {s.metric} = {s.score:.6g}{ci} over {s.n_images} images")
    if out:
        try:
            write_scores(out, scores, applied, prov.label)
        except OSError as exc:                 # the scores are not lost: they go to stdout
            print("\n".join(lines))
            raise RuntimeFailure(f"--out {shown(out)}: {exc.strerror or exc}; the scores are printed "
                                 "above") from None
        lines.append(f"wrote {shown(out)}")
    return lines



def _with_settings(config: str, cfg: dict, given) -> tuple[Applied, Stages]:
    """The configuration named by `config`, and the stages of cfg with the settings of its
    results row (but for those in `given`, set by a flag), validated."""
    applied = configuration_from(config)
    return applied, applied_stages(cfg, applied.settings, given, applied.conf.backbone)


def save_command(cfg: dict, args: list, given=()) -> str:
    """`--save-reference CONFIG REF OUT.npz`: the line main.py prints."""
    applied, stages = _with_settings(args[0], cfg, given)
    n, prov = save_reference(stages, applied, args[1], args[2])
    return f"wrote {args[2]}: {n} reference rows for {spec_string(applied.conf)} (weights {prov.label})"

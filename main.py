"""Which deep-feature space gives an image-quality score that rises monotonically
as images get worse? Command-line entry point.

    python main.py --mode quick                          # one configuration, 50 images
    python main.py --mode medium --backbone vgg19        # ENABLED_LAYERS x transforms x models x metrics
    python main.py --build-cache --backbone sd_vae --layers 7 9 12 --n-inference 1000

Data flow (one file per stage): dataset.py -> degradation_generator.py ->
feature_extraction.py (backbones.py, layer_registry.py) -> feature_cache.py ->
representations.py -> feature_spaces.py -> distribution_modeling.py -> distance_metrics.py ->
evaluation.py -> report.py.

Exit codes: 0 success, 2 usage or configuration error, 1 runtime error.
"""
from __future__ import annotations

import argparse
import datetime
import difflib
import logging
import os
import sys

import config as C
from layer_registry import BACKBONES, BACKBONE_NAMES, CAPTURE, LayerError, resolve_layers

log = logging.getLogger("iqm")


class UsageError(ValueError):
    """A user mistake: printed as one line, exit code 2."""


# ---------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    d = C.CONFIG
    p = argparse.ArgumentParser(
        prog="main.py", allow_abbrev=False,
        description="Rank deep-feature spaces by how monotonically an image-quality score "
                    "rises with degradation severity (Spearman rho). Defaults come from config.py.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 success, 2 usage/configuration error, 1 runtime error.\n"
               "Layer tables: LAYER_GUIDE.md, or --list-layers BACKBONE.")
    g = p.add_argument_group("what to run")
    g.add_argument("--mode", choices=tuple(C.MODES), default="quick",
                   help="quick: 50 reference images, one configuration; medium: ENABLED_LAYERS x "
                        "transforms x models x metrics; full: 1000 reference images, every configuration "
                        "(default: quick)")
    g.add_argument("--build-cache", action="store_true",
                   help="extract and cache activations of --layers for --backbone, then stop")
    g.add_argument("--list-layers", metavar="BACKBONE",
                   help="print the layer table of a backbone, or timm:NAME / torchvision:NAME "
                        "to list the extractable modules of any model those libraries build")
    g.add_argument("--cache-info", action="store_true", help="list cache entries with sizes and keys")
    g.add_argument("--preview-degradations", action="store_true",
                   help="write a PNG collage of a few images at every level of every degradation")
    g.add_argument("--write-layer-guide", action="store_true",
                   help="regenerate LAYER_GUIDE.md from layer_registry.py")
    g = p.add_argument_group("model and layers")
    g.add_argument("--backbone", choices=BACKBONE_NAMES + ("all",), default=None,
                   help=f"backbone (default: config['backbone'] = {d['backbone']})")
    g.add_argument("--layers", nargs="+", metavar="L",
                   help="layer indices (see --list-layers) or module paths; required with --build-cache")
    g.add_argument("--weights", default=None, metavar="{auto,pretrained,random,PATH}",
                   help="auto: pretrained if found, else random-init with a warning; pretrained: "
                        "fail if absent; random: seeded random init; PATH: a local checkpoint "
                        f"(default: {d['weights']})")
    g.add_argument("--image-size", type=int, default=None, metavar="PX",
                   help="override the backbone's input size, e.g. 112 for fast CPU runs")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=None, metavar="{builtin,FOLDER}",
                   help="'builtin' (no download) or a folder searched recursively for "
                        "jpg/png/webp/bmp/tiff (default: builtin)")
    g.add_argument("--n-inference", type=int, default=None, metavar="N",
                   help="number of reference images (default: the mode's)")
    g.add_argument("--n-evaluation", type=int, default=None, metavar="N",
                   help="number of evaluation images, disjoint from the reference (default: the mode's)")
    g.add_argument("--seed", type=int, default=None, help=f"seed of every random choice (default: {d['seed']})")
    g = p.add_argument_group("execution")
    g.add_argument("--device", choices=C.DEVICES, default=None, help="default: auto (cuda, mps, cpu)")
    g.add_argument("--batch-size", type=int, default=None, help=f"default: {d['batch_size']}")
    g.add_argument("--cache-dir", default=None, help=f"default: {d['cache_dir']}")
    g.add_argument("--results-dir", default=None, help=f"default: {d['results_dir']}")
    g.add_argument("--n-resamples", type=int, default=None,
                   help=f"bootstrap resamples (default: {d['bootstrap']['n_resamples']}; 0 = none)")
    g.add_argument("--bootstrap-all", action="store_true",
                   help="bootstrap intervals for every configuration, not only the top-N")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and the summary only")
    return p


MAX_IMAGE_SIZE = 4096        # a larger input would not fit a batch in memory on any device

# flag -> (config key, check, what it must be): flags are checked by the name the user typed
FLAG_CHECKS = {
    "batch_size": ("--batch-size", lambda v: v >= 1, "an integer >= 1"),
    "n_inference": ("--n-inference", lambda v: v >= 2, "an integer >= 2 (statistics need two images)"),
    "n_evaluation": ("--n-evaluation", lambda v: v >= 2, "an integer >= 2 (statistics need two images)"),
    "seed": ("--seed", lambda v: 0 <= v < 2**32, "an integer in 0 .. 2**32 - 1"),
    "image_size": ("--image-size", lambda v: 16 <= v <= MAX_IMAGE_SIZE,
                   f"an integer in 16 .. {MAX_IMAGE_SIZE} (pixels)"),
    "n_resamples": ("--n-resamples", lambda v: v >= 0, "an integer >= 0 (0 disables intervals)"),
}


def check_flags(args) -> None:
    for attr, (flag, ok, what) in FLAG_CHECKS.items():
        v = getattr(args, attr, None)
        if v is not None and not ok(v):
            raise UsageError(f"{flag} {v} is not valid: it must be {what}")


def check_writable(path: str, flag: str) -> None:
    """`path` is, or can be created as, a writable folder; else UsageError naming the flag."""
    p = os.path.abspath(path)
    probe = p
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if os.path.exists(p) and not os.path.isdir(p):
        raise UsageError(f"{flag} {path!r} is a file, not a folder; pass a folder path")
    if not os.path.isdir(probe):
        raise UsageError(f"{flag} {path!r}: {probe!r} is a file, so the folder cannot be created; "
                         "pass another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path!r}: {probe!r} is not writable by this user; pass a folder "
                         "you can write to")


def resolve_config(args) -> dict:
    """config.py defaults, overridden by the flags given; validated."""
    check_flags(args)
    cfg = C.default_config()
    for flag, key in (("backbone", "backbone"), ("weights", "weights"), ("device", "device"),
                      ("batch_size", "batch_size"), ("image_size", "image_size"),
                      ("dataset", "dataset"), ("seed", "seed"), ("cache_dir", "cache_dir"),
                      ("results_dir", "results_dir"), ("n_inference", "n_images_inference"),
                      ("n_evaluation", "n_images_evaluation")):
        if getattr(args, flag, None) is not None:
            cfg[key] = getattr(args, flag)
    if args.n_resamples is not None:
        cfg["bootstrap"]["n_resamples"] = args.n_resamples
    if args.bootstrap_all:
        cfg["bootstrap"]["scope"] = "all"
    mode = C.MODES[args.mode]
    for key in ("n_images_inference", "n_images_evaluation"):
        if cfg[key] is None:
            cfg[key] = mode[key]
    C.validate_config(cfg, BACKBONE_NAMES)
    if cfg["weights"] not in ("auto", "pretrained", "random") and not os.path.exists(cfg["weights"]):
        where = "--weights" if args.weights is not None else "config['weights']"
        raise UsageError(f"{where} {cfg['weights']!r}: no such file or folder. Give a checkpoint file "
                         "or a save_pretrained folder, or one of auto, pretrained, random")
    return cfg


def check_module_paths(backbone: str, layers, image_size) -> None:
    """Unknown module paths fail now, with close matches, before any extraction."""
    others = [p for i, p in layers if i is None]
    if not others:
        return
    from backbones import build_backbone
    from feature_extraction import find_modules
    module = build_backbone(backbone, "random", 0, image_size, allow_download=False).module
    try:
        find_modules(module, others)
    except KeyError as exc:
        raise UsageError(f"{backbone}: {exc.args[0]}. List valid names with "
                         f"`python main.py --list-layers {backbone}`") from None


def layer_configs_for(cfg, mode, backbone, cli_layers) -> list[dict]:
    """The layer configurations of a run, each with its resolved module paths."""
    if cli_layers:
        specs = [{"name": None, "layers": [s]} for s in cli_layers]
    elif cfg["layer_configs"] is not None:
        specs = cfg["layer_configs"]
    elif mode == "quick":
        specs = [{"name": None, "layers": C.QUICK["layers"][backbone]}]
    else:
        enabled = C.ENABLED_LAYERS[backbone]
        n = len(BACKBONES[backbone]["layers"])
        bad = [i for i in enabled if not 0 <= i < n]
        if bad:
            raise C.ConfigError(f"ENABLED_LAYERS[{backbone!r}] has index {bad[0]} but {backbone} "
                                f"has layers 0..{n - 1}; fix config.py")
        specs = [{"name": None, "layers": [i]} for i, on in sorted(enabled.items()) if on]
        if not specs:
            raise C.ConfigError(f"ENABLED_LAYERS[{backbone!r}] enables no layer; set some to True")
    out, names = [], set()
    for s in specs:
        resolved = resolve_layers(backbone, s["layers"])
        aggregate = s.get("aggregate", "concat")
        ids = [str(i) if i is not None else p for i, p in resolved]
        name = s.get("name") or ("single_layer_" + ids[0] if len(ids) == 1
                                 else "layers_" + "+".join(ids) + "_" + aggregate)
        if name in names:
            raise C.ConfigError(f"two layer configs are named {name!r}; give each entry of "
                                "config['layer_configs'] a unique 'name' (edit config.py)")
        names.add(name)
        out.append({"name": name, "layers": [i if i is not None else p for i, p in resolved],
                    "paths": [p for _, p in resolved], "aggregate": aggregate,
                    "resolved": resolved})
    return out


# ---------------------------------------------------------------------- cache fill

def open_caches(cfg, backbone, layers, provenance, ref_records, eval_records):
    from feature_cache import LayerCache, code_identity, weights_identity
    spec = BACKBONES[backbone]
    input_size = cfg["image_size"] or spec["input_size"]
    context = {"weights": weights_identity(provenance), "capture": CAPTURE,
               "input_size": input_size, "working_size": cfg["working_size"],
               "code": code_identity(spec["library"], spec["interpolation"]),
               "mean": list(spec["mean"]), "std": list(spec["std"]),
               "dtype": cfg["cache_dtype"], "precision": cfg["extraction_precision"]}
    return {path: LayerCache(cfg["cache_dir"], backbone, index, path, context, ref_records,
                             eval_records, cfg["seed"], cfg["verify_checksums"])
            for index, path in layers}


def ensure_cached(cfg, backbone, caches, units, provenance, progress) -> None:
    """Extract whatever the caches miss; on a full hit nothing is built or even imported."""
    from feature_cache import plan_extraction
    todo = plan_extraction(backbone, caches, units)
    if todo:
        from feature_extraction import fill_cache   # torch and the model libraries
        fill_cache(cfg, backbone, caches, units, todo, provenance, progress)


# ---------------------------------------------------------------------- run

def select(cfg):
    from dataset import select_images
    return select_images(cfg["dataset"], cfg["n_images_evaluation"], cfg["n_images_inference"], cfg["seed"])


def backbones_of(cfg) -> list[str]:
    """The backbones of this run; a ViT's input size must be a multiple of its patch size."""
    names = list(BACKBONE_NAMES) if cfg["backbone"] == "all" else [cfg["backbone"]]
    size = cfg["image_size"]
    for name in names:
        layout = BACKBONES[name]["token_layout"]
        if size and layout and size % layout["patch"]:
            p = layout["patch"]
            lo, hi = max(p, size // p * p), (size // p + 1) * p
            raise UsageError(f"--image-size {size} is not a multiple of {name}'s patch size {p} "
                             f"(pixels past the last patch would be dropped); use {lo} or {hi}")
    return names


def build_cache(cfg, args) -> int:
    from backbones import resolve_weights
    from feature_cache import evaluation_units, reference_units
    if not args.layers:
        raise UsageError("--build-cache needs --layers (indices or module paths), e.g. "
                         "--build-cache --backbone resnet50 --layers 7 8 9")
    check_writable(cfg["cache_dir"], "--cache-dir")
    eval_records, ref_records = select(cfg)
    for backbone in backbones_of(cfg):
        layers = resolve_layers(backbone, args.layers)
        check_module_paths(backbone, layers, cfg["image_size"])
        prov = resolve_weights(backbone, cfg["weights"], cfg["seed"])
        caches = open_caches(cfg, backbone, layers, prov, ref_records, eval_records)
        ensure_cached(cfg, backbone, caches, reference_units(ref_records)
                      + evaluation_units(eval_records, cfg["degradations"]), prov, not args.quiet)
        log.info("cache ready for %s layers %s in %s (weights: %s)", backbone,
                 " ".join(str(i if i is not None else p) for i, p in layers), cfg["cache_dir"],
                 prov["label"])
    return 0


def run(cfg, args) -> int:
    """Resolve layers and images (user mistakes fail here, before anything is written),
    then extract what is missing, score every configuration and write the report."""
    mode = args.mode
    if mode == "quick":
        C.validate_quick(cfg)
    plans = []
    for backbone in backbones_of(cfg):
        lcs = layer_configs_for(cfg, mode, backbone, args.layers)
        for lc in lcs:
            check_module_paths(backbone, lc["resolved"], cfg["image_size"])
        plans.append((backbone, lcs))
    eval_records, ref_records = select(cfg)

    check_writable(cfg["cache_dir"], "--cache-dir")
    check_writable(cfg["results_dir"], "--results-dir")
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    out_dir = os.path.join(cfg["results_dir"], f"{mode}_{stamp}")
    suffix = 1
    while os.path.exists(out_dir):           # two runs within one second
        suffix += 1
        out_dir = os.path.join(cfg["results_dir"], f"{mode}_{stamp}-{suffix}")
    stamp = os.path.basename(out_dir).split("_", 1)[1]
    os.makedirs(out_dir)
    handler = logging.FileHandler(os.path.join(out_dir, "experiment.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        return _run_in(cfg, args, plans, eval_records, ref_records, out_dir, stamp)
    except BaseException as exc:   # the folder says the run failed, and why; never a silent half
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.error("run failed: %s", text)
        with open(os.path.join(out_dir, "FAILED.txt"), "w") as f:
            f.write(f"this run did not finish: {text}\ncompleted cache files are kept; rerun the "
                    "same command to resume\n")
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _run_in(cfg, args, plans, eval_records, ref_records, out_dir, stamp) -> int:
    """Extraction, scoring and report of `run`, logging into out_dir/experiment.log."""
    from backbones import resolve_weights
    from evaluation import Configuration, bootstrap, build_grid, rank, release, score_group
    from feature_cache import evaluation_units, reference_units
    from feature_spaces import FeatureAssembler, feature_key
    import report

    mode = args.mode
    log.info("run %s: %d reference + %d evaluation images from %s; results in %s", mode,
             len(ref_records), len(eval_records), cfg["dataset"], out_dir)
    report.write_json(os.path.join(out_dir, "config_resolved.json"),
                      {"mode": mode, "config": cfg, "enabled_layers": C.ENABLED_LAYERS})

    ref_units, eval_units = reference_units(ref_records), evaluation_units(eval_records, cfg["degradations"])
    results, weights = [], {}
    for backbone, lcs in plans:
        prov = resolve_weights(backbone, cfg["weights"], cfg["seed"])
        weights[backbone] = prov
        layers = sorted({(i, p) for lc in lcs for i, p in lc["resolved"]}, key=str)
        caches = open_caches(cfg, backbone, layers, prov, ref_records, eval_records)
        ensure_cached(cfg, backbone, caches, ref_units + eval_units, prov, not args.quiet)
        spec = BACKBONES[backbone]
        assembler = FeatureAssembler(caches, ref_units, eval_units,
                                     cfg["image_size"] or spec["input_size"], spec["token_layout"],
                                     cfg["max_representation_bytes"], cfg["gram_precision"], cfg["device"])
        if mode == "quick":   # one configuration per layer config: QUICK's transform and metric
            transform = next(t for t in cfg["feature_transforms"] if t["name"] == C.QUICK["transform"])
            grid = [Configuration(backbone, lc, transform, None, C.QUICK["metric"]) for lc in lcs]
        else:
            grid = build_grid(backbone, lcs, cfg["feature_transforms"], cfg["distribution_models"],
                              cfg["distance_metrics"])
        log.info("%s: scoring %d configuration(s)", backbone, len(grid))
        groups = {}
        for conf in grid:            # configurations that share features are scored together
            groups.setdefault(feature_key(conf.layer_config, conf.transform), []).append(conf)
        base = {"n_reference": len(ref_records), "n_evaluation": len(eval_records), "seed": cfg["seed"],
                "weights": prov["label"], "random_init": prov["source"] == "random-init"}
        order = {id(c): i for i, c in enumerate(grid)}
        scored = []
        for confs in groups.values():
            lc, t = confs[0].layer_config, confs[0].transform
            scored += score_group(confs, lambda lc=lc, t=t: assembler.space(lc, t),
                                  cfg["degradations"], cfg, cfg["seed"], base)
        scored.sort(key=lambda r: order[id(r.conf)])
        for r in scored:
            if not r.scored:
                log.info("%s %s: %s", r.status.replace("_", " "), r.label, r.reason)
        results += scored

    ranked = rank(results)
    b = cfg["bootstrap"]
    if b["n_resamples"] > 0:
        targets = [r for r in ranked if r.scored]
        if b["scope"] == "top":
            targets = targets[:cfg["top_n"]]
        for r in targets:
            bootstrap(r, cfg["degradations"], b["n_resamples"], b["confidence"], cfg["seed"])
    release(ranked)
    for r in ranked:
        r.confidence = b["confidence"]

    base = os.path.join(out_dir, f"results_{mode}_{stamp}")
    report.write_csv(base + ".csv", ranked, cfg["degradations"])
    report.write_json(base + ".json", {"mode": mode, "timestamp": stamp, "weights": weights,
                                       "dataset": {"source": cfg["dataset"],
                                                   "reference": [r.source for r in ref_records],
                                                   "evaluation": [r.source for r in eval_records]},
                                       "counts": report.counts(ranked),
                                       "config": cfg, "results": [r.fields() for r in ranked]})
    done = [r for r in ranked if r.scored]
    for k, r in enumerate(done[:cfg["top_n"]], start=1):
        report.plot_monotonicity(os.path.join(out_dir, f"monotonicity_top{k}.png"), r, k)
    report.plot_heatmap(os.path.join(out_dir, "heatmap_mean_rho.png"), ranked)
    text = report.summary(ranked, cfg["top_n"], weights)
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"\nResults: {out_dir}")
    return 0 if done else 1


# ---------------------------------------------------------------------- small commands

def list_layers(spec: str) -> int:
    if spec in BACKBONES:
        b = BACKBONES[spec]
        print(f"{spec}: {b['architecture']} ({b['library']}), input {b['input_size']}x{b['input_size']}, "
              f"recommended {b['recommended']}")
        print(f"{'idx':>3}  {'module path':<40} {'kind':<20} {'output':<16} level")
        for layer in b["layers"]:
            print(f"{layer.index:>3}  {layer.path:<40} {layer.kind:<20} "
                  f"{'x'.join(map(str, layer.shape)):<16} {layer.level}")
        return 0
    if ":" not in spec:
        close = difflib.get_close_matches(spec, BACKBONE_NAMES, n=3)
        raise UsageError(f"unknown backbone {spec!r}" + (f" (did you mean {', '.join(close)}?)" if close else "")
                         + f"; choose one of {', '.join(BACKBONE_NAMES)}, or timm:NAME / torchvision:NAME")
    from backbones import build_library_model
    from feature_extraction import list_extractable_layers
    try:
        model, size = build_library_model(spec)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    rows = list_extractable_layers(model, model, size)
    print(f"{spec}: {len(rows)} extractable modules at input {size}x{size} "
          "(ReLU, pooling, dropout and reshapes left out)")
    for i, path, kind, shape in rows:
        print(f"{i:>4}  {path:<48} {kind:<22} {'x'.join(map(str, shape))}")
    return 0


def show_cache_info(cfg) -> int:
    from feature_cache import cache_info
    rows = cache_info(cfg["cache_dir"])
    if not rows:
        print(f"cache {cfg['cache_dir']!r} is empty")
        return 0
    total = 0
    for r in rows:
        total += r["bytes"]
        print(f"{r['backbone']:<14} {r['layer']:<18} {r['entry']:<22} {r['module_path']:<38} "
              f"{r['files']:>4} files {r['bytes'] / 2**20:>9.1f} MiB  "
              f"{'complete' if r['complete'] else 'partial '}  "
              f"weights={r['weights'].get('source', '?')}:{r['weights'].get('sha256', r['weights'].get('seed', ''))!s:.12}")
    print(f"total {total / 2**20:.1f} MiB in {len(rows)} entries under {cfg['cache_dir']}")
    return 0


def preview_degradations(cfg) -> int:
    from dataset import load_rgb, select_images
    from degradation_generator import preview_collage
    records, _ = select_images(cfg["dataset"], 3, 0, cfg["seed"])
    images = [(r.sha256, load_rgb(r.source, cfg["working_size"])) for r in records]
    check_writable(cfg["results_dir"], "--results-dir")
    os.makedirs(cfg["results_dir"], exist_ok=True)
    path = os.path.join(cfg["results_dir"], "degradation_preview.png")
    preview_collage(images, cfg["degradations"], cfg["seed"]).save(path)
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------- entry

def setup_logging(verbose: bool, quiet: bool) -> None:
    """Console at the chosen verbosity; experiment.log (added per run) always gets INFO."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = next((h for h in root.handlers if getattr(h, "_iqm", False)), None)
    if console is None:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        console._iqm = True
        root.addHandler(console)
    console.stream = sys.stderr     # the current stderr, also when a caller swapped it
    console.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for noisy in ("PIL", "matplotlib", "urllib3", "httpx", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def one_line(exc: BaseException) -> str:
    """The message of `exc`; one raised in a DataLoader worker arrives wrapped in a traceback,
    whose last line is the original message."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    from backbones import WeightsError
    from dataset import DatasetError
    from feature_cache import CacheError
    try:
        if args.list_layers:
            return list_layers(args.list_layers)
        if args.write_layer_guide:
            from layer_guide import write_guide
            print(f"wrote {write_guide()}")
            return 0
        cfg = resolve_config(args)
        if args.cache_info:
            return show_cache_info(cfg)
        if args.preview_degradations:
            return preview_degradations(cfg)
        if args.build_cache:
            return build_cache(cfg, args)
        return run(cfg, args)
    except (UsageError, C.ConfigError, DatasetError, LayerError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except (WeightsError, CacheError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:          # e.g. `--list-layers … | head`
        return 0
    except OSError as exc:           # a disk full or a folder removed while writing results
        print(f"error: {exc.strerror or exc} ({exc.filename or 'output'}); free space or fix the "
              "folder and rerun: completed cache files are kept", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; completed cache files are kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Which deep-feature space gives an image-quality score that rises monotonically
as images get worse? Command-line entry point.

    python main.py --mode quick                          # one configuration, 50 images
    python main.py --mode medium --backbone vgg19        # ENABLED_LAYERS x transforms x models x metrics
    python main.py --build-cache --backbone sd_vae --layers 7 9 12 --n-inference 1000
    python main.py --build-cache --layers 7 8 --shard 0/4         # one of four processes
    torchrun --nproc-per-node 4 main.py --build-cache --layers 7 8  # one share per GPU
    python main.py --mode medium --jobs 8                          # 8 scoring processes

main.py parses flags and calls pipeline.py (build_caches, run_experiment), the library API.

Data flow (one file per stage): dataset.py -> degradation_generator.py ->
feature_extraction.py (backbones.py, layer_registry.py) -> feature_cache.py ->
representations.py -> feature_spaces.py -> distribution_modeling.py -> distance_metrics.py ->
evaluation.py -> report.py.

Exit codes: 0 success, 2 usage or configuration error, 1 runtime error.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import config as C
import pipeline
import run_plan
from backbones import BACKBONE_NAMES
from errors import RuntimeFailure, UsageError, UserError
from parallel import ParallelError, Ranks, Shard

log = logging.getLogger("iqm")


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
                   help="print the layer table of a backbone, or the extractable modules of "
                        "timm:NAME, torchvision:NAME or hf:MODEL_ID")
    g.add_argument("--save-stats", nargs=2, metavar=("FOLDER", "OUT.npz"),
                   help="write pytorch-fid's statistics (mu, sigma) of the images in FOLDER for "
                        "--backbone and one of --layers (default: inception_fid pool3, as "
                        "`python -m pytorch_fid --save-stats`)")
    g.add_argument("--fid-stats", nargs=2, metavar=("A", "B"),
                   help="print the FID between A and B, each a .npz of --save-stats (or of "
                        "pytorch-fid) or a folder of images (default network: inception_fid pool3)")
    g.add_argument("--cache-info", action="store_true", help="list cache entries with sizes and keys")
    g.add_argument("--preview-degradations", action="store_true",
                   help="write a PNG collage of a few images at every level of every degradation")
    g.add_argument("--write-layer-guide", action="store_true",
                   help="regenerate LAYER_GUIDE.md from layer_registry.py")
    g = p.add_argument_group("model and layers")
    g.add_argument("--backbone", default=None, metavar="NAME",
                   help=f"one of {', '.join(BACKBONE_NAMES)}, all, or any model of a library: "
                        "timm:NAME, torchvision:NAME, hf:MODEL_ID (a hub id in the Hugging Face "
                        f"cache or a save_pretrained folder) (default: {d['backbone']})")
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
    g.add_argument("--mos", default=None, metavar="FILE",
                   help="a rated database: KADID-10k's dmos.csv, TID2013's mos_with_names.txt, "
                        "or a CSV with image,reference,mos[,type,level]; configurations are then "
                        "ranked by agreement with its opinion scores (README: Agreement with human "
                        "judgments). Its references are the reference set unless --dataset is given")
    g.add_argument("--rank-by", choices=("monotonicity", "mos"), default=None,
                   help="rank by monotonicity against severity, or by the set-level SRCC with the "
                        "MOS (default: mos with --mos, else monotonicity)")
    g.add_argument("--n-inference", type=int, default=None, metavar="N",
                   help="number of reference images (default: the mode's)")
    g.add_argument("--degradations", default=None, metavar="SETS",
                   help="comma-separated degradation sets: seed (config['degradations'], the "
                        "seed's five), kadid10k (KADID-10k's 25 types x 5 levels), fid (the FID "
                        "paper's disturbances); e.g. seed,kadid10k (default: "
                        f"{','.join(d['degradation_sets'])})")
    g.add_argument("--n-evaluation", type=int, default=None, metavar="N",
                   help="number of evaluation images, disjoint from the reference (default: the mode's)")
    g.add_argument("--seed", type=int, default=None, help=f"seed of every random choice (default: {d['seed']})")
    g = p.add_argument_group("execution (README: Scaling out)")
    g.add_argument("--device", choices=run_plan.DEVICES, default=None, help="default: auto (cuda, mps, cpu)")
    g.add_argument("--shard", metavar="I/N", default=None,
                   help="with --build-cache: extract only share I of N (cache files I, I+N, ...); "
                        "N processes together build exactly the single-process cache. SLURM arrays: "
                        "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT. Under torchrun the "
                        "share comes from RANK/WORLD_SIZE")
    g.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="score configurations in N worker processes (default: config['jobs'] = "
                        f"{d['jobs']}, every core); 1 = in this process")
    g.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="score on the Dask cluster at ADDRESS (e.g. tcp://host:8786) through "
                        "joblib's dask backend; its workers must see --cache-dir")
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
    "jobs": ("--jobs", lambda v: v >= 1, "an integer >= 1 (1 scores in this process)"),
}


def check_flags(args) -> None:
    for attr, (flag, ok, what) in FLAG_CHECKS.items():
        v = getattr(args, attr, None)
        if v is not None and not ok(v):
            raise UsageError(f"{flag} {v} is not valid: it must be {what}")


def resolve_config(args) -> dict:
    """config.py defaults, overridden by the flags given; validated."""
    check_flags(args)
    if args.backbone is not None and args.backbone != "all":
        from backbones import get_spec
        get_spec(args.backbone)          # BackboneError: close matches and the valid forms
    cfg = C.default_config()
    for flag, key in (("backbone", "backbone"), ("weights", "weights"), ("device", "device"),
                      ("batch_size", "batch_size"), ("image_size", "image_size"),
                      ("dataset", "dataset"), ("seed", "seed"), ("cache_dir", "cache_dir"),
                      ("results_dir", "results_dir"), ("n_inference", "n_images_inference"),
                      ("n_evaluation", "n_images_evaluation"), ("jobs", "jobs"),
                      ("dask_scheduler", "dask_scheduler"), ("mos", "mos"), ("rank_by", "rank_by")):
        if getattr(args, flag, None) is not None:
            cfg[key] = getattr(args, flag)
    if args.mos is not None and args.dataset is not None:
        cfg["mos_reference"] = args.dataset     # --dataset names the reference set of a --mos run
    if args.degradations is not None:
        cfg["degradation_sets"] = [s.strip() for s in args.degradations.split(",") if s.strip()]
    if args.n_resamples is not None:
        cfg["bootstrap"]["n_resamples"] = args.n_resamples
    if args.bootstrap_all:
        cfg["bootstrap"]["scope"] = "all"
    mode = C.MODES[args.mode]
    for key in ("n_images_inference", "n_images_evaluation"):
        if cfg[key] is None:
            cfg[key] = mode[key]
    run_plan.validate_config(cfg, BACKBONE_NAMES)
    if cfg["weights"] not in ("auto", "pretrained", "random") and not os.path.exists(cfg["weights"]):
        where = "--weights" if args.weights is not None else "config['weights']"
        raise UsageError(f"{where} {cfg['weights']!r}: no such file or folder. Give a checkpoint file "
                         "or a save_pretrained folder, or one of auto, pretrained, random")
    return cfg


# ---------------------------------------------------------------------- the two jobs

def build_cache(cfg, args) -> int:
    """--build-cache: pipeline.build_caches (this process's shard, or torchrun's rank)."""
    shard = Shard.parse(args.shard) if args.shard is not None else None
    builds = pipeline.build_caches(cfg, args.layers, shard, progress=not args.quiet)
    for b in builds:
        layers = " ".join(str(i if i is not None else p) for i, p in b.layers)
        if b.missing:
            log.info("shard %s of %s layers %s done (%d file(s) extracted); %d file(s) are other "
                     "shards' and still missing in %s", shard, b.backbone, layers, b.extracted,
                     b.missing, b.cache_dir)
        else:
            log.info("cache ready for %s layers %s in %s (weights: %s)", b.backbone, layers,
                     b.cache_dir, b.weights)
    return 0


def run(cfg, args) -> int:
    """--mode: pipeline.run_experiment, then the summary on stdout."""
    if args.shard is not None:
        raise UsageError("--shard works with --build-cache (a sweep needs every file); run "
                         "--build-cache --shard I/N in each process, then the sweep once")
    exp = pipeline.run_experiment(cfg, args.mode, args.layers, progress=not args.quiet)
    if exp is None:                  # a torchrun rank other than 0: its share is extracted
        return 0
    print(exp.summary)
    print(f"\nResults: {exp.out_dir}")
    return 0 if exp.scored else 1


# ---------------------------------------------------------------------- small commands

def fid_statistics(cfg, args) -> int:
    """--save-stats FOLDER OUT.npz, or --fid-stats A B: fid_stats.save_stats / fid_between
    for --backbone (default inception_fid) and one layer (default the backbone's stats layer)."""
    import fid_stats
    backbone = args.backbone or "inception_fid"
    if args.layers and len(args.layers) != 1:
        raise UsageError(f"--save-stats/--fid-stats take one layer, got --layers {' '.join(args.layers)}")
    layer = args.layers[0] if args.layers else None
    if args.save_stats:
        folder, out = args.save_stats
        stats = fid_stats.save_stats(cfg, folder, out, backbone, layer, progress=not args.quiet)
        print(f"wrote {out}: mu {stats.mu.shape}, sigma {stats.sigma.shape} of {stats.n} images "
              f"({stats.backbone} {stats.layer}; weights: {stats.weights})")
        return 0
    value = fid_stats.fid_between(cfg, *args.fid_stats, backbone=backbone, layer=layer,
                                 progress=not args.quiet)
    print(f"FID: {value}")
    return 0


def list_layers(name: str) -> int:
    t = pipeline.layer_table(name)
    s = t.spec
    print(f"{name}: {s.architecture} ({s.library}), input {s.input_size}x{s.input_size} "
          f"{s.interpolation}{'' if s.antialias else ' (no antialias)'}, mean {tuple(s.mean)}, "
          f"std {tuple(s.std)}; pretrained: {s.weights_id}" + (f"\n({s.notes})" if s.notes else ""))
    if t.registry:
        print(f"recommended {list(s.recommended)}")
        print(f"{'idx':>3}  {'module path':<40} {'kind':<20} {'output':<16} level")
    else:
        print(f"{len(t.rows)} extractable modules (ReLU, pooling, dropout and reshapes left out); "
              "pass module paths to --layers")
    for index, path, kind, shape, level in t.rows:
        shape = "x".join(map(str, shape))
        print(f"{index:>3}  {path:<40} {kind:<20} {shape:<16} {level}" if t.registry
              else f"  {path:<48} {kind:<22} {shape}")
    return 0


# ---------------------------------------------------------------------- entry

def setup_logging(verbose: bool, quiet: bool) -> None:
    """Console at the chosen verbosity; experiment.log (added per run) always gets INFO."""
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
    try:
        if args.list_layers:
            return list_layers(args.list_layers)
        if args.write_layer_guide:
            from layer_guide import write_guide
            print(f"wrote {write_guide()}")
            return 0
        cfg = resolve_config(args)
        if args.cache_info:
            from feature_cache import cache_info
            import report
            print("\n".join(report.cache_info_lines(cache_info(cfg["cache_dir"]), cfg["cache_dir"])))
            return 0
        if args.preview_degradations:
            print(f"wrote {pipeline.preview_degradations(cfg)}")
            return 0
        if args.save_stats or args.fid_stats:
            return fid_statistics(cfg, args)
        if args.build_cache:
            return build_cache(cfg, args)
        return run(cfg, args)
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except RuntimeFailure as exc:
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

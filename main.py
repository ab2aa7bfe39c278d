"""Which deep-feature space gives an image-quality score that rises monotonically as images get
worse? The command line: flags become settings (run_plan), then the library runs (pipeline,
fid_stats); README "Usage" has the examples.

    python main.py --mode quick|medium|full
    python main.py --build-cache --backbone B --layers 7 9 12

Exit codes: 0 success, 2 usage or configuration error, 1 runtime error.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys

import pipeline
import report
import run_plan
from backbones import BACKBONE_NAMES
from errors import UsageError, UserError, exit_status, sigterm_raises_terminated
from parallel import Shard

log = logging.getLogger("iqm")

# flag (argparse attribute) -> the setting it overrides ('section.key': a key of a section)
SETTINGS = {**{f: f for f in ("backbone", "weights", "device", "batch_size", "image_size", "dataset",
                              "seed", "cache_dir", "results_dir", "jobs", "dask_scheduler", "mos",
                              "rank_by")},
            "n_inference": "n_images_inference", "n_evaluation": "n_images_evaluation",
            "n_resamples": "bootstrap.n_resamples"}


def build_parser(d: dict, modes) -> argparse.ArgumentParser:
    """The flags, defaults shown from `d` (config.py's CONFIG). One table of flags: long by nature."""
    p = argparse.ArgumentParser(
        prog="main.py", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rank deep-feature spaces by how monotonically an image-quality score rises with\n"
                    "degradation severity (Spearman rho). Defaults come from config.py; README has more.",
        epilog="Exit codes: 0 success, 2 usage/configuration error, 1 runtime error.")
    a = p.add_argument_group("what to run").add_argument
    a("--mode", choices=tuple(modes), default="quick", help="quick: 50 reference images, one configuration; "
      "medium: ENABLED_LAYERS x transforms x models x metrics; full: 1000 images, every configuration")
    a("--build-cache", action="store_true", help="extract and cache --layers of --backbone, then stop")
    a("--list-layers", metavar="BACKBONE", help="the layer table of a backbone, or a library model's modules")
    a("--save-stats", nargs=2, metavar=("FOLDER", "OUT.npz"), help="pytorch-fid's (mu, sigma) of FOLDER")
    a("--fid-stats", nargs=2, metavar=("A", "B"), help="the FID between A and B (.npz or folders)")
    a("--apply", nargs="+", metavar="ARG", help="CONFIG REF EVAL [EVAL ...]: score each EVAL folder against "
      "REF with CONFIG, a results folder[#rank], its JSON or a spec string")
    a("--save-reference", nargs=3, metavar=("CONFIG", "REF", "OUT.npz"), help="what CONFIG needs of "
      "REF, for --apply CONFIG OUT.npz EVAL")
    a("--out", metavar="FILE.csv", help="with --apply: write the scores to this CSV too")
    a("--generator", metavar="MODULE:FUNCTION", help="with --apply CONFIG REF: score --n images of "
      "FUNCTION(batch_size), a batch of (B, 3, H, W) images, written nowhere")
    a("--n", type=int, metavar="N", help="with --generator: how many images")
    a("--cache-info", action="store_true", help="list cache entries with sizes and keys")
    a("--preview-degradations", action="store_true", help="a PNG of every level of every degradation")
    a("--report", nargs="?", const=True, metavar="RESULTS_DIR", help="write report.html (default in "
      "medium and full); with a results folder: rebuild its report from the run's JSON")
    a("--no-report", dest="report", action="store_false", help="no report.html")
    a("--write-layer-guide", action="store_true", help="regenerate LAYER_GUIDE.md from layer_registry.py")
    a = p.add_argument_group("model and layers").add_argument
    a("--backbone", metavar="NAME", help=f"one of {', '.join(BACKBONE_NAMES)}, all, timm:NAME, torchvision:"
      f"NAME or hf:MODEL_ID (hub id or save_pretrained folder) (default: {d['backbone']})")
    a("--layers", nargs="+", metavar="L", help="layer indices (--list-layers) or module paths")
    a("--weights", metavar="{auto,pretrained,random,PATH}", help="auto: pretrained if found, else random-init "
      f"with a warning; random: seeded; PATH: a local checkpoint (default: {d['weights']})")
    a("--image-size", type=int, metavar="PX", help="override the backbone's input size, e.g. 112 on a CPU")
    a = p.add_argument_group("data").add_argument
    a("--dataset", metavar="{builtin,FOLDER}", help="'builtin' (no download) or a folder of images")
    a("--mos", metavar="FILE", help="a rated database (KADID-10k's dmos.csv, TID2013's mos_with_names.txt "
      "or a CSV image,reference,mos[,type,level]): rank by agreement with its opinion scores")
    a("--rank-by", choices=("monotonicity", "mos"), help="default: mos with --mos, else monotonicity")
    a("--n-inference", type=int, metavar="N", help="reference images (default: the mode's)")
    a("--n-evaluation", type=int, metavar="N", help="evaluation images, disjoint from the reference")
    a("--degradations", metavar="SETS", help="comma-separated: seed (config['degradations']), kadid10k, "
      f"fid (default: {','.join(d['degradation_sets'])})")
    a("--seed", type=int, help=f"seed of every random choice (default: {d['seed']})")
    a = p.add_argument_group("execution (README: Scaling out)").add_argument
    a("--device", choices=run_plan.DEVICES, help="default: auto (cuda, mps, cpu)")
    a("--shard", metavar="I/N", help="with --build-cache: extract only share I of N (SLURM: "
      "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; torchrun sets it from RANK)")
    a("--jobs", type=int, metavar="N", help=f"scoring processes (default: {d['jobs']}; 1 = in this one)")
    a("--dask-scheduler", metavar="ADDRESS", help="score on this Dask cluster (tcp://host:8786)")
    a("--batch-size", type=int, help=f"default: {d['batch_size']}")
    a("--cache-dir", help=f"default: {d['cache_dir']}")
    a("--results-dir", help=f"default: {d['results_dir']}")
    a("--n-resamples", type=int, help=f"bootstrap resamples (default: {d['bootstrap']['n_resamples']})")
    a("--bootstrap-all", action="store_true", help="bootstrap every configuration, not only the top-N")
    a("--no-baselines", action="store_true", help=f"leave out {', '.join(d['baselines'])}")
    a("-v", "--verbose", action="store_true", help="debug logging")
    a("-q", "--quiet", action="store_true", help="warnings and the summary only")
    return p


def settings(args, user: run_plan.UserConfig) -> tuple[dict, set]:
    """The flags as settings (run_plan.resolve_settings), errors named by the flag typed; and
    the settings a flag set."""
    given = {attr: key for attr, key in SETTINGS.items() if getattr(args, attr) is not None}
    overrides = {key: getattr(args, attr) for attr, key in given.items()}
    if args.mos is not None and args.dataset is not None:
        overrides["mos_reference"] = args.dataset   # --dataset names the references of a --mos run
    if args.degradations is not None:
        overrides["degradation_sets"] = [s.strip() for s in args.degradations.split(",") if s.strip()]
    if args.bootstrap_all:
        overrides["bootstrap.scope"] = "all"
    if args.no_baselines:
        overrides["baselines"] = []
    if isinstance(args.report, bool):
        overrides["report"] = args.report
    names = {key: "--" + attr.replace("_", "-") for attr, key in given.items()}
    return run_plan.resolve_settings(user, overrides, args.mode, names), set(given.values())


def run(args, user) -> int:
    """The command of `args`: the settings (but for the three that need none), then the library."""
    if args.list_layers:
        print("\n".join(report.layer_table_lines(args.list_layers, pipeline.layer_table(args.list_layers))))
        return 0
    if args.write_layer_guide:
        from layer_guide import write_guide
        print(f"wrote {write_guide()}")
        return 0
    if isinstance(args.report, str):
        print(f"wrote {pipeline.rebuild_report(args.report)}")
        return 0
    (cfg, given), progress = settings(args, user), not args.quiet
    if args.cache_info:
        print("\n".join(report.cache_info_lines(pipeline.cache_entries(cfg), cfg["cache_dir"])))
    elif args.preview_degradations:
        print(f"wrote {pipeline.preview_degradations(cfg)}")
    elif args.save_stats or args.fid_stats:
        import fid_stats
        print(fid_stats.command(cfg, args.save_stats, args.fid_stats, args.backbone, args.layers, progress))
    elif args.save_reference:
        import feature_metric
        print(feature_metric.save_command(cfg, args.save_reference, given))
    elif args.apply:
        import feature_metric
        print("\n".join(feature_metric.command(cfg, args.apply, args.out, given, progress,
                                                args.generator, args.n)))
    elif args.build_cache:
        shard = Shard.parse(args.shard) if args.shard is not None else None
        for b in pipeline.build_caches(cfg, args.layers, shard, progress=progress):
            log.info("%s", report.cache_build_line(b, shard))
    else:
        if args.shard is not None:
            raise UsageError("--shard works with --build-cache (a sweep needs every file); run "
                             "--build-cache --shard I/N in each process, then the sweep once")
        exp = pipeline.run_experiment(cfg, args.mode, args.layers, user=user, progress=progress,
                                      command=shlex.join(["python", "main.py", *args.argv]))
        if exp is None:                  # a torchrun rank other than 0: its share is extracted
            return 0
        print(f"{exp.summary}\n\nResults: {exp.out_dir}")
        return 0 if exp.scored else 1
    return 0


def main(argv=None, user: run_plan.UserConfig | None = None) -> int:
    """Run the command line `argv` with config.py's tables, or with `user`'s."""
    try:
        user = user or run_plan.UserConfig.load()
    except UserError as exc:                 # config.py itself does not run
        print(f"error: {exc}", file=sys.stderr)
        return 2
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(user.config, user.modes).parse_args(argv)
    args.argv = argv
    pipeline.setup_logging(args.verbose, args.quiet)
    try:
        with sigterm_raises_terminated():
            return run(args, user)
    except BaseException as exc:             # noqa: B036 - mapped to exit codes, else re-raised
        status = exit_status(exc)
        if status is None:
            raise
        if status[1]:
            print(status[1], file=sys.stderr)
        return status[0]


if __name__ == "__main__":
    sys.exit(main())

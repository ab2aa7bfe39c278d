"""Which deep-feature space gives an image-quality score that rises monotonically as images get
worse? The command line: flags become settings (user_config, run_plan), then the library runs
(pipeline, fid_stats, apply_metric). Exit codes: 0 success, 2 usage or configuration error, 1 runtime error.

    python main.py --mode quick|medium|full          (the checkout's main.py: its config.py)
    python -m featrank --mode quick                    (or the `featrank` console script)
    python main.py --build-cache --backbone B --layers 7 9 12
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys

from featrank import apply_metric
from featrank import fid_stats
from featrank import pipeline
from featrank import report
from featrank import run_plan
from featrank import user_config
from featrank.errors import UsageError, exit_status, sigterm_raises_terminated
from featrank.layer_guide import write_guide
from featrank.parallel import Shard

log = logging.getLogger("iqm")


def build_parser(d: dict, modes) -> argparse.ArgumentParser:
    """The flags: the commands' here, the settings' from user_config.SETTING_FLAGS (defaults shown from
    `d`, config.py's CONFIG)."""
    p = argparse.ArgumentParser(
        prog="main.py", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rank deep-feature spaces by how monotonically an image-quality score rises with\n"
                    "degradation severity (Spearman rho). Defaults come from config.py; docs/ has more.",
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
    a("--config", metavar="FILE", help="the config.py to read (default: the one beside main.py; for "
      "`python -m featrank` and `featrank`, the one the package was installed from)")
    groups = {g: p.add_argument_group(g) for g in (user_config.MODEL, user_config.DATA, user_config.EXECUTION)}
    model, execution = groups[user_config.MODEL].add_argument, groups[user_config.EXECUTION].add_argument
    model("--layers", nargs="+", metavar="L", help="layer indices (--list-layers) or module paths")
    for f in user_config.SETTING_FLAGS:                  # the flags that set one setting of CONFIG each
        groups[f.group].add_argument(f.flag, dest=f.dest, help=f.help_for(d), **f.options)
    execution("--shard", metavar="I/N", help="with --build-cache: extract only share I of N (SLURM: "
              "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; torchrun sets it from RANK)")
    execution("-v", "--verbose", action="store_true", help="debug logging")
    execution("-q", "--quiet", action="store_true", help="warnings and the summary only")
    return p


def settings(args, user: run_plan.UserConfig) -> tuple[dict, set]:
    """The flags as settings (user_config.resolve_settings), errors named by the flag typed; and
    the settings a flag set."""
    typed = [f for f in user_config.SETTING_FLAGS if getattr(args, f.dest) is not None]
    overrides = {f.setting: getattr(args, f.dest) for f in typed}
    if args.mos is not None and args.dataset is not None:
        overrides["mos_reference"] = args.dataset   # --dataset names the references of a --mos run
    if isinstance(args.report, bool):
        overrides["report"] = args.report
    names = {f.setting: f.flag for f in typed}
    sweep = not (args.cache_info or args.preview_degradations or args.save_stats or args.fid_stats
                 or args.save_reference or args.apply or args.build_cache)
    return user_config.resolve_settings(user, overrides, args.mode, names, sweep), set(names)


def run(args, user) -> int:
    """The command of `args`: the settings (but for the three that need none), then the library."""
    if args.list_layers:
        print("\n".join(report.layer_table_lines(args.list_layers, pipeline.layer_table(args.list_layers))))
        return 0
    if args.write_layer_guide:
        print(f"wrote {write_guide()}")
        return 0
    if isinstance(args.report, str):
        print(f"wrote {pipeline.rebuild_report(args.report)}")
        return 0
    for flag, value in (("--out", args.out), ("--generator", args.generator), ("--n", args.n)):
        if value is not None and not args.apply:
            raise UsageError(f"{flag} works with --apply (docs/metric.md); "
                             "give --apply CONFIG REF ... or drop it")
    (cfg, given), progress = settings(args, user), not args.quiet
    if args.cache_info:
        ext = run_plan.Stages.of(cfg).extraction
        entries = pipeline.cache_entries(ext.cache_dir)
        print("\n".join(report.cache_info_lines(entries, ext.cache_dir)))
    elif args.preview_degradations:
        print(f"wrote {pipeline.preview_degradations(cfg)}")
    elif args.save_stats or args.fid_stats:
        print(fid_stats.command(run_plan.Stages.of(cfg).extraction, args.save_stats, args.fid_stats,
                                args.backbone, args.layers, progress))
    elif args.save_reference:
        print(apply_metric.save_command(cfg, args.save_reference, given))
    elif args.apply:
        print("\n".join(apply_metric.command(cfg, args.apply, args.out, given, progress,
                                                args.generator, args.n)))
    elif args.build_cache:
        shard = Shard.parse(args.shard) if args.shard is not None else None
        for b in pipeline.build_caches(cfg, args.layers, shard, progress=progress, given=given):
            log.info("%s", report.cache_build_line(b, shard))
    else:
        if args.shard is not None:
            raise UsageError("--shard works with --build-cache (a sweep needs every file); run "
                             "--build-cache --shard I/N in each process, then the sweep once")
        exp = pipeline.run_experiment(cfg, args.mode, args.layers, user=user, progress=progress,
                                      command=shlex.join(["python", "main.py", *args.argv]), given=given)
        if exp is None:                  # a torchrun rank other than 0: its share is extracted
            return 0
        print(f"{exp.summary}\n\nResults: {exp.out_dir}")
        return 0 if exp.scored else 1
    return 0


def config_flag(argv: list) -> str | None:
    """The FILE of `--config FILE` or `--config=FILE` in `argv` (the parser's defaults come from
    that file, so it is read before the parser is built; the parser then checks every flag)."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config":
            if i + 1 == len(argv):
                raise UsageError("--config needs a FILE: --config path/to/config.py")
            return argv[i + 1]
    return None


def main(argv=None, user: run_plan.UserConfig | None = None, config: str | None = None) -> int:
    """Run the command line `argv` with the tables of `config` (a config.py's path; default:
    user_config.DEFAULT_CONFIG, or --config in `argv`), or with `user`'s."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if user is None:                      # a config.py that does not run: exit 2
            user = run_plan.UserConfig.load(config_flag(argv) or config)
        args = build_parser(user.config, user.modes).parse_args(argv)
        args.argv = argv
        pipeline.setup_logging(args.verbose, args.quiet)
        with sigterm_raises_terminated():
            return run(args, user)
    except BaseException as exc:             # noqa: B036 - mapped to exit codes, else re-raised
        status = exit_status(exc)
        if status is None:
            raise
        if status[1]:
            print(status[1], file=sys.stderr)
        return status[0]

"""Write what a run found: CSV, JSON, monotonicity plots, a heatmap, the summary.

Nothing here computes a result; it only lays out the rows from evaluation.py.
Files carry no timing or host data, so two runs with the same seed give the
same CSV and JSON apart from the timestamp.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np

from featrank.evaluation import BASELINE

RULE = "=" * 80
PNG_FAST = {"compress_level": 1}   # larger files, encoded several times faster
PLOT_DPI = 80                      # 5 degradations x 4.2 in: 1680 px wide, rendered in half the time
# The report's files in a results folder (html_report.py renders report.html from the others)
REPORT_FILE, STRIP_FILE, MAPS_FILE = "report.html", "degradation_strip.png", "feature_maps.json"


def _weights_label(prov: dict) -> str:
    """`prov`: a Provenance's as_dict() (as the results JSON holds it)."""
    if prov.get("source") == "random-init":
        return f"RANDOM-INIT weights (seed {prov['seed']}): not pretrained, not comparable to published scores"
    return prov.get("label", str(prov))


def counts(results) -> dict:
    """How many configurations were scored, not run (a feasibility rule) or failed."""
    out = {"total": len(results), "scored": 0, "not_run": 0, "failed": 0}
    for r in results:
        out[r.status] += 1
    return out


def _cell(v):
    return "" if v is None else (f"{v:.6f}" if isinstance(v, float) else v)


def write_csv(path: str, results, degradations: dict, mos_types=(), pairwise: bool = False) -> None:
    """One row per configuration (evaluation.ConfigResult.csv_row), ranked ones first; with
    `mos_types` (a --mos run) the agreement columns too, and the 2AFC ones for `pairwise`
    judgments."""
    from featrank.configurations import csv_columns
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=csv_columns(degradations, mos_types, pairwise))
        w.writeheader()
        for r in results:
            w.writerow({k: _cell(v) for k, v in r.csv_row(degradations, mos_types).items()})


MOS_GROUP_COLUMNS = ["config", "type", "level", "n_images", "mos", "score", "mos_min", "mos_max",
                     "reason"]
MOS_IMAGE_COLUMNS = ["config", "image", "type", "level", "mos", "score"]


def write_mos_groups(path: str, results, database) -> None:
    """One row per scored configuration x group of the rated database: `config` is the
    configuration's label (the results CSV's `label`), `mos` the group's mean opinion and
    `mos_min`/`mos_max` its range (a MOS bin's bounds), oriented higher = better (negated for a
    database where higher is worse), `score` its set score; a group too small to be scored as a
    set has no score and says why (`reason`). `level` is a bin's position (1 = best) where the
    groups are MOS bins."""
    groups = database.group_rows()
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MOS_GROUP_COLUMNS)
        w.writeheader()
        for r in results:
            if not r.scored or r.mos is None:
                continue
            scores = iter(r.mos["group_scores"])
            for g in groups:
                sign = 1.0 if database.higher_is_better else -1.0
                lo, hi = sorted((sign * g["mos_min"], sign * g["mos_max"]))
                w.writerow({"config": r.label, "type": g["type"], "level": f"{g['level']:g}",
                            "n_images": g["n_images"], "mos": repr(g["mos"]),
                            "score": repr(float(next(scores))) if g["scored"] else "",
                            "mos_min": repr(float(lo)), "mos_max": repr(float(hi)),
                            "reason": g["reason"]})


def write_mos_images(path: str, results, database) -> bool:
    """One row per configuration with a score per image x rated image (every group, scored as
    a set or not): `mos` the image's opinion oriented higher = better (for pairwise judgments
    its Bradley-Terry scale value; empty when the pairs could not be scaled), `score` the
    metric's own value for it. The image-level SRCC of the results CSV is Spearman's rho
    between `score` (negated for a higher-is-better metric) and -`mos`; the 2AFC agreement
    follows from `score` and the pairs. False when no configuration has one."""
    groups = database.all_groups()
    rows = [r for r in results if r.scored and r.image_scores is not None]
    if not rows:
        return False
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MOS_IMAGE_COLUMNS)
        w.writeheader()
        for r in rows:
            for ((t, _), (_, lv), ims), values in zip(groups, r.image_scores):
                for im, m, v in zip(ims, database.oriented(ims), values):
                    w.writerow({"config": r.label, "image": im.image, "type": t, "level": f"{lv:g}",
                                "mos": repr(float(m)) if database.scaled else "", "score": repr(float(v))})
    return True


def write_json(path: str, payload: dict) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, sort_keys=True, default=str)


def _level_label(level) -> str:
    if level is None:
        return "clean"
    if isinstance(level, (list, tuple)):
        return "/".join(f"{v:g}" for v in level)
    return f"{level:g}"


def plot_monotonicity(target, row: dict, position: int) -> None:
    """Score vs level of each degradation, with the bootstrap band, of one results row (its
    JSON record, ConfigResult.fields()), into `target` (a path or a binary file)."""
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False     # labels are plain text ($ included)
    import matplotlib.pyplot as plt
    degs = row["per_degradation"]
    fig, axes = plt.subplots(1, len(degs), figsize=(4.2 * len(degs), 3.8), squeeze=False)
    for ax, (name, d) in zip(axes[0], degs.items()):
        x = np.arange(len(d["scores"]))
        ax.plot(x, d["scores"], "o-", color="C0", label=f"{row['metric']} (rho={d['spearman']:.3f})")
        if d.get("scores_ci"):
            ax.fill_between(x, d["scores_ci"][0], d["scores_ci"][1], color="C0", alpha=0.2,
                            label=f"{row.get('confidence', 0.95):.0%} bootstrap band")
        ax.set_xticks(x, [_level_label(v) for v in d["levels"]], rotation=60, fontsize=7)
        ax.set_xlabel(f"{name} level (mild → severe)")
        ax.set_ylabel(f"{row['metric']} score")
        ax.set_title(name)
        ax.legend(fontsize=7, loc="upper left")
    title = (f"#{position} {row['label']}  mean rho = {row['mean_spearman']:.3f}"
             + (f" [{row['mean_spearman_ci'][0]:.2f}, {row['mean_spearman_ci'][1]:.2f}]"
                if row.get("mean_spearman_ci") else ""))
    if row.get("random_init"):
        title += "  (RANDOM-INIT weights)"
    fig.suptitle(title, fontsize=9)
    # fixed margins: tight_layout would draw the figure twice
    fig.subplots_adjust(left=0.06 / max(1, len(degs) / 3), right=0.99, bottom=0.28, top=0.85, wspace=0.3)
    fig.savefig(target, format="png", dpi=PLOT_DPI, pil_kwargs=PNG_FAST)
    plt.close(fig)


def layer_label(row: dict, with_backbone: bool = True) -> str:
    """A results row's layers as the network names them: module paths (`layer3`, `blocks.5`),
    joined by + (or mean(...) for the mean aggregate), after the backbone."""
    paths = row["module_paths"]
    text = " + ".join(paths) if len(paths) == 1 or row.get("aggregate", "concat") == "concat" \
        else f"mean({', '.join(paths)})"
    return f"{row['backbone']} {text}" if with_backbone else text


def criterion(row: dict, by: str):
    """A scored row's ranking value and whether it is tied with #1: mean rho, or with `by` =
    "mos" the agreement with human judgments (configurations.mos_criterion); None without one."""
    from featrank.configurations import mos_criterion
    if by == "monotonicity":
        return row["mean_spearman"], row.get("tied_with_top")
    return mos_criterion(row["mos"]), row["mos"].get("tied_with_top")


def heatmap_cells(rows: list, by: str = "monotonicity") -> tuple[list, list, dict]:
    """(layers, metrics, {(layer, metric): the winning row}): per layer configuration (named by
    layer_label, in network order) and metric, the scored row with the best criterion over
    transforms and models. Baselines have no layer: they are left out."""
    from featrank.distance_metrics import METRICS
    done = [r for r in rows if r["status"] == "scored" and r["backbone"] != BASELINE
            and criterion(r, by)[0] is not None]
    first = {}
    for r in done:   # layer configurations in network order, metrics in config order
        first.setdefault(layer_label(r), (r["backbone"], str(r["layers"][0]).zfill(4)))
    layers = sorted(first, key=first.get)
    metrics = [m for m in METRICS if any(r["metric"] == m for r in done)]
    best = {}
    for r in done:
        key = (layer_label(r), r["metric"])
        if key not in best or criterion(r, by)[0] > criterion(best[key], by)[0]:
            best[key] = r
    return layers, metrics, best


def plot_heatmap(path: str, rows: list, by: str = "monotonicity") -> bool:
    """The ranking criterion per (layers, metric), the best over transforms and models (mean
    rho, or with `by` = "mos" the SRCC with the MOS) of results rows (JSON records); rows are
    named by module path, each cell by its winning transform and model."""
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False     # labels are plain text ($ included)
    import matplotlib.pyplot as plt
    layers, metrics, best = heatmap_cells(rows, by)
    if not layers:                       # baselines have no layer: they are in the summary
        return False
    grid = np.full((len(layers), len(metrics)), np.nan)
    tied = np.zeros(grid.shape, bool)
    fig, ax = plt.subplots(figsize=(1.9 * len(metrics) + 3, 0.55 * len(layers) + 2))
    for (layer, metric), r in best.items():
        i, j = layers.index(layer), metrics.index(metric)
        value, tie = criterion(r, by)
        grid[i, j], tied[i, j] = value, bool(tie)
        ax.text(j, i, f"{value:.2f}" + ("*" if tie else "") + f"\n{r['transform']}"
                + (f"\n{r['distribution']}" if r["distribution"] else ""), ha="center",
                va="center", fontsize=6, fontweight="bold" if tie else "normal")
        if tie:
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="black"))
    im = ax.imshow(np.ma.masked_invalid(grid), vmin=-1, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(metrics)), metrics, rotation=30)
    ax.set_yticks(range(len(layers)), layers, fontsize=8)
    ax.set_xlabel("metric")
    ax.set_ylabel("layers (module path)")
    what = "mean Spearman rho" if by == "monotonicity" else "SRCC with the MOS"
    ax.set_title(f"{what}, the best over transforms and models (each cell: value, transform, model)"
                 + ("\n* boxed: a configuration statistically tied with #1" if tied.any() else ""),
                 fontsize=9)
    fig.colorbar(im, ax=ax, label="mean rho" if by == "monotonicity" else "SRCC (MOS)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, pil_kwargs=PNG_FAST)
    plt.close(fig)
    return True


def plot_mos_scatter(target, rows: list, rated: dict) -> None:
    """Set score vs group MOS of each results row (JSON records of a --mos run), with the
    fitted VQEG logistic; `rated` is the results JSON's rated_database (its groups in the
    order of the rows' group scores). Into `target`, a path or a binary file."""
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False     # labels are plain text ($ included)
    import matplotlib.pyplot as plt
    from featrank.human_agreement import logistic4
    from featrank.distance_metrics import orientation
    sign = 1.0 if rated["higher_is_better"] else -1.0
    mos = np.array([sign * g["mos"] for g in rated["groups"]])
    kinds = [g["type"] for g in rated["groups"]]
    types = list(dict.fromkeys(kinds))
    fig, axes = plt.subplots(1, len(rows), figsize=(4.4 * len(rows), 4), squeeze=False)
    for k, (ax, r) in enumerate(zip(axes[0], rows), start=1):
        m = r["mos"]
        x = np.asarray(m["group_scores"])
        for j, t in enumerate(types):
            sel = [i for i, kind in enumerate(kinds) if kind == t]
            ax.scatter(x[sel], mos[sel], s=14, color=f"C{j % 10}", label=t if len(types) <= 10 else None)
        if m.get("logistic"):
            xs = np.linspace(x.min(), x.max(), 200)
            o = orientation(r["metric"])        # the logistic was fitted on oriented scores
            ax.plot(xs, logistic4(o * xs, *m["logistic"]), "k-", lw=1, label="4-parameter logistic")
        ax.set_xlabel(f"{r['metric']} score (set)")
        ax.set_ylabel("MOS (higher = better)")
        ax.set_title(f"#{k} {r['label']}\nSRCC {m['srcc']:.3f}  PLCC {m['plcc']:.3f} ({m['plcc_fit']})",
                     fontsize=7)
        if len(types) <= 10:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=PLOT_DPI, pil_kwargs=PNG_FAST)
    plt.close(fig)


def _mos_lines(m: dict, level: str) -> list[str]:
    out = []
    if "agreement_2afc" in m:
        a, ci = m["agreement_2afc"], m.get("agreement_2afc_ci")
        out.append("   2AFC agreement: " + ("- (no score per image)" if a is None else f"{a:.4f}")
                   + (f"  [{level} CI {ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    ci = m.get("srcc_ci")
    if m["srcc"] is not None:
        out.append(f"   Agreement with the MOS: SRCC {m['srcc']:.4f}"
                   + (f"  [{level} CI {ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
                   + f", KRCC {m['krcc']:.4f}, PLCC {m['plcc']:.4f} ({m['plcc_fit']})")
    if m.get("image"):
        out.append(f"   Per image: SRCC {m['image']['srcc']:.4f}, PLCC {m['image']['plcc']:.4f}")
    d = m.get("delta_top_ci")
    if d and m.get("delta_top"):
        what = "2AFC(#1) - 2AFC" if "agreement_2afc" in m else "SRCC(#1) - SRCC"
        out.append(f"   {what}: {m['delta_top']:.4f}  [{d[0]:.4f}, {d[1]:.4f}] "
                   + ("tied with #1" if m["tied_with_top"] else "below #1"))
    return out


def summary(results, top_n: int, weights: dict, by: str = "monotonicity", versus: dict | None = None) -> str:
    """summary.txt: the weights, the top-N blocks, ties with #1, the best feature space against the
    best baseline, and why rows did not run."""
    pairwise = any("agreement_2afc" in (r.mos or {}) for r in results)
    lines = [RULE, "TOP PERFORMING CONFIGURATIONS"
             + ("" if by != "mos" else " (ranked by 2AFC agreement with the pairwise judgments)"
                if pairwise else " (ranked by SRCC with the MOS)"), RULE, ""]
    for backbone, prov in weights.items():
        lines.append(f"Weights ({backbone}): {_weights_label(prov)}")
    lines.append("")
    done = [r.fields() for r in results if r.scored]
    for i, r in enumerate(done[:top_n], start=1):
        lines += _top_lines(i, r)
    lines += _tie_lines(done, by)
    if versus:
        what = ("mean rho" if versus["criterion"] == "monotonicity" else "2AFC agreement" if pairwise
                else "SRCC with the MOS")
        ci = versus["delta_ci"]
        lines.append(f"Best feature space ({versus['feature']}) vs best baseline ({versus['baseline']}): "
                     f"{what} difference {versus['delta']:+.4f}"
                     + (f"  [paired interval {ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""))
        lines.append("")
    c = counts(results)
    lines.append(f"{c['scored']} of {c['total']} configuration(s) scored, {c['not_run']} not run "
                 f"(a feasibility rule at this data size), {c['failed']} failed; reasons in the "
                 "CSV 'reason' column.")
    for status, title in (("not_run", "Not run"), ("failed", "Failed")):
        rules = {}
        for r in results:
            if r.status == status:
                rules.setdefault(r.reason, []).append(r.label)
        for reason, labels in rules.items():
            lines.append(f"   {title} ({len(labels)}): {reason}")
            lines.append(f"      e.g. {labels[0]}")
    if not done:
        lines.append("No configuration could be scored.")
    return "\n".join(lines)


def _top_lines(i: int, r: dict) -> list[str]:
    """The summary's block of the #i configuration (its JSON record `r`)."""
    lines = []
    ci = r.get("mean_spearman_ci")
    level = f"{r['confidence']:.0%}" if r.get("confidence") else "95%"
    lines.append(f"{i}. Mean Monotonicity: {r['mean_spearman']:.4f}"
                 + (f"  [{level} CI {ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    if r.get("mos"):
        lines += _mos_lines(r["mos"], level)
    d = r.get("delta_rho_top_ci")
    if d and i > 1:
        lines.append(f"   rho(#1) - rho: {r['delta_rho_top']:.4f}  [{d[0]:.4f}, {d[1]:.4f}] "
                     + ("tied with #1" if r["tied_with_top"] else "below #1"))
    lines.append(f"   Backbone: {r['backbone']}")
    lines.append(f"   Layers: {r['layer_config']} ({', '.join(r['module_paths'])})")
    lines.append(f"   Transform: {r['transform']}")
    lines.append(f"   Distribution: {r['distribution'] or '- (two-sample metric)'}")
    lines.append(f"   Metric: {r['metric']}")
    lines.append("   Per-degradation scores:")
    for name, d in r["per_degradation"].items():
        ci = d.get("spearman_ci")
        lines.append(f"     - {name}: {d['spearman']:.4f}"
                     + (f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    lines.append("")
    return lines


def _tie_lines(done: list, by: str) -> list[str]:
    """Which of the scored records `done` are tied with #1, as the summary says it."""
    lines = []
    key = (lambda r: r.get("tied_with_top")) if by == "monotonicity" else \
        (lambda r: r["mos"].get("tied_with_top"))
    tied = [i for i, r in enumerate(done, start=1) if key(r)]
    tested = sum(key(r) is not None for r in done)
    if tested > 1:                   # one configuration is tied with itself: nothing to say
        what = ("rho(#1) - rho" if by == "monotonicity" else
                "2AFC(#1) - 2AFC (pairs resampled by reference content)" if "agreement_2afc" in done[0]["mos"]
                else "SRCC(#1) - SRCC (resampled by reference, or within each MOS bin)")
        lines.append(f"Statistically tied with #1 (the paired bootstrap interval of {what} "
                     f"contains 0): {', '.join(f'#{i}' for i in tied)} of the {tested} bootstrapped"
                     + ("; --bootstrap-all tests every configuration"
                        if any(key(r) is None for r in done) else ""))
        lines.append("")
    return lines


def cache_info_lines(rows: list, cache_dir: str) -> list[str]:
    """`--cache-info`: one line per cache entry (feature_cache.cache_info rows) and a total."""
    if not rows:
        return [f"cache {cache_dir!r} is empty"]
    out = []
    for r in rows:
        w = r["weights"]
        if r["kind"] == "baseline":
            out.append(f"{r['backbone']:<14} {r['layer']:<18} {r['entry']:<22} {r['module_path']:<38} "
                       f"{r['files']:>4} files {r['bytes'] / 2**20:>9.1f} MiB  complete")
            continue
        out.append(f"{r['backbone']:<14} {r['layer']:<18} {r['entry']:<22} {r['module_path']:<38} "
                   f"{r['files']:>4} files {r['bytes'] / 2**20:>9.1f} MiB  "
                   f"{'complete' if r['complete'] else 'partial '}  "
                   f"weights={w.get('source', '?')}:{w.get('sha256', w.get('seed', ''))!s:.12}")
    total = sum(r["bytes"] for r in rows)
    out.append(f"total {total / 2**20:.1f} MiB in {len(rows)} entries under {cache_dir}")
    return out


def layer_table_lines(name: str, table) -> list[str]:
    """`--list-layers NAME`: the spec's preprocessing, then one line per layer (index, module
    path, kind, output shape, level) of a pipeline.LayerTable; for a library model, every
    extractable module with no index or level."""
    s = table.spec
    lines = [f"{name}: {s.architecture} ({s.library}), input {s.input_size}x{s.input_size} "
             f"{s.interpolation}{'' if s.antialias else ' (no antialias)'}, mean {tuple(s.mean)}, "
             f"std {tuple(s.std)}; pretrained: {s.weights_id}" + (f"\n({s.notes})" if s.notes else "")]
    if table.registry:
        lines += [f"recommended {list(s.recommended)}",
                  f"{'idx':>3}  {'module path':<40} {'kind':<20} {'output':<16} level"]
    else:
        lines.append(f"{len(table.rows)} extractable modules (ReLU, pooling, dropout and reshapes "
                     "left out); pass module paths to --layers")
    for index, path, kind, shape, level in table.rows:
        shape = "x".join(map(str, shape))
        lines.append(f"{index:>3}  {path:<40} {kind:<20} {shape:<16} {level}" if table.registry
                     else f"  {path:<48} {kind:<22} {shape}")
    return lines


def cache_build_line(build, shard=None) -> str:
    """`--build-cache`: what one pipeline.CacheBuild left in the cache."""
    layers = " ".join(str(i if i is not None else p) for i, p in build.layers)
    if build.missing:
        return (f"shard {shard} of {build.backbone} layers {layers} done ({build.extracted} file(s) "
                f"extracted); {build.missing} file(s) are other shards' and still missing in "
                f"{build.cache_dir}")
    return f"cache ready for {build.backbone} layers {layers} in {build.cache_dir} (weights: {build.weights})"


def write_run(out_dir: str, base: str, ranked: list, head: dict, degradations: dict, dataset: str,
              top_n: int, database=None, reference=(), evaluation=()) -> tuple[dict, str]:
    """Every file of a finished run in out_dir: `base`.csv and `base`.json (the JSON opens with
    `head`: mode, timestamp, weights, rank_by, config, as recorded), summary.txt, the `top_n`
    monotonicity plots, the heatmap, and with a rated `database` mos_groups.csv and the MOS
    scatter. `degradations` are the run's (in its order), `dataset` its image source. Returns
    (the files by kind, the summary text, the results' JSON records)."""
    by = head["rank_by"]
    files = {"csv": os.path.join(out_dir, base + ".csv"), "json": os.path.join(out_dir, base + ".json"),
             "summary": os.path.join(out_dir, "summary.txt")}
    write_csv(files["csv"], ranked, degradations, database.types if database is not None else (),
              database is not None and database.pairwise)
    rated = None
    if database is not None:
        files["mos_groups"] = os.path.join(out_dir, "mos_groups.csv")
        write_mos_groups(files["mos_groups"], ranked, database)
        if write_mos_images(os.path.join(out_dir, "mos_images.csv"), ranked, database):
            files["mos_images"] = os.path.join(out_dir, "mos_images.csv")
        every = database.group_rows()
        rated = {"path": database.path, "format": database.format, "kind": database.kind,
                 "higher_is_better": database.higher_is_better, "binned": list(database.binned),
                 "excluded_equal_to_a_reference": database.excluded,
                 # the scored groups in group_keys order (the rows' group_scores), mos as written
                 "groups": [{"type": t, "level": lv, "n_images": len(database.groups[(t, lv)]),
                             "mos": float(np.mean([im.score for im in database.groups[(t, lv)]]))}
                            for t in database.types for lv in database.levels(t)],
                 "not_scored": [g for g in every if not g["scored"]]}
        if database.pairwise:
            rated.update(pairs=len(database.judgments), scaled=database.scaled)
    rows = [r.fields() for r in ranked]
    write_json(files["json"], {"mode": head["mode"], "timestamp": head["timestamp"],
                               "weights": head["weights"], "rank_by": by, "rated_database": rated,
                               "dataset": {"source": dataset, "reference": list(reference),
                                           "evaluation": list(evaluation)},
                               "counts": counts(ranked), "versus_baseline": head.get("versus_baseline"),
                               "command": head.get("command"), "versions": library_versions(),
                               # the JSON's keys are sorted: the run's order of the degradations
                               "degradation_order": list(degradations),
                               "config": head["config"], "results": rows})
    done = [r for r in rows if r["status"] == "scored"]
    for k, r in enumerate(done[:top_n], start=1):
        plot_monotonicity(os.path.join(out_dir, f"monotonicity_top{k}.png"), r, k)
    plot_heatmap(os.path.join(out_dir, "heatmap_mean_rho.png"), rows, by)
    if rated is not None and done and database.scaled:
        plot_mos_scatter(os.path.join(out_dir, "mos_scatter.png"), done[:min(3, top_n)], rated)
    text = summary(ranked, top_n, head["weights"], by, head.get("versus_baseline"))
    with open(files["summary"], "w") as f:
        f.write(text + "\n")
    return files, text, rows


VERSIONED = ("numpy", "scipy", "torch", "torchvision", "timm", "scikit-learn", "matplotlib")


def library_versions() -> dict:
    """The versions of Python and the libraries the numbers depend on, for the results JSON
    (None: not installed)."""
    import platform
    from featrank.feature_cache import library_versions as installed
    return {"python": platform.python_version(), **installed(VERSIONED)}


def results_json(folder: str) -> str | None:
    """The results JSON a run wrote in `folder` (results_<mode>_<stamp>.json; the newest if
    several), or None."""
    found = sorted(n for n in os.listdir(folder) if n.startswith("results_") and n.endswith(".json"))
    return os.path.join(folder, found[-1]) if found else None

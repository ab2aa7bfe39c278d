"""report.html: a finished run in one self-contained page, drawn from the files the run wrote.

The page answers the run's question in one place: the header (question, data, weights, library
versions, command line), the ranking table (sortable and filterable, intervals, Δ to #1, ties,
the reasons rows did not run), a heatmap of layers (by module path) against metrics naming
the transform and model that won each cell, the top configurations' score-against-level curves
with their bootstrap bands and per-degradation ρ, the degradation strip, the t-SNE maps of the
top three feature spaces (feature_maps.py) and, for a --mos run, score against MOS.

Everything is inline (CSS, JavaScript, PNG figures as data: URIs): no network, no CDN; the file
opens from a laptop with the folder copied off the cluster. It is rendered from the results
JSON, feature_maps.json and degradation_strip.png only, so `python main.py --report DIR`
rebuilds the very bytes the run wrote, apart from the generation time.
"""
from __future__ import annotations

import base64
import datetime
import io
import json
import os

import numpy as np

from featrank.errors import UsageError
from featrank.report import (BASELINE, MAPS_FILE, REPORT_FILE, STRIP_FILE, criterion, heatmap_cells,
                    layer_label, plot_monotonicity, plot_mos_scatter, results_json)
from featrank.run_plan import recorded_stages

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates", "report.html")
FILTERS = (("backbone", "backbone"), ("layers", "layer"), ("transform", "transform"),
           ("model", "model"), ("metric", "metric"), ("status", "status"))


def load_results(out_dir: str) -> tuple[str, dict]:
    """(path, content) of the results JSON in `out_dir`, a results folder a run wrote."""
    if not os.path.isdir(out_dir):
        raise UsageError(f"--report {out_dir!r} is not a folder; give a results folder a run wrote "
                         "(results/medium_<timestamp>)")
    path = results_json(out_dir)
    if path is None:
        raise UsageError(f"--report {out_dir!r} holds no results_*.json; give a results folder a "
                         "finished run wrote (results/medium_<timestamp>)")
    try:
        with open(path) as f:
            results = json.load(f)
        results["results"], results["config"]      # noqa: B018 - the two keys a report needs
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path!r} is not a results JSON of this tool ({exc}); rerun the "
                         "experiment to write it again") from None
    return path, results


def _png(draw) -> str:
    """base64 of the PNG that `draw(file)` writes."""
    buf = io.BytesIO()
    draw(buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _file_b64(path: str) -> str | None:
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode("ascii")


def _colour(value) -> str:
    """A background for a correlation in [-1, 1] (matplotlib's RdYlGn, lightened)."""
    if value is None or not np.isfinite(value):
        return "#f0f0f0"
    from matplotlib import colormaps
    r, g, b, _ = colormaps["RdYlGn"]((float(value) + 1) / 2)
    return "#%02x%02x%02x" % tuple(int(round(255 * (0.45 + 0.55 * c))) for c in (r, g, b))


def _num(v, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _interval(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _cell(text: str, v="", cls: str = "", star: bool = False) -> dict:
    """A table cell: `text` is plain text (the template escapes every value), `v` its sort key,
    `star` draws the tie mark."""
    return {"text": text, "v": "" if v is None else v, "cls": cls, "star": star}


def _columns(degradations: list, has_mos: bool, by: str) -> list[dict]:
    cols = [("rank", "", "rank by " + by), ("configuration", "t", "the CSV's label"),
            ("backbone", "t", ""), ("layers", "t", "module paths"), ("transform", "t", ""),
            ("model", "t", "distribution model (two-sample metrics have none)"), ("metric", "t", ""),
            ("mean ρ", "", "mean Spearman rho over degradations"),
            ("ρ interval", "", "bootstrap interval of the mean rho"),
            ("Δρ to #1", "", "rho(#1) - rho, with its paired bootstrap interval"),
            ("tied", "", "statistically tied with #1")]
    cols += [(f"ρ {d}", "", f"Spearman rho on {d}") for d in degradations]
    if has_mos:
        cols += [("SRCC", "", "set-level SRCC with the MOS"), ("SRCC interval", "", ""),
                 ("ΔSRCC to #1", "", "SRCC(#1) - SRCC, paired bootstrap interval"),
                 ("tied (MOS)", "", "tied with #1 by SRCC"), ("KRCC", "", ""), ("PLCC", "", "")]
    cols += [("status", "t", ""), ("reason", "t", "why a row did not run")]
    return [{"title": t, "cls": c, "help": h} for t, c, h in cols]


def _table_row(r: dict, degradations: list, has_mos: bool, by: str) -> dict:
    scored = r["status"] == "scored"
    tied = criterion(r, by)[1] if scored and (by == "monotonicity" or r.get("mos")) else None
    layers = "pixels" if r["backbone"] == BASELINE else layer_label(r, with_backbone=False)
    model = r["distribution"] or "—"
    def star(t):
        return _cell("", "" if t is None else int(bool(t)), star=bool(t))
    cells = [_cell(str(r["rank"] or ""), r["rank"]), _cell(str(r["label"]), r["label"], "t"),
             _cell(str(r["backbone"]), r["backbone"], "t"), _cell(layers, layers, "t"),
             _cell(str(r["transform"]), r["transform"], "t"), _cell(str(model), model, "t"),
             _cell(str(r["metric"]), r["metric"], "t"),
             _cell(_num(r["mean_spearman"]), r["mean_spearman"]),
             _cell(_interval(r.get("mean_spearman_ci")),
                   (r.get("mean_spearman_ci") or [None])[0]),
             _cell((_num(r.get("delta_rho_top")) + " " + _interval(r.get("delta_rho_top_ci"))).strip(),
                   r.get("delta_rho_top")),
             star(r.get("tied_with_top"))]
    for d in degradations:
        rho = (r["per_degradation"].get(d) or {}).get("spearman")
        cells.append(_cell(_num(rho, 3), rho))
    if has_mos:
        m = r.get("mos") or {}
        cells += [_cell(_num(m.get("srcc")), m.get("srcc")),
                  _cell(_interval(m.get("srcc_ci")), (m.get("srcc_ci") or [None])[0]),
                  _cell((_num(m.get("delta_top")) + " " + _interval(m.get("delta_top_ci"))).strip(),
                        m.get("delta_top")),
                  star(m.get("tied_with_top")), _cell(_num(m.get("krcc")), m.get("krcc")),
                  _cell(_num(m.get("plcc")), m.get("plcc"))]
    status = str(r["status"]).replace("_", " ")
    cells += [_cell(status, r["status"], "t"),
              _cell(str(r.get("reason") or ""), r.get("reason") or "", "t reason")]
    attrs = [("backbone", r["backbone"]), ("layer", layers), ("transform", r["transform"]),
             ("model", model), ("metric", r["metric"]), ("status", status)]
    return {"cls": ("scored" if scored else "not_run" if r["status"] == "not_run" else "failed")
            + (" tied" if tied else ""), "attrs": attrs, "cells": cells}


def _heatmap(rows: list, by: str) -> dict:
    layers, metrics, best = heatmap_cells(rows, by)
    out = []
    for layer in layers:
        cells = []
        for m in metrics:
            r = best.get((layer, m))
            if r is None:
                cells.append(None)
                continue
            value, tied = criterion(r, by)
            cells.append({"value": _num(value, 3), "colour": _colour(value), "tied": bool(tied),
                          "transform": r["transform"], "model": r["distribution"] or "no model",
                          "label": r["label"]})
        out.append((layer, cells))
    return {"layers": layers, "metrics": metrics, "rows": out}


def _header(results: dict, json_path: str) -> tuple[dict, list]:
    d = recorded_stages(results).data
    rows = results["results"]
    n_ref = next((r["n_reference"] for r in rows if r.get("n_reference")), len(results["dataset"]["reference"]))
    n_eval = next((r["n_evaluation"] for r in rows if r.get("n_evaluation")), len(results["dataset"]["evaluation"]))
    rated = results.get("rated_database")
    data = (f"rated database {rated['path']} ({rated['format']}, {len(rated['groups'])} groups)"
            if rated else f"{results['dataset']['source']}")
    weights = [(b, p.get("label", str(p)) if p.get("source") != "random-init"
                else f"random-init (seed {p.get('seed')})") for b, p in results["weights"].items()]
    banners = [f"RANDOM-INIT weights for {b} (seed {p.get('seed')}): no pretrained weights were found, "
               "so these numbers say nothing about the pretrained network and are not comparable to "
               "published scores." for b, p in results["weights"].items() if p.get("source") == "random-init"]
    c = results["counts"]
    versus = results.get("versus_baseline")
    versions = results.get("versions") or {}
    images = f"{n_ref} reference, {n_eval} evaluation (disjoint)"
    if rated:
        n_rated = sum(g.get("n_images", 0) for g in rated.get("groups", []) + rated.get("not_scored", []))
        images = (f"{n_ref} reference, {n_rated} rated ({rated.get('kind', 'full-reference')}"
                  + (f"; {rated['excluded_equal_to_a_reference']} equal to a reference left out"
                     if rated.get("excluded_equal_to_a_reference") else "") + ")")
    head = {"mode": results["mode"], "timestamp": results["timestamp"], "data": data,
            "images": images, "seed": d.seed,
            "degradations": "; ".join(f"{name} ({spec['type']}, {len(spec['levels'])} levels)"
                                      for name, spec in d.degradations.items()),
            "weights": weights,
            "counts": f"{c['total']}: {c['scored']} scored, {c['not_run']} not run, {c['failed']} failed",
            "versus": (f"best feature space {versus['feature']} minus best baseline {versus['baseline']}: "
                       f"{versus['delta']:+.4f} {_interval(versus.get('delta_ci'))}") if versus else "",
            "versions": ", ".join(f"{k} {v or 'not installed'}" for k, v in versions.items())
                        or "not recorded",
            "command": results.get("command") or "not recorded",
            "json": os.path.basename(json_path)}
    return head, banners


def _top(out_dir: str, rows: list, n: int, degradations: list) -> list[dict]:
    """The top-n rows' rho matrix and curves: the run's monotonicity_top<k>.png (the same
    function drew them from the same rows), drawn again when missing."""
    out = []
    for k, r in enumerate([r for r in rows if r["status"] == "scored"][:n], start=1):
        rho = []
        for d in degradations:
            pd = r["per_degradation"].get(d)
            if pd is None:
                rho.append({"text": "", "colour": "#fff"})
                continue
            rho.append({"text": f"{pd['spearman']:.3f} {_interval(pd.get('spearman_ci'))}".strip(),
                        "colour": _colour(pd["spearman"])})
        png = _file_b64(os.path.join(out_dir, f"monotonicity_top{k}.png"))
        out.append({"position": k, "label": r["label"], "rho": rho,
                    "png": png or _png(lambda f, r=r, k=k: plot_monotonicity(f, r, k))})
    return out


def plot_map(target, m: dict, levels_name: str) -> None:
    """One t-SNE map (an entry of feature_maps.json): the reference rows in grey, the clean set
    in black, each level of the degradation in a colour from light to dark."""
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False     # labels are plain text ($ included)
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    levels = [s for s in m["sets"] if s["position"]]
    cmap = plt.get_cmap("plasma")
    for s in m["sets"]:
        xy = np.asarray(s["xy"]).reshape(-1, 2)
        if s["position"] is None:
            kw = {"color": "#b0b0b0", "s": 7, "marker": "o"}
        elif s["position"] == 0:
            kw = {"color": "black", "s": 14, "marker": "x"}
        else:
            kw = {"color": cmap(0.85 * (s["position"] - 1) / max(1, len(levels) - 1)), "s": 10, "marker": "o"}
        ax.scatter(xy[:, 0], xy[:, 1], label=s["name"], linewidths=0.8, **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"#{m['rank']} {m['label']}\n{levels_name}: {m['degradation']}", fontsize=7)
    ax.legend(fontsize=5, markerscale=0.8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.subplots_adjust(left=0.02, right=0.72, bottom=0.03, top=0.9)
    fig.savefig(target, format="png", dpi=90)
    plt.close(fig)


def _maps(out_dir: str, rated: bool) -> tuple[list, str, str]:
    path = os.path.join(out_dir, MAPS_FILE)
    if not os.path.isfile(path):
        return [], "", (f"No {MAPS_FILE} in this folder (the run had the report off). "
                        f"`python main.py --report {out_dir}` computes it from the cache.")
    with open(path) as f:
        saved = json.load(f)
    s = saved["settings"]
    caption = (f"Each map is a 2-D t-SNE ({s['library']}, {s['method']}, perplexity {s['perplexity']:g} "
               f"or (n - 1)/3 if smaller, {s['max_iter']} iterations, PCA initialisation, seed {s['seed']}) "
               f"of one configuration's own features (before any distribution model): up to "
               f"{s['max_reference']} reference rows (grey, drawn with the seed), the clean evaluation "
               f"set (black crosses) and every level of one degradation (light to dark). Rows are first "
               f"projected on the reference rows' first {s['pca_dim']} principal components, computed "
               "from their linear kernel (for Gram spaces held as kernel blocks: the span coordinates).")
    what = "distortion type" if rated else "degradation"
    maps = []
    for m in saved["maps"]:
        if "missing" in m:
            maps.append({**m, "png": None})
            continue
        n = sum(len(x["xy"]) for x in m["sets"])
        maps.append({**m, "png": _png(lambda f, m=m: plot_map(f, m, what)),
                     "caption": f"{n} points, {m['dims']} PCA dims of a space held as "
                                f"{'kernel blocks' if m['form'] == 'kernel' else 'explicit rows'}"
                                f" ({m['n_reference']} reference rows in the fit)."})
    return maps, caption, ""


def render(out_dir: str, generated: str | None = None) -> str:
    """The report of the finished run in `out_dir` as HTML text."""
    import jinja2
    json_path, results = load_results(out_dir)
    rows, ranking = results["results"], recorded_stages(results).ranking
    by = results.get("rank_by", "monotonicity")
    seen = {d for r in rows for d in r.get("per_degradation") or {}}      # in the run's order
    degradations = [d for d in results.get("degradation_order") or sorted(seen) if d in seen]
    rated = results.get("rated_database")
    has_mos = rated is not None
    confidence = f"{ranking.confidence:.0%}"
    strip = _file_b64(os.path.join(out_dir, STRIP_FILE))
    maps, maps_caption, maps_missing = _maps(out_dir, has_mos)
    head, banners = _header(results, json_path)
    columns = _columns(degradations, has_mos, by)
    table = [_table_row(r, degradations, has_mos, by) for r in rows]
    filters = []
    for title, key in FILTERS:
        values = sorted({dict(t["attrs"])[key] for t in table})
        filters.append({"title": title, "key": key, "options": values})
    scored = [r for r in rows if r["status"] == "scored"]
    mos_rows = [r for r in scored if r.get("mos") and r["mos"]["srcc"] is not None][:min(3, ranking.top_n)]
    pairwise = any("agreement_2afc" in (r.get("mos") or {}) for r in scored)   # mos_scatter.png's rows
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.dirname(TEMPLATE)),
                             autoescape=jinja2.select_autoescape(["html"]), keep_trailing_newline=True)
    return env.get_template(os.path.basename(TEMPLATE)).render(
        title=f"Which feature space follows image quality? {results['mode']} run {results['timestamp']}",
        criterion_text=("agreement with the pairwise human judgments (2AFC agreement)" if by == "mos" and pairwise
                        else "agreement with the human opinion scores (set-level SRCC)" if by == "mos"
                        else "monotonicity: the Spearman ρ between severity and score, averaged over degradations"),
        criterion_short=("2AFC agreement" if pairwise else "SRCC with the MOS") if by == "mos" else "mean ρ",
        delta_text=("2AFC(#1) − 2AFC" if pairwise else "SRCC(#1) − SRCC") if by == "mos" else "ρ(#1) − ρ",
        banners=banners, head=head, generated=generated or datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        has_mos=has_mos, filters=filters, columns=columns, rows=table, heat=_heatmap(rows, by),
        top=_top(out_dir, rows, ranking.top_n, degradations), degradation_names=degradations,
        confidence=confidence, strip=strip,
        strip_caption=("Each distortion type of the rated database on its first reference, at every "
                       "level" if has_mos else "Every degradation of the run at every level, on the "
                       "first evaluation image, as the backbones saw it (before their resize)"),
        strip_missing=f"No {STRIP_FILE} in this folder.", maps=maps, maps_caption=maps_caption,
        maps_missing=maps_missing,
        mos_png=(_file_b64(os.path.join(out_dir, "mos_scatter.png"))
                 or _png(lambda f: plot_mos_scatter(f, mos_rows, rated))) if has_mos and mos_rows else None,
        mos_caption="The set score of the top configurations against each group's mean opinion score "
                    "(higher = better), with the fitted 4-parameter logistic (VQEG).")


def write_report(out_dir: str, generated: str | None = None) -> str:
    """Write report.html into out_dir (atomically) and return its path."""
    text = render(out_dir, generated)
    path = os.path.join(out_dir, REPORT_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


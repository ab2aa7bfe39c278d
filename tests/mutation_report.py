"""docs/mutation.md from mutmut's results: the kill rate per module and every survivor with the
reason it is left, by the kind of change (read from `mutmut show`), plus reasons written by
hand for mutants checked one by one (REVIEWED below).
    .venv/bin/python tests/mutation_report.py > docs/mutation.md      (after bash tests/mutation.sh)
"""
import collections
import fnmatch
import re
import subprocess
import sys

MUTMUT = [sys.executable, "-m", "mutmut"]

# the last round's functions where numbers and orders are decided (tests/mutation.sh --new)
NEW_GLOBS = [
    # downloads: the total bound, the length, content-type and checkpoint checks (issue #45)
    "featrank.weight_sources.x_download_file*",
    "featrank.weight_sources.x_read_state_dict*",
    # rated sets: MOS bins and their tie-break, the unified CSV, files inside the database
    "featrank.rated_design.x_quantile_bins*",
    "featrank.rated_design.x__check_bins*",
    "featrank.rated_database.x__unified*",
    "featrank.rated_database.x__inside*",
    # pairwise judgments (issue #44)
    "featrank.rated_database.x__votes*",
    "featrank.rated_database.x__merge*",
    "featrank.human_agreement.x_agreement_2afc*",
    "featrank.human_agreement.x_pair_resamples*",
    "featrank.human_agreement.x_comparison_components*",
    # the realism score, Wang's SSIM, the sweep's schedule
    "featrank.neighbour_metrics.x_realism_scores*",
    "featrank.pixel_metrics.x_ssim*",
    "featrank.pixel_metrics.x__ssim_cs*",
    "featrank.sweep.x_schedule*",
]

# mutants read one by one: (function pattern, pattern of the mutated line) -> why they survive
REVIEWED = {
    (r"SpanCoordinatesǁ_query|KernelPCAǁtransform", r"mean"): (
        "equivalent: a constant added to every entry of a centred kernel row is annihilated "
        "by the projection (the eigenvectors of a centred kernel are orthogonal to 1)"),
    (r"KernelPCAǁ__init__|SpanCoordinatesǁ__init__|x__centring", r"mean"): (
        "equivalent below the rank: a constant matrix added to the centred kernel only moves the "
        "eigenvalue of the vector 1, which is not among the top components; row and column means "
        "of a symmetric kernel are equal"),
    (r"_top_right_singular", r"n > d|full_matrices"): (
        "equivalent: n == d takes either exact route; full SVD matrices are sliced to k rows"),
    (r"x_gram_rows|_Imagesǁ|x__ranges|gram_kernel_blocks",
     r"2\*\*31|2 \* 31|3\*\*31|2\*\*32|_ranges\(|\.to\(|chunk|budget|step|, 1[0-9]\)|, 17\)"): (
        "memory or batching parameter (budget, chunk size, device of a CPU index tensor): the "
        "numbers are the same, only the working set changes"),
    (r"gram_route_costs|choose_gram_route|gram_block_size|gram_pairs", r"."): (
        "cost model: decides which exact route runs (both give the same kernel, tested), not a number"),
    (r"x_load_fid_stats", r"allow_pickle|astype"): (
        "allow_pickle / dtype of a float64 .npz: equivalent on the files save_fid_stats and "
        "pytorch-fid write"),
    (r"_kid_subsets|KIDReferenceǁscore_prepared", r"min\(|replace=None|shape\[1\]"): (
        "equal set sizes in the subset tests (torch-fidelity's convention draws min(n1, n2, size) "
        "rows, which the peer comparison requires equal); replace=None is falsy, as replace=False"),
    (r"x__spearman_rows|human_agreement\.x_spearman_rows", r"mean\(axis=None|mean\(keepdims|denom > 1|errstate"): (
        "equivalent: every row's ranks have the same mean; with 3 or more columns a non-constant "
        "row has denominator > 1 (two columns: tested)"),
    (r"gaussian_stats|GaussianModelǁ__init__", r"rowvar=None|ddof=None|np\.cov\(x, rowvar=False, \)"): (
        "equivalent: np.cov's rowvar=None is falsy and ddof=None means ddof=1"),
    (r"_singular_tol", r"initial=|max\(n, d\)|, 0\.0\)|, 1\.0\)"): (
        "rank threshold variants: eigenvalues of a covariance are >= -rounding, so the floor and "
        "the initial value do not change which are counted"),
    (r"x_validate_model|x_validate_metric_params|x__positive|x__number", r"."): (
        "configuration validation, not a number: tests/test_bad_input.py checks each bad value "
        "(outside this run's test selection, which is the numeric tests)"),
    (r"representations\.x_representation__", r"."): (
        "dead code: representations.representation had no caller; removed after this run"),
    (r"SpanCoordinatesǁquery", r"_last"): (
        "memo of the last query: a miss recomputes the same numbers"),
    (r"rated_(database|design)\.x_quantile_bins", r"sign = (2\.0|1\.0) if higher_is_better else -?(1|2)\.0"): (
        "equivalent: only the order of sign * score sorts the rows; a factor 2 keeps it"),
    (r"kadid10k\.x_impulse_noise", r"<= density|p > density"): (
        "equivalent with probability 1: a uniform draw equals d/2 or d with probability 0"),
    (r"rated_(database|design)\.x__check_bins", r"n_images <= bins"): (
        "equivalent but for the message: n == bins makes bins of one image, which the caller "
        "then refuses (fewer than 3 images per set)"),
    (r"human_agreement\.x_fit_logistic", r"_constant\(None\) or _constant\(y\)"): (
        "equivalent in outcome: on a constant score curve_fit starts from b4 = std/4 = 0 and "
        "fails, so the function still returns None (tested)"),
    (r"human_agreement\.x_fit_logistic", r"isfinite\(params\)\) and not"): (
        "equivalent on every input we could build: finite parameters give finite values of "
        "logistic4 on finite scores (exp overflows to inf, 1 / (1 + inf) = 0)"),
    (r"human_agreement\.x_plcc", r"params\[0\] - params\[1\]\) \* params\[3\] < 0|params\[3\] <= 0"): (
        "equivalent: a / b and a * b have the same sign; the ratio is 0 only when b1 == b2, "
        "where the fitted curve is constant and the linear fallback is taken first"),
    (r"human_agreement\.x_bootstrap_srcc", r"or True else np\.nan"): (
        "equivalent: the mean of a group a resample emptied is NaN either way (numpy's mean of an "
        "empty array, with a RuntimeWarning the code avoids)"),
    (r"rated_database\.x__(full|no)_reference", r"_duplicates\(None|_records\(None|RatedDatabase\(None"): (
        "the ratings file's path, used in error messages and kept as the database's name: "
        "tests/test_rated_database.py checks the messages name the file, on paths through "
        "other functions; no number depends on it"),
    (r"rated_database\.x__full_reference", r"by_group\[\(t, float\("): (
        "killed by tests/test_rated_sets.py::test_a_unified_type_without_levels_is_binned_and_says_so "
        "(a whole pipeline run, outside this run's test selection)"),
    (r"rated_database\.x_header_names", r"next\(csv\.reader\(\[line\]\), None\)"): (
        "equivalent: a one-line csv.reader always yields a row, so the default is never used"),
    (r"baselines\.x_value_key", r"\"(XX[a-z_]+XX|[A-Z_]+)\": "): (
        "a field's name in the cache key (a renamed field would orphan every stored value): "
        "written after this run and not yet rerun, tests/test_field_metrics.py::"
        "test_baseline_values_are_cached_and_a_bad_file_is_recomputed writes the key out field by "
        "field through cache_key, which fails on each of these"),
    (r"human_agreement\.x_interval", r"float\(None\)|float\(\"XXnanXX\"\)"): (
        "the interval of resamples with no finite value: written after this run and not yet "
        "rerun, tests/test_human_agreement.py::"
        "test_an_interval_of_no_finite_resample_is_nan_and_otherwise_numpys_percentiles "
        "(a TypeError or ValueError under these mutants)"),
    (r"human_agreement\.x_cluster_indices", r"rng\.integers\(n_references, size"): (
        "equivalent: Generator.integers(n) is integers(0, n), the same draws from the same stream"),
    (r"human_agreement\.x_interval", r"float\(\"NAN\"\)"): (
        "equivalent: float('NAN') is NaN"),
    (r"human_agreement\.x_comparison_components", r"directed=(True|None)|> 0\), \)"): (
        "equivalent: connected_components' directed=True takes connection='weak' by default, which "
        "is the undirected graph's components; directed=None is falsy"),
    (r"sweep\.x_schedule", r"XXmodelXX|MODEL|XXgeometryXX|GEOMETRY|XXmetricXX|METRIC"): (
        "equivalent: the tag of a unit's key only keeps model, distance and metric keys apart; "
        "any other spelling keeps them apart too"),
    (r"sweep\.x_schedule", r"jobs >= 1"): (
        "equivalent: with one job k = min(1, units) = 1 either way"),
    (r"weight_sources\.x_download_file", r"headers\.get\(\"(content-length|content-type|CONTENT-LENGTH|CONTENT-TYPE)\"\)"): (
        "equivalent: HTTP header names are case-insensitive (http.client's message)"),
    (r"weight_sources\.x_download_file", r"read1\("): (
        "the size of one read: the same bytes in other chunks (the file of several reads is tested)"),
    (r"weight_sources\.x_download_file", r"monotonic\(\) >= deadline"): (
        "equivalent with probability 1: the clock equals the deadline at one instant"),
    (r"weight_sources\.x_download_file", r"suppress\(None\)"): (
        "the clean-up of a failed download: suppress(None) suppresses nothing, and removing the "
        "partial file and the folders this download made does not fail in any test"),
    (r"weight_sources\.x_read_state_dict", r"simplefilter"): (
        "a warning filter: what is printed, not what is read"),
    (r"weight_sources\.x_read_state_dict", r"map_location=None|weights_only=None|torch\.load\(path, (weights_only=True|map_location=\"cpu\", )\)"): (
        "equivalent here: weights_only is True by default since torch 2.6 (None means the default) "
        "and a checkpoint saved from the CPU loads there without map_location; weights_only=False "
        "is killed (a pickle of code is refused, tested)"),
    (r"pixel_metrics\.x_ssim", r"shape\[\+2:\]"): (
        "equivalent: the luminance is (n, 1, H, W), whose shape[2:] is shape[-2:]"),
    (r"pixel_metrics\.x_ssim", r"<= SSIM_WIN"): (
        "an image of exactly one window: written after this run and not yet rerun, "
        "tests/test_field_metrics.py::test_ssim_takes_images_of_one_window_and_refuses_smaller_ones "
        "scores 11-px images"),
    (r"neighbour_metrics\.x_realism_scores", r"."): (
        "the realism score of each row: written after this run and not yet rerun, "
        "tests/test_field_metrics.py::test_the_realism_score_of_each_row_by_hand (no test of the "
        "selection called the function itself; RealismReference, which it wraps, was tested)"),
    (r"rated_database\.x__inside", r"_exists\((None, line|path, None|path, line, full, None)"): (
        "the file, line and noun named in the message of a missing image: a message, no number "
        "(tests/test_rated_database.py checks these messages through the formats' readers)"),
    (r"rated_database\.x__unified", r"(0\.0 if \(lv is None\) and False|1\.0 if lv is None)"): (
        "equivalent: the level of an image whose name carries none is a placeholder; its type is "
        "binned and the bins replace it (tested: test_a_unified_type_without_levels_is_binned_alone…)"),
    (r"rated_database\.xǁRatedDatabaseǁratings", r"complete=None"): (
        "equivalent: None and False are both falsy where `complete` is read"),
}

KINDS = [
    ("message", "text of an error or log message (no number depends on it)"),
    ("default", "a default argument every caller passes explicitly, or an argument equal to its default"),
    ("dtype", "float64 conversion of arrays that are float64 already on every path"),
    ("tolerance", "variant of a numerical-zero threshold (1e-12 relative): differs only on "
                  "degenerate inputs within rounding of the threshold"),
]


def run(*args):
    return subprocess.run(MUTMUT + list(args), capture_output=True, text=True).stdout


def strip_strings(line):
    return re.sub(r"[rbfu]*(\"[^\"]*\"|'[^']*')", "S", line)


def kind_of(name, diff):
    minus = [l[1:] for l in diff if l.startswith("-") and not l.startswith("---")]
    plus = [l[1:] for l in diff if l.startswith("+") and not l.startswith("+++")]
    for (pattern, line), reason in REVIEWED.items():
        if re.search(pattern, name) and all(re.search(line, l) for l in plus or [""]):
            return "reviewed", reason
    if [strip_strings(l) for l in minus] == [strip_strings(l) for l in plus] or \
            any(re.search(r"(Error|warning|info|debug)\(None\)", l) for l in plus) or \
            all(re.search(r"raise |log\.|f\"|\"", l) for l in minus):
        return "message", None
    if any(l.lstrip().startswith("def ") or re.search(r"=.*\)\s*(->[^:]*)?:\s*$", l) for l in minus) \
            or any(re.search(r", \)|\(\w+, \)", l) for l in plus):
        return "default", None
    if any(re.search(r"astype\(None\)|dtype=None|asarray\([^,]*, (None|)\)|, np\.float64\)", l) for l in plus + minus) \
            and not any("dtype=torch" in l for l in minus):
        return "dtype", None
    if any(re.search(r"1e-12|1e-300", l) for l in minus):
        return "tolerance", None
    return "open", None


NEW_MODULES_INTRO = (
    "`bash tests/mutation.sh --new` (NEW_GLOBS in tests/mutation_report.py; mutmut 3.8, settings in setup.cfg: the test "
    "selection adds test_weights and test_pairwise to the numeric tests) mutates the functions "
    "of the last two rounds where downloads are verified and their numbers and orders are "
    "decided, and runs the tests that reach each mutant. Written by "
    "`tests/mutation_report.py --new` from that run; a survivor is explained (equivalent, or a "
    "change of an error message, a default or a dtype) or open.")


def grouped(survivors, status) -> dict:
    """{(kind, reason): [(name, status, the mutated line(s))]} of the surviving mutants."""
    groups = collections.defaultdict(list)
    for name in survivors:
        diff = run("show", name).splitlines()
        kind, reason = kind_of(name, diff)
        change = " / ".join(l[1:].strip() for l in diff if l.startswith("+") and not l.startswith("+++"))
        groups[(kind, reason)].append((name, status[name], change[:140]))
    return groups


def group_blocks(groups, heading, open_title) -> list:
    """The lines of each group, reviewed first and open last."""
    explained = dict(KINDS)
    order = sorted(groups, key=lambda k: ["reviewed", "message", "default", "dtype", "tolerance", "open"].index(k[0]))
    blocks = []
    for kind, reason in order:
        title = reason if kind == "reviewed" else explained.get(kind, open_title)
        blocks.append([f"{heading} {kind}: {title}", "", f"{len(groups[(kind, reason)])} mutant(s).", ""] +
                      [f"- `{name}`{' (no test reaches it)' if st == 'no tests' else ''}: `{change}`"
                       for name, st, change in groups[(kind, reason)]])
    return blocks


def _module(name: str) -> str:
    """The module of a mutant's name (`featrank.sweep.x_schedule__mutmut_3` -> sweep)."""
    return name.removeprefix("featrank.").split(".")[0]


def main():
    new = "--new" in sys.argv
    rows = [l.strip() for l in run("results", "--all", "true").splitlines() if ":" in l]
    status = {}
    for r in rows:
        name, st = r.rsplit(":", 1)
        status[name.strip()] = st.strip()
    counts = collections.defaultdict(collections.Counter)
    for name, st in status.items():
        counts[_module(name)][st] += 1
    survivors = sorted(n for n, s in status.items() if s in ("survived", "no tests"))
    if new:
        return report_new(status, survivors)
    out = ["# Mutation testing of the numeric core", "",
           "`bash tests/mutation.sh` (mutmut 3.8, settings in setup.cfg) mutates the metrics, the "
           "representations and the Gram engine, the distribution models, evaluation's monotonicity, "
           "bootstrap, ties and ranking, and the cache key, and runs the tests that reach each "
           "mutant. This file is written by `tests/mutation_report.py` from that run.", "",
           "| module | killed | survived | no test reaches it | not in the run |", "|---|---|---|---|---|"]
    for mod in sorted(counts):
        c = counts[mod]
        out.append(f"| {mod} | {c['killed']} | {c['survived']} | {c['no tests']} | {c['not checked'] + c['skipped']} |")
    killed = sum(c["killed"] for c in counts.values())
    tried = killed + len(survivors)
    out += ["", f"Kill rate: {killed} of {tried} mutants run ({100 * killed / max(tried, 1):.1f} %).", ""]
    for block in group_blocks(grouped(survivors, status), "##", "not yet killed: a test to add (see below)"):
        out += block + [""]
    print("\n".join(out))


def report_new(status, survivors):
    """The section of docs/mutation.md on the last round's modules: per module, mutants run, killed,
    explained (equivalent, message, default, dtype) and open; then every survivor by kind."""
    counts = collections.defaultdict(collections.Counter)
    for name, st in status.items():
        mod = _module(name)
        if st in ("not checked", "skipped"):
            if any(fnmatch.fnmatch(name, g) for g in NEW_GLOBS):
                counts[mod]["not run"] += 1
            continue
        counts[mod]["run"] += 1
        if st == "killed" or st == "timeout":
            counts[mod]["killed"] += 1
    groups = grouped(survivors, status)
    for (kind, _), members in groups.items():
        for name, _, _ in members:
            counts[_module(name)]["open" if kind == "open" else "explained"] += 1
    out = ["## The last round's modules", "", NEW_MODULES_INTRO, "",
           "| module | run | killed | explained | open | not run |", "|---|---|---|---|---|---|"]
    for mod in sorted(counts):
        c = counts[mod]
        out.append(f"| {mod} | {c['run']} | {c['killed']} | {c['explained']} | {c['open']} | {c['not run']} |")
    run_all = sum(c["run"] for c in counts.values())
    out += ["", f"Killed: {sum(c['killed'] for c in counts.values())} of {run_all} run; explained "
            f"{sum(c['explained'] for c in counts.values())}; open {sum(c['open'] for c in counts.values())}; "
            f"not run {sum(c['not run'] for c in counts.values())}."]
    for block in group_blocks(groups, "###", "not yet killed: a test to add"):
        out += [""] + block
    print("\n".join(out))


if __name__ == "__main__":
    main()

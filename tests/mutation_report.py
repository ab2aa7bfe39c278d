"""docs/mutation.md from mutmut's results: the kill rate per module and every survivor with the
reason it is left, by the kind of change (read from `mutmut show`), plus reasons written by
hand for mutants checked one by one (REVIEWED, read from tests/mutation_reviewed.json).
    .venv/bin/python tests/mutation_report.py > docs/mutation.md      (after bash tests/mutation.sh)
"""
import collections
import fnmatch
import json
import os
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

# mutants read one by one, each group with why it survives: tests/mutation_reviewed.json, a list of
# {"function": pattern of the mutant's name, "line": pattern of the mutated line, "reason": ...}
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mutation_reviewed.json"),
          encoding="utf-8") as _f:
    REVIEWED = {(row["function"], row["line"]): row["reason"] for row in json.load(_f)}

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

#!/usr/bin/env bash
# Mutation testing of the numeric core with mutmut 3 (requirements-dev.txt; settings in
# setup.cfg). Every mutant of the listed functions is run against the tests that reach it;
# `mutmut results` lists the survivors, each explained in docs/mutation.md.
#   bash tests/mutation.sh            # ~1 h on 2 cores
#   JOBS=8 bash tests/mutation.sh     # more workers
#   bash tests/mutation.sh --new      # the last round's modules (NEW_GLOBS in mutation_report.py),
#                                     # then: .venv/bin/python tests/mutation_report.py --new
set -euo pipefail
cd "$(dirname "$0")/.."
# the numeric core; pass globs (e.g. "distance_metrics.*") to run only those
GLOBS=(
  "featrank.distance_metrics.*"
  "featrank.two_sample_metrics.*"
  "featrank.neighbour_metrics.*"
  "featrank.pixel_metrics.*"
  "featrank.metric_checks.*"
  "featrank.representations.*"
  "featrank.gram_engine.*"
  "featrank.distribution_modeling.*"
  "featrank.evaluation.x_spearman_monotonicity*" "featrank.evaluation.x_kendall_monotonicity*"
  "featrank.evaluation.x__spearman_rows*" "featrank.evaluation.x__monotonicity*" "featrank.evaluation.x_bootstrap*"
  "featrank.evaluation.x_ties_with_top*" "featrank.evaluation.x_rank*" "featrank.evaluation.x_scorer_for*"
  "featrank.feature_cache.x_cache_key*"
)
if [ "${1:-}" = "--new" ]; then
  mapfile -t GLOBS < <(cd tests && ../.venv/bin/python -c "import mutation_report as m; print(*m.NEW_GLOBS, sep='\n')")
elif [ "$#" -gt 0 ]; then
  GLOBS=("$@")
fi
rm -rf mutants
# each of the JOBS test processes computes on its share of the cores (tests/conftest.py reads it)
jobs=${JOBS:-2}
export OMP_NUM_THREADS=$(( $(nproc) / jobs > 0 ? $(nproc) / jobs : 1 ))
.venv/bin/mutmut run --max-children "$jobs" "${GLOBS[@]}"
.venv/bin/mutmut results

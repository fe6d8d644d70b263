#!/usr/bin/env bash
# Mutation testing of the pure core (ionqbo/mapping.py and ionqbo/diff.py) with mutmut 3.
#
# mutmut changes the code one small edit at a time (a condition flipped, a constant changed, a
# call argument dropped...) and runs the fast unit tests against each change (the "mutant").
# A mutant no test notices "survived": either a gap in the tests or an edit that changes nothing
# observable (an equivalent mutant). docs/testing.md lists the survivors and why each one left is
# equivalent. This is not part of the default test run or CI: it takes 20 to 60 minutes on 2 cores.
#
# Usage:  pip install -e '.[test,mutation]'
#         scripts/mutation.sh              # run, then print the survivors with their diffs
#         scripts/mutation.sh --list       # only print the survivors of the last run
#
# Settings ([tool.mutmut] in pyproject.toml): what is mutated (only_mutate) and which tests run
# (pytest_add_cli_args_test_selection: tests/test_mapping.py, tests/test_diff.py and
# tests/test_core_edges.py). mutmut works in ./mutants (git-ignored); it is removed before a run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mutmut >/dev/null || { echo "mutmut is not installed: pip install -e '.[test,mutation]'" >&2; exit 2; }
if [ "${1:-}" != "--list" ]; then
  rm -rf mutants
  # One worker: the machine is shared; raise it with MUTMUT_CHILDREN on a machine of your own.
  mutmut run --max-children "${MUTMUT_CHILDREN:-1}" >/dev/null 2>&1 || true
fi
survivors=$(mutmut results 2>/dev/null | sed -n 's/^ *\(ionqbo\.[^:]*\): survived$/\1/p')
total=$(mutmut results --all true 2>/dev/null | grep -c ': ' || true)
count=$(printf '%s' "$survivors" | grep -c . || true)
echo "== mutants: ${total}; survived: ${count}"
for name in $survivors; do
  mutmut show "$name" 2>/dev/null | sed -n '1p;/^[-+] /p'
done

#!/usr/bin/env bash
# The published performance figures in one command: the suite (`suite.py`) and the ResNet-20 `fit` figure
# (`model_fit.py`) on every backend, one after another (never in parallel: they share the cores), then the
# report (`report.py`), which rewrites the generated tables of docs/performance.md and its charts. The suite runs
# with `--reference-rows`: every layer that takes a fast path is timed again with the fast paths off, and the
# report flags each cell where a kernel loses to its own reference.
#
#   bash benchmarks/run_all.sh [--profile smoke|quick|default|full] [--backends torch,tensorflow,jax]
#                              [--output-dir DIR] [--no-report]
#
# The default profile took 10 to 25 minutes per backend on 2 cores; `--profile quick` about 5, `smoke` (one layer,
# one tiny shape, two ResNet-20 variants for one step) well under one. Uses .venv/bin/python when it exists
# (scripts/setup_env.sh), else `python`; PYTHON=... overrides.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=default
backends=torch,tensorflow,jax
out=benchmarks/results
report=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --backends) backends=$2; shift 2 ;;
    --output-dir) out=$2; shift 2 ;;
    --no-report) report=0; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
fi

case "$profile" in
  smoke) fit_args=(--steps 1 --repeats 1 --batch-size 8 --variants BatchNormalization) ;;
  quick) fit_args=(--repeats 2) ;;
  *) fit_args=() ;;
esac

for backend in ${backends//,/ }; do
  echo "=== $backend: suite ($profile)"
  "$PY" benchmarks/suite.py --backend "$backend" --profile "$profile" --output-dir "$out" --reference-rows
  echo "=== $backend: ResNet-20 fit"
  "$PY" benchmarks/model_fit.py --backend "$backend" --output-dir "$out" "${fit_args[@]}"
done
if [ "$report" = 1 ]; then
  echo "=== report"
  "$PY" benchmarks/report.py --results "$out"
fi

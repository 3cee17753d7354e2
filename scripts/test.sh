#!/usr/bin/env bash
# The whole test matrix, from nothing: set-up, one pytest process per backend
# (TensorFlow, JAX, PyTorch, one after another), the cross-backend phases
# (.keras files loaded across backends, outputs compared pairwise), and the
# docs build (`mkdocs build --strict`) and the built site checked in headless
# Chromium (tests/docs). Exits non-zero if any step fails.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh || exit 1

export KERAS_NORMS_PARITY_DIR="$PWD/.parity"
rm -rf "$KERAS_NORMS_PARITY_DIR" .reports .cache/jax  # .cache/jax: tests/conftest.py's JAX compilation cache
mkdir -p .reports
status=0
start=$SECONDS

run() {  # run NAME CMD...: a step, its time, and its pass/fail
  local name=$1; shift
  local t=$SECONDS
  echo; echo "=== $name"
  "$@" || { echo "=== $name FAILED"; status=1; }
  echo "=== $name took $((SECONDS - t)) s"
}

# Two pytest workers per backend (pytest-xdist): most of a test's time is
# single-threaded (tracing, XLA compilation, Python dispatch), so two workers
# keep both CI cores busy. KERAS_NORMS_TEST_WORKERS=0 runs in one process.
# --maxschedchunk 1: a worker gets its next test when it is nearly idle, not a chunk of consecutive ones, so the
# slow tests that tests/conftest.py puts first go to both workers (in chunks, all of them went to the first).
workers="${KERAS_NORMS_TEST_WORKERS:-2}"
for backend in tensorflow jax torch; do
  run "pytest, KERAS_BACKEND=$backend" env KERAS_BACKEND=$backend \
    "$PY" -m pytest tests -q -p no:cacheprovider -n "$workers" --maxschedchunk 1 --junitxml=".reports/$backend.xml"
done
for backend in tensorflow jax torch; do
  run "load .keras files saved by the other backends, KERAS_BACKEND=$backend" \
    env KERAS_BACKEND=$backend KERAS_NORMS_PARITY_PHASE=1 \
    "$PY" -m pytest tests/parity/test_load_other_backends.py -q -p no:cacheprovider \
    --junitxml=".reports/load-$backend.xml"
done
run "compare outputs across backends" env KERAS_BACKEND=numpy KERAS_NORMS_PARITY_PHASE=1 \
  "$PY" -m pytest tests/parity/test_compare_backends.py -q -s -p no:cacheprovider \
  --junitxml=".reports/compare.xml"
run "docs: mkdocs build --strict" env PY="$PY" bash scripts/build_docs.sh
# The built site in headless Chromium (math rendered, no broken internal links):
# install_chromium.sh installs Debian chromium if absent, or says why it cannot
# (then only the browser test skips). tests/docs is collected only when
# KERAS_NORMS_SITE_DIR is set; it skips if the build above wrote no site.
run "docs: install Chromium if absent" bash scripts/install_chromium.sh
run "docs: rendered site (KaTeX math, internal links)" env KERAS_BACKEND=numpy KERAS_NORMS_SITE_DIR="$PWD/site" \
  "$PY" -m pytest tests/docs -q -p no:cacheprovider --junitxml=".reports/docs.xml"
run "package: build the wheel, install it outside the source tree, use it on each backend" bash scripts/check_wheel.sh

echo
"$PY" - <<'PYEOF'
import glob, xml.etree.ElementTree as ET
total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for path in sorted(glob.glob(".reports/*.xml")):
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    for key in total:
        total[key] += int(suite.get(key, 0))
failed = total["failures"] + total["errors"]
passed = total["tests"] - failed - total["skipped"]
print(f"matrix: {passed} passed, {failed} failed, {total['skipped']} skipped")
PYEOF
echo "total time $((SECONDS - start)) s; status $status"
exit $status

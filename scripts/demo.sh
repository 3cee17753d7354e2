#!/usr/bin/env bash
# The demo: trains a small CNN with keras_norms layers on scikit-learn's digits
# (no download), saves it as .keras, reloads it and prints the test accuracy.
# Backend: $KERAS_BACKEND (tensorflow, jax or torch; Keras's default is tensorflow).
# Usage: bash scripts/demo.sh [--epochs N] [--smoke]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
exec "$PY" examples/quickstart.py "$@"

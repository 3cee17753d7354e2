#!/usr/bin/env bash
# The GPU check in one command, for a machine with one CUDA GPU and CUDA builds of torch, jax and tensorflow:
# per backend, the device it sees (fails when there is none), the fast-path parity tests and the layers' Keras-parity
# tests on that device, then the issue-19 benchmark rows (`suite.py --profile gpu`, wall-clock time, every core),
# written as benchmarks/results/gpu/suite_<backend>.json, where `benchmarks/report.py` reads them for the
# Performance page. About 6 minutes on one GPU for the three backends.
#
#   bash benchmarks/gpu_check.sh [--backends torch,tensorflow,jax] [--layers A,B] [--output-dir DIR] [--dry-run]
#
# --dry-run: the same steps on CPU, no CUDA needed: the tests are only collected, the rows run on the smoke
# shape for 2 rounds, and the JSON goes to a temporary folder unless --output-dir is given.
# Rows whose layer is not in benchmarks/catalog.py are skipped with a note. PYTHON=... overrides the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

backends=torch,tensorflow,jax out= layers= dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1; shift; continue ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    --backends|--layers|--output-dir) [ $# -ge 2 ] || { echo "gpu_check.sh: $1 needs a value" >&2; exit 2; } ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  case "$1" in --backends) backends=$2 ;; --layers) layers=$2 ;; --output-dir) out=$2 ;; esac
  shift 2
done
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
[ -n "$out" ] || out=$([ "$dry" = 1 ] && mktemp -d || echo benchmarks/results/gpu)
export TF_CPP_MIN_LOG_LEVEL=3

# The issue-19 rows: torch against its native kernels, TF and JAX against our BN and Keras BN.
torch_rows=GroupNormalization,InstanceNormalization,LayerNormalization,RMSNormalization,BatchGroupNormalization,\
BatchChannelNormalization,FilterResponseNormalization,FilterResponseNormalizationTLU,EvoNormS0,\
GhostBatchNormalization,BatchNormalization
xla_rows=GroupNormalization,BatchChannelNormalization,BatchGroupNormalization,EvoNormS0,GhostBatchNormalization,\
BatchNormalization
parity_tests=(tests/test_fast_paths.py tests/layers/test_batch_normalization.py tests/layers/test_group_normalization.py
              tests/layers/test_instance_normalization.py tests/layers/test_layer_normalization.py
              tests/layers/test_rms_normalization.py)

device_probe='
import os, sys
backend, dry = os.environ["KERAS_BACKEND"], sys.argv[1] == "1"
if backend == "torch":
    import torch
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    version = "torch " + torch.__version__ + " (CUDA " + str(torch.version.cuda) + ")"
elif backend == "jax":
    import jax
    names = [d.device_kind for d in jax.devices() if d.platform == "gpu"] if jax.default_backend() == "gpu" else []
    version = "jax " + jax.__version__
else:
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    version = "tensorflow " + tf.__version__ + (" (CUDA build)" if tf.test.is_built_with_cuda() else " (CPU build)")
if names:
    print(f"{backend}: {version}; CUDA device: {names[0]}" + (f" (+{len(names) - 1} more)" if len(names) > 1 else ""))
elif dry:
    print(f"{backend}: {version}; no CUDA device (dry run: CPU)")
else:
    sys.exit(f"gpu_check.sh: {backend} ({version}) sees no CUDA device: install its CUDA build and check "
             "nvidia-smi, or pass --dry-run to rehearse the steps on CPU")
'

echo "gpu_check: backends $backends; results in $out$([ "$dry" = 1 ] && echo ' (dry run)')"
for backend in ${backends//,/ }; do
  export KERAS_BACKEND=$backend
  echo "=== $backend: device"
  "$PY" -c "$device_probe" "$dry"
  tests=()
  for t in "${parity_tests[@]}"; do
    if [ -e "$t" ]; then tests+=("$t"); else echo "  skipped (no such file yet): $t"; fi
  done
  echo "=== $backend: parity tests on the device"
  if [ "$dry" = 1 ]; then
    "$PY" -m pytest -q -p no:cacheprovider --collect-only "${tests[@]}" | tail -n 1
  else
    PYTHONPATH=benchmarks${PYTHONPATH:+:$PYTHONPATH} "$PY" -m pytest -q -p no:cacheprovider -p cuda_default "${tests[@]}"
  fi
  if [ "$backend" = torch ]; then rows=$torch_rows; else rows=$xla_rows; fi
  rows=${layers:-$rows}
  echo "=== $backend: benchmark rows"
  if [ "$dry" = 1 ]; then
    suite_args=(--shapes tiny --repeats 2 --warmup 1 --no-memory)
  else
    suite_args=(--profile gpu --threads 0 --clock wall)
  fi
  "$PY" benchmarks/suite.py --backend "$backend" --layers "$rows" --skip-missing-layers --reference-rows \
    --output-dir "$out" "${suite_args[@]}"
done
echo "gpu_check: done; results in $out (benchmarks/report.py shows benchmarks/results/gpu on the Performance page)"

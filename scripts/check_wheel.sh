#!/usr/bin/env bash
# The package as a user gets it: builds the wheel (python -m build), installs it
# into a fresh virtual environment outside the source tree, and on each backend
# (TensorFlow, JAX, PyTorch) imports it from there, fits a small model of
# keras_norms layers one step, saves it as .keras and loads it back.
# Catches what tests run from the source tree cannot: a module, subpackage or
# file missing from the wheel, tests shipped as a package, wrong metadata.
#
# The new environment sees .venv's site-packages through a .pth file, so the
# heavy dependencies (keras, tensorflow, jax, torch) are not reinstalled. The
# .pth files inside that directory are not processed, so .venv's editable
# install of keras_norms stays inactive: the check asserts that every
# keras_norms module comes from the wheel.
#
# Usage: bash scripts/check_wheel.sh                  # the whole check
#        bash scripts/check_wheel.sh --build-only DIR # only build the wheel into DIR
#                                                     # (tests/test_packaging.py)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${PY:-}" ] && [ -x "$PY" ]; then
  :  # the caller's interpreter (scripts/test.sh has set up .venv)
elif [ -x "$repo/.venv/bin/python" ]; then
  PY="$repo/.venv/bin/python"
else
  source "$repo/scripts/setup_env.sh"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"

fail() { echo "check_wheel: FAILED: $*" >&2; exit 1; }

# Builds from a copy of the files a clone has (tracked and untracked-but-not-
# ignored): an in-tree build would reuse ./build/lib, where a module deleted
# from the source survives and ends up in the wheel.
build_wheel() {  # build_wheel OUTDIR
  local src; src="$(mktemp -d)"
  if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$repo" && git ls-files -z -co --exclude-standard) |
      tar -C "$repo" -cf - --null -T - --ignore-failed-read 2>/dev/null | tar -xf - -C "$src"
  else
    tar -C "$repo" -cf - --exclude=.git --exclude=.venv --exclude=build --exclude=dist \
      --exclude='*.egg-info' --exclude=__pycache__ --exclude=site . | tar -xf - -C "$src"
  fi
  (cd "$src" && "$PY" -m build --wheel --no-isolation --outdir "$1" . >"$src.log" 2>&1) ||
    { cat "$src.log" >&2; rm -rf "$src" "$src.log"; fail "python -m build --wheel (needs the build package, in requirements/ci-cpu.txt)"; }
  rm -rf "$src" "$src.log"
}

if [ "${1:-}" = "--build-only" ]; then
  [ -n "${2:-}" ] || fail "--build-only needs an output directory"
  build_wheel "$2"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
build_wheel "$work/dist"
wheels=("$work"/dist/keras_norms-*.whl)
[ ${#wheels[@]} -eq 1 ] && [ -f "${wheels[0]}" ] || fail "expected one wheel, found: ${wheels[*]}"
wheel="${wheels[0]}"
echo "built $(basename "$wheel")"

# The wheel's contents against the source tree: every file of the package
# (modules and any data file), no tests.
"$PY" - "$wheel" "$repo" <<'PYEOF' || fail "wheel contents (above)"
import pathlib, sys, zipfile
wheel, repo = sys.argv[1], pathlib.Path(sys.argv[2])
names = set(zipfile.ZipFile(wheel).namelist())
top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
source = {p.relative_to(repo).as_posix() for p in (repo / "keras_norms").rglob("*")
          if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")}
missing = sorted(source - names)
problems = []
if missing:
    problems.append(f"files of the package missing from the wheel (a non-.py file needs "
                    f"[tool.setuptools.package-data] in pyproject.toml): {missing}")
if top != {"keras_norms"}:
    problems.append(f"top-level entries should be only keras_norms, got {sorted(top)}")
for line in problems:
    print("check_wheel:", line, file=sys.stderr)
sys.exit(1 if problems else 0)
PYEOF

venv="$work/venv"
"$PY" -m venv --without-pip "$venv"
# pip from .venv, run with the new interpreter (no pip of its own); installed
# before the .pth below exists, so pip sees an empty environment.
"$PY" -m pip --python "$venv/bin/python" install -q --no-deps --no-index "$wheel" ||
  fail "pip install --no-deps $(basename "$wheel")"
site_new="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$PY" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"])' |
  sort -u >"$site_new/_keras_norms_check_deps.pth"

cat >"$work/smoke.py" <<'PYEOF'
"""One backend: keras_norms from the wheel, a fit step, a .keras round trip."""
import importlib.metadata
import os
import pathlib
import sys

backend = os.environ["KERAS_BACKEND"]
venv, out = (pathlib.Path(p).resolve() for p in sys.argv[1:3])
if backend == "torch":
    import torch  # noqa: F401  (before Keras, as in tests/conftest.py)
import keras
import numpy as np

import keras_norms


def fail(message):
    sys.exit(f"check_wheel: FAILED on {backend}: {message}")


def where(path):
    return pathlib.Path(path).resolve()


if not where(keras_norms.__file__).is_relative_to(venv):
    fail(f"keras_norms imported from {keras_norms.__file__}, not from the wheel in {venv}")
dist = importlib.metadata.distribution("keras-norms")
if not where(dist.locate_file("")).is_relative_to(venv):
    fail(f"keras-norms metadata found at {dist.locate_file('')}, not in {venv}")
if dist.version != keras_norms.__version__:
    fail(f"metadata version {dist.version} != keras_norms.__version__ {keras_norms.__version__}")
top_level = (dist.read_text("top_level.txt") or "").split()
if top_level != ["keras_norms"]:
    fail(f"top-level packages of the wheel should be ['keras_norms'], got {top_level}")

keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((8, 8, 3)),
    keras_norms.WSConv2D(8, 3, padding="same", use_bias=False),
    keras_norms.BatchNormalization(virtual_batch_size=4),
    keras_norms.BatchGroupNormalization(groups=4, examples_per_group=2),
    keras_norms.FilterResponseNormalizationTLU(),
    keras.layers.GlobalAveragePooling2D(),
    keras.layers.Dense(3),
])
model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
y = rng.integers(0, 3, size=(8,))
history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
loss = history.history["loss"][0]
if not np.isfinite(loss):
    fail(f"training loss {loss}")
path = out / f"model-{backend}.keras"
model.save(path)
loaded = keras.models.load_model(path)
np.testing.assert_allclose(
    keras.ops.convert_to_numpy(loaded(x, training=False)),
    keras.ops.convert_to_numpy(model(x, training=False)), rtol=1e-5, atol=1e-5)
stray = sorted(name for name, module in sys.modules.items()
               if name.split(".")[0] == "keras_norms" and getattr(module, "__file__", None)
               and not where(module.__file__).is_relative_to(venv))
if stray:
    fail(f"modules imported from outside the wheel's environment: {stray}")
print(f"{backend:10s}: keras_norms {dist.version} from the wheel; fit (loss {loss:.3f}), "
      ".keras saved and loaded, outputs equal")
PYEOF

# A cwd outside the source tree and no PYTHONPATH: only the new venv can
# provide keras_norms. A backend's stderr (TensorFlow's start-up logging) is
# shown only when it fails.
cd "$work"
for backend in tensorflow jax torch; do
  env -u PYTHONPATH KERAS_BACKEND=$backend "$venv/bin/python" "$work/smoke.py" "$venv" "$work" \
    2>"$work/stderr" || { cat "$work/stderr" >&2; fail "the wheel on $backend (above)"; }
done
echo "check_wheel: OK: $(basename "$wheel") installed outside the source tree works on tensorflow, jax, torch"

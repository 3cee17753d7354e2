"""Shared pytest set-up: one backend per process, chosen by KERAS_BACKEND.

On the torch run torch is imported before Keras (its CPU kernels and thread
pools are set up first, as in Keras's own test set-up). TensorFlow is never
imported by the JAX and torch runs.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ.get("KERAS_BACKEND") == "jax":
    # XLA's persistent compilation cache, shared by the xdist workers and the subprocesses they start (examples,
    # docs snippets): many tests compile the same program (one case's gradients in three tests, each eager op at each
    # shape on both workers), and a program is keyed by its HLO, compiler and flags, so a hit runs the executable
    # that compiling it again would give (a fifth less CPU time on the conformance suite). Set before JAX is
    # imported. No size limit: with one, JAX lists and stats the whole folder at every write. An entry read while
    # another process writes it fails to decompress, and JAX then compiles (with a warning).
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(f"{__file__}/../../.cache/jax"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
if os.environ.get("KERAS_BACKEND") == "torch":
    import torch  # noqa: F401

import keras  # noqa: E402
import pytest  # noqa: E402

from keras_norms import config  # noqa: E402


def pytest_report_header(config):
    import keras_norms

    return (
        f"keras_norms {keras_norms.__version__} | keras {keras.__version__} | "
        f"backend {keras.backend.backend()} | fast paths "
        f"{'on' if keras_norms.config.fast_paths_enabled() else 'off'}"
    )


# The longest tests (subprocess smoke runs, whole networks), longest first: `scripts/test.sh` hands tests to its two
# xdist workers in collection order, so these start first and neither worker finishes alone on one of them.
SLOW_FIRST = (
    "tests/test_docs_snippets.py",
    "tests/test_examples.py",
    "tests/test_benchmark_accuracy_smoke.py",
    "tests/test_example_finetune.py",
    "tests/test_applications.py",
    "tests/test_synchronized.py::test_two_replicas",
    "tests/test_benchmarks_smoke.py",
    "tests/test_example_memorized_bn.py",
    "tests/test_compile.py",
)


def pytest_collection_modifyitems(items):
    """Moves the tests of `SLOW_FIRST` to the front, in its order; the rest keep theirs."""
    rank = {item: next((i for i, p in enumerate(SLOW_FIRST) if item.nodeid.startswith(p)), len(SLOW_FIRST))
            for item in items}
    items.sort(key=rank.__getitem__)


@pytest.fixture(autouse=True)
def _isolate_global_state():
    """Restores the dtype policy and the fast-path switch after each test."""
    policy = keras.config.dtype_policy()
    fast = config.fast_paths_enabled()
    yield
    keras.config.set_dtype_policy(policy)
    config.set_fast_paths(fast)

"""Shared pytest set-up: one backend per process, chosen by KERAS_BACKEND.

On the torch run torch is imported before Keras (its CPU kernels and thread
pools are set up first, as in Keras's own test set-up). TensorFlow is never
imported by the JAX and torch runs.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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


@pytest.fixture(autouse=True)
def _isolate_global_state():
    """Restores the dtype policy and the fast-path switch after each test."""
    policy = keras.config.dtype_policy()
    fast = config.fast_paths_enabled()
    yield
    keras.config.set_dtype_policy(policy)
    config.set_fast_paths(fast)

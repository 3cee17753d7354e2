"""The keras.ops core: numerics of the statistics, and the package's structure rules."""

import ast
import pathlib

import keras
import ml_dtypes
import numpy as np
import pytest

import keras_norms
from keras_norms import ops as knops
from tests import reference as ref
from tests.backend_utils import to_numpy
from tests.tolerances import assert_close

PACKAGE = pathlib.Path(keras_norms.__file__).parent
BACKEND_LIBRARIES = {"torch", "jax", "jaxlib", "tensorflow"}


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("folder", ["ops", "layers"])
def test_math_and_layers_never_import_a_backend(folder):
    for path in (PACKAGE / folder).rglob("*.py"):
        assert not set(_imports(path)) & BACKEND_LIBRARIES, f"{path} imports a backend library"


def test_layers_never_branch_on_the_backend():
    for path in list((PACKAGE / "layers").rglob("*.py")) + list((PACKAGE / "ops").rglob("*.py")):
        if path == PACKAGE / "ops" / "_dispatch.py":  # the kernel registry: where the active backend is looked up
            continue
        assert "backend()" not in path.read_text(), f"{path} asks which backend runs"


def test_moments_are_two_pass_float32_and_never_negative():
    # 16 float16 values with mean 30 and std 0.05: the one-pass float16 variance is garbage (spec §1.4).
    x16 = (np.random.default_rng(4).normal(size=(16, 1)) * 0.05 + 30).astype("float16")
    mean, variance = knops.moments(x16, axes=[0])
    assert keras.backend.standardize_dtype(variance.dtype) == "float32"
    x64 = x16.astype("float64")
    assert_close(to_numpy(mean), x64.mean(0))
    assert_close(to_numpy(variance), x64.var(0), rtol=1e-4, atol=1e-7)
    assert (to_numpy(variance) >= 0).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_moments_of_large_16_bit_values_do_not_overflow(dtype):
    # 300**2 > 65504: a float16 mean of squares would be inf.
    x = np.full((8, 3), 300.0) + np.arange(8)[:, None]
    x = x.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    mean, variance = knops.moments(x, axes=[0])
    assert np.isfinite(to_numpy(variance)).all()
    assert_close(to_numpy(variance), x.astype("float64").var(0), rtol=1e-5, atol=1e-3)


def test_float64_stays_float64():
    x = np.random.default_rng(0).normal(size=(5, 3))
    if keras.backend.backend() == "jax":
        pytest.skip("JAX runs float32 unless jax_enable_x64 is set: float64 inputs are truncated by JAX itself")
    mean, variance = knops.moments(x, axes=[0])
    assert keras.backend.standardize_dtype(variance.dtype) == "float64"
    np.testing.assert_allclose(to_numpy(variance), x.var(0), rtol=1e-12)


def test_masked_moments_skip_masked_entries():
    x = np.random.default_rng(1).normal(size=(6, 4)).astype("float32")
    mask = np.array([1, 1, 0, 1, 0, 1], bool)[:, None]
    mean, variance = knops.moments(x, axes=[0], mask=mask)
    assert_close(to_numpy(mean), x[mask[:, 0]].mean(0))
    assert_close(to_numpy(variance), x[mask[:, 0]].var(0))


@pytest.mark.parametrize("batch, ghost", [(8, 4), (10, 4), (3, 5), (7, 1)])
def test_ghost_moments_are_per_consecutive_ghost(batch, ghost):
    x = np.random.default_rng(batch).normal(size=(batch, 3, 2)).astype("float32")
    mean, variance, counts = knops.ghost_moments(x, axis=-1, virtual_batch_size=ghost)
    starts = range(0, batch, ghost)
    np.testing.assert_array_equal(to_numpy(counts), [min(ghost, batch - s) for s in starts])
    for k, s in enumerate(starts):
        part = x[s : s + ghost].reshape(-1, 2).astype("float64")
        assert_close(to_numpy(mean)[k], part.mean(0))
        assert_close(to_numpy(variance)[k], part.var(0))


def test_ghost_batch_norm_op_matches_reference():
    x = np.random.default_rng(2).normal(size=(11, 4, 3)).astype("float32")
    gamma, beta = np.full(3, 1.5, "float32"), np.full(3, -0.5, "float32")
    y, mean, variance = knops.ghost_batch_norm(x, gamma, beta, axis=-1, epsilon=1e-3, virtual_batch_size=3)
    expected = ref.ghost_batch_norm_train(x, gamma, beta, -1, 1e-3, 3)
    for actual, want in zip((y, mean, variance), expected):
        assert_close(to_numpy(actual), want)


def test_normalize_is_centred_before_scaling():
    # |mean|/std = 1e4: the fully folded x*s + (beta - mean*s) loses ~1e4 ulps here.
    x = (1e4 + np.random.default_rng(0).normal(size=(64, 2))).astype("float32")
    mean, variance = x.mean(0, dtype="float64"), x.var(0, dtype="float64")
    y = knops.normalize(x, mean.astype("float32"), variance.astype("float32"), epsilon=1e-6)
    assert_close(to_numpy(y), (x - mean) / np.sqrt(variance + 1e-6), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("bad", [1.5, "a", [0]])
def test_ops_validate_axis_and_ghost_size(bad):
    x = np.ones((4, 3), "float32")
    with pytest.raises(ValueError, match="axis"):
        knops.batch_norm(x, axis=bad if not isinstance(bad, float) else 5)
    with pytest.raises(ValueError, match="virtual_batch_size"):
        knops.ghost_batch_norm(x, virtual_batch_size=bad)

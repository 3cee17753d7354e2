"""Backend fast paths: where each kernel runs, where it declines, and the switch.

Every kernel must equal the `keras.ops` reference in outputs and gradients
(the fused torch BN Keras shipped and reverted had wrong gradients, keras PR
#19102). The per-layer comparison lives in `test_conformance.py`; here each
kernel is checked op by op on the layouts it claims.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms import _backends
from keras_norms import config
from tests.backend_utils import to_numpy
from tests.tolerances import GRADIENT
from tests.tolerances import assert_close

BACKEND = keras.backend.backend()

# (op, shape, kwargs, runs the kernel on torch?)
TORCH_KERNEL_CASES = [
    ("batch_norm", (8, 5, 5, 6), dict(axis=-1), True),
    ("batch_norm", (8, 6, 5, 5), dict(axis=1), True),
    ("batch_norm", (8, 6), dict(axis=-1), True),
    ("batch_norm", (4, 7, 6), dict(axis=2), True),
    ("batch_norm", (2, 3, 3, 3, 4), dict(axis=-1), True),
    ("batch_norm", (4, 6, 5, 5), dict(axis=2), False),  # channels in the middle: a copy
    ("batch_norm", (1, 6), dict(axis=-1), False),  # one value per channel: torch rejects
    ("batch_norm", (4, 5, 6), dict(axis=-1, mask=True), False),
    ("batch_norm_inference", (8, 5, 5, 6), dict(axis=-1), True),
    ("batch_norm_inference", (8, 6, 5, 5), dict(axis=1), True),
    ("batch_norm_inference", (1, 6), dict(axis=-1), True),
    ("batch_norm_inference", (8, 5, 5, 6), dict(axis=-1, example_weight=0.25), False),
    ("batch_norm_inference", (4, 6, 5, 5), dict(axis=2), False),
]
EXPECTED_KERNELS = {
    "torch": {"batch_norm", "batch_norm_inference", "batch_group_norm", "group_norm"},
    "tensorflow": {"batch_group_norm", "group_norm"},
    "jax": {"batch_group_norm", "group_norm"},
}


def _call(op, shape, kwargs, x, params):
    kwargs = dict(kwargs)
    axis = kwargs.pop("axis")
    if kwargs.pop("mask", False):
        kwargs["mask"] = np.ones(shape[:-1], bool)
    gamma, beta, mean, variance = params
    if op == "batch_norm":
        return keras_norms.ops.batch_norm(x, gamma, beta, axis, 1e-3, **kwargs)[0]
    return keras_norms.ops.batch_norm_inference(x, mean, variance, gamma, beta, axis, 1e-3, **kwargs)


def _gradients(op, shape, kwargs):
    """Output and gradients w.r.t. x, gamma and beta, with the backend's autodiff."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 2 + 1).astype("float32")
    axis = kwargs["axis"] % len(shape)
    c = shape[axis]
    params = [rng.uniform(0.5, 1.5, c).astype("float32"), rng.normal(size=c).astype("float32"),
              rng.normal(size=c).astype("float32"), rng.uniform(0.5, 2, c).astype("float32")]
    upstream = rng.normal(size=shape).astype("float32")
    if BACKEND == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        g, b, m, v = (torch.tensor(p, requires_grad=i < 2) for i, p in enumerate(params))
        y = _call(op, shape, kwargs, xt, (g, b, m, v))
        (y * torch.tensor(upstream)).sum().backward()
        return [to_numpy(t) for t in (y.detach(), xt.grad, g.grad, b.grad)]
    if BACKEND == "jax":
        import jax

        def loss(xv, g, b):
            y = _call(op, shape, kwargs, xv, (g, b, params[2], params[3]))
            return (y * upstream).sum(), y

        (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(x, params[0], params[1])
        return [to_numpy(t) for t in (y, *grads)]
    import tensorflow as tf

    xt, g, b = (tf.constant(v) for v in (x, params[0], params[1]))
    with tf.GradientTape() as tape:
        tape.watch([xt, g, b])
        y = _call(op, shape, kwargs, xt, (g, b, params[2], params[3]))
        loss = tf.reduce_sum(y * upstream)
    return [to_numpy(t) for t in (y, *tape.gradient(loss, [xt, g, b]))]


def test_declared_kernels():
    for name in ("batch_norm", "batch_norm_inference", "batch_group_norm", "group_norm", "ghost_batch_norm", "normalize"):
        assert _backends.has_kernel(name) == (name in EXPECTED_KERNELS[BACKEND]), name


@pytest.mark.parametrize("op, shape, kwargs, on_torch", TORCH_KERNEL_CASES, ids=str)
def test_kernel_taken_or_declined_and_equal_to_reference(op, shape, kwargs, on_torch):
    with _backends.record_dispatch() as calls:
        fast = _gradients(op, shape, kwargs)
    expected_path = "fast" if (on_torch and BACKEND == "torch") else "reference"
    assert calls == [(op, expected_path)]
    with config.fast_paths(False), _backends.record_dispatch() as calls:
        reference = _gradients(op, shape, kwargs)
    assert calls == [(op, "reference")]
    assert_close(fast[0], reference[0], err_msg="output")
    for name, a, b in zip(("x", "gamma", "beta"), fast[1:], reference[1:]):
        assert_close(a, b, err_msg=f"d/d{name}", **GRADIENT)


@pytest.mark.skipif(BACKEND != "torch", reason="the F.batch_norm kernel exists on torch only")
def test_torch_kernel_returns_keras_biased_variance_and_leaves_inputs_alone():
    import torch

    x = torch.tensor(np.random.default_rng(1).normal(size=(5, 3, 4)).astype("float32"))
    before = x.clone()
    y, mean, variance = keras_norms.ops.batch_norm(x)
    expected = x.numpy().reshape(-1, 4).var(axis=0)  # biased, as Keras stores it
    assert_close(to_numpy(variance), expected, rtol=1e-6, atol=1e-7)
    assert_close(to_numpy(mean), x.numpy().reshape(-1, 4).mean(axis=0), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(x, before, rtol=0, atol=0)


def test_switch_context_manager_and_errors():
    assert config.fast_paths_enabled()
    with config.fast_paths(False):
        assert not config.fast_paths_enabled()
        with _backends.record_dispatch() as calls:
            keras_norms.ops.batch_norm(np.ones((4, 3), "float32"))
        assert calls == [("batch_norm", "reference")]
    assert config.fast_paths_enabled()
    with pytest.raises(TypeError, match="must be a bool"):
        config.set_fast_paths("no")
    with pytest.raises(RuntimeError):
        with config.fast_paths(False):
            raise RuntimeError("boom")
    assert config.fast_paths_enabled(), "the previous setting is restored after an error"


@pytest.mark.parametrize("value, enabled", [("0", False), ("off", False), ("1", True)])
def test_environment_variable(value, enabled):
    env = {**os.environ, config.ENV_VAR: value}
    code = "import keras_norms; print(keras_norms.config.fast_paths_enabled())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(enabled)


def test_symbolic_inputs_take_the_reference():
    x = keras.KerasTensor((None, 4, 3))
    with _backends.record_dispatch() as calls:
        out = keras_norms.ops.normalize(x, np.zeros(3), np.ones(3))
    assert tuple(out.shape) == (None, 4, 3)
    layer = keras_norms.BatchNormalization()
    with _backends.record_dispatch() as calls:
        layer(keras.Input((4, 3)))
    assert calls == [], "symbolic layer calls use compute_output_shape, not call"

"""Backend fast paths: where each kernel runs, where it declines, and the switch.

Every kernel must equal the `keras.ops` reference in outputs and gradients
(the fused torch BN Keras shipped and reverted had wrong gradients, keras PR
#19102). The per-layer comparison lives in `test_conformance.py`; here each
kernel is checked op by op on the layouts it claims. The kernels are those of
the registry (`keras_norms.ops._dispatch.registered_kernels`), and each one
needs a parity case in `PARITY_CASES`.
"""

import inspect
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms import config
from keras_norms.ops import _dispatch
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.tolerances import GRADIENT
from tests.tolerances import assert_close

BACKEND = keras.backend.backend()
OFF = "fast paths switched off"
# Where a case's kernel runs: the last entry of every parity case.
TORCH, XLA, ALL, NONE = ("torch",), ("tensorflow", "jax"), ("torch", "tensorflow", "jax"), ()


def _paths(calls):
    """`[(op, path)]` of dispatch records; every reference record must say why (reasons: test_dispatch_report.py)."""
    for record in calls:
        assert (record.path == "fast") == (record.reason is None), record
        assert record.reason is None or (isinstance(record.reason, str) and record.reason), record
    return [record[:2] for record in calls]

# (op, shape, kwargs, backends whose kernel runs)
TORCH_KERNEL_CASES = [
    ("batch_norm", (8, 5, 5, 6), dict(axis=-1), TORCH),
    ("batch_norm", (8, 6, 5, 5), dict(axis=1), TORCH),
    ("batch_norm", (8, 6), dict(axis=-1), TORCH),
    ("batch_norm", (4, 7, 6), dict(axis=2), TORCH),
    ("batch_norm", (2, 3, 3, 3, 4), dict(axis=-1), TORCH),
    ("batch_norm", (4, 6, 5, 5), dict(axis=2), NONE),  # channels in the middle: a copy
    ("batch_norm", (1, 6), dict(axis=-1), NONE),  # one value per channel: torch rejects
    ("batch_norm", (4, 5, 6), dict(axis=-1, mask=True), NONE),
    ("batch_norm_inference", (8, 5, 5, 6), dict(axis=-1), TORCH),
    ("batch_norm_inference", (8, 6, 5, 5), dict(axis=1), TORCH),
    ("batch_norm_inference", (1, 6), dict(axis=-1), TORCH),
    ("batch_norm_inference", (8, 5, 5, 6), dict(axis=-1, example_weight=0.25), NONE),
    ("batch_norm_inference", (4, 6, 5, 5), dict(axis=2), NONE),
]
# Ops that have no kernel on any backend (checked to stay that way).
NO_KERNEL = ("normalize", "filter_response_norm", "proxy_norm")

# EvoNorm kernels: (op, shape, kwargs, backends whose kernel runs). torch takes the channel axis 1 or last (a free
# view); the XLA kernels any axis, and B0's inference has no XLA kernel (the same moments code for B0 and S0,
# checked on S0). `offset` shifts the input: at |mean|/std = 150 a one-pass variance without the shift would cancel.
EVONORM_CASES = [
    ("evonorm_b0", (6, 5, 4, 8), dict(axis=-1), ALL),
    ("evonorm_b0", (5, 8, 3, 4), dict(axis=1), ALL),
    ("evonorm_b0", (1, 6, 7), dict(axis=-1, offset=300.0), ALL),  # batch 1: batch variance = instance one
    ("evonorm_b0_inference", (6, 5, 4, 8), dict(axis=-1), TORCH),
    ("evonorm_s0", (4, 5, 4, 8), dict(axis=-1, groups=4), ALL),
    ("evonorm_s0", (3, 8, 5, 2), dict(axis=1, groups=-1), ALL),
    ("evonorm_s0", (3, 5, 8, 2), dict(axis=2, groups=2), XLA),
    ("evonorm_s0", (2, 6, 4, 8), dict(axis=-1, groups=2, offset=300.0), ALL),
]


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


def test_registered_kernels_have_the_signature_of_their_op():
    kernels = _dispatch.registered_kernels(BACKEND)
    assert kernels, f"no kernel registered on {BACKEND}"
    for (op, _), kernel in kernels.items():
        public = getattr(keras_norms.ops, op, None)
        assert public is not None, f"{kernel.__module__}.{kernel.__name__} is registered for {op!r}, not a public op"
        # The op passes its arguments through, all but `synchronized` (decided before dispatching).
        op_parameters = [p for p in inspect.signature(public).parameters if p != "synchronized"]
        assert list(inspect.signature(kernel).parameters) == op_parameters, (op, kernel)
    for op in NO_KERNEL:
        assert getattr(keras_norms.ops, op) and not any(key[0] == op for key in kernels), op


def _evonorm_gradients(op, shape, kwargs):
    """Output(s) and gradients w.r.t. x, v, gamma, beta of an EvoNorm op, with the backend's autodiff."""
    kwargs = dict(kwargs)
    offset = kwargs.pop("offset", 0.5)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 2 + offset).astype("float32")
    c = shape[kwargs["axis"] % len(shape)]
    v, gamma, beta = (rng.uniform(0.5, 1.5, c).astype("float32"), rng.uniform(0.5, 1.5, c).astype("float32"),
                      rng.normal(size=c).astype("float32"))
    moving_variance = rng.uniform(0.5, 2.0, c).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    variance_upstream = rng.normal(size=c).astype("float32")  # B0's variance output gets a gradient too
    fn = getattr(keras_norms.ops, op)

    def outputs(xv, vv, g, b):
        if op == "evonorm_b0_inference":
            return [fn(xv, moving_variance, vv, g, b, **kwargs)]
        result = fn(xv, vv, g, b, **kwargs)
        return list(result) if op == "evonorm_b0" else [result]

    def loss(outs):
        total = keras.ops.sum(outs[0] * keras.ops.convert_to_tensor(upstream))
        if len(outs) > 1:
            total = total + keras.ops.sum(outs[1] * keras.ops.convert_to_tensor(variance_upstream))
        return total

    if BACKEND == "torch":
        import torch

        leaves = [torch.tensor(t, requires_grad=True) for t in (x, v, gamma, beta)]
        outs = outputs(*leaves)
        loss(outs).backward()
        return [to_numpy(o.detach()) for o in outs] + [to_numpy(t.grad) for t in leaves]
    if BACKEND == "jax":
        import jax

        def f(*leaves):
            outs = outputs(*leaves)
            return loss(outs), outs

        (_, outs), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3), has_aux=True))(x, v, gamma, beta)
        return [to_numpy(o) for o in outs] + [to_numpy(g) for g in grads]
    import tensorflow as tf

    leaves = [tf.constant(t) for t in (x, v, gamma, beta)]
    with tf.GradientTape() as tape:
        tape.watch(leaves)
        outs = outputs(*leaves)
        total = loss(outs)
    return [to_numpy(o) for o in outs] + [to_numpy(g) for g in tape.gradient(total, leaves)]


@pytest.mark.parametrize("op, shape, kwargs, backends", EVONORM_CASES, ids=str)
def test_evonorm_kernel_taken_or_declined_and_equal_to_reference(op, shape, kwargs, backends):
    with config.record_dispatch() as calls:
        fast = _evonorm_gradients(op, shape, kwargs)
    assert _paths(calls) == [(op, "fast" if BACKEND in backends else "reference")]
    with config.fast_paths(False), config.record_dispatch() as calls:
        reference = _evonorm_gradients(op, shape, kwargs)
    assert calls == [(op, "reference", OFF)]
    names = ["output", "variance"][: len(fast) - 4] + ["d/dx", "d/dv", "d/dgamma", "d/dbeta"]
    for name, a, b in zip(names, fast, reference):
        tolerance = GRADIENT if name.startswith("d/") else {}
        if name.startswith("d/") and "offset" in kwargs:
            # At |mean|/std = 150 the gradients (up to ~30) sum terms of ~x/std that cancel: against float64,
            # S0's float32 d/dx was off by 2e-4 (kernel) and 5e-4 (reference, two-pass) on JAX. The outputs
            # keep the float32 tolerance, which a cancelling one-pass variance would fail.
            tolerance = dict(rtol=1e-4, atol=3e-5 * float(np.max(np.abs(b))))
        assert_close(a, b, err_msg=name, **tolerance)


@pytest.mark.parametrize("op, shape, kwargs, backends", TORCH_KERNEL_CASES, ids=str)
def test_kernel_taken_or_declined_and_equal_to_reference(op, shape, kwargs, backends):
    with config.record_dispatch() as calls:
        fast = _gradients(op, shape, kwargs)
    expected_path = "fast" if BACKEND in backends else "reference"
    assert _paths(calls) == [(op, expected_path)]
    with config.fast_paths(False), config.record_dispatch() as calls:
        reference = _gradients(op, shape, kwargs)
    assert calls == [(op, "reference", OFF)]
    assert_close(fast[0], reference[0], err_msg="output")
    for name, a, b in zip(("x", "gamma", "beta"), fast[1:], reference[1:]):
        assert_close(a, b, err_msg=f"d/d{name}", **GRADIENT)


def _outputs_and_gradients(fn, arrays):
    """`[*outputs, *gradients]` as NumPy, for `fn(*leaves) -> (loss, outputs)`, with the backend's autodiff."""
    if BACKEND == "torch":
        import torch

        leaves = [torch.tensor(t, requires_grad=True) for t in arrays]
        loss, outs = fn(*leaves)
        loss.backward()
        return [to_numpy(o.detach()) for o in outs] + [to_numpy(t.grad) for t in leaves]
    if BACKEND == "jax":
        import jax

        argnums = tuple(range(len(arrays)))
        (_, outs), grads = jax.value_and_grad(fn, argnums=argnums, has_aux=True)(*arrays)
        return [to_numpy(o) for o in outs] + [to_numpy(g) for g in grads]
    import tensorflow as tf

    leaves = [tf.constant(t) for t in arrays]
    with tf.GradientTape() as tape:
        tape.watch(leaves)
        loss, outs = fn(*leaves)
    return [to_numpy(o) for o in outs] + [to_numpy(g) for g in tape.gradient(loss, leaves)]


# Ghost BN: (shape, axis, virtual_batch_size, backends whose kernel runs). `offset` in the id: |mean|/std = 100.
GHOST_CASES = [
    ((8, 5, 5, 6), -1, 2, TORCH),
    ((8, 6, 5, 5), 1, 4, TORCH),
    ((12, 6), -1, 3, TORCH),
    ((6, 3, 4, 2, 5), -1, 2, TORCH),
    ((8, 5, 6, 4), 2, 2, NONE),  # channels in the middle
    ((7, 5, 6), -1, 2, NONE),  # 2 does not divide 7: the reference pads and masks
]


def _ghost_gradients(shape, axis, virtual_batch_size, offset=0.5):
    """`(y, mean, variance, d/dx, d/dgamma, d/dbeta)` of a loss that uses all three outputs."""
    rng = np.random.default_rng(7)
    x = (rng.normal(size=shape) * 2 + offset).astype("float32")
    c = shape[axis]
    gamma, beta = rng.uniform(0.5, 1.5, c).astype("float32"), rng.normal(size=c).astype("float32")
    up, up_mean, up_var = (rng.normal(size=s).astype("float32") for s in (shape, c, c))

    def outputs(xv, g, b):
        y, mean, variance = keras_norms.ops.ghost_batch_norm(
            xv, g, b, axis=axis, epsilon=1e-3, virtual_batch_size=virtual_batch_size)
        t = keras.ops.convert_to_tensor
        loss = keras.ops.sum(y * t(up)) + keras.ops.sum(mean * t(up_mean)) + keras.ops.sum(variance * t(up_var))
        return loss, (y, mean, variance)

    return _outputs_and_gradients(outputs, (x, gamma, beta))


@pytest.mark.parametrize("shape, axis, virtual_batch_size, backends", GHOST_CASES, ids=str)
@pytest.mark.parametrize("offset", [0.5, 200.0])
def test_ghost_kernel_equals_reference_outputs_statistics_and_gradients(shape, axis, virtual_batch_size, backends,
                                                                         offset):
    with config.record_dispatch() as calls:
        fast = _ghost_gradients(shape, axis, virtual_batch_size, offset)
    assert _paths(calls) == [("ghost_batch_norm", "fast" if BACKEND in backends else "reference")]
    with config.fast_paths(False), config.record_dispatch() as calls:
        reference = _ghost_gradients(shape, axis, virtual_batch_size, offset)
    assert calls == [("ghost_batch_norm", "reference", OFF)]
    for name, a, b in zip(("y", "mean", "variance", "d/dx", "d/dgamma", "d/dbeta"), fast, reference):
        # The same two-pass moments in the same order: the statistics agree to rounding; at |mean|/std = 100 the
        # mean's gradient term (up to ~1e2 per element before cancelling) leaves float32 rounding in d/dx.
        tolerance = GRADIENT if name.startswith("d/") else dict(rtol=1e-5, atol=1e-5 * max(1.0, offset))
        assert_close(a, b, err_msg=name, **tolerance)


# MBN training: (shape, axis, count, memory_weights, backends whose kernel runs). count 0: an empty memory (BN);
# 2: three of four slots used; 6: a wrapped ring buffer.
MEMORIZED_CASES = [
    ((6, 4, 4, 5), -1, 0, None, TORCH),
    ((6, 4, 4, 5), -1, 2, None, TORCH),
    ((6, 5, 4, 4), 1, 6, None, TORCH),
    ((8, 5), -1, 6, (4.0, 2.0, 1.0, 1.0), TORCH),
    ((6, 5, 4, 4), 2, 2, None, NONE),  # channels in the middle
]


def _memorized_gradients(shape, axis, count, memory_weights, offset):
    """`(y, new memory mean, new second moment, d/dx, d/dgamma, d/dbeta)` of MBN training."""
    rng = np.random.default_rng(13)
    x = (rng.normal(size=shape) * 2 + offset).astype("float32")
    c = shape[axis]
    memory_mean = (rng.normal(size=(4, c)) + offset).astype("float32")
    memory_second = (memory_mean.astype("float64") ** 2 + rng.uniform(2.0, 6.0, (4, c))).astype("float32")
    gamma, beta = rng.uniform(0.5, 1.5, c).astype("float32"), rng.normal(size=c).astype("float32")
    up = rng.normal(size=shape).astype("float32")

    def outputs(xv, g, b):
        y, new_mean, new_second = keras_norms.ops.memorized_batch_norm(
            xv, memory_mean, memory_second, float(count), g, b, axis=axis, epsilon=1e-3, memory_weights=memory_weights)
        return keras.ops.sum(y * keras.ops.convert_to_tensor(up)), (y, new_mean, new_second)

    return _outputs_and_gradients(outputs, (x, gamma, beta))


@pytest.mark.parametrize("shape, axis, count, memory_weights, backends", MEMORIZED_CASES, ids=str)
@pytest.mark.parametrize("offset", [0.5, 100.0])
def test_memorized_kernel_equals_reference_outputs_memory_and_gradients(shape, axis, count, memory_weights, backends,
                                                                         offset):
    with config.record_dispatch() as calls:
        fast = _memorized_gradients(shape, axis, count, memory_weights, offset)
    assert _paths(calls) == [("memorized_batch_norm", "fast" if BACKEND in backends else "reference")]
    with config.fast_paths(False), config.record_dispatch() as calls:
        reference = _memorized_gradients(shape, axis, count, memory_weights, offset)
    assert calls == [("memorized_batch_norm", "reference", OFF)]
    for name, a, b in zip(("y", "memory mean", "memory second moment", "d/dx", "d/dgamma", "d/dbeta"), fast,
                          reference):
        tolerance = GRADIENT if name.startswith("d/") else dict(rtol=1e-5, atol=1e-5)
        assert_close(a, b, err_msg=name, **tolerance)


@pytest.mark.parametrize("shape, axis", [((6, 4, 4, 5), -1), ((6, 5, 4, 4), 1), ((6, 5, 4, 4), 2)], ids=str)
def test_memorized_inference_takes_the_bn_inference_kernel(shape, axis):
    rng = np.random.default_rng(9)
    x = (rng.normal(size=shape) * 2 + 3).astype("float32")
    c = shape[axis]
    memory_mean = rng.normal(size=(4, c)).astype("float32")
    memory_second = (memory_mean**2 + rng.uniform(0.5, 2.0, (4, c))).astype("float32")
    gamma, beta = rng.uniform(0.5, 1.5, c).astype("float32"), rng.normal(size=c).astype("float32")

    def call():
        return to_numpy(keras_norms.ops.memorized_batch_norm_inference(
            x, memory_mean, memory_second, 3, gamma, beta, axis=axis, epsilon=1e-3))

    with config.record_dispatch() as calls:
        fast = call()
    on_kernel = BACKEND == "torch" and axis in (1, -1)
    assert _paths(calls) == [("batch_norm_inference", "fast" if on_kernel else "reference")]
    with config.fast_paths(False):
        reference = call()
    # NumPy: slots 0-2 filled, uniform weights, pooled raw moments.
    mean = memory_mean[:3].astype("float64").mean(0)
    variance = memory_second[:3].astype("float64").mean(0) - mean**2
    broadcast = [c if i == axis % len(shape) else 1 for i in range(len(shape))]
    expected = (x - mean.reshape(broadcast)) / np.sqrt(variance.reshape(broadcast) + 1e-3) * gamma.reshape(
        broadcast) + beta.reshape(broadcast)
    assert_close(fast, reference, err_msg="fast path vs reference")
    assert_close(fast, expected, err_msg="vs NumPy")


# NormPropReLU: (dtype, backends whose kernel runs).
NORM_PROP_RELU_CASES = [("float32", TORCH), ("float64", TORCH)]


@pytest.mark.parametrize("dtype, backends", NORM_PROP_RELU_CASES, ids=str)
def test_norm_prop_relu_kernel_equals_reference_and_numpy(dtype, backends):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(4, 5, 6)).astype(dtype)
    x.reshape(-1)[::7] = 0.0  # at 0 the ReLU's gradient is 0 on every path
    upstream = rng.normal(size=x.shape).astype(dtype)

    def run():
        if BACKEND == "torch":
            import torch

            xt = torch.tensor(x, requires_grad=True)
            y = keras_norms.ops.norm_prop_relu(xt)
            (y * torch.tensor(upstream)).sum().backward()
            return to_numpy(y.detach()), to_numpy(xt.grad)
        layer = keras_norms.NormPropReLU(dtype=dtype)
        layer.build(x.shape)
        y, dx = layer_gradients(layer, x, upstream)[:2]
        return y, dx

    with config.record_dispatch() as calls:
        fast = run()
    assert calls and set(_paths(calls)) == {("norm_prop_relu", "fast" if BACKEND in backends else "reference")}
    with config.fast_paths(False):
        reference = run()
    np.testing.assert_array_equal(fast[0], reference[0])
    np.testing.assert_array_equal(fast[1], reference[1])
    mean, std = 1 / np.sqrt(2 * np.pi), np.sqrt(0.5 * (1 - 1 / np.pi))
    # The output's own dtype: JAX without x64 computes float64 inputs in float32.
    assert_close(fast[0], (np.maximum(x, 0) - mean) / std, dtype=str(fast[0].dtype))
    # float32 tolerance: the shared gradient helper takes the loss in float32 on TensorFlow.
    assert_close(fast[1], upstream * (x > 0) / std)


# TLU: (shape, axis, dtype, backends whose kernel runs). Every other input equals its channel's tau, so ties are
# tested: PyTorch's and JAX's `maximum` split their gradient in half, TensorFlow's gives it to x; the torch kernel
# must do as torch does.
TLU_CASES = [
    ((4, 5, 3, 6), -1, "float32", TORCH),
    ((3, 6, 4, 2), 1, "float32", TORCH),
    ((5, 6), -1, "float32", TORCH),
    ((2, 3, 6, 4), 2, "float32", TORCH),
    ((4, 5, 3, 6), -1, "float16", TORCH),
]


def _tlu_gradients(shape, axis, dtype):
    """`(z, dz/dx, dz/dtau)` for `sum(tlu(x, tau) * upstream)` with the backend's autodiff, and the inputs."""
    rng = np.random.default_rng(3)
    c = shape[axis]
    tau = rng.normal(size=c).astype(dtype)
    x = rng.normal(size=shape).astype(dtype)
    ties = np.broadcast_to(tau.reshape([c if i == axis % len(shape) else 1 for i in range(len(shape))]), shape)
    x.reshape(-1)[::2] = ties.reshape(-1)[::2]
    upstream = rng.normal(size=shape).astype(dtype)

    def outputs(xv, tv):
        z = keras_norms.ops.tlu(xv, tv, axis=axis)
        return keras.ops.sum(z * keras.ops.convert_to_tensor(upstream)), (z,)

    return _outputs_and_gradients(outputs, (x, tau)), (x, tau, ties, upstream)


@pytest.mark.parametrize("shape, axis, dtype, backends", TLU_CASES, ids=str)
def test_tlu_kernel_equals_reference_and_numpy_with_ties(shape, axis, dtype, backends):
    with config.record_dispatch() as calls:
        fast, (x, tau, ties, upstream) = _tlu_gradients(shape, axis, dtype)
    assert _paths(calls) == [("tlu", "fast" if BACKEND in backends else "reference")]
    with config.fast_paths(False), config.record_dispatch() as calls:
        reference, _ = _tlu_gradients(shape, axis, dtype)
    assert calls == [("tlu", "reference", OFF)]
    # NumPy, in float64: z = max(x, tau); the gradient goes to the larger operand, at a tie as the backend's
    # `maximum` sends it.
    at_tie = 1.0 if BACKEND == "tensorflow" else 0.5
    x64, ties64, up64 = (a.astype("float64") for a in (x, ties, upstream))
    to_x = np.where(x64 > ties64, 1.0, np.where(x64 == ties64, at_tie, 0.0))
    expected = [np.maximum(x64, ties64), up64 * to_x,
                (up64 * (1.0 - to_x)).sum(axis=tuple(i for i in range(len(shape)) if i != axis % len(shape)))]
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-2, atol=2e-2)
    np.testing.assert_array_equal(fast[0], reference[0], err_msg="output")  # a maximum: exact on every path
    for name, a, b, e in zip(("z", "d/dx", "d/dtau"), fast, reference, expected):
        assert a.dtype == np.dtype(dtype), name
        assert_close(a, b, err_msg=f"{name}: fast path vs reference", **tolerance)
        assert_close(a, e, err_msg=f"{name}: vs NumPy", **tolerance)


# Group and Batch-Group norm: (op, shape, kwargs, backends whose kernel runs). More layouts and the precision at a
# large mean: tests/layers/test_batch_channel_normalization.py and test_batch_group_normalization.py.
GROUP_CASES = [
    ("group_norm", (4, 6, 6, 8), dict(axis=-1, groups=4), ALL),
    ("group_norm", (4, 8, 6, 6), dict(axis=1, groups=4), ALL),
    ("group_norm", (3, 4, 6, 2), dict(axis=2, groups=3), XLA),  # torch: channels in the middle, no free view
    ("batch_group_norm", (8, 5, 5, 6), dict(axis=-1, groups=3, examples_per_group=2), ALL),
    ("batch_group_norm", (6, 6, 5, 4), dict(axis=1, groups=2, examples_per_group=3), ALL),
    ("batch_group_norm", (5, 4, 6), dict(axis=-1, groups=2, examples_per_group=2), XLA),  # torch: 2 does not divide 5
    ("batch_group_norm", (4, 2, 1024), dict(axis=-1, groups=32, examples_per_group=2), XLA),  # torch: slower there
]


def _group_gradients(op, shape, kwargs, offset):
    """`(y, [mean, second moment,] d/dx, d/dgamma, d/dbeta)` of a loss that uses every output."""
    rng = np.random.default_rng(5)
    x = (rng.normal(size=shape) * 2 + offset).astype("float32")
    c = shape[kwargs["axis"]]
    gamma, beta = rng.uniform(0.5, 1.5, c).astype("float32"), rng.normal(size=c).astype("float32")
    up, up_mean, up_second = (rng.normal(size=s).astype("float32") for s in (shape, c, c))

    def outputs(xv, g, b):
        result = getattr(keras_norms.ops, op)(xv, g, b, epsilon=1e-3, **kwargs)
        outs = tuple(result) if op == "batch_group_norm" else (result,)
        t = keras.ops.convert_to_tensor
        loss = sum(keras.ops.sum(o * t(u)) for o, u in zip(outs, (up, up_mean, up_second)))
        return loss, outs

    return _outputs_and_gradients(outputs, (x, gamma, beta))


@pytest.mark.parametrize("op, shape, kwargs, backends", GROUP_CASES, ids=str)
@pytest.mark.parametrize("offset", [0.5, 100.0])
def test_group_kernels_equal_reference_outputs_statistics_and_gradients(op, shape, kwargs, backends, offset):
    with config.record_dispatch() as calls:
        fast = _group_gradients(op, shape, kwargs, offset)
    assert _paths(calls) == [(op, "fast" if BACKEND in backends else "reference")]
    with config.fast_paths(False), config.record_dispatch() as calls:
        reference = _group_gradients(op, shape, kwargs, offset)
    assert calls == [(op, "reference", OFF)]
    names = ["y", "mean", "second moment"][: len(fast) - 3] + ["d/dx", "d/dgamma", "d/dbeta"]
    for name, a, b in zip(names, fast, reference):
        # At |mean|/std = 50 the float32 two-pass reference itself is off by ~1e-5 (its mean sums large values).
        tolerance = GRADIENT if name.startswith("d/") else dict(rtol=1e-5, atol=1e-5 * max(1.0, offset))
        assert_close(a, b, err_msg=name, **tolerance)


# Layer and RMS norm: (op, shape, axis, gradients taken, backends whose kernel runs). torch's kernels take trailing
# axes only, and rms_norm's no gradient on CPU. At an offset of 300 (|mean|/std = 150) F.layer_norm is as exact as
# the two-pass reference (module doc of torch/layer_norm.py; the layer against float64:
# tests/layers/test_layer_normalization.py).
LAYER_NORM_CASES = [
    ("layer_norm", (4, 5, 6), -1, True, TORCH),
    ("layer_norm", (3, 4, 5, 6), [1, 2, 3], True, TORCH),
    ("layer_norm", (3, 6, 4, 5), 1, True, NONE),  # a middle axis
    ("rms_norm", (4, 5, 6), -1, False, TORCH),
    ("rms_norm", (3, 4, 5, 6), [-2, -1], False, TORCH),
    ("rms_norm", (4, 5, 6), -1, True, NONE),  # gradients on CPU
    ("rms_norm", (3, 4, 5, 6), [1, 3], False, NONE),  # not contiguous
]


@pytest.mark.parametrize("op, shape, axis, gradients, backends", LAYER_NORM_CASES, ids=str)
@pytest.mark.parametrize("offset", [0.5, 300.0])
def test_layer_norm_kernels_equal_reference_outputs_and_gradients(op, shape, axis, gradients, backends, offset):
    rng = np.random.default_rng(4)
    x = (rng.normal(size=shape) * 2 + offset).astype("float32")
    weight_shape = [shape[a] for a in sorted(axis if isinstance(axis, list) else [axis])]
    weights = [rng.uniform(0.5, 1.5, weight_shape).astype("float32")]
    if op == "layer_norm":
        weights.append(rng.normal(size=weight_shape).astype("float32"))
    upstream = keras.ops.convert_to_tensor(rng.normal(size=shape).astype("float32"))

    def outputs(xv, *w):
        y = getattr(keras_norms.ops, op)(xv, *w, axis=axis, epsilon=1e-3)
        return keras.ops.sum(y * upstream), (y,)

    def run():
        return _outputs_and_gradients(outputs, [x] + weights) if gradients else [to_numpy(outputs(x, *weights)[1][0])]

    with config.record_dispatch() as calls:
        fast = run()
    assert _paths(calls) == [(op, "fast" if BACKEND in backends else "reference")]
    with config.fast_paths(False), config.record_dispatch() as calls:
        reference = run()
    assert calls == [(op, "reference", OFF)]
    for name, a, b in zip(["y", "d/dx", "d/dgamma", "d/dbeta"], fast, reference):
        # At offset 300 both paths carry the float32 rounding of a mean near 300 (~2e-5 on x - mean).
        tolerance = GRADIENT if name.startswith("d/") or offset > 1 else {}
        assert_close(a, b, err_msg=name, **tolerance)


# Every kernel's parity cases, keyed by op: each case compares the kernel's outputs and gradients with the
# reference's (fast paths on and off) and ends with the backends whose kernel it runs.
PARITY_CASES = {
    "batch_norm": [case for case in TORCH_KERNEL_CASES if case[0] == "batch_norm"],
    "batch_norm_inference": [case for case in TORCH_KERNEL_CASES if case[0] == "batch_norm_inference"],
    "ghost_batch_norm": GHOST_CASES,
    "memorized_batch_norm": MEMORIZED_CASES,
    "group_norm": [case for case in GROUP_CASES if case[0] == "group_norm"],
    "batch_group_norm": [case for case in GROUP_CASES if case[0] == "batch_group_norm"],
    "layer_norm": [case for case in LAYER_NORM_CASES if case[0] == "layer_norm"],
    "rms_norm": [case for case in LAYER_NORM_CASES if case[0] == "rms_norm"],
    "norm_prop_relu": NORM_PROP_RELU_CASES,
    "tlu": TLU_CASES,
    **{op: [case for case in EVONORM_CASES if case[0] == op] for op in ("evonorm_b0", "evonorm_b0_inference",
                                                                         "evonorm_s0")},
}


def missing_parity_cases(kernels, parity_cases, backend):
    """Messages for the registered `{(op, backend): kernel}` without a parity case that runs them on `backend`."""
    missing = []
    for (op, _), kernel in sorted(kernels.items()):
        if not any(backend in case[-1] for case in parity_cases.get(op, ())):
            missing.append(
                f"the kernel {kernel.__module__}.{kernel.__name__} of {op!r} has no parity case on {backend}: add to "
                f"PARITY_CASES[{op!r}] in tests/test_fast_paths.py a case ending with the backends whose kernel it "
                f"runs, e.g. {(backend,)}, whose test compares the outputs and gradients of keras_norms.ops.{op} "
                "with fast paths on and off (`config.fast_paths(False)`) and asserts the path taken (see GROUP_CASES "
                "and test_group_kernels_equal_reference_outputs_statistics_and_gradients)"
            )
    return missing


def test_every_kernel_has_a_parity_case():
    missing = missing_parity_cases(_dispatch.registered_kernels(BACKEND), PARITY_CASES, BACKEND)
    assert not missing, "\n".join(missing)


def test_a_kernel_without_a_parity_case_is_reported():
    def fast(x):
        return x

    kernels = {("new_norm", "jax"): fast, ("tlu", "jax"): fast}
    (message,) = missing_parity_cases(kernels, {"tlu": [(None, ("jax",))]}, "jax")
    assert "of 'new_norm' has no parity case on jax: add to PARITY_CASES['new_norm'] in tests/test_fast_paths.py" in (
        message)
    messages = missing_parity_cases(kernels, {"tlu": [(None, TORCH)]}, "jax")  # a case, but not one run on jax
    assert "fast of 'tlu' has no parity case on jax" in messages[1]


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


def test_switch_plain_call_applies_for_the_rest_of_the_process():
    # Documented as a function that switches fast paths off (docs/layers/batch_group_normalization.md once said
    # so), it did nothing without `with`: now the call applies at once, as `torch.set_grad_enabled` does.
    assert config.fast_paths_enabled()
    try:
        config.fast_paths(False)
        assert not config.fast_paths_enabled()
        with config.record_dispatch() as calls:
            keras_norms.ops.batch_norm(np.ones((4, 3), "float32"))
        assert calls == [("batch_norm", "reference", OFF)]
        config.fast_paths(True)
        assert config.fast_paths_enabled()
    finally:
        config.set_fast_paths(True)
    assert config.fast_paths_enabled()


def test_switch_context_manager_and_errors():
    assert config.fast_paths_enabled()
    with config.fast_paths(True):
        with config.fast_paths(False):
            assert not config.fast_paths_enabled()
        assert config.fast_paths_enabled(), "the inner block restores the outer setting"
    config.set_fast_paths(False)
    try:
        with config.fast_paths(True):
            assert config.fast_paths_enabled()
        assert not config.fast_paths_enabled(), "the previous setting (off) is restored, not the default"
    finally:
        config.set_fast_paths(True)
    with config.fast_paths(False):
        assert not config.fast_paths_enabled()
        with config.record_dispatch() as calls:
            keras_norms.ops.batch_norm(np.ones((4, 3), "float32"))
        assert calls == [("batch_norm", "reference", OFF)]
    assert config.fast_paths_enabled()
    with pytest.raises(TypeError, match="must be a bool"):
        config.set_fast_paths("no")
    with pytest.raises(TypeError, match="must be a bool"):
        config.fast_paths("no")
    assert config.fast_paths_enabled()
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
    with config.record_dispatch() as calls:
        out = keras_norms.ops.group_norm(x, groups=3)  # a kernel on every backend
    assert tuple(out.shape) == (None, 4, 3)
    assert calls == [("group_norm", "reference", "symbolic input")]
    layer = keras_norms.BatchNormalization()
    with config.record_dispatch() as calls:
        layer(keras.Input((4, 3)))
    assert calls == [], "symbolic layer calls use compute_output_shape, not call"


def test_torch_batch_group_norm_declines_many_channels_last():
    """At 1024 channels or more, channels last, torch's kernel lost to the reference (module doc of torch/group.py)."""
    x = keras.ops.ones((4, 2, 1024))
    with config.record_dispatch() as calls:
        keras_norms.ops.batch_group_norm(x, groups=32)
    if BACKEND == "torch":
        reason = "channels-last input with 1024 or more channels (the reference is faster there)"
        assert calls == [("batch_group_norm", "reference", reason)]
    else:
        assert _paths(calls) == [("batch_group_norm", "fast")]


@pytest.mark.skipif(BACKEND != "torch", reason="eager torch: an expanded gradient reaches the kernel's backward")
@pytest.mark.parametrize("op, shape, axis", [("batch_norm", (8, 5, 5, 6), -1), ("batch_norm", (8, 6, 5, 5), 1),
                                             ("group_norm", (4, 6, 6, 8), -1)], ids=str)
def test_torch_kernels_take_a_stride_0_upstream_gradient(op, shape, axis):
    """A loss of sum(y) hands back an expanded, stride-0 gradient: fast and reference paths must agree on it."""
    import torch

    rng = np.random.default_rng(3)
    x = (rng.normal(size=shape) * 2 + 1).astype("float32")
    gamma = rng.uniform(0.5, 1.5, shape[axis]).astype("float32")

    def outputs_and_gradients():
        leaves = [torch.tensor(x, requires_grad=True), torch.tensor(gamma, requires_grad=True),
                  torch.zeros(shape[axis], requires_grad=True)]
        extra = dict(groups=2) if op == "group_norm" else {}
        y = getattr(keras_norms.ops, op)(*leaves, axis=axis, epsilon=1e-3, **extra)
        y = y[0] if isinstance(y, tuple) else y
        y.sum().backward()
        return [to_numpy(y.detach())] + [to_numpy(t.grad) for t in leaves]

    with config.record_dispatch() as calls:
        fast = outputs_and_gradients()
    assert _paths(calls) == [(op, "fast")]
    with config.fast_paths(False):
        reference = outputs_and_gradients()
    for name, a, b in zip(("y", "d/dx", "d/dgamma", "d/dbeta"), fast, reference):
        assert_close(a, b, err_msg=name, **(GRADIENT if name.startswith("d/") else {}))
    # d/dbeta is the count per channel; for batch norm sum(y) = count * sum(beta) whatever x is, so d/dx vanishes.
    np.testing.assert_allclose(fast[3], np.full(shape[axis], x.size / shape[axis]), rtol=1e-6)
    if op == "batch_norm":
        np.testing.assert_allclose(fast[1], 0.0, atol=1e-4)


def test_contiguous_grad_hands_on_a_dense_gradient():
    if BACKEND != "torch":
        pytest.skip("a torch autograd node")
    import torch

    from keras_norms._backends.torch._common import contiguous_grad

    x = torch.ones(3, 4, requires_grad=True)
    seen = []
    h = x * 2.0
    h.register_hook(lambda g: seen.append(g.stride()))
    contiguous_grad(h).sum().backward()
    assert seen == [(4, 1)]  # without the node: (0, 0), the expanded gradient of sum
    assert torch.equal(x.grad, torch.full((3, 4), 2.0))

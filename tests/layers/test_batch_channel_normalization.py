"""BatchChannelNormalization and the group_norm op: oracle, EstBN identities, GN parity, fast paths, errors.

The float64 oracle (`tests/reference/batch_channel_norm.py`) is written from the spec (ALGORITHMS.md §8); the
shared checks (serialization, save/load, mixed precision, symbolic shapes, finite-difference gradients, ...) come
from the conformance registry.
"""

import keras
import numpy as np
import pytest

from keras_norms import config
from keras_norms.layers.batch_channel_normalization import BatchChannelNormalization
from keras_norms.ops import batch_channel as bcn_ops
from keras_norms.ops import group as group_ops
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.reference import batch_channel_norm as ref
from tests.tolerances import GRADIENT
from tests.tolerances import assert_close

BACKEND = keras.backend.backend()


def data(shape, seed=0, scale=1.5, offset=0.5):
    # Moderate |mean|/std: Keras's GroupNormalization uses keras.ops.moments, one-pass on torch (spec §1.5).
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * scale + offset).astype("float32")


def set_random_weights(layer, seed=1):
    rng = np.random.default_rng(seed)
    values = {}
    for w in layer.weights:
        if "gamma" in w.name or "variance" in w.name:
            value = rng.uniform(0.6, 1.4, w.shape)
        else:
            value = rng.normal(size=w.shape) * 0.5
        values[w.name] = value.astype("float32")
        w.assign(values[w.name])
    return values


def f64(weights):
    return {k: np.asarray(v, np.float64) for k, v in weights.items()}


def built(shape, **kwargs):
    layer = BatchChannelNormalization(**kwargs)
    layer.build(shape)
    return layer, set_random_weights(layer)


CONFIGS = [
    ("rank4", (6, 3, 3, 8), dict(groups=4)),
    ("rank4_group_affine", (5, 3, 2, 6), dict(groups=3, final_affine="group")),
    ("rank3_channels_first", (4, 6, 5), dict(groups=2, axis=1)),
    ("rank2", (6, 8), dict(groups=2)),
    ("rank5", (3, 2, 3, 2, 4), dict(groups=2)),
    ("channels_in_the_middle", (4, 3, 6, 2), dict(groups=3, axis=2)),
    ("no_affine", (4, 3, 4), dict(groups=2, center=False, scale=False)),
]
IDS = [c[0] for c in CONFIGS]


@pytest.mark.parametrize("mode", ["batch", "estimate"])
@pytest.mark.parametrize("name, shape, kwargs", CONFIGS, ids=IDS)
def test_training_and_inference_match_the_oracle(name, shape, kwargs, mode):
    layer, weights = built(shape, mode=mode, momentum=0.8, **kwargs)
    x = data(shape, seed=len(shape))
    y_inf = to_numpy(layer(x, training=False))
    expected, _ = ref.batch_channel_norm_oracle(x.astype("float64"), f64(weights), False, **kwargs)
    assert_close(y_inf, expected, err_msg=f"{name} inference")
    y = to_numpy(layer(x, training=True))
    expected, state = ref.batch_channel_norm_oracle(
        x.astype("float64"), f64(weights), True, mode=mode, momentum=0.8, **kwargs
    )
    assert_close(y, expected, err_msg=f"{name} training")
    for w in layer.non_trainable_weights:
        assert_close(to_numpy(w), state[w.name], err_msg=f"{name} {w.name}")


@pytest.mark.parametrize("shape, kwargs", [((4, 3, 3, 8), dict(groups=4)), ((1, 6), dict(groups=3, axis=1))])
def test_estimate_training_equals_inference_given_frozen_statistics(shape, kwargs):
    """Spec §16: EstBN training and inference compute the same function up to the statistics update."""
    x = data(shape, seed=2, offset=1.0)
    # momentum=1 (r = 0): the estimates never move, and training is inference.
    frozen, _ = built(shape, mode="estimate", momentum=1.0, **kwargs)
    before = [to_numpy(w) for w in frozen.non_trainable_weights]
    assert_close(to_numpy(frozen(x, training=True)), to_numpy(frozen(x, training=False)))
    for w, old in zip(frozen.non_trainable_weights, before):
        np.testing.assert_array_equal(to_numpy(w), old)
    # Otherwise the training output is the inference output with the just-updated estimates.
    layer, _ = built(shape, mode="estimate", momentum=0.7, **kwargs)
    y_train = to_numpy(layer(x, training=True))
    assert_close(y_train, to_numpy(layer(x, training=False)))


def test_estimate_mode_sends_no_gradient_into_the_statistics():
    """With sg[mu], sg[var] the gradient w.r.t. x is the inference gradient, not batch norm's."""
    shape = (4, 3, 3, 4)
    x = data(shape, seed=3)
    upstream = data(shape, seed=4)
    layer, _ = built(shape, mode="estimate", momentum=0.6, groups=2)
    _, dx_train, dw_train = layer_gradients(layer, x, upstream, training=True)
    # The layer's state now holds the estimates the training call normalized with.
    _, dx_inf, dw_inf = layer_gradients(layer, x, upstream, training=False)
    assert_close(dx_train, dx_inf, **GRADIENT)
    for a, b in zip(dw_train, dw_inf):
        assert_close(a, b, **GRADIENT)
    batch, _ = built(shape, mode="batch", groups=2)
    _, dx_batch, _ = layer_gradients(batch, x, upstream, training=True)
    assert not np.allclose(dx_batch, dx_train, atol=1e-3)


def test_estimate_variance_is_taken_about_the_old_mean():
    shape = (5, 4, 6)
    layer = BatchChannelNormalization(groups=3, mode="estimate", momentum=0.5)
    layer.build(shape)
    layer.moving_mean.assign(np.full(6, 2.0, "float32"))
    x = data(shape, seed=5, offset=-1.0).astype("float64")
    layer(x.astype("float32"), training=True)
    flat = x.reshape(-1, 6)
    assert_close(to_numpy(layer.moving_mean), 0.5 * 2.0 + 0.5 * flat.mean(0))
    assert_close(to_numpy(layer.moving_variance), 0.5 * 1.0 + 0.5 * ((flat - 2.0) ** 2).mean(0))
    # The identity v = var_B + (m - mu_old)^2 behind the op's cancellation-free form (spec §8.3, [derived]).
    np.testing.assert_allclose(((flat - 2.0) ** 2).mean(0), flat.var(0) + (flat.mean(0) - 2.0) ** 2)


def test_weights_names_shapes_and_dtypes():
    keras.config.set_dtype_policy("mixed_float16")
    layer = BatchChannelNormalization(groups=2, final_affine="group")
    layer.build((None, 4, 6))
    assert [(w.name, tuple(w.shape), w.trainable) for w in layer.weights] == [
        ("batch_gamma", (6,), True),
        ("batch_beta", (6,), True),
        ("gamma", (2,), True),
        ("beta", (2,), True),
        ("moving_mean", (6,), False),
        ("moving_variance", (6,), False),
    ]
    assert all(w.dtype == "float32" for w in layer.weights)
    assert tuple(layer(data((3, 4, 6))).shape) == (3, 4, 6)


def test_config_defaults_and_registration():
    layer = BatchChannelNormalization()
    config_ = layer.get_config()
    assert {k: config_[k] for k in ("groups", "mode", "final_affine", "momentum", "epsilon")} == {
        "groups": 32,
        "mode": "batch",
        "final_affine": "channel",
        "momentum": 0.99,
        "epsilon": 1e-5,
    }
    layer.build((None, 3, 64))
    assert layer.get_config() == config_
    assert keras.saving.get_registered_name(BatchChannelNormalization) == "keras_norms>BatchChannelNormalization"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(groups=0), r"`groups`=0.*positive int.*or -1"),
        (dict(groups=2.0), r"`groups`=2.0.*positive int"),
        (dict(mode="estimated"), r"`mode`='estimated'.*\['batch', 'estimate'\]"),
        (dict(final_affine="channels"), r"`final_affine`='channels'.*\['channel', 'group'\]"),
        (dict(axis=(1, 2)), r"`axis`=\(1, 2\).*Pass one int"),
        (dict(momentum=1.5), r"`momentum`=1.5.*\[0, 1\].*update rate is 1 - momentum"),
        (dict(epsilon=0.0), r"`epsilon`=0.0.*positive float"),
    ],
    ids=str,
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=r"BatchChannelNormalization \(layer '.*'\): invalid " + message):
        BatchChannelNormalization(**kwargs)


def test_bad_inputs_raise_at_build():
    with pytest.raises(ValueError, match=r"`groups`=32\. It must divide the 16 channels"):
        BatchChannelNormalization()(data((2, 3, 16)))
    with pytest.raises(ValueError, match=r"`axis`=0.*batch axis"):
        BatchChannelNormalization(groups=1, axis=0)(data((4, 3)))
    with pytest.raises(ValueError, match=r"axis=0 is the batch axis"):
        bcn_ops.group_norm(data((4, 3)), axis=0, groups=1)
    with pytest.raises(ValueError, match=r"groups=4 does not divide the 6 channels"):
        bcn_ops.group_norm(data((4, 6)), groups=4)
    with pytest.raises(ValueError, match=r"final affine must have shape \(6,\).*or \(3,\)"):
        bcn_ops.batch_channel_norm(data((4, 6)), gamma=np.ones(4, "float32"), groups=3)
    with pytest.raises(ValueError, match=r"`momentum` must be a float in \[0, 1\]"):
        bcn_ops.estimated_moments(data((4, 6)), np.zeros(6), np.ones(6), momentum=2.0)


# --------------------------------------------------------------------------------------- group norm

GN_CASES = [
    ((4, 5, 5, 8), -1, 4),
    ((3, 8, 4, 4), 1, 2),
    ((3, 7, 6), -1, 3),
    ((5, 6), -1, -1),
    ((2, 3, 2, 3, 4), -1, 2),
    ((3, 4, 6, 2), 2, 3),
]


@pytest.mark.parametrize("shape, axis, groups", GN_CASES, ids=str)
def test_group_norm_matches_numpy_and_keras_group_normalization(shape, axis, groups):
    rng = np.random.default_rng(6)
    x = data(shape, seed=7)
    c = shape[axis]
    gamma, beta = rng.uniform(0.5, 1.5, c).astype("float32"), rng.normal(size=c).astype("float32")
    y = to_numpy(bcn_ops.group_norm(x, gamma, beta, axis, 1e-3, groups))
    assert_close(y, ref.group_norm(x.astype("float64"), gamma, beta, axis, 1e-3, groups))
    plain = to_numpy(bcn_ops.group_norm(x, axis=axis, epsilon=1e-3, groups=groups))
    keras_gn = keras.layers.GroupNormalization(groups=groups, axis=axis, epsilon=1e-3, center=False, scale=False)
    assert_close(plain, to_numpy(keras_gn(x)))
    # = BatchGroupNormalization's training op with one example per group (its per-channel moments aside).
    assert_close(plain, to_numpy(group_ops.batch_group_norm(x, None, None, axis, 1e-3, groups, 1)[0]))


def _op_gradients(shape, axis, groups, offset=0.5):
    """Output and gradients of sum(group_norm(x, gamma, beta) * upstream) w.r.t. x, gamma and beta."""
    rng = np.random.default_rng(8)
    x = data(shape, seed=9, offset=offset)
    c = shape[axis]
    gamma, beta = rng.uniform(0.5, 1.5, c).astype("float32"), rng.normal(size=c).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")

    def call(x_, g_, b_):
        return bcn_ops.group_norm(x_, g_, b_, axis, 1e-5, groups)

    if BACKEND == "torch":
        import torch

        xt, gt, bt = (torch.tensor(v, requires_grad=True) for v in (x, gamma, beta))
        y = call(xt, gt, bt)
        (y * torch.tensor(upstream)).sum().backward()
        return [to_numpy(t) for t in (y.detach(), xt.grad, gt.grad, bt.grad)]
    if BACKEND == "jax":
        import jax

        def loss(x_, g_, b_):
            y = call(x_, g_, b_)
            return (y * upstream).sum(), y

        (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(x, gamma, beta)
        return [to_numpy(t) for t in (y, *grads)]
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def step(x_, g_, b_):
        with tf.GradientTape() as tape:
            tape.watch([x_, g_, b_])
            y = call(x_, g_, b_)
            loss = tf.reduce_sum(y * upstream)
        return (y, *tape.gradient(loss, [x_, g_, b_]))

    return [to_numpy(t) for t in step(*(tf.constant(v) for v in (x, gamma, beta)))]


# (shape, axis, groups, the kernel runs on: the backends named)
KERNEL_CASES = [
    ((4, 6, 6, 8), -1, 4, ("torch", "tensorflow", "jax")),
    ((4, 8, 6, 6), 1, 4, ("torch", "tensorflow", "jax")),
    ((4, 9, 6), -1, 3, ("torch", "tensorflow", "jax")),
    ((4, 6, 9), 1, 3, ("torch", "tensorflow", "jax")),
    ((6, 8), -1, 2, ()),  # rank 2 declines everywhere (the references were faster)
    ((1, 3, 3, 8), 3, -1, ("tensorflow", "jax")),  # torch: one channel per group, channels last, declines
    ((1, 8, 3, 3), 1, -1, ("torch", "tensorflow", "jax")),
    ((2, 2, 3, 2, 4), -1, 2, ("torch", "tensorflow", "jax")),
    ((3, 4, 6, 2), 2, 3, ("tensorflow", "jax")),  # torch: channels in the middle, no free view
]
# Why a backend not named above declines each case.
DECLINES = {
    ((6, 8), "torch"): "rank-2 input (the reference was faster)",
    ((1, 3, 3, 8), "torch"): "one channel per group on channels-last input (the reference was faster)",
    ((3, 4, 6, 2), "torch"): "channel axis in the middle (only last or 1)",
}
XLA_RANK_2 = "rank-2 input (no spatial axes: no pass to save, and the reference was faster)"


@pytest.mark.parametrize("shape, axis, groups, backends", KERNEL_CASES, ids=str)
def test_group_norm_kernel_taken_or_declined_and_equal_to_reference(shape, axis, groups, backends):
    with config.record_dispatch() as calls:
        fast = _op_gradients(shape, axis, groups)
    if BACKEND in backends:
        assert calls == [("group_norm", "fast", None)]
    else:
        assert calls == [("group_norm", "reference", DECLINES.get((shape, BACKEND), XLA_RANK_2))]
    with config.fast_paths(False), config.record_dispatch() as calls:
        reference = _op_gradients(shape, axis, groups)
    assert calls == [("group_norm", "reference", "fast paths switched off")]
    assert_close(fast[0], reference[0], err_msg="output")
    for name, a, b in zip(("x", "gamma", "beta"), fast[1:], reference[1:]):
        assert_close(a, b, err_msg=f"d/d{name}", **GRADIENT)


@pytest.mark.parametrize("ratio", [30.0, 100.0, 300.0])
@pytest.mark.parametrize("axis", [-1, 1])
def test_group_norm_kernel_keeps_precision_at_a_large_mean(ratio, axis):
    """|mean|/std up to 300, against float64: each kernel is at least as accurate as the two-pass reference.

    The one-pass variances of the kernels run on shifted data (torch's channels-last kernel is one-pass in
    float32 and was off by 0.07 here unshifted). Measured: the shifted kernels (TF, JAX, torch channels-last)
    stay within 1e-6 of float64 up to 300; the two-pass reference, whose float32 mean is a sum of large values,
    is off by up to 3.5e-5 at 100 and 1e-4 at 300; torch's contiguous kernel (axis 1) like the reference.
    """
    shape = (4, 8, 8, 16) if axis == -1 else (4, 16, 8, 8)
    x = data(shape, seed=10, scale=1.0, offset=ratio)
    expected = ref.group_norm(x.astype("float64"), None, None, axis, 1e-5, 4)
    fast = to_numpy(bcn_ops.group_norm(x, axis=axis, epsilon=1e-5, groups=4))
    with config.fast_paths(False):
        two_pass = to_numpy(bcn_ops.group_norm(x, axis=axis, epsilon=1e-5, groups=4))
    reference_error = np.abs(two_pass - expected).max()
    assert reference_error < (1e-4 if ratio <= 100 else 3e-4)
    assert_close(fast, expected, rtol=1e-5, atol=max(1e-5, 2.0 * reference_error))
    shifted = BACKEND != "torch" or axis == -1
    if shifted:
        assert_close(fast, expected, rtol=1e-6, atol=2e-6)


@pytest.mark.parametrize("offset", [0.5, 100.0])
def test_group_norm_kernel_gradients_at_a_large_mean(offset):
    fast = _op_gradients((4, 6, 6, 8), -1, 4, offset=offset)
    with config.fast_paths(False):
        reference = _op_gradients((4, 6, 6, 8), -1, 4, offset=offset)
    # Outputs against float64: at |mean|/std ~ 70 the two-pass reference itself is off by ~2e-5 (its float32 mean).
    x = data((4, 6, 6, 8), seed=9, offset=offset).astype("float64")
    rng = np.random.default_rng(8)
    gamma, beta = rng.uniform(0.5, 1.5, 8), rng.normal(size=8)
    assert_close(fast[0], ref.group_norm(x, gamma.astype("float32"), beta.astype("float32"), -1, 1e-5, 4))
    for a, b in zip(fast[1:], reference[1:]):
        assert_close(a, b, **GRADIENT)


@pytest.mark.parametrize("mode", ["batch", "estimate"])
def test_layer_fast_paths_equal_the_reference(mode):
    shape = (4, 5, 5, 8)
    x, upstream = data(shape, seed=11), data(shape, seed=12)
    results = {}
    for enabled in (True, False):
        layer, _ = built(shape, groups=4, mode=mode, final_affine="group")
        with config.fast_paths(enabled), config.record_dispatch() as calls:
            results[enabled] = layer_gradients(layer, x, upstream, training=True) + (layer.get_weights(),)
        assert ("group_norm", "fast" if enabled else "reference") in [record[:2] for record in calls]
    (y1, dx1, dw1, s1), (y0, dx0, dw0, s0) = results[True], results[False]
    assert_close(y1, y0)
    assert_close(dx1, dx0, **GRADIENT)
    for a, b in zip(dw1 + s1, dw0 + s0):
        assert_close(a, b, **GRADIENT)


@pytest.mark.skipif(BACKEND != "torch", reason="the F.group_norm kernel exists on torch only")
def test_torch_kernel_declines_half_precision_and_leaves_the_input_alone():
    import torch

    from keras_norms._backends.torch import group_norm as torch_group_norm
    from keras_norms.ops._dispatch import Declined

    x = torch.tensor(data((4, 3, 3, 8)))
    for dtype in ("float16", "bfloat16"):
        declined = torch_group_norm.group_norm(x.to(getattr(torch, dtype)), None, None, 3, 1e-5, 4)
        assert isinstance(declined, Declined) and declined.reason == f"{dtype} input (kernel takes float32/float64)"
    before = x.clone()
    torch_group_norm.group_norm(x, None, None, 3, 1e-5, 4)
    torch.testing.assert_close(x, before, rtol=0, atol=0)


@pytest.mark.skipif(BACKEND == "torch", reason="XLA compilation is a TensorFlow/JAX feature")
def test_fit_compiled_equals_fit_eager():
    rng = np.random.default_rng(0)
    x, target = rng.normal(size=(8, 6, 6, 3)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")
    models = {}
    for jit in (True, False):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((6, 6, 3)),
                keras.layers.Conv2D(8, 3, use_bias=False),
                BatchChannelNormalization(groups=4, mode="estimate", momentum=0.9),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2),
            ]
        )
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", jit_compile=jit, run_eagerly=not jit)
        model.fit(x, target, batch_size=2, epochs=1, shuffle=False, verbose=0)
        models[jit] = model
    for a, b in zip(models[True].get_weights(), models[False].get_weights()):
        assert_close(a, b, rtol=1e-4, atol=1e-5)

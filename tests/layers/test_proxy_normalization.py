"""Proxy Normalization: the quadrature, the normalization property, stability and typical use (spec §13)."""

import math

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms import ops as knops
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.reference import proxy_norm as pn_ref
from tests.tolerances import assert_close

RELU_MEAN = 1.0 / math.sqrt(2.0 * math.pi)  # E[relu(Y)], Y ~ N(0, 1)
RELU_STD = math.sqrt(0.5 * (1.0 - 1.0 / math.pi))  # std[relu(Y)]

# Measured error of the default 256-point quantile rule against the exact Gaussian moments, for relu/gelu/swish,
# gamma in [0.7, 1.5], |beta| <= 1: at most 6.1e-4 on the mean and 0.82% on the standard deviation (the grid
# truncates the tails beyond |y| = 2.89, so both are underestimated). The tolerances below leave a small margin.
MEAN_TOL = 1e-3
STD_RTOL = 1e-2
PARAMETERS = [(1.0, 0.0), (1.5, -1.0), (0.7, 1.0), (1.2, 0.5)]


def _layer(channels, gamma=None, beta=None, **kwargs):
    layer = keras_norms.ProxyNormalization(**kwargs)
    layer.build((None, channels))
    if gamma is not None:
        layer.gamma.assign(np.asarray(gamma, "float32"))
    if beta is not None:
        layer.beta.assign(np.asarray(beta, "float32"))
    return layer


# ------------------------------------------------------------------ quadrature
@pytest.mark.parametrize("num_points", [2, 7, 256])
def test_grid_is_the_gaussian_quantile_rule(num_points):
    expected = pn_ref.quantile_points(num_points)  # bisection on math.erf, independent of the package
    np.testing.assert_allclose(knops.quantile_grid(num_points), expected, rtol=0, atol=1e-12)


def test_relu_proxy_moments_at_init_are_the_half_normal_ones():
    """gamma=1, beta=0: E = 1/sqrt(2 pi), std = sqrt((1 - 1/pi)/2), read back from the layer's outputs."""
    layer = _layer(1)
    eps = layer.epsilon
    out = to_numpy(layer(np.array([[0.0], [1.0]], "float32"))).astype("float64")[:, 0]
    scale = 1.0 / (out[1] - out[0])  # relu(1) - relu(0) = 1 over sqrt(V + eps)
    mean = -out[0] * scale
    std = math.sqrt(scale**2 - eps)
    assert abs(mean - RELU_MEAN) < MEAN_TOL
    assert abs(std / RELU_STD - 1.0) < STD_RTOL
    # The same numbers from the op.
    m, v = knops.proxy_moments(np.ones(1, "float32"), np.zeros(1, "float32"), "relu")
    assert abs(float(to_numpy(m)[0]) - RELU_MEAN) < MEAN_TOL
    assert abs(math.sqrt(float(to_numpy(v)[0])) / RELU_STD - 1.0) < STD_RTOL


@pytest.mark.parametrize("activation", ["relu", "gelu", "swish"])
def test_default_grid_is_close_to_the_exact_gaussian_moments(activation):
    gamma = np.array([g for g, _ in PARAMETERS], "float32")
    beta = np.array([b for _, b in PARAMETERS], "float32")
    mean, variance = (to_numpy(t) for t in knops.proxy_moments(gamma, beta, activation))
    for c, (g, b) in enumerate(PARAMETERS):
        exact_mean, exact_var = pn_ref.gaussian_moments(activation, g, b)
        assert abs(mean[c] - exact_mean) < MEAN_TOL, (activation, g, b)
        assert abs(math.sqrt(variance[c] / exact_var) - 1.0) < STD_RTOL, (activation, g, b)


def test_proxy_affine_moves_the_proxy():
    """Y ~ N(proxy_beta, (1 + proxy_gamma)^2): the moments of phi(gamma * Y + beta) for that Gaussian."""
    gamma, beta = np.array([1.0, 0.8], "float32"), np.array([0.2, -0.5], "float32")
    proxy_gamma, proxy_beta = np.array([0.3, -0.2], "float32"), np.array([-0.4, 0.6], "float32")
    mean, variance = (
        to_numpy(t) for t in knops.proxy_moments(gamma, beta, "swish", 256, proxy_gamma, proxy_beta)
    )
    for c in range(2):
        exact_mean, exact_var = pn_ref.gaussian_moments(
            "swish", gamma[c], beta[c], loc=proxy_beta[c], scale=1.0 + proxy_gamma[c]
        )
        assert abs(mean[c] - exact_mean) < MEAN_TOL
        assert abs(math.sqrt(variance[c] / exact_var) - 1.0) < STD_RTOL
    ref_mean, ref_var = pn_ref.quadrature_moments("swish", gamma, beta, 256, proxy_gamma, proxy_beta)
    assert_close(mean, ref_mean)
    assert_close(variance, ref_var)


def test_float64_stays_float64():
    """Regression: `ops.maximum(variance, 0.0)` turned float64 into float32 on torch (error 3e-8)."""
    if keras.backend.backend() == "jax":
        pytest.skip("JAX runs float32 unless jax_enable_x64 is set: float64 inputs are truncated by JAX itself")
    x = np.random.default_rng(0).normal(size=(4, 3))
    gamma, beta = np.array([1.2, 0.9, 1.0]), np.array([0.1, -0.3, 0.0])
    y = knops.proxy_norm(x, gamma, beta, "swish")
    assert keras.backend.standardize_dtype(y.dtype) == "float64"
    np.testing.assert_allclose(to_numpy(y), pn_ref.proxy_norm(x, gamma, beta, "swish", 256, 1e-3), rtol=1e-12, atol=1e-12)


def test_op_defaults_equal_the_layer_at_init():
    x = np.random.default_rng(0).normal(size=(4, 3, 5)).astype("float32")
    layer = keras_norms.ProxyNormalization()
    assert_close(to_numpy(knops.proxy_norm(x)), to_numpy(layer(x)))
    assert_close(to_numpy(knops.proxy_norm(x, grid=256)), to_numpy(layer(x)))


# --------------------------------------------------------- normalization property
@pytest.mark.parametrize("activation", ["relu", "gelu", "swish"])
def test_grid_input_gives_exactly_zero_mean(activation):
    """Fed the quadrature points themselves, each channel's output has mean 0 and variance V / (V + eps)."""
    gamma, beta = [1.0, 1.5, 0.7], [0.0, -1.0, 1.0]
    layer = _layer(3, gamma, beta, activation=activation, num_points=64)
    x = np.repeat(pn_ref.quantile_points(64)[:, None], 3, axis=1).astype("float32")
    out = to_numpy(layer(x)).astype("float64")
    _, variance = pn_ref.quadrature_moments(activation, gamma, beta, 64)
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-5)
    assert_close(out.var(0), variance / (variance + layer.epsilon))


@pytest.mark.parametrize("activation", ["relu", "gelu", "swish"])
def test_standard_normal_input_gives_zero_mean_unit_std(activation):
    """Sampled: y ~ N(0, 1) per channel, 200000 draws. Sampling error ~0.003, quadrature bias <= 0.008."""
    gamma, beta = [g for g, _ in PARAMETERS], [b for _, b in PARAMETERS]
    layer = _layer(len(PARAMETERS), gamma, beta, activation=activation)
    x = np.random.default_rng(5).normal(size=(200_000, len(PARAMETERS))).astype("float32")
    out = to_numpy(layer(x)).astype("float64")
    np.testing.assert_allclose(out.mean(0), 0.0, atol=0.02)
    np.testing.assert_allclose(out.std(0), 1.0, atol=0.02)


def test_gradient_flows_through_the_proxy_statistics():
    """On the grid input the output sums to 0 whatever gamma, beta: its gradient is 0 only if it
    reaches them through the proxy statistics too (a stop-gradient would leave sum(phi') / sqrt(V + eps))."""
    layer = _layer(2, [1.3, 0.8], [0.4, -0.6], activation="gelu", num_points=32, proxy_affine=True)
    layer.proxy_gamma.assign(np.array([0.2, -0.1], "float32"))
    layer.proxy_beta.assign(np.array([0.1, 0.3], "float32"))
    points = pn_ref.quantile_points(32)
    x = np.stack([0.1 + 1.2 * points, 0.3 + 0.9 * points], axis=1).astype("float32")
    _, _, grads = layer_gradients(layer, x, np.ones_like(x))
    for variable, grad in zip(layer.trainable_weights, grads):
        if variable.name in ("gamma", "beta"):
            np.testing.assert_allclose(grad, 0.0, atol=1e-4, err_msg=variable.name)
        else:  # the proxy parameters do not match the grid input here: non-zero gradients
            assert np.abs(grad).max() > 1e-2, variable.name


# ----------------------------------------------------------------- stability
@pytest.mark.parametrize("beta", [-5.0, -50.0, -1e4])
@pytest.mark.parametrize("activation", ["relu", "gelu", "swish"])
def test_very_negative_beta_stays_finite(activation, beta):
    """The proxy variance is (near) 0: epsilon keeps the output and every gradient finite."""
    layer = _layer(2, [1.0, 2.0], [beta, beta], activation=activation, proxy_affine=True)
    x = np.random.default_rng(1).normal(size=(8, 2)).astype("float32") * 4.0
    y, dx, grads = layer_gradients(layer, x, np.ones_like(x))
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    for variable, grad in zip(layer.trainable_weights, grads):
        assert np.isfinite(grad).all(), variable.name


def test_default_epsilon_never_amplifies_a_relu_with_negative_beta():
    """The measurement behind epsilon=1e-3: on N(0, 1) inputs the output std stays <= 1.01 for every beta in
    [-6, 0] (it drops toward 0 below beta = -2.5); epsilon=1e-5 amplifies up to 5.6x near beta = -2.9."""
    betas = np.linspace(-6.0, 0.0, 25)
    x = np.random.default_rng(0).normal(size=(100_000, 1)).astype("float32")
    x = np.repeat(x, betas.size, axis=1)
    stds = {}
    for epsilon in (1e-3, 1e-5):
        layer = _layer(betas.size, np.ones(betas.size), betas, epsilon=epsilon)
        stds[epsilon] = to_numpy(layer(x)).astype("float64").std(0)
    assert stds[1e-3].max() < 1.05
    assert stds[1e-5].max() > 2.0


# ---------------------------------------------------------------- typical use
@pytest.mark.parametrize("norm", ["layer", "group"])
def test_block_after_ln_or_gn_trains_one_step(norm):
    if norm == "layer":
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(8, use_bias=False),
                keras.layers.LayerNormalization(center=False, scale=False),
                keras_norms.ProxyNormalization(activation="gelu", proxy_affine=True),
                keras.layers.Dense(2),
            ]
        )
        x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    else:
        model = keras.Sequential(
            [
                keras.Input((6, 6, 3)),
                keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
                keras.layers.GroupNormalization(groups=4, center=False, scale=False),
                keras_norms.ProxyNormalization(activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2),
            ]
        )
        x = np.random.default_rng(0).normal(size=(8, 6, 6, 3)).astype("float32")
    target = np.random.default_rng(1).normal(size=(8, 2)).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    pn = model.layers[2]
    before = [to_numpy(w) for w in pn.weights]
    history = model.fit(x, target, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for w, old in zip(pn.weights, before):
        assert np.isfinite(to_numpy(w)).all()
        assert not np.array_equal(to_numpy(w), old), w.name


def test_weights_and_training_equals_inference():
    plain = _layer(3)
    assert [w.name for w in plain.weights] == ["gamma", "beta"]
    affine = _layer(3, proxy_affine=True)
    assert [w.name for w in affine.trainable_weights] == ["gamma", "beta", "proxy_gamma", "proxy_beta"]
    assert not affine.non_trainable_weights
    x = np.random.default_rng(2).normal(size=(5, 3)).astype("float32")
    np.testing.assert_array_equal(to_numpy(affine(x, training=True)), to_numpy(affine(x, training=False)))


def test_callable_activation_is_serialized_by_name():
    layer = keras_norms.ProxyNormalization(activation=keras.activations.gelu, num_points=64, epsilon=1e-2)
    config = layer.get_config()
    assert config["activation"] == "gelu"
    clone = keras_norms.ProxyNormalization.from_config(config)
    assert clone.activation is keras.activations.gelu
    x = np.random.default_rng(3).normal(size=(4, 2)).astype("float32")
    clone.build(x.shape)
    layer.build(x.shape)
    expected = pn_ref.proxy_norm(x, None, None, "gelu", 64, 1e-2)
    assert_close(to_numpy(layer(x)), expected)
    assert_close(to_numpy(clone(x)), expected)


# -------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(activation="no_such_activation"), r"`activation`='no_such_activation'.*'relu', 'gelu' or 'swish'"),
        (dict(activation=3), r"`activation`=3"),
        (dict(activation=None), r"`activation`=None"),
        (dict(activation="softmax"), r"`activation`='softmax'.*elementwise"),
        (dict(activation=keras.activations.softmax), r"`activation`=.*elementwise"),
        (dict(num_points=0), r"`num_points`=0.*int >= 2"),
        (dict(num_points=True), r"`num_points`=True.*int >= 2"),
        (dict(num_points="256"), r"`num_points`='256'.*int >= 2"),
        (dict(epsilon=-1.0), r"`epsilon`=-1.0.*positive float"),
        (dict(epsilon=float("inf")), r"`epsilon`=inf.*positive float"),
        (dict(epsilon=None), r"`epsilon`=None.*positive float"),
        (dict(proxy_affine=1), r"`proxy_affine`=1.*True or False"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=r"ProxyNormalization \(layer '.*'\): invalid " + message):
        keras_norms.ProxyNormalization(**kwargs)


def test_batch_axis_and_unknown_channels_raise_at_build():
    with pytest.raises(ValueError, match=r"`axis`=0.*batch axis"):
        keras_norms.ProxyNormalization(axis=0).build((4, 3))
    with pytest.raises(ValueError, match=r"unknown size"):
        keras_norms.ProxyNormalization().build((4, None))


def test_op_rejects_bad_num_points_and_activation():
    x = np.ones((2, 3), "float32")
    with pytest.raises(ValueError, match=r"num_points"):
        knops.quantile_grid(1)
    with pytest.raises(ValueError, match=r"activation"):
        knops.proxy_norm(x, activation="softmax")

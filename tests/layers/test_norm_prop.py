"""Normalization Propagation (spec §11): constants, initialization statistics, degenerate kernels, gradients.

Outputs against the float64 oracle, serialization, mixed precision, channels-first and batch independence are
checked for every case in `tests/cases_norm_prop.py` by `tests/test_conformance.py`.
"""

import math
import statistics

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms.ops import norm_prop as norm_prop_ops
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.reference import norm_prop as ref
from tests.tolerances import assert_close

SEED = 20160603
GAMMA_INIT = 1 / 1.21  # the paper's gamma initialization, [unverified] (spec §11.3)

LAYERS = [
    (keras_norms.NormPropDense, dict(units=6), (4, 7)),
    (keras_norms.NormPropConv1D, dict(filters=3, kernel_size=3, padding="causal"), (2, 9, 4)),
    (keras_norms.NormPropConv2D, dict(filters=4, kernel_size=3, padding="same", groups=2), (2, 5, 6, 4)),
    (keras_norms.NormPropConv3D, dict(filters=2, kernel_size=2), (2, 3, 4, 3, 2)),
]
IDS = [cls.__name__ for cls, _, _ in LAYERS]


# --------------------------------------------------------------------------------------------- the constants
def test_constants_match_closed_forms_written_independently():
    phi0 = statistics.NormalDist().pdf(0.0)  # E[max(Z, 0)] = integral of z phi(z) over z > 0 = phi(0)
    assert norm_prop_ops.RELU_MEAN == pytest.approx(phi0, rel=1e-15)
    # Var[max(Z, 0)] = E[max(Z, 0)^2] - E[max(Z, 0)]^2 = 1/2 - phi(0)^2.
    assert norm_prop_ops.RELU_STD**2 == pytest.approx(0.5 - phi0**2, rel=1e-14)
    # The decimals of the spec's table (§11.2), and the Scaled WS ReLU gain (§7.2) as the reciprocal.
    assert norm_prop_ops.RELU_MEAN == pytest.approx(0.3989422804, abs=1e-10)
    assert norm_prop_ops.RELU_STD**2 == pytest.approx(0.3408450569, abs=1e-10)
    assert norm_prop_ops.RELU_STD == pytest.approx(0.5838193701, abs=1e-10)
    assert 1 / norm_prop_ops.RELU_STD == pytest.approx(1.7128585504, abs=1e-9)
    # Quadrature of the two moments on a fine grid of z in [0, 12].
    z = np.linspace(0.0, 12.0, 1_200_001)
    density = np.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    first, second = np.trapezoid(z * density, z), np.trapezoid(z**2 * density, z)
    assert norm_prop_ops.RELU_MEAN == pytest.approx(first, abs=1e-10)
    assert second == pytest.approx(0.5, abs=1e-10)
    assert norm_prop_ops.RELU_STD == pytest.approx(math.sqrt(second - first**2), abs=1e-10)


def test_constants_match_a_million_standard_normal_samples():
    z = np.random.default_rng(SEED).standard_normal(10**6)
    relu = np.maximum(z, 0.0)
    # Standard errors: 0.584 / 1e3 for the mean; about 0.5e-3 for the standard deviation.
    assert relu.mean() == pytest.approx(norm_prop_ops.RELU_MEAN, abs=3e-3)
    assert relu.std() == pytest.approx(norm_prop_ops.RELU_STD, abs=3e-3)
    y = to_numpy(keras_norms.NormPropReLU()(z.astype("float32")))
    assert abs(y.mean()) < 5e-3 and y.std() == pytest.approx(1.0, abs=5e-3)
    assert_close(y, ref.norm_prop_relu(z))


def test_norm_prop_relu_op_keeps_the_dtype_and_computes_in_float32():
    x = np.array([-2.0, 0.0, 300.0, 1e4], "float16")
    y = norm_prop_ops.norm_prop_relu(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert_close(to_numpy(y), ref.norm_prop_relu(x.astype("float64")), dtype="float16")


# --------------------------------------------------------------------------------------------- initialization
def _standardized_digits():
    from sklearn.datasets import load_digits

    x = load_digits().data.astype("float32")  # (1797, 64), pixel intensities 0..16
    normalization = keras.layers.Normalization()  # per feature, training-set statistics
    normalization.adapt(x)
    return x, to_numpy(normalization(x))


def test_preactivations_at_init_on_standardized_digits_have_mean_0_and_std_gamma():
    x, xs = _standardized_digits()
    keras.utils.set_random_seed(SEED)
    layer = keras_norms.NormPropDense(256)
    u = to_numpy(layer(xs)).astype("float64")
    assert_close(to_numpy(layer.gamma), np.full(256, GAMMA_INIT))
    assert_close(to_numpy(layer.beta), np.zeros(256))
    # Measured with this seed: |mean| < 4e-9, std 0.8096 (torch), 0.8132 (JAX), 0.8123 (TF); seeds 0-2 on torch:
    # 0.8035-0.8073. The 3 constant pixels of digits standardize to 0,
    # so the average variance of a unit is gamma^2 * 61/64 (std 0.8068), not gamma^2 (std 0.8264).
    assert abs(u.mean()) < 1e-3
    assert np.abs(u.mean(axis=0)).max() < 1e-3  # every unit: W_i . E[x] = 0 on exactly standardized data
    assert u.std() == pytest.approx(GAMMA_INIT, abs=0.04)
    assert u.std() == pytest.approx(GAMMA_INIT * math.sqrt(61 / 64), abs=0.01)
    # Without the standardization the bookkeeping fails: the spread is that of raw pixel sums.
    raw = to_numpy(layer(x))
    assert raw.std() > 3.0


# --------------------------------------------------------------------------------------------- kernels and gradients
@pytest.mark.parametrize("cls, kwargs, shape", LAYERS, ids=IDS)
def test_normalized_kernel_has_unit_norm_rows_and_the_output_ignores_the_kernel_scale(cls, kwargs, shape):
    layer = cls(**kwargs)
    layer.build(shape)
    kernel = to_numpy(layer.kernel).astype("float64")
    unit = to_numpy(layer.normalized_kernel()).astype("float64")
    norms = np.sqrt((unit**2).reshape(-1, unit.shape[-1]).sum(axis=0))
    assert_close(norms, np.ones(unit.shape[-1]))
    assert_close(unit, ref.normalize_rows(kernel, 1e-8))
    x = np.random.default_rng(SEED).normal(size=shape).astype("float32")
    y = to_numpy(layer(x))
    layer.kernel.assign(kernel * 37.0)  # NormProp is invariant to the scale of each weight vector
    assert_close(to_numpy(layer(x)), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls, kwargs, shape", LAYERS, ids=IDS)
def test_zero_kernel_gives_beta_and_finite_gradients(cls, kwargs, shape):
    layer = cls(**kwargs)
    layer.build(shape)
    layer.kernel.assign(np.zeros(layer.kernel.shape, "float32"))
    beta = np.linspace(-1.0, 1.0, layer.beta.shape[0]).astype("float32")
    layer.beta.assign(beta)
    x = np.random.default_rng(SEED).normal(size=shape).astype("float32")
    upstream = np.ones(layer.compute_output_shape(shape), "float32")
    y, dx, dweights = layer_gradients(layer, x, upstream)
    assert np.isfinite(y).all()
    assert_close(y, np.broadcast_to(beta, y.shape))
    assert all(np.isfinite(g).all() for g in [dx] + dweights)


@pytest.mark.parametrize("cls, kwargs, shape", LAYERS, ids=IDS)
def test_gradients_reach_gamma_beta_and_kernel(cls, kwargs, shape):
    layer = cls(**kwargs)
    layer.build(shape)
    x = np.random.default_rng(SEED).normal(size=shape).astype("float32")
    upstream = np.random.default_rng(SEED + 1).normal(size=layer.compute_output_shape(shape)).astype("float32")
    _, _, dweights = layer_gradients(layer, x, upstream)
    grads = {w.name: g for w, g in zip(layer.trainable_weights, dweights)}
    assert set(grads) == {"kernel", "gamma", "beta"}
    for name, grad in grads.items():
        assert np.isfinite(grad).all() and np.abs(grad).max() > 1e-6, f"no gradient reaches {name}"
    # beta's gradient is the upstream summed over everything but the output unit (no activation here).
    assert_close(grads["beta"], upstream.reshape(-1, upstream.shape[-1]).sum(axis=0), rtol=1e-5, atol=1e-5)


def test_gamma_and_beta_initializers_are_exposed():
    beta_initializer = keras.initializers.Constant(0.5)
    layer = keras_norms.NormPropConv2D(3, 3, gamma_initializer="ones", beta_initializer=beta_initializer)
    layer.build((1, 5, 5, 2))
    assert_close(to_numpy(layer.gamma), np.ones(3))
    assert_close(to_numpy(layer.beta), np.full(3, 0.5))
    assert [w.name for w in layer.weights] == ["kernel", "gamma", "beta"]
    assert "use_bias" not in layer.get_config() and layer.get_config()["epsilon"] == 1e-8


def test_lora_is_added_to_the_kernel_before_the_normalization_and_saved_merged(tmp_path):
    layer = keras_norms.NormPropDense(4, lora_rank=2)
    layer.build((3, 5))
    rng = np.random.default_rng(SEED)
    layer.lora_kernel_b.assign(rng.normal(size=(2, 4)).astype("float32"))
    layer.gamma.assign(rng.uniform(0.5, 1.5, size=4).astype("float32"))
    effective = to_numpy(layer._kernel) + to_numpy(layer.lora_kernel_a) @ to_numpy(layer.lora_kernel_b)  # alpha = rank
    x = rng.normal(size=(3, 5)).astype("float32")
    weights = {"gamma": to_numpy(layer.gamma), "beta": to_numpy(layer.beta), "kernel": effective}
    expected, _ = ref.norm_prop_dense_oracle(x, weights, True)
    assert_close(to_numpy(layer(x)), expected)
    model = keras.Sequential([keras.Input((5,)), layer])
    model.save_weights(tmp_path / "lora.weights.h5")
    plain = keras.Sequential([keras.Input((5,)), keras_norms.NormPropDense(4)])
    plain.load_weights(tmp_path / "lora.weights.h5")
    assert_close(to_numpy(plain(x)), expected)


def test_fold_weight_standardization_leaves_norm_prop_layers_alone():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras_norms.WSConv2D(4, 3),
            keras_norms.NormPropConv2D(4, 3),
            keras_norms.NormPropReLU(),
        ]
    )
    folded = keras_norms.fold_weight_standardization(model)
    assert [type(layer) for layer in folded.layers] == [
        keras.layers.Conv2D,
        keras_norms.NormPropConv2D,
        keras_norms.NormPropReLU,
    ]
    x = np.random.default_rng(SEED).normal(size=(2, 6, 6, 3)).astype("float32")
    assert_close(to_numpy(folded(x)), to_numpy(model(x)))


def test_norm_prop_relu_is_elementwise_and_checks_its_channels():
    layer = keras_norms.NormPropReLU(axis=1)
    x = np.random.default_rng(SEED).normal(size=(2, 3, 4)).astype("float32")
    assert_close(to_numpy(layer(x)), ref.norm_prop_relu(x))
    assert_close(to_numpy(layer(x[:, :, :2])), ref.norm_prop_relu(x[:, :, :2]))  # any size on other axes
    with pytest.raises(ValueError):
        layer(x[:, :2])

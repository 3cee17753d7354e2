"""FilterResponseNormalization, TLU and FilterResponseNormalizationTLU: oracle, sign regime, numerics, errors.

The float64 oracle (`tests/reference/filter_response.py`) is written from the spec (ALGORITHMS.md §10); the shared
checks (serialization, save/load, mixed precision, symbolic shapes, finite-difference gradients, batch
independence, ...) come from the conformance registry (`tests/cases_filter_response.py`).
"""

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms.ops import filter_response as frn_ops
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.reference import filter_response as ref
from tests.tolerances import GRADIENT
from tests.tolerances import assert_close

FRN = keras_norms.FilterResponseNormalization
FRN_TLU = keras_norms.FilterResponseNormalizationTLU
TLU = keras_norms.TLU
LAYERS = [FRN, TLU, FRN_TLU]


def data(shape, seed=0, scale=1.5, offset=0.5):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * scale + offset).astype("float32")


def set_random_weights(layer, seed=1):
    """gamma in [0.6, 1.4], learned epsilon in [1e-3, 1e-2] (either sign), others N(0, 0.5^2); returns them."""
    rng = np.random.default_rng(seed)
    values = {}
    for w in layer.weights:
        if w.name == "gamma":
            value = rng.uniform(0.6, 1.4, w.shape)
        elif w.name == "learned_epsilon":
            value = rng.uniform(1e-3, 1e-2, w.shape) * rng.choice([-1.0, 1.0])
        else:
            value = rng.normal(size=w.shape) * 0.5
        values[w.name] = value.astype("float32")
        w.assign(values[w.name])
    return values


def f64(weights):
    return {k: np.asarray(v, np.float64) for k, v in weights.items()}


def built(layer_class, shape, **kwargs):
    layer = layer_class(**kwargs)
    layer.build(shape)
    return layer, set_random_weights(layer)


def expected(layer_class, x, weights, axis=-1, epsilon=1e-6, learned_epsilon=False):
    x = np.asarray(x, np.float64)
    eps_l = weights.get("learned_epsilon") if learned_epsilon else None
    if layer_class is TLU:
        return ref.tlu(x, weights["tau"], axis)
    y = ref.filter_response_norm(x, weights.get("gamma"), weights.get("beta"), epsilon, axis, eps_l)
    return ref.tlu(y, weights["tau"], axis) if layer_class is FRN_TLU else y


CONFIGS = [
    ("rank3", (3, 7, 4), {}),
    ("rank3_channels_first", (3, 4, 7), dict(axis=1)),
    ("rank4", (2, 5, 6, 3), {}),
    ("rank4_channels_first", (2, 3, 5, 6), dict(axis=1)),
    ("rank4_channels_in_the_middle", (2, 5, 3, 6), dict(axis=2)),
    ("rank4_positive_last_axis", (2, 5, 6, 3), dict(axis=3)),
    ("rank5", (2, 3, 4, 2, 5), {}),
    ("rank5_channels_first", (2, 5, 3, 4, 2), dict(axis=1)),
    ("rank5_negative_middle_axis", (2, 3, 5, 4, 2), dict(axis=-3)),
]


@pytest.mark.parametrize("layer_class", LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name, shape, kwargs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_matches_the_oracle_for_every_rank_and_channel_axis(layer_class, name, shape, kwargs):
    options = {} if layer_class is TLU else dict(epsilon=1e-5, learned_epsilon=True)
    layer, weights = built(layer_class, shape, **kwargs, **options)
    x = data(shape, seed=len(shape))
    y = to_numpy(layer(x))
    assert_close(y, expected(layer_class, x, f64(weights), kwargs.get("axis", -1), **options), err_msg=name)
    # Same function in training and at inference.
    np.testing.assert_array_equal(to_numpy(layer(x, training=True)), y)


def test_frn_tlu_equals_frn_then_tlu_with_the_same_weights():
    shape = (3, 4, 5, 6)
    fused, _ = built(FRN_TLU, shape, axis=1, learned_epsilon=True)
    frn = FRN(axis=1, learned_epsilon=True)
    tlu = TLU(axis=1)
    frn.build(shape)
    tlu.build(shape)
    weights = {w.name: to_numpy(w) for w in fused.weights}
    assert [w.name for w in fused.weights] == ["gamma", "beta", "tau", "learned_epsilon"]
    frn.set_weights([weights["gamma"], weights["beta"], weights["learned_epsilon"]])
    tlu.set_weights([weights["tau"]])
    x = data(shape)
    assert_close(to_numpy(fused(x)), to_numpy(tlu(frn(x))))


# ---------------------------------------------------------------- 1x1 maps: the sign regime (spec §10.2)
def sign_regime_input():
    values = np.array([-0.05, -0.01, -0.001, 0.001, 0.01, 0.05], "float32")
    return values.reshape(-1, 1, 1, 1)  # six examples, each a 1x1 map of one channel


def test_one_by_one_maps_with_fixed_epsilon_are_close_to_sign():
    """S = 1: nu^2 = x^2, so x / sqrt(x^2 + 1e-6) is about sign(x) and its slope vanishes away from 0."""
    x = sign_regime_input()
    layer = FRN()
    layer.build(x.shape)
    y, dx, _ = layer_gradients(layer, x, np.ones_like(x))
    x64 = x.astype("float64")
    assert_close(y, x64 / np.sqrt(x64**2 + 1e-6))
    np.testing.assert_allclose(y.ravel()[[1, 4]], [-0.995037, 0.995037], atol=1e-5)  # ±0.01 -> ±0.995
    slope = 1e-6 / (x64**2 + 1e-6) ** 1.5  # d/dx x / sqrt(x^2 + eps)
    assert_close(dx, slope, **GRADIENT)
    assert dx.ravel()[0] < 0.01  # at |x| = 0.05 the slope is 0.008: almost no gradient reaches x


def test_learned_epsilon_gives_a_smooth_curve_on_one_by_one_maps():
    """The total epsilon starts at 1e-6 + 1e-4: the curve is smooth over the inputs' range and passes gradient."""
    x = sign_regime_input()
    layer = FRN(learned_epsilon=True)
    layer.build(x.shape)
    y, dx, _ = layer_gradients(layer, x, np.ones_like(x))
    x64 = x.astype("float64")
    eps = 1e-6 + 1e-4
    assert_close(y, x64 / np.sqrt(x64**2 + eps))
    assert_close(dx, eps / (x64**2 + eps) ** 1.5, **GRADIENT)
    np.testing.assert_allclose(y.ravel()[4], 0.0100 / np.sqrt(1e-4 + eps), rtol=1e-5)  # 0.705, not 0.995
    plain = FRN()
    plain.build(x.shape)
    fixed = layer_gradients(plain, x, np.ones_like(x))[1]
    assert dx.ravel()[0] > 50 * fixed.ravel()[0]  # at |x| = 0.05: slope 0.76 instead of 0.008


def test_learned_epsilon_weight_and_its_absolute_value():
    plain = FRN()
    plain.build((2, 4, 4, 3))
    assert [w.name for w in plain.weights] == ["gamma", "beta"]
    x = sign_regime_input()[:4].reshape(2, 1, 1, 2)
    layer = FRN(learned_epsilon=True)
    layer.build(x.shape)
    assert [w.name for w in layer.trainable_weights] == ["gamma", "beta", "learned_epsilon"]
    assert tuple(layer.eps_learned.shape) == (1,)
    np.testing.assert_allclose(to_numpy(layer.eps_learned), [1e-4])
    # A negative value counts by its absolute value: the total never drops below epsilon.
    layer.eps_learned.assign(np.array([-3e-3], "float32"))
    x64 = x.astype("float64")
    assert_close(to_numpy(layer(x)), x64 / np.sqrt(x64**2 + 1e-6 + 3e-3))


@pytest.mark.parametrize("layer_class", [FRN, FRN_TLU], ids=lambda c: c.__name__)
def test_learned_epsilon_changes_after_one_fit_step(layer_class):
    shape = (8, 1, 1, 4)  # 1x1 maps, where the learned epsilon matters
    model = keras.Sequential([keras.Input(shape[1:]), layer_class(learned_epsilon=True)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    layer = model.layers[-1]
    before = to_numpy(layer.eps_learned).copy()
    x = data(shape, seed=3, scale=0.02, offset=0.0)
    model.fit(x, data(shape, seed=4), batch_size=8, epochs=1, verbose=0)
    after = to_numpy(layer.eps_learned)
    assert np.isfinite(after).all()
    assert not np.array_equal(after, before)


# ---------------------------------------------------------------- numerics (spec §10.5)
def test_float16_square_overflows_which_is_why_statistics_are_float32():
    """The premise: x^2 of a float16 300 is inf (256^2 = 65536 > 65504)."""
    with np.errstate(over="ignore"):
        assert np.isinf(np.square(np.float16(300.0)))


@pytest.mark.parametrize("layer_class", [FRN, FRN_TLU], ids=lambda c: c.__name__)
@pytest.mark.parametrize("policy", ["mixed_float16", "float16"])
def test_float16_inputs_up_to_1e3_give_finite_correct_outputs(layer_class, policy):
    shape = (3, 4, 5, 6)
    layer, weights = built(layer_class, shape, dtype=policy)
    rng = np.random.default_rng(5)
    x16 = rng.uniform(-1e3, 1e3, size=shape).astype("float16")
    x16[0, :, :, 0] = 1e3  # a whole map of 1000s: x^2 = 1e6 per entry
    with np.errstate(over="ignore"):
        assert np.isinf(np.square(x16)).any()  # a float16 mean square would be inf
    y = layer(x16)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    y = to_numpy(y).astype("float64")
    assert np.isfinite(y).all()
    # Under the float16 policy the weights themselves are float16: compare with the rounded values.
    w = {k: np.asarray(v, np.float16 if policy == "float16" else np.float32) for k, v in weights.items()}
    assert_close(y, expected(layer_class, x16, f64(w)), dtype="float16")


def test_the_op_upcasts_float16_and_keeps_float64():
    x16 = np.full((2, 3, 3, 2), 500.0, "float16")
    y = frn_ops.filter_response_norm(x16)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    assert_close(to_numpy(y), np.ones(x16.shape), atol=1e-6)  # 500 / sqrt(500^2 + eps)
    if keras.backend.backend() == "jax":
        pytest.skip("JAX runs float32 unless jax_enable_x64 is set: float64 inputs are truncated by JAX itself")
    x64 = data((2, 3, 4), seed=6).astype("float64")
    y64 = frn_ops.filter_response_norm(x64, epsilon=1e-6)
    assert keras.backend.standardize_dtype(y64.dtype) == "float64"
    assert_close(to_numpy(y64), ref.filter_response_norm(x64, epsilon=1e-6), dtype="float64")


def test_the_op_accepts_rank_2_as_one_position_per_channel():
    """The op is general (S = 1 for rank 2); the layers restrict the rank."""
    x = data((4, 3), seed=8)
    gamma, beta = np.array([1.0, 2.0, 0.5], "float32"), np.array([0.0, 0.1, -0.2], "float32")
    y = frn_ops.filter_response_norm(x, gamma, beta, epsilon=1e-3, learned_epsilon=np.array([2e-3], "float32"))
    x64 = x.astype("float64")
    assert_close(to_numpy(y), gamma * x64 / np.sqrt(x64**2 + 3e-3) + beta)
    with pytest.raises(ValueError, match="axis=0 is the batch axis"):
        frn_ops.filter_response_norm(x, axis=0)
    with pytest.raises(ValueError, match="out of range"):
        frn_ops.tlu(x, np.zeros(3, "float32"), axis=2)


@pytest.mark.parametrize("layer_class", LAYERS, ids=lambda c: c.__name__)
def test_an_all_zero_map_gives_zeros_not_nan(layer_class):
    shape = (2, 4, 4, 3)
    x = data(shape, seed=9)
    x[0] = 0.0  # example 0: every channel all-zero
    x[1, :, :, 1] = 0.0  # example 1: one all-zero channel among others
    layer = layer_class()
    layer.build(shape)
    y, dx, dweights = layer_gradients(layer, x, np.ones(shape, "float32"))
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    assert all(np.isfinite(g).all() for g in dweights)
    np.testing.assert_array_equal(y[0], 0.0)
    np.testing.assert_array_equal(y[1, :, :, 1], 0.0)
    # With a shift, an all-zero map outputs beta exactly (max(beta, tau) after a TLU).
    if layer_class is not TLU:
        shifted, weights = built(layer_class, shape)
        out = to_numpy(shifted(x))
        target = weights["beta"] if layer_class is FRN else np.maximum(weights["beta"], weights["tau"])
        assert_close(out[0], np.broadcast_to(target, out[0].shape))


# ---------------------------------------------------------------- TLU: tau per channel (spec §10.3)
@pytest.mark.parametrize(
    "shape, axis", [((2, 7, 3), -1), ((2, 3, 7), 1), ((2, 4, 5, 3), -1), ((2, 3, 4, 5), 1), ((2, 2, 3, 4, 3), -1)]
)
@pytest.mark.parametrize("layer_class", [TLU, FRN_TLU], ids=lambda c: c.__name__)
def test_tau_is_per_channel_not_per_position(layer_class, shape, axis):
    """tf-addons' TLU creates tau with the whole non-batch shape; here it has shape (C,)."""
    layer = layer_class(axis=axis)
    layer.build(shape)
    assert tuple(layer.tau.shape) == (shape[axis],)
    np.testing.assert_array_equal(to_numpy(layer.tau), 0.0)  # a ReLU at initialization
    # Per channel: the same layer runs on any spatial size, and each channel has its own threshold.
    tau = np.arange(shape[axis], dtype="float32") - 1.0
    layer.tau.assign(tau)
    bigger = list(shape)
    for i in range(1, len(shape)):
        if i != axis % len(shape):
            bigger[i] += 2
    x = data(bigger, seed=10)
    y = to_numpy(layer(x))
    assert y.shape == tuple(bigger)
    if layer_class is TLU:
        assert_close(y, ref.tlu(x, tau, axis))
    channel_min = np.moveaxis(y, axis, -1).reshape(-1, shape[axis]).min(axis=0)
    assert (channel_min >= tau - 1e-6).all()


def test_tlu_output_keeps_large_inputs_and_relu_at_zero_tau():
    x = np.array([[[-3e4, -1.0, 0.0, 2.5, 6e4]]], "float32").transpose(0, 2, 1)  # (1, 5, 1)
    np.testing.assert_array_equal(to_numpy(TLU()(x)), np.maximum(x, 0.0))


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("layer_class", LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("shape", [(8, 16), (2, 2, 2, 2, 2, 3)], ids=["rank2", "rank6"])
def test_other_ranks_raise_a_clear_error_at_build(layer_class, shape):
    layer = layer_class(name="norm")
    with pytest.raises(ValueError, match=rf"{layer_class.__name__} \(layer 'norm'\).*rank 3, 4 or 5.*rank {len(shape)}"):
        layer.build(shape)
    with pytest.raises(ValueError, match="rank 3, 4 or 5"):
        layer_class()(np.zeros(shape, "float32"))


def test_rank_2_error_suggests_a_reshape_and_learned_epsilon():
    with pytest.raises(ValueError, match=r"\(batch, 1, features\) and use learned_epsilon=True"):
        FRN().build((8, 16))
    with pytest.raises(ValueError, match=r"\(batch, 1, features\)\.$"):
        TLU().build((8, 16))


@pytest.mark.parametrize("layer_class", LAYERS, ids=lambda c: c.__name__)
def test_bad_channel_axes_raise(layer_class):
    with pytest.raises(ValueError, match="Axis 0 is the batch axis"):
        layer_class(axis=0).build((2, 3, 4))
    with pytest.raises(ValueError, match="out of range"):
        layer_class(axis=4).build((2, 3, 4, 5))
    with pytest.raises(ValueError, match="unknown size"):
        layer_class().build((2, 3, None))
    with pytest.raises(ValueError, match="Pass one int"):
        layer_class(axis=1.0)


def test_tf_addons_axis_argument_is_explained():
    with pytest.raises(ValueError, match=r"tensorflow-addons' axis=\[1, 2\].*is axis=-1 here"):
        FRN(axis=[1, 2])


def test_gamma_beta_decay_reaches_frn_but_not_tau():
    model = keras.Sequential(
        [keras.Input((4, 4, 3)), FRN_TLU(name="frn_tlu"), FRN(name="frn"), TLU(name="tlu")]
    )
    assert keras_norms.add_gamma_beta_decay(model, 0.1) == ["frn_tlu", "frn"]
    assert model.get_layer("frn_tlu").tau.regularizer is None
    assert len(model.losses) == 4


def test_keras_initializers_regularizers_and_constraints_are_applied():
    layer = FRN_TLU(
        gamma_initializer="zeros",
        beta_initializer=keras.initializers.Constant(0.5),
        tau_initializer=keras.initializers.Constant(-1.0),
        gamma_regularizer="l2",
        tau_regularizer=keras.regularizers.L1(0.1),
        beta_constraint=keras.constraints.NonNeg(),
        learned_epsilon=True,
        learned_epsilon_constraint=keras.constraints.NonNeg(),
    )
    layer.build((2, 3, 3, 2))
    np.testing.assert_array_equal(to_numpy(layer.gamma), 0.0)
    np.testing.assert_array_equal(to_numpy(layer.beta), 0.5)
    np.testing.assert_array_equal(to_numpy(layer.tau), -1.0)
    assert isinstance(layer.gamma.regularizer, keras.regularizers.L2)
    assert isinstance(layer.tau.regularizer, keras.regularizers.L1)
    assert isinstance(layer.beta.constraint, keras.constraints.NonNeg)
    assert isinstance(layer.eps_learned.constraint, keras.constraints.NonNeg)
    assert layer.eps_learned.regularizer is None
    config = layer.get_config()
    assert config["tau_regularizer"]["class_name"] == "L1"
    assert config["learned_epsilon"] is True

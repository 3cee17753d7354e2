"""EvoNormB0, EvoNormS0 and their ops: oracle on more layouts, the spec's behaviours (§12.4), errors, porting notes.

The float64 oracle (`tests/reference/evonorm.py`) is written from the spec (ALGORITHMS.md §12); the shared checks
(serialization, save/load, mixed precision, symbolic shapes, finite-difference gradients, batch independence of
S0, ...) come from the conformance registry (`tests/cases_evonorm.py`).
"""

import keras
import numpy as np
import pytest

from keras_norms import ops as knops
from keras_norms.layers.evonorm import EvoNormB0
from keras_norms.layers.evonorm import EvoNormS0
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.reference import evonorm as ref
from tests.tolerances import assert_close


def data(shape, seed=0, scale=1.5, offset=0.5):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * scale + offset).astype("float32")


def built(cls, shape, seed=1, **kwargs):
    layer = cls(**kwargs)
    layer.build(shape)
    rng = np.random.default_rng(seed)
    values = {}
    for w in layer.weights:
        if w.name in ("gamma", "moving_variance"):
            value = rng.uniform(0.6, 1.4, w.shape)
        else:
            value = rng.normal(size=w.shape) * 0.7
        values[w.name] = value.astype("float32")
        w.assign(values[w.name])
    return layer, values


LAYOUTS = [
    ("rank4_channels_first", (3, 4, 3, 2), dict(axis=1)),
    ("rank4_channels_middle", (3, 2, 4, 3), dict(axis=2)),
    ("rank3_positive_axis", (4, 5, 4), dict(axis=2)),
    ("rank5", (2, 3, 2, 2, 4), dict()),
]


@pytest.mark.parametrize("name, shape, kwargs", LAYOUTS, ids=[c[0] for c in LAYOUTS])
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_b0_matches_the_oracle_on_any_layout(name, shape, kwargs, training):
    layer, weights = built(EvoNormB0, shape, **kwargs)
    x = data(shape)
    y = layer(x, training=training)
    w64 = {k: v.astype("float64") for k, v in weights.items()}
    expected, state = ref.evonorm_b0_oracle(x.astype("float64"), w64, training, **kwargs)
    assert_close(to_numpy(y), expected)
    assert_close(to_numpy(layer.moving_variance), state.get("moving_variance", weights["moving_variance"]))


@pytest.mark.parametrize("name, shape, kwargs", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_s0_matches_the_oracle_on_any_layout(name, shape, kwargs):
    kwargs = dict(kwargs, groups=2)
    layer, weights = built(EvoNormS0, shape, **kwargs)
    x = data(shape)
    w64 = {k: v.astype("float64") for k, v in weights.items()}
    expected, _ = ref.evonorm_s0_oracle(x.astype("float64"), w64, True, **kwargs)
    for training in (True, False):
        assert_close(to_numpy(layer(x, training=training)), expected)


def test_ops_match_the_oracle():
    x = data((3, 4, 2, 6), seed=3)
    rng = np.random.default_rng(4)
    v, gamma, beta = (rng.normal(size=6).astype("float32") for _ in range(3))
    moving = rng.uniform(0.5, 2.0, 6).astype("float32")
    y, variance = knops.evonorm_b0(x, v, gamma, beta, axis=-1, epsilon=1e-5)
    want_y, want_variance = ref.evonorm_b0_train(x, v, gamma, beta, -1, 1e-5)
    assert_close(to_numpy(y), want_y)
    assert_close(to_numpy(variance), want_variance)
    assert_close(
        to_numpy(knops.evonorm_b0_inference(x, moving, v, gamma, beta, axis=3)),
        ref.evonorm_b0_inference(x, moving, v, gamma, beta, 3),
    )
    assert_close(to_numpy(knops.evonorm_s0(x, v, gamma, beta, groups=3)), ref.evonorm_s0(x, v, gamma, beta, groups=3))
    # Defaults: v = gamma = 1, beta = 0.
    assert_close(to_numpy(knops.evonorm_s0(x, groups=2)), ref.evonorm_s0(x, groups=2))
    assert_close(to_numpy(knops.evonorm_b0(x)[0]), ref.evonorm_b0_train(x)[0])


def test_16_bit_inputs_give_float32_statistics():
    x = (data((2, 3, 3, 4), seed=5) * 200).astype("float16")  # x**2 overflows float16
    y, variance = knops.evonorm_b0(x)
    assert keras.backend.standardize_dtype(variance.dtype) == "float32"
    assert np.isfinite(to_numpy(y)).all() and np.isfinite(to_numpy(knops.evonorm_s0(x, groups=2))).all()


# --------------------------------------------------------------- behaviours (§12.4)
def test_b0_moving_variance_is_biased_with_momentum_0_9():
    layer = EvoNormB0()
    x = data((2, 2, 2, 3), seed=6)  # n = 8 per channel: a Bessel factor would be 8/7
    layer(x, training=True)
    biased = x.astype("float64").reshape(-1, 3).var(axis=0)
    assert layer.momentum == 0.9
    assert_close(to_numpy(layer.moving_variance), 0.9 * 1.0 + 0.1 * biased)
    unbiased = 0.9 + 0.1 * biased * 8 / 7
    assert not np.allclose(to_numpy(layer.moving_variance), unbiased, rtol=1e-3, atol=0)


def test_b0_moving_variance_converts_to_and_from_timm():
    # Porting note: timm's running variance is the ours times n/(n-1) when it started from ours times n/(n-1)
    # (torch momentum 0.1 = Keras momentum 0.9, Bessel factor on each update).
    layer, weights = built(EvoNormB0, (4, 3, 2, 5), seed=8)
    x = data((4, 3, 2, 5), seed=9)
    n = 4 * 3 * 2
    layer(x, training=True)
    timm = ref.timm_b0_running_variance(weights["moving_variance"] * n / (n - 1), x, momentum=0.1)
    assert_close(to_numpy(layer.moving_variance), timm * (n - 1) / n)


def test_b0_at_batch_size_one_uses_the_instance_variance():
    # N = 1: the batch variance is the instance variance s2, so
    # y = x / max(s, v x + s) * gamma + beta with s = sqrt(s2 + eps).
    layer, w = built(EvoNormB0, (1, 4, 3, 5), seed=10)
    x = data((1, 4, 3, 5), seed=11)
    s = np.sqrt(x.astype("float64").var(axis=(1, 2), keepdims=True) + 1e-5)
    expected = x / np.maximum(s, w["v"] * x + s) * w["gamma"] + w["beta"]
    assert_close(to_numpy(layer(x, training=True)), expected)
    assert_close(to_numpy(layer.moving_variance), 0.9 * w["moving_variance"] + 0.1 * (s.reshape(5) ** 2 - 1e-5))


def test_b0_depends_on_other_examples_only_in_training():
    layer, _ = built(EvoNormB0, (3, 2, 2, 4), seed=12)
    x = data((3, 2, 2, 4), seed=13)
    upstream = np.zeros(x.shape, "float32")
    upstream[0] = 1.0
    _, dx_train, _ = layer_gradients(layer, x, upstream, training=True)
    _, dx_infer, _ = layer_gradients(layer, x, upstream, training=False)
    assert np.abs(dx_train[1:]).max() > 1e-3  # the batch variance carries gradient (official code)
    np.testing.assert_array_equal(dx_infer[1:], 0.0)


def test_s0_on_1x1_maps_with_group_size_1_divides_by_sqrt_epsilon():
    # Degenerate but documented: the group variance is 0, the denominator sqrt(eps), a x316 gain at 1e-5.
    layer = EvoNormS0(groups=-1)
    x = data((4, 1, 1, 6), seed=14)
    y = to_numpy(layer(x))
    assert np.isfinite(y).all()
    expected = x / (1.0 + np.exp(-x.astype("float64"))) / np.sqrt(1e-5)
    assert_close(y, expected, rtol=1e-5, atol=1e-4)
    assert np.abs(y).max() > 100 * np.abs(x * (1 / (1 + np.exp(-x)))).max()
    _, dx, dweights = layer_gradients(layer, x, np.ones(x.shape, "float32"))
    assert np.isfinite(dx).all() and all(np.isfinite(g).all() for g in dweights)


@pytest.mark.parametrize("cls", [EvoNormB0, EvoNormS0])
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_init_zero_outputs_beta(cls, training):
    kwargs = dict(init_zero=True, beta_initializer=keras.initializers.Constant(0.25))
    if cls is EvoNormS0:
        kwargs["groups"] = 2
    layer = cls(**kwargs)
    x = data((3, 2, 3, 4), seed=15)
    y = to_numpy(layer(x, training=training))
    np.testing.assert_array_equal(to_numpy(layer.gamma), 0.0)
    np.testing.assert_array_equal(y, np.full(x.shape, 0.25, "float32"))


def test_weights_names_shapes_and_defaults():
    b0 = EvoNormB0()
    b0.build((2, 3, 3, 8))
    assert [w.name for w in b0.trainable_weights] == ["gamma", "beta", "v"]
    assert [w.name for w in b0.non_trainable_weights] == ["moving_variance"]
    for w, init in zip(b0.weights, (1.0, 0.0, 1.0, 1.0)):
        assert tuple(w.shape) == (8,) and w.dtype == "float32"
        np.testing.assert_array_equal(to_numpy(w), init)
    s0 = EvoNormS0()
    s0.build((2, 3, 3, 64))
    assert [w.name for w in s0.weights] == ["gamma", "beta", "v"] and not s0.non_trainable_weights
    assert (b0.momentum, b0.epsilon, b0.init_zero) == (0.9, 1e-5, False)
    assert (s0.groups, s0.epsilon, s0.init_zero) == (32, 1e-5, False)


# --------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "channels, groups, fix",
    [(48, 32, "groups=24"), (6, 4, "groups=3"), (7, 2, "groups=1")],
)
def test_groups_not_dividing_the_channels_raise_with_the_fix(channels, groups, fix):
    layer = EvoNormS0(groups=groups)
    message = rf"EvoNormS0.*`groups`={groups}\. It must divide the {channels} channels.*e\.g\. {fix}.*silently"
    with pytest.raises(ValueError, match=message):
        layer(data((2, 2, 2, channels)))
    assert not layer.built and not layer.weights
    with pytest.raises(ValueError, match=rf"groups={groups} does not divide the {channels} channels"):
        knops.evonorm_s0(data((2, 2, 2, channels)), groups=groups)


@pytest.mark.parametrize("cls", [EvoNormB0, EvoNormS0])
def test_rank_2_inputs_raise_a_clear_error(cls):
    kwargs = dict(groups=2) if cls is EvoNormS0 else {}
    with pytest.raises(ValueError, match=r"rank >= 3.*shape \(4, 6\).*Reshape\(\(1, C\)\)"):
        cls(**kwargs)(data((4, 6)))


def test_ops_reject_rank_2_and_the_batch_axis():
    with pytest.raises(ValueError, match=r"evonorm_b0: EvoNorm needs an input of rank >= 3"):
        knops.evonorm_b0(data((4, 6)))
    with pytest.raises(ValueError, match=r"evonorm_s0: EvoNorm needs an input of rank >= 3"):
        knops.evonorm_s0(data((4, 6)), groups=2)
    with pytest.raises(ValueError, match=r"axis=0 is the batch axis"):
        knops.evonorm_b0_inference(data((2, 3, 4)), np.ones(2, "float32"), axis=0)
    with pytest.raises(ValueError, match=r"`axis`=0.*batch axis"):
        EvoNormB0(axis=0)(data((2, 3, 4)))

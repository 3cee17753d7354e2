"""GroupNormalization: a drop-in for `keras.layers.GroupNormalization`, checked against it on the current backend.

The float64 oracle (`tests/reference/group_norm.py`) is written from the paper's equations; the shared checks
(serialization, save/load, mixed precision against the oracle, symbolic shapes, finite-difference gradients, batch
independence, ...) come from the conformance registry (`tests/cases_group_norm.py`). Here: parity with the Keras
layer (outputs, gradients, weights both ways, `.weights.h5`, config, masks, mixed precision), channels first
against the oracle, a large mean, and the `groups` error.
"""

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms import config
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.reference.group_norm import group_norm
from tests.tolerances import GRADIENT
from tests.tolerances import assert_close

GN = keras_norms.GroupNormalization
# Against Keras's layer: its torch moments are one-pass E[x^2] - E[x]^2 in float32, off by up to 3e-5 on cells of
# two values; ours are held to 1e-5 against the float64 oracle below.
KERAS = dict(rtol=1e-4, atol=1e-4)


def data(shape, seed=0, scale=1.5, offset=0.5):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * scale + offset).astype("float32")


def pair(shape, seed=1, **kwargs):
    """A Keras GroupNormalization with random gamma, beta and ours with its weights (through set_weights)."""
    theirs, ours = keras.layers.GroupNormalization(**kwargs), GN(**kwargs)
    theirs.build(shape)
    ours.build(shape)
    rng = np.random.default_rng(seed)
    theirs.set_weights([rng.uniform(0.6, 1.6, w.shape).astype("float32") for w in theirs.weights])
    ours.set_weights(theirs.get_weights())
    return theirs, ours


CONFIGS = [
    ("rank4_channels_last", (3, 4, 5, 8), dict(groups=4)),
    ("rank4_channels_first", (3, 8, 4, 5), dict(groups=2, axis=1)),
    ("rank4_positive_last_axis", (2, 3, 5, 6), dict(groups=3, axis=3, epsilon=1e-5)),
    ("rank4_channels_in_the_middle", (2, 5, 6, 3), dict(groups=3, axis=2)),
    ("rank3_one_group", (3, 7, 4), dict(groups=1)),
    ("rank5_instance", (2, 3, 2, 4, 6), dict(groups=-1)),
    ("rank2_default_groups", (4, 64), {}),
    ("rank4_unscaled", (2, 4, 4, 6), dict(groups=2, scale=False)),
    ("rank4_uncentered", (2, 4, 4, 6), dict(groups=2, center=False)),
]


@pytest.mark.parametrize("name, shape, kwargs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_outputs_and_gradients_equal_keras(name, shape, kwargs):
    theirs, ours = pair(shape, **kwargs)
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]
    x = data(shape, seed=len(shape))
    upstream = data(shape, seed=7, offset=0.0)
    # Keras's call takes no `training`: a model passes it only to the layers that do.
    theirs = keras.Sequential([keras.Input(shape[1:]), theirs])
    for training in (True, False):
        y0, dx0, dw0 = layer_gradients(theirs, x, upstream, training)
        y1, dx1, dw1 = layer_gradients(ours, x, upstream, training)
        assert_close(y1, y0, err_msg=f"{name} output, training={training}", **KERAS)
        assert_close(dx1, dx0, err_msg=f"{name} input gradient", **GRADIENT)
        assert len(dw1) == len(dw0)
        for a, b in zip(dw1, dw0):
            assert_close(a, b, err_msg=f"{name} weight gradient", **GRADIENT)


@pytest.mark.parametrize("name, shape, kwargs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_matches_the_oracle_on_every_channel_axis(name, shape, kwargs):
    _, ours = pair(shape, **kwargs)
    x = data(shape, seed=3)
    weights = {w.name: to_numpy(w).astype("float64") for w in ours.weights}
    expected = group_norm(
        x, weights.get("gamma"), weights.get("beta"), kwargs.get("groups", 32), kwargs.get("axis", -1),
        kwargs.get("epsilon", 1e-3),
    )
    assert_close(to_numpy(ours(x)), expected, err_msg=name)


def test_set_weights_both_ways():
    shape = (2, 4, 4, 8)
    x = data(shape)
    theirs, ours = pair(shape, groups=4)
    assert_close(to_numpy(ours(x)), to_numpy(theirs(x)))
    # The other way: ours' weights into a fresh Keras layer.
    rng = np.random.default_rng(5)
    ours.set_weights([rng.normal(size=w.shape).astype("float32") for w in ours.weights])
    fresh = keras.layers.GroupNormalization(groups=4)
    fresh.build(shape)
    fresh.set_weights(ours.get_weights())
    assert_close(to_numpy(fresh(x)), to_numpy(ours(x)))


def _model(norm):
    return keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(8, 3, name="conv"), norm])


@pytest.mark.parametrize("direction", ["keras_to_ours", "ours_to_keras"])
def test_weights_h5_moves_between_keras_and_ours(direction, tmp_path):
    theirs = _model(keras.layers.GroupNormalization(groups=4, name="norm"))
    ours = _model(GN(groups=4, name="norm"))
    source, target = (theirs, ours) if direction == "keras_to_ours" else (ours, theirs)
    rng = np.random.default_rng(2)
    source.set_weights([rng.normal(size=w.shape).astype("float32") for w in source.weights])
    path = str(tmp_path / "model.weights.h5")
    source.save_weights(path)
    target.load_weights(path)
    for a, b in zip(target.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = data((2, 6, 6, 3))
    assert_close(to_numpy(target(x)), to_numpy(source(x)))


def test_config_keys_equal_keras_and_a_keras_config_rebuilds_ours():
    kwargs = dict(groups=4, axis=1, epsilon=1e-5, center=False, gamma_regularizer="l2", beta_constraint="non_neg")
    theirs = keras.layers.GroupNormalization(**kwargs)
    ours = GN(**kwargs)
    assert list(ours.get_config()) == list(theirs.get_config())
    rebuilt = GN.from_config(theirs.get_config())
    assert rebuilt.get_config() == {**theirs.get_config(), "name": rebuilt.name}
    # Building does not rewrite the config (Keras's layer turns groups=-1 into the channel count).
    instance = GN(groups=-1)
    before = instance.get_config()
    instance.build((2, 5, 6))
    assert instance.get_config() == before


@pytest.mark.parametrize("enabled", [True, False], ids=["fast_paths", "reference"])
def test_large_mean_within_float32_tolerance_of_float64(enabled):
    """|mean| / std = 300: the statistics must not cancel (a one-pass E[x^2] - E[x]^2 in float32 would)."""
    shape = (4, 8, 8, 16)
    x = data(shape, seed=11, scale=1.0, offset=300.0)
    upstream = data(shape, seed=12, offset=0.0)
    layer = GN(groups=4)
    layer.build(shape)
    with config.fast_paths(enabled):
        y, dx, _ = layer_gradients(layer, x, upstream)
    x64 = x.astype("float64")
    expected = group_norm(x64, groups=4)
    assert_close(y, expected, rtol=1e-4, atol=1e-4)
    # d/dx of sum(upstream * y) per (example, group) cell, from the equation: (u - mean(u) - y mean(u y)) / sigma.
    cells = x64.reshape(4, 64, 4, 4)
    u = upstream.astype("float64").reshape(4, 64, 4, 4)
    yy = expected.reshape(4, 64, 4, 4)
    sigma = np.sqrt(cells.var(axis=(1, 3), keepdims=True) + 1e-3)
    expected_dx = (u - u.mean(axis=(1, 3), keepdims=True) - yy * (u * yy).mean(axis=(1, 3), keepdims=True)) / sigma
    assert_close(dx, expected_dx.reshape(shape), rtol=1e-3, atol=1e-3)


def test_mask_passes_through_as_in_keras():
    x = data((2, 5, 8))
    x[0, 3:] = 0.0  # padded steps of the first sequence
    theirs, ours = pair((2, 5, 8), groups=2)
    mask = np.array([[True] * 3 + [False] * 2, [True] * 5])
    for layer in (theirs, ours):
        assert layer.supports_masking
        np.testing.assert_array_equal(to_numpy(layer.compute_mask(x, keras.ops.convert_to_tensor(mask))), mask)
    inputs = keras.Input((5, 8))
    outputs = {}
    for label, layer in (("theirs", theirs), ("ours", ours)):
        h = layer(keras.layers.Masking(0.0)(inputs))
        pooled = keras.layers.GlobalAveragePooling1D()(h)  # mask-aware: averages the unmasked steps only
        outputs[label] = to_numpy(keras.Model(inputs, pooled)(x))
    assert_close(outputs["ours"], outputs["theirs"])


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("input_dtype", ["float32", "compute"])
def test_mixed_precision_as_keras(policy, input_dtype):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        shape = (2, 4, 4, 8)
        theirs, ours = pair(shape, groups=4)
        assert [w.dtype for w in ours.weights] == [w.dtype for w in theirs.weights] == ["float32", "float32"]
        x = data(shape, offset=40.0)  # the float32 input is normalized before any 16-bit rounding
        if input_dtype == "compute":
            x = keras.ops.cast(x, ours.compute_dtype)
        y0, y1 = theirs(x), ours(x)
        assert keras.backend.standardize_dtype(y1.dtype) == keras.backend.standardize_dtype(y0.dtype)
        dtype = ours.compute_dtype
        assert_close(to_numpy(keras.ops.cast(y1, "float32")), to_numpy(keras.ops.cast(y0, "float32")), dtype=dtype)
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize(
    "groups, shape, message",
    [
        (4, (2, 5, 6), r"GroupNormalization \(layer 'gn'\).*`groups`=4.*6 channels.*groups=3"),
        (8, (2, 5, 6), r"`groups`=8.*6 channels.*groups=6"),
        (5, (2, 3, 4, 6), r"`groups`=5.*6 channels of axis -1.*-1 for one channel per group"),
    ],
)
def test_groups_not_dividing_the_channels_names_the_fix(groups, shape, message):
    with pytest.raises(ValueError, match=message):
        GN(groups=groups, name="gn").build(shape)
    keras_layer = keras.layers.GroupNormalization(groups=groups)
    with pytest.raises(ValueError):  # Keras rejects it too: ours only says more
        keras_layer.build(shape)



@pytest.mark.parametrize("kwargs", [dict(groups=2), dict(groups=2, scale=False)], ids=["affine", "unscaled"])
def test_weights_only_gradients_equal_the_reference(kwargs):
    """Right after the Input, fit asks for the weights' gradients only. Regression: torch 2.13's channels-last
    `F.group_norm` backward segfaulted there, and failed ("tensor does not have a device") with a bias but no
    weight; the kernel now steers around both."""
    x, target = data((3, 4, 5, 6)), data((3, 4, 5, 6), seed=9)
    weights = {}
    for enabled in (True, False):
        with config.fast_paths(enabled):
            model = keras.Sequential([keras.Input((4, 5, 6)), GN(**kwargs)])
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
            model.fit(x, target, batch_size=3, epochs=1, verbose=0, shuffle=False)
            weights[enabled] = model.get_weights()
    for a, b in zip(weights[True], weights[False]):
        assert_close(a, b)
    assert not np.allclose(weights[True][-1], 0.0)  # beta moved: the step reached the weights

"""InstanceNormalization: `keras.layers.GroupNormalization(groups=-1)` as a layer, and tf-addons' layer of that name.

The shared checks come from the conformance registry (`tests/cases_instance_norm.py`, against the float64 group-norm
oracle with one channel per group). Here: parity with Keras's `GroupNormalization(groups=-1)` on the current backend
(outputs, gradients, weights both ways, `.h5` files, config), tf-addons' configs, the `groups` errors, conversion
from a batch normalization, and a large mean against the float64 oracle.
"""

import warnings

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

IN = keras_norms.InstanceNormalization
# Against Keras's layer: its torch moments are one-pass E[x^2] - E[x]^2 in float32 (see
# tests/layers/test_group_normalization.py); ours are held to 1e-5 against the float64 oracle by the registry.
KERAS = dict(rtol=1e-4, atol=1e-4)


def data(shape, seed=0, scale=1.5, offset=0.5):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * scale + offset).astype("float32")


def keras_twin(**kwargs):
    return keras.layers.GroupNormalization(groups=-1, **kwargs)


@pytest.mark.parametrize(
    "shape, kwargs",
    [((2, 4, 5, 6), {}), ((2, 6, 4, 5), dict(axis=1, epsilon=1e-5)), ((3, 7, 4), dict(center=False))],
    ids=["channels_last", "channels_first", "rank3_uncentered"],
)
def test_outputs_gradients_and_weights_equal_keras_group_norm_of_one_channel_per_group(shape, kwargs):
    theirs, ours = keras_twin(**kwargs), IN(**kwargs)
    theirs.build(shape)
    ours.build(shape)
    assert [(w.name, tuple(w.shape)) for w in ours.weights] == [(w.name, tuple(w.shape)) for w in theirs.weights]
    rng = np.random.default_rng(1)
    theirs.set_weights([rng.uniform(0.6, 1.6, w.shape).astype("float32") for w in theirs.weights])
    ours.set_weights(theirs.get_weights())
    x, upstream = data(shape), data(shape, seed=7, offset=0.0)
    y0, dx0, dw0 = layer_gradients(keras.Sequential([keras.Input(shape[1:]), theirs]), x, upstream)
    y1, dx1, dw1 = layer_gradients(ours, x, upstream)
    assert_close(y1, y0, **KERAS)
    assert_close(dx1, dx0, **GRADIENT)
    assert len(dw1) == len(dw0)
    for a, b in zip(dw1, dw0):
        assert_close(a, b, **GRADIENT)
    # The other way: ours' weights into a fresh Keras layer.
    ours.set_weights([rng.normal(size=w.shape).astype("float32") for w in ours.weights])
    fresh = keras_twin(**kwargs)
    fresh.build(shape)
    fresh.set_weights(ours.get_weights())
    assert_close(to_numpy(ours(x)), to_numpy(fresh(x)), **KERAS)


def _model(norm):
    return keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3, name="conv"), norm])


@pytest.mark.parametrize("direction", ["keras_to_ours", "ours_to_keras"])
def test_h5_weights_move_between_keras_and_ours(direction, tmp_path):
    """A `.h5` file (the tf.keras 2 format of tf-addons' models) loads layer by layer, in order, both ways.

    A Keras 3 `.weights.h5` file keys each layer by its class name ("group_normalization"): it loads into a model
    of the classes that saved it, whose `get_weights()` then `set_weights` ours (the first test).
    """
    theirs, ours = _model(keras_twin(name="norm")), _model(IN(name="norm"))
    source, target = (theirs, ours) if direction == "keras_to_ours" else (ours, theirs)
    rng = np.random.default_rng(2)
    source.set_weights([rng.normal(size=w.shape).astype("float32") for w in source.weights])
    path = str(tmp_path / "model.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "HDF5 is a legacy format"
        source.save(path)
    target.load_weights(path)
    for a, b in zip(target.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = data((2, 6, 6, 3))
    assert_close(to_numpy(target(x)), to_numpy(source(x)), **KERAS)


def test_config_is_keras_group_norm_config_without_groups_and_rebuilds_from_it():
    kwargs = dict(axis=1, epsilon=1e-5, center=False, gamma_regularizer="l2", beta_constraint="non_neg")
    theirs = keras_twin(**kwargs)
    ours = IN(**kwargs)
    assert list(ours.get_config()) == [key for key in theirs.get_config() if key != "groups"]
    rebuilt = IN.from_config(theirs.get_config())
    expected = {key: value for key, value in theirs.get_config().items() if key != "groups"}
    assert rebuilt.get_config() == {**expected, "name": rebuilt.name}


def _tfa_config(groups):
    """A config as tf-addons' `InstanceNormalization.get_config` wrote it under tf.keras 2: `groups`, then the GN keys.

    Written by hand from tensorflow_addons/layers/normalizations.py: `groups` is -1 before build and the channel
    count after (its build turns -1 into C), so a saved model carries C.
    """
    return {
        "name": "instance_normalization", "trainable": True, "dtype": "float32", "groups": groups, "axis": -1,
        "epsilon": 1e-3, "center": True, "scale": True,
        "beta_initializer": {"class_name": "Zeros", "config": {}},
        "gamma_initializer": {"class_name": "Ones", "config": {}},
        "beta_regularizer": None, "gamma_regularizer": {"class_name": "L2", "config": {"l2": 1e-4}},
        "beta_constraint": None, "gamma_constraint": None,
    }


@pytest.mark.parametrize(
    "groups, how", [(-1, "from_config"), (6, "from_config"), (6, "addons_name"), (None, "addons_name")],
    ids=["unbuilt", "built", "built_by_addons_name", "none_by_addons_name"],
)
def test_a_tf_addons_config_rebuilds_it(groups, how):
    tfa = _tfa_config(groups)
    if how == "from_config":
        layer = IN.from_config(tfa)
    else:  # the name tf-addons registered its layer under, as a saved model names it
        layer = keras.layers.deserialize({"class_name": "Addons>InstanceNormalization", "config": tfa})
    assert type(layer) is IN
    expected = IN(name="instance_normalization", gamma_regularizer=keras.regularizers.L2(1e-4)).get_config()
    assert layer.get_config() == expected
    assert keras.saving.get_registered_name(IN) == "keras_norms>InstanceNormalization"  # ours on saving
    x = data((2, 3, 4, 6))
    assert_close(to_numpy(layer(x)), group_norm(x, groups=-1))


@pytest.mark.parametrize(
    "groups, message",
    [
        (3, r"InstanceNormalization \(layer 'in'\).*`groups`=3.*6 channels on axis -1.*GroupNormalization\(groups=3\)"),
        (12, r"`groups`=12.*6 channels on axis -1.*one channel per group"),
    ],
)
def test_groups_other_than_the_channel_count_raise_at_build(groups, message):
    layer = IN(groups=groups, name="in")
    with pytest.raises(ValueError, match=message):
        layer.build((2, 3, 6))


def test_convert_normalization_builds_it_with_gamma_and_beta():
    inputs = keras.Input((5, 5, 3))
    bn = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, bn(keras.layers.Conv2D(64, 3, name="conv")(inputs)))
    bn.set_weights([data((64,), seed=s) for s in range(4)])
    converted = keras_norms.convert_normalization(model, "instance_norm")
    layer = converted.get_layer("bn")
    assert type(layer) is IN and layer._num_groups == 64  # not the grouped layers' default of 32
    np.testing.assert_array_equal(to_numpy(layer.gamma), to_numpy(bn.gamma))
    np.testing.assert_array_equal(to_numpy(layer.beta), to_numpy(bn.beta))


@pytest.mark.parametrize("enabled", [True, False], ids=["fast_paths", "reference"])
def test_large_mean_within_float32_tolerance_of_float64(enabled):
    """|mean| / std = 300: the statistics must not cancel (a one-pass E[x^2] - E[x]^2 in float32 would)."""
    shape = (2, 8, 8, 6)
    x = data(shape, seed=11, scale=1.0, offset=300.0)
    layer = IN()
    with config.fast_paths(enabled):
        y = to_numpy(layer(x))
    # 5e-4: the reference's float32 sum of 64 values near 300 rounds at ~1e-3 per addition, so its mean is off by
    # ~1e-4 (1.1e-4 measured on XLA; the fast paths: 4e-5 or less). A one-pass E[x^2] - E[x]^2 is off by 7e-2.
    assert_close(y, group_norm(x.astype("float64"), groups=-1), rtol=5e-4, atol=5e-4)


@pytest.mark.parametrize(
    "shape, axis",
    [((1, 6), -1), ((1, 1, 1, 6), -1), ((2, 6, 1), 1)],
    ids=["rank2", "one_position", "channels_first_one_position"],
)
def test_one_value_per_channel_gives_beta(shape, axis):
    """Regression (found by the fuzz tests): torch's `F.group_norm` raised on one value per group in the whole
    batch, and with several examples computed `x * s + (beta - mean * s)`, `s = gamma / sqrt(epsilon)`, off by
    1e-4 at |x| = 100; the torch kernel declines there. Each channel's one value is its mean: the output is
    `beta`."""
    layer = IN(axis=axis, gamma_initializer="ones")
    layer.build(shape)
    beta = data((6,), seed=4)
    layer.beta.assign(beta)
    expected = np.broadcast_to(beta.reshape((6,) + (1,) * (len(shape) - 2) if axis == 1 else (6,)), shape)
    for training in (True, False):
        assert_close(to_numpy(layer(data(shape, scale=100.0), training=training)), expected)

"""WeightNormalization: NumPy oracles per wrapped layer, data-dependent initialization, saving, tf-addons configs,
mixed precision and folding. The shared checks run on `tests/cases_weight_norm.py`'s case."""

import json
import re
import warnings

import keras
import numpy as np
import pytest

import keras_norms
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.case import Fresh
from tests.reference import numerical_gradient
from tests.reference import weight_norm as ref
from tests.tolerances import GRADIENT
from tests.tolerances import assert_close

L = keras.layers

# name -> (inner layer class, its arguments, input shape, channels first)
INNER = {
    "dense": (L.Dense, dict(units=3, activation="relu"), (4, 5), False),
    "conv1d_causal": (L.Conv1D, dict(filters=3, kernel_size=3, padding="causal", dilation_rate=2), (2, 7, 2), False),
    "conv2d_channels_first": (L.Conv2D, dict(filters=4, kernel_size=3, strides=2, data_format="channels_first"),
                              (2, 7, 7, 3), True),
    "conv3d": (L.Conv3D, dict(filters=2, kernel_size=2), (2, 3, 4, 3, 2), False),
    "conv2d_transpose": (L.Conv2DTranspose, dict(filters=3, kernel_size=3, strides=2, padding="same"),
                         (2, 4, 4, 2), False),
    "depthwise": (L.DepthwiseConv2D, dict(kernel_size=3, depth_multiplier=2, padding="same"), (2, 5, 5, 3), False),
}


def make(name, data_init=False, seed=0):
    """`(wrapper, input, weights by name, channels_first)`, built, with random weights (the flag left at 0)."""
    cls, kwargs, shape, first = INNER[name]
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=shape) * 2.0 + 1.0).astype("float32")
    layer = keras_norms.WeightNormalization(cls(**kwargs), data_init=data_init)
    layer.build(np.moveaxis(x, -1, 1).shape if first else shape)
    weights = {}
    for w in layer.trainable_weights:
        weights[w.name] = rng.normal(size=w.shape).astype("float32") * 0.5
        w.assign(weights[w.name])
    return layer, x, weights, first


def oracle(name, x, weights, training=False, initialized=1.0, data_init=False):
    cls, kwargs, _, _ = INNER[name]
    y, state = ref.weight_norm_oracle(
        x.astype("float64"), {**weights, "initialized": initialized}, training,
        layer=Fresh(cls, kwargs), data_init=data_init,
    )
    return y, state


def call(layer, x, first, training):
    y = to_numpy(layer(np.moveaxis(x, -1, 1) if first else x, training=training))
    return np.moveaxis(y, 1, -1) if first else y


@pytest.mark.parametrize("name", sorted(INNER))
def test_kernel_and_output_match_the_oracle(name):
    layer, x, weights, first = make(name)
    layout = ref.LAYOUTS[INNER[name][0].__name__]
    assert layer.g.shape == tuple(s for a, s in enumerate(weights["kernel"].shape)
                                  if a not in ref.ws_ref.FAN_IN_AXES[layout](weights["kernel"].ndim))
    assert_close(to_numpy(layer.normalized_kernel()), ref.weight_norm(weights["kernel"], layout, weights["g"]))
    assert_close(call(layer, x, first, training=True), oracle(name, x, weights)[0])


def test_without_data_init_the_wrapper_starts_as_the_plain_layer():
    """g = ||v|| at build: the wrapped layer's function is unchanged until training moves g."""
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 3)).astype("float32")
    plain = L.Conv2D(4, 3, bias_initializer="glorot_uniform")
    expected = to_numpy(plain(x))
    wrapped = keras_norms.WeightNormalization(plain, data_init=False)
    assert_close(to_numpy(wrapped(x, training=True)), expected)
    assert not wrapped.non_trainable_weights


@pytest.mark.parametrize("name", ["dense", "conv2d_channels_first", "depthwise", "conv2d_transpose"])
def test_data_init_runs_on_the_first_training_batch_only(name):
    layer, x, weights, first = make(name, data_init=True)
    y = call(layer, x, first, training=False)  # inference never initializes
    assert float(to_numpy(layer.initialized)) == 0.0
    assert_close(y, oracle(name, x, weights)[0])
    y = call(layer, x, first, training=True)
    expected, state = oracle(name, x, weights, training=True, initialized=0.0, data_init=True)
    assert_close(y, expected)
    assert float(to_numpy(layer.initialized)) == 1.0
    assert_close(to_numpy(layer.g), state["g"])
    assert_close(to_numpy(layer.layer.bias), state["bias"])
    if INNER[name][1].get("activation") is None:  # the pre-activation: mean 0, variance 1 per unit on this batch
        flat = y.reshape(-1, y.shape[-1])
        assert_close(flat.mean(0), np.zeros(flat.shape[1]), atol=1e-5)
        assert_close(flat.var(0), np.ones(flat.shape[1]), atol=1e-4)
    # A second batch uses the variables: no second initialization.
    other = x[::-1] * 3.0 + 2.0
    g = to_numpy(layer.g)
    y = call(layer, other, first, training=True)
    assert_close(to_numpy(layer.g), g)
    weights = {"g": g, "kernel": weights["kernel"], "bias": state["bias"]}
    assert_close(y, oracle(name, other, weights)[0])


@pytest.mark.parametrize("name", ["depthwise", "conv2d_transpose"])
def test_gradients_match_finite_differences(name):
    layer, x, weights, first = make(name)
    assert not first
    upstream = np.random.default_rng(7).normal(size=call(layer, x, first, False).shape).astype("float32")
    _, dx, dweights = layer_gradients(layer, x, upstream, training=True)
    w64 = {k: v.astype("float64") for k, v in weights.items()}

    def loss(x64, **replaced):
        return float(np.sum(oracle(name, x64, {**w64, **replaced})[0] * upstream))

    assert_close(dx, numerical_gradient(loss, x.astype("float64")), **GRADIENT)
    for variable, grad in zip(layer.trainable_weights, dweights):
        expected = numerical_gradient(lambda v: loss(x.astype("float64"), **{variable.name: v}), w64[variable.name])
        assert_close(grad, expected, err_msg=variable.name, **GRADIENT)


def test_saved_model_keeps_its_initialization(tmp_path):
    x = np.random.default_rng(2).normal(size=(8, 5)).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras_norms.WeightNormalization(L.Dense(3))])
    model(x, training=True)
    g = to_numpy(model.layers[0].g)
    model.save(tmp_path / "wn.keras")
    loaded = keras.saving.load_model(tmp_path / "wn.keras")
    assert float(to_numpy(loaded.layers[0].initialized)) == 1.0
    y = to_numpy(loaded(x * 5.0 - 1.0, training=True))
    assert_close(to_numpy(loaded.layers[0].g), g)
    assert_close(y, to_numpy(model(x * 5.0 - 1.0, training=False)))


def _stateless_train_call(layer, x):
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    return layer.stateless_call(trainable, non_trainable, x, training=True)


STATELESS_WARNING = r"cannot run in a stateless call .* trains from its initial g and bias"


def test_a_stateless_call_does_not_initialize_silently():
    """A stateless call drops the writes to g and the bias: before the initialization it warns and trains from the
    variables (as with data_init=False), setting the flag; after it, no warning.

    Regression: JAX's `fit` (stateless) set the flag and lost the initialized g and bias without a word, after a
    first step computed with them."""
    layer, x, weights, _ = make("dense", data_init=True)
    with pytest.warns(UserWarning, match=STATELESS_WARNING):
        y, state = _stateless_train_call(layer, x)
    assert_close(to_numpy(y), oracle("dense", x, weights)[0])  # the variables, not initialized values
    assert [float(to_numpy(v)) for v in state] == [1.0]
    call(layer, x, False, training=True)  # the initialization, outside a stateless scope
    initialized = {"g": to_numpy(layer.g), "kernel": weights["kernel"], "bias": to_numpy(layer.layer.bias)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, _ = _stateless_train_call(layer, x * 2.0)
    assert_close(to_numpy(y), oracle("dense", x * 2.0, initialized)[0])


def test_a_loaded_initialized_layer_takes_stateless_calls_without_warning(tmp_path):
    x = np.random.default_rng(3).normal(size=(8, 5)).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras_norms.WeightNormalization(L.Dense(3))])
    model(x, training=True)
    model.save(tmp_path / "wn.keras")
    loaded = keras.saving.load_model(tmp_path / "wn.keras").layers[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, _ = _stateless_train_call(loaded, x)
    assert_close(to_numpy(y), to_numpy(model(x, training=False)))


def test_loading_an_uninitialized_flag_makes_the_layer_uninitialized_again(tmp_path):
    """The flag loaded decides, not what the object saw before: stateless calls warn again."""
    x = np.random.default_rng(5).normal(size=(8, 5)).astype("float32")
    fresh = keras.Sequential([keras.Input((5,)), keras_norms.WeightNormalization(L.Dense(3))])
    fresh.save_weights(tmp_path / "fresh.weights.h5")
    model = keras.Sequential([keras.Input((5,)), keras_norms.WeightNormalization(L.Dense(3))])
    model(x, training=True)
    model.load_weights(tmp_path / "fresh.weights.h5")
    assert float(to_numpy(model.layers[0].initialized)) == 0.0
    with pytest.warns(UserWarning, match=STATELESS_WARNING):
        _stateless_train_call(model.layers[0], x)


@pytest.mark.parametrize("called_first", [True, False])
def test_fit_initializes_or_warns(called_first):
    """`fit` initializes on its first batch where it calls the model statefully (TensorFlow, PyTorch) or after a
    call with training=True; JAX's stateless `fit` alone warns and trains from the initial g and bias."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(16, 5)).astype("float32") * 3.0 + 2.0, rng.normal(size=(16, 3)).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras_norms.WeightNormalization(L.Dense(3))])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # no update: the output shows the init
    before = to_numpy(model(x, training=False))
    if called_first:
        model(x, training=True)
    initializes = called_first or keras.backend.backend() != "jax"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    warned = [w for w in caught if re.search(STATELESS_WARNING, str(w.message))]
    assert bool(warned) == (not initializes)
    out = to_numpy(model(x, training=False))
    if initializes:  # the pre-activation standardized on the first batch: mean 0, variance 1 per unit
        assert_close(out.mean(0), np.zeros(3), atol=1e-5)
        assert_close(out.var(0), np.ones(3), atol=1e-4)
    else:
        assert_close(out, before)
    assert float(to_numpy(model.layers[0].initialized)) == 1.0


# tf-addons' WeightNormalization.get_config() of a wrapped tf.keras Dense (TF 2.15), written out by hand.
TFA_CONFIG = {
    "class_name": "Addons>WeightNormalization",
    "config": {
        "name": "weight_normalization",
        "trainable": True,
        "dtype": "float32",
        "layer": {
            "class_name": "Dense",
            "config": {
                "name": "dense", "trainable": True, "dtype": "float32", "units": 4, "activation": "relu",
                "use_bias": True, "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": None,
                "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None,
                "bias_constraint": None,
            },
        },
        "data_init": False,
    },
}


def test_tf_addons_configs_rebuild_the_wrapper():
    for layer in (keras.saving.deserialize_keras_object(json.loads(json.dumps(TFA_CONFIG))),
                  keras_norms.WeightNormalization.from_config(json.loads(json.dumps(TFA_CONFIG["config"])))):
        assert type(layer) is keras_norms.WeightNormalization and type(layer.layer) is L.Dense
        assert (layer.name, layer.data_init, layer.layer.units, layer.layer.activation) == (
            "weight_normalization", False, 4, keras.activations.relu)
        assert to_numpy(layer(np.ones((2, 3), "float32"))).shape == (2, 4)
    assert keras.saving.get_registered_name(type(layer)) == "keras_norms>WeightNormalization"


def test_mixed_precision_statistics_are_float32():
    """|t| ~ 1e3: t**2 overflows float16 (max 65504) unless the initialization's statistics are float32."""
    keras.config.set_dtype_policy("mixed_float16")
    layer, _, weights, _ = make("dense", data_init=True)
    x = (np.random.default_rng(3).normal(size=(16, 5)) * 1e3 + 500.0).astype("float16").astype("float32")
    assert {w.dtype for w in layer.weights} == {"float32"}
    y = layer(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    _, state = oracle("dense", x, weights, training=True, initialized=0.0, data_init=True)
    assert_close(to_numpy(layer.g), state["g"], dtype="float16")
    assert_close(to_numpy(layer.layer.bias), state["bias"], dtype="float16")


def test_fold_replaces_the_wrapper_by_the_plain_layer():
    x = np.random.default_rng(4).normal(size=(4, 6, 6, 3)).astype("float32")
    model = keras.Sequential([
        keras.Input((6, 6, 3)),
        keras_norms.WeightNormalization(L.Conv2D(4, 3, activation="relu"), name="wn_conv"),
        keras_norms.WSConv2D(4, 3),
        L.Flatten(),
        keras_norms.WeightNormalization(L.Dense(2, use_bias=False), name="wn_dense"),
    ])
    model(x, training=True)  # data-dependent initialization
    folded = keras_norms.fold_weight_standardization(model)
    assert [type(layer) for layer in folded.layers] == [L.Conv2D, L.Conv2D, L.Flatten, L.Dense]
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    assert_close(to_numpy(folded.get_layer("wn_conv").kernel), to_numpy(model.layers[0].normalized_kernel()))
    assert_close(to_numpy(folded(x)), to_numpy(model(x, training=False)))
    assert "keras_norms" not in json.dumps(folded.get_config())

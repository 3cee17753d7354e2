"""Keras Applications: convert, one `fit` step, `.keras` round trip; weights from a local file (issue 7).

Each Application is built with `weights=None` at 32x32 (the smallest input
each accepts), 3 classes, its normalization weights, statistics and biases
randomized, and converted; then:

* every layer keeps its name; every batch normalization becomes the target
  with the source's axis and epsilon; every carried weight is equal; every
  other layer keeps its class (or, with `convolutions="ws"`, gets its
  weight-standardized class) and all its weights;
* one `fit` step at batch 2 changes every trainable weight and keeps it
  finite;
* the trained model saved to `.keras` reloads with the same layer classes
  and identical outputs (`training=False`).

A second test saves a randomized model with `save_weights`, builds a fresh
one from the file (`weights=PATH`, the Keras Applications API for a local
pretrained file), converts it and checks the carried weights.

Time: one Application costs 5-16 CPU s on TensorFlow (eager steps), 5-25 on
torch and 25-140 on JAX (every new shape compiles, and the jitted train step
of a deep network takes 15-80 s to compile), so each backend runs a share of
the six (BY_BACKEND), and all six run somewhere.
"""

import warnings

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms.models.convert import convert_normalization
from keras_norms.models.convert import is_batch_normalization
from keras_norms.layers import weight_standardization as wsl
from tests.backend_utils import to_numpy

K = keras.layers
SIZE, CLASSES, BATCH = 32, 3, 2
WS_OF = {K.Conv2D: wsl.WSConv2D, K.DepthwiseConv2D: wsl.WSDepthwiseConv2D}

AFFINE = {"gamma": "gamma", "beta": "beta"}
# target -> (class name, {new weight: source BN weight} carried bit-equal)
TARGETS = {
    "group_norm": ("GroupNormalization", AFFINE),
    "filter_response_norm": ("FilterResponseNormalization", AFFINE),
    "batch_channel_norm": (
        "BatchChannelNormalization",
        {**AFFINE, "moving_mean": "moving_mean", "moving_variance": "moving_variance"},
    ),
    "batch_group_norm": ("BatchGroupNormalization", {**AFFINE, "moving_mean": "moving_mean"}),
}

# Application -> (constructor arguments, target, convolutions, number of batch normalizations).
APPLICATIONS = {
    "ResNet50": ({}, "group_norm", "ws", 53),
    "ResNet50V2": ({}, "filter_response_norm", None, 49),
    # Batch-dependent target; depthwise convolutions become WSDepthwiseConv2D. alpha=0.35: the smallest width.
    # (Not BCN: its per-channel batch step removes any per-channel shift of its input, so the beta of a
    # linear-bottleneck BN, which reaches only such layers through 1x1 convolutions, gets a zero gradient.)
    "MobileNetV2": ({"alpha": 0.35}, "batch_group_norm", "ws", 52),
    # Depthwise convolutions, squeeze-excitation, Rescaling and Normalization (preprocessing) layers.
    "EfficientNetB0": ({}, "group_norm", "ws", 49),
    "DenseNet121": ({}, "batch_channel_norm", None, 121),  # batch-dependent target
    # LayerNormalization only: kept as it is, so the result is an unchanged copy (with a warning).
    "ConvNeXtTiny": ({}, "group_norm", "ws", 0),
}

# Which Applications run on which backend. CPU seconds of this test per Application on TensorFlow / torch / JAX,
# measured on 2 shared cores (JAX: the jitted train step compiles; the others run eagerly):
#   ResNet50 8 / 17 / 43, ResNet50V2 7 / 14 / 39, MobileNetV2 5 / 5 / 50, EfficientNetB0 7 / 16 / 77,
#   DenseNet121 16 / 24 / 136, ConvNeXtTiny 12 / 12 / 25.
# ResNet50 also converts to every target on every backend in test_convert.py, and trains in the smoke run
# of examples/finetune_applications.py on every backend.
BY_BACKEND = {
    "tensorflow": ("ResNet50V2", "EfficientNetB0", "DenseNet121"),
    "torch": ("ResNet50V2", "MobileNetV2", "ConvNeXtTiny"),
    "jax": ("ResNet50",),
}
HERE = BY_BACKEND.get(keras.backend.backend(), ())


def test_every_application_runs_on_some_backend():
    assert sorted({name for names in BY_BACKEND.values() for name in names}) == sorted(APPLICATIONS)


def leaves(model):
    """The layers of `model`, nested models' layers included, the models themselves not."""
    return [layer for layer in model._flatten_layers(include_self=False) if not isinstance(layer, keras.Model)]


def numpy_weights(layer):
    return {w.name: np.array(to_numpy(w)) for w in layer.weights}


def build(name, weights=None):
    kwargs = APPLICATIONS[name][0]
    return getattr(keras.applications, name)(
        weights=weights, input_shape=(SIZE, SIZE, 3), classes=CLASSES, **kwargs
    )


def randomize(model, seed=0):
    """Random normalization weights, statistics and biases (the initial ones are ones and zeros)."""
    rng = np.random.default_rng(seed)
    for layer in leaves(model):
        if isinstance(layer, K.Normalization):  # EfficientNet's preprocessing: ImageNet statistics
            continue
        values = []
        for w in layer.weights:
            value = to_numpy(w)
            if w.name in ("gamma", "moving_variance") or type(layer).__name__ == "LayerScale":
                value = rng.uniform(0.5, 1.5, value.shape)
            elif w.name in ("beta", "moving_mean", "bias"):
                value = rng.uniform(-0.1, 0.1, value.shape)
            values.append(np.asarray(value, w.dtype))
        layer.set_weights(values)


def assert_carried(model, converted, name, weights):
    """Names, classes, axis and epsilon as `model`'s; carried weights equal to `weights` (one dict per leaf)."""
    _, target, convolutions, bn_count = APPLICATIONS[name]
    class_name, carried = TARGETS[target]
    old_layers, new_layers = leaves(model), leaves(converted)
    assert [layer.name for layer in new_layers] == [layer.name for layer in old_layers]
    converted_count = standardized = 0
    for old, new, old_weights in zip(old_layers, new_layers, weights, strict=True):
        new_weights = numpy_weights(new)
        if is_batch_normalization(old):
            converted_count += 1
            assert type(new) is getattr(keras_norms, class_name), old.name  # not Keras's class of the same name
            assert new.axis == old.axis, old.name  # 3 in ResNet, DenseNet, EfficientNet; -1 in MobileNetV2
            assert new.epsilon == pytest.approx(old.epsilon), old.name  # 1.001e-5 or 1e-3, as the source
            for new_name, old_name in carried.items():
                np.testing.assert_array_equal(new_weights[new_name], old_weights[old_name], err_msg=old.name)
            continue
        if isinstance(new, wsl.WeightStandardizationMixin):
            standardized += 1
            assert convolutions == "ws" and type(new) is WS_OF[type(old)], old.name
        else:
            assert type(new) is type(old), old.name
        # By position: unnamed weights (ConvNeXt's LayerScale) get a new automatic name in a clone.
        assert len(new_weights) == len(old_weights), old.name
        for (weight, value), new_value in zip(old_weights.items(), new_weights.values()):
            np.testing.assert_array_equal(new_value, value, err_msg=f"{old.name}/{weight}")
    assert converted_count == bn_count
    # In these networks each WS candidate is the convolution right before a BN; every BN has one.
    assert standardized == (bn_count if convolutions == "ws" else 0)


def convert(model, name):
    _, target, convolutions, bn_count = APPLICATIONS[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = convert_normalization(model, target, convolutions=convolutions)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any("no batch normalization" in m for m in messages) == (bn_count == 0), messages
    return converted


def fit_one_step(model):
    """One SGD step at batch 2 (TensorFlow eager: tracing a deep network costs more than the step)."""
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss="sparse_categorical_crossentropy",
        run_eagerly=keras.backend.backend() == "tensorflow",
    )
    rng = np.random.default_rng(1)
    x = rng.normal(size=(BATCH, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, CLASSES, size=(BATCH,))
    before = [np.array(to_numpy(v)) for v in model.trainable_weights]
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    unchanged = []
    for variable, old in zip(model.trainable_weights, before):
        new = to_numpy(variable)
        assert np.isfinite(new).all(), variable.path
        if np.array_equal(new, old):
            unchanged.append(variable.path)
    assert not unchanged, f"the fit step left {unchanged} unchanged"
    return x


@pytest.mark.parametrize("name", HERE)
def test_application_converts_trains_saves_and_reloads(name, tmp_path):
    model = build(name)
    randomize(model)
    for layer in leaves(model):
        if isinstance(layer, K.Dropout) and layer.noise_shape is not None:
            # EfficientNet's stochastic depth drops a residual branch for both examples with probability
            # 0.2**2, leaving that block's weights without an update: off, so that every weight must change.
            layer.rate = 0.0
    weights = [numpy_weights(layer) for layer in leaves(model)]

    converted = convert(model, name)
    assert type(converted) is type(model) and converted.name == model.name
    assert_carried(model, converted, name, weights)

    x = fit_one_step(converted)
    expected = to_numpy(converted(x, training=False))
    converted.save(tmp_path / f"{name}.keras")
    reloaded = keras.saving.load_model(tmp_path / f"{name}.keras", compile=False)
    assert [type(layer) for layer in leaves(reloaded)] == [type(layer) for layer in leaves(converted)]
    np.testing.assert_array_equal(to_numpy(reloaded(x, training=False)), expected)


# One Application per backend, the cheapest to build there (JAX: the one test_application_* builds).
FROM_FILE = {"tensorflow": "MobileNetV2", "torch": "MobileNetV2", "jax": "ResNet50"}


@pytest.mark.parametrize("name", [FROM_FILE.get(keras.backend.backend(), "MobileNetV2")])
def test_weights_from_a_local_file_carry_over(name, tmp_path):
    """Build, randomize, `save_weights`; a fresh model built from the file (`weights=PATH`) converts with them."""
    source = build(name)
    randomize(source, seed=2)
    weights = [numpy_weights(layer) for layer in leaves(source)]
    path = tmp_path / f"{name}.weights.h5"
    source.save_weights(path)
    model = build(name, weights=str(path))  # other random kernels until the file is loaded
    converted = convert(model, name)
    assert_carried(model, converted, name, weights)

"""`keras_norms.recompute_batch_statistics` (Precise BN): exact pooled moments, every layer kind, every data kind.

The expected statistics are NumPy float64 moments of the layer's inputs, computed here from the data (each layer
sits right after the model's input, or after a convolution whose output is computed separately), never read from
the layer.
"""

import keras
import numpy as np
import pytest

import keras_norms
from tests.backend_utils import to_numpy

rng = np.random.default_rng(0)
# A large mean: the pooled variance must not cancel.
X = (rng.normal(size=(37, 4, 5, 6)) * np.linspace(0.5, 3.0, 6) + 40.0).astype("float32")
MEAN = X.astype(np.float64).mean(axis=(0, 1, 2))
VARIANCE = X.astype(np.float64).var(axis=(0, 1, 2))
RTOL = 1e-5  # float32 state


def one_layer_model(layer):
    inputs = keras.Input(X.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    model(X[:4], training=True)  # moving statistics away from their initial values
    return model


def state(model):
    return [to_numpy(v).copy() for v in model.variables]


LAYERS = [
    ("keras_bn", lambda: keras.layers.BatchNormalization(), {"moving_mean": MEAN, "moving_variance": VARIANCE}),
    ("ghost_renorm", lambda: keras_norms.GhostBatchNormalization(virtual_batch_size=4, renorm=True),
     {"moving_mean": MEAN, "moving_variance": VARIANCE, "renorm_mean": MEAN,
      "renorm_stddev": np.sqrt(VARIANCE + 1e-3), "moving_stddev": np.sqrt(VARIANCE + 1e-3)}),
    ("bgn", lambda: keras_norms.BatchGroupNormalization(groups=3),
     {"moving_mean": MEAN, "moving_second_moment": VARIANCE + MEAN**2}),
    ("bcn", lambda: keras_norms.BatchChannelNormalization(groups=2),
     {"moving_mean": MEAN, "moving_variance": VARIANCE}),
    ("evonorm_b0", lambda: keras_norms.EvoNormB0(), {"moving_variance": VARIANCE}),
]


# Every layer at a batch size that leaves a smaller last batch; Keras's BN also in one batch of all (the same
# moments: they do not depend on the batch size). Few cases: JAX runs this eagerly, compiling each op per shape.
CASES = [(*LAYERS[0], 37)] + [(*case, 5) for case in LAYERS]


@pytest.mark.parametrize("name, make, expected, batch_size", CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_state_is_the_exact_moments_of_the_inputs(name, make, expected, batch_size):
    model = one_layer_model(make())
    layer = model.layers[-1]
    trainable = [to_numpy(v).copy() for v in model.trainable_variables]
    names = keras_norms.recompute_batch_statistics(model, X, batch_size=batch_size, verbose=0)
    assert names == [layer.name]
    for variable, value in expected.items():
        np.testing.assert_allclose(to_numpy(getattr(layer, variable)), value, rtol=RTOL, err_msg=variable)
    for before, variable in zip(trainable, model.trainable_variables):
        np.testing.assert_array_equal(to_numpy(variable), before)  # bit-equal


def test_memorized_bn_memory_holds_one_batch_of_the_population_moments():
    model = one_layer_model(keras_norms.MemorizedBatchNormalization(memory_size=3))
    layer = model.layers[-1]
    keras_norms.recompute_batch_statistics(model, X, batch_size=8, verbose=0)
    np.testing.assert_allclose(to_numpy(layer.memory_mean)[0], MEAN, rtol=RTOL)
    np.testing.assert_allclose(to_numpy(layer.memory_second_moment)[0], VARIANCE + MEAN**2, rtol=RTOL)
    np.testing.assert_array_equal(to_numpy(layer.memory_mean)[1:], 0.0)
    assert float(to_numpy(layer.memory_count)) == 1.0
    # Inference then normalizes with exactly those moments.
    y = to_numpy(model(X, training=False))
    expected = (X - MEAN) / np.sqrt(VARIANCE + layer.epsilon)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_after_fit_a_deeper_layer_gets_the_moments_of_its_training_mode_inputs():
    inputs = keras.Input(X.shape[1:])
    conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")
    h = keras.layers.BatchNormalization(name="bn1")(conv(inputs))
    outputs = keras_norms.BatchNormalization(name="bn2")(keras.layers.ReLU()(h))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "mse")
    model.fit(X, np.zeros((len(X), 4, 5, 3), "float32"), batch_size=8, epochs=1, verbose=0)
    frozen = model.get_layer("bn1")
    frozen.trainable = False  # recomputed too, and left frozen
    keras_norms.recompute_batch_statistics(model, X, batch_size=37, verbose=0)
    assert frozen.trainable is False
    features = to_numpy(conv(X)).astype(np.float64)
    np.testing.assert_allclose(to_numpy(frozen.moving_mean), features.mean((0, 1, 2)), rtol=RTOL, atol=1e-6)
    # bn2's input is ReLU(bn1 in training mode): one batch of all 37 examples, so the batch statistics of bn1
    # are the population ones just computed.
    normalized = (features - features.mean((0, 1, 2))) / np.sqrt(features.var((0, 1, 2)) + frozen.epsilon)
    relu = np.maximum(normalized * to_numpy(frozen.gamma) + to_numpy(frozen.beta), 0.0)
    bn2 = model.get_layer("bn2")
    np.testing.assert_allclose(to_numpy(bn2.moving_mean), relu.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_numpy(bn2.moving_variance), relu.var((0, 1, 2)), rtol=1e-4, atol=1e-5)


class Batches(keras.utils.PyDataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return X[index * 10:(index + 1) * 10], np.zeros(len(X[index * 10:(index + 1) * 10]))


def generator():
    for start in range(0, len(X), 9):
        yield (X[start:start + 9],)


def tf_dataset():
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((X, np.zeros(len(X)))).batch(6)


@pytest.mark.parametrize("kind", ["numpy", "tf.data", "PyDataset", "generator"])
def test_every_data_kind_predict_takes(kind):
    data = {"numpy": lambda: X, "tf.data": tf_dataset, "PyDataset": Batches, "generator": generator}[kind]()
    model = one_layer_model(keras.layers.BatchNormalization())
    keras_norms.recompute_batch_statistics(model, data, verbose=0)
    np.testing.assert_allclose(to_numpy(model.layers[-1].moving_variance), VARIANCE, rtol=RTOL)


def test_steps_limits_the_batches_read():
    model = one_layer_model(keras.layers.BatchNormalization())
    keras_norms.recompute_batch_statistics(model, X, batch_size=10, steps=1, verbose=0)
    np.testing.assert_allclose(to_numpy(model.layers[-1].moving_mean), X[:10].astype(np.float64).mean((0, 1, 2)),
                               rtol=RTOL)


def test_masked_positions_are_left_out():
    x = rng.normal(size=(6, 5, 3)).astype("float32")
    x[:, 3:] = 1000.0  # padding: masked
    inputs = keras.Input((5, 3))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(keras.layers.Masking(1000.0)(inputs)))
    model(x)
    keras_norms.recompute_batch_statistics(model, x, verbose=0)
    real = x[:, :3].astype(np.float64)
    np.testing.assert_allclose(to_numpy(model.layers[-1].moving_mean), real.mean((0, 1)), rtol=RTOL)
    np.testing.assert_allclose(to_numpy(model.layers[-1].moving_variance), real.var((0, 1)), rtol=RTOL)


@pytest.mark.parametrize(
    "make_model, data, message",
    [
        (lambda: one_layer_model(keras.layers.BatchNormalization()), X[:0], r"yielded no batch"),
        (lambda: one_layer_model(keras.layers.LayerNormalization()), X, r"has no layer with population statistics"),
        (lambda: keras.Sequential([keras.layers.BatchNormalization()]), X, r"must be a built keras.Model"),
        (lambda: one_layer_model(keras.layers.BatchNormalization()), X[:, :2], r"."),  # the model's own error
    ],
    ids=["empty", "no_such_layer", "unbuilt", "wrong_shape"],
)
def test_bad_input_raises_and_leaves_the_model_unchanged(make_model, data, message):
    model = make_model()
    before = state(model)
    with pytest.raises(ValueError, match=message):
        keras_norms.recompute_batch_statistics(model, data, verbose=0)
    for value, after in zip(before, state(model)):
        np.testing.assert_array_equal(after, value)
    assert all("call" not in vars(layer) for layer in model.layers)  # the recording hooks are gone


@pytest.mark.parametrize("argument", [dict(batch_size=0), dict(steps=1.5), dict(verbose=2)])
def test_invalid_arguments(argument):
    model = one_layer_model(keras.layers.BatchNormalization())
    name = next(iter(argument))
    with pytest.raises(ValueError, match=rf"recompute_batch_statistics: invalid `{name}`"):
        keras_norms.recompute_batch_statistics(model, X, **argument)


def test_averaging_over_one_replica_changes_nothing():
    model = one_layer_model(keras_norms.BatchGroupNormalization(groups=3))
    before = state(model)
    assert keras_norms.average_moving_statistics(model) == 1
    for value, after in zip(before, state(model)):
        np.testing.assert_array_equal(after, value)


def test_the_callback_averages_after_each_epoch_before_evaluating_and_at_the_end(monkeypatch):
    from keras_norms.models import statistics

    calls = []
    monkeypatch.setattr(statistics, "average_moving_statistics", lambda model: calls.append(model.name))
    model = one_layer_model(keras.layers.BatchNormalization())
    model.compile("sgd", "mse")
    y = np.zeros_like(X)
    model.fit(X, y, batch_size=16, epochs=2, validation_data=(X[:8], y[:8]), verbose=0,
              callbacks=[keras_norms.AverageMovingStatistics()])
    assert len(calls) == 2 + 2 + 1  # two epochs, two validations, the end of training
    assert set(calls) == {model.name}

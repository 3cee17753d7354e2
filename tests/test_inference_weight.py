"""tune_inference_example_weight: one alpha for the whole model, chosen on held-out data."""

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms.inference_weight import default_candidates
from tests.backend_utils import to_numpy


def trained_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((4, 4, 2)),
            keras.layers.Conv2D(6, 3, padding="same", use_bias=False),
            keras_norms.GhostBatchNormalization(virtual_batch_size=4, momentum=0.8),
            keras.layers.ReLU(),
            keras.layers.Conv2D(6, 3, padding="same", use_bias=False),
            keras_norms.BatchNormalization(momentum=0.8),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(48, 4, 4, 2)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) * 3)[:, None].astype("float32")
    model.fit(x[:32], y[:32], batch_size=16, epochs=2, verbose=0)
    return model, x[32:], y[32:]


def alphas(model):
    return [layer.inference_example_weight for layer in keras_norms.inference_weight.supporting_layers(model)]


def test_default_grid_is_centred_on_one_over_ghost_size():
    assert default_candidates(4) == [0.0, 0.0625, 0.125, 0.1875, 0.25, 0.3125, 0.375, 0.5]
    assert default_candidates(1) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_alpha_zero_reproduces_plain_inference_exactly():
    model, x, y = trained_model()
    plain = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    predictions = to_numpy(model.predict(x, verbose=0))
    result = keras_norms.tune_inference_example_weight(model, x, y, candidates=[0.0], verbose=0)
    assert result.scores == {0.0: pytest.approx(plain, rel=1e-6, abs=1e-7)}
    np.testing.assert_array_equal(to_numpy(model.predict(x, verbose=0)), predictions)


def test_best_is_the_argmin_of_the_table_and_is_left_set():
    model, x, y = trained_model()
    weights = [to_numpy(w) for w in model.weights]
    result = keras_norms.tune_inference_example_weight(model, x, y, verbose=0)
    # The ghost layer has virtual_batch_size 4: the default grid around 1/4.
    assert list(result.scores) == default_candidates(4)
    best_score = min(result.scores.values())
    assert result.best == min(a for a, s in result.scores.items() if s == best_score)
    assert alphas(model) == [result.best, result.best]
    # The model now evaluates with the best alpha (the test function was re-traced).
    again = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert again == pytest.approx(result.scores[result.best], rel=1e-5)
    # Nothing else changed: weights and moving statistics are only read.
    for w, old in zip(model.weights, weights):
        np.testing.assert_array_equal(to_numpy(w), old)
    assert "<- best" in result.table()


def test_user_metric_and_mode_max():
    model, x, y = trained_model()

    def negative_mae(y_true, y_pred):
        return -np.mean(np.abs(y_true - y_pred))

    result = keras_norms.tune_inference_example_weight(
        model, x, y, candidates=[0.0, 0.5, 0.1], metric=negative_mae, mode="max", verbose=0
    )
    assert list(result.scores) == [0.0, 0.5, 0.1]
    assert result.scores[result.best] == max(result.scores.values())
    expected = negative_mae(y, to_numpy(model.predict(x, verbose=0)))
    assert expected == pytest.approx(result.scores[result.best], rel=1e-5)


def test_ties_go_to_the_smaller_alpha():
    model, x, y = trained_model()
    result = keras_norms.tune_inference_example_weight(
        model, x, y, candidates=[0.3, 0.2], metric=lambda t, p: 1.0, verbose=0
    )
    assert result.best == 0.2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(candidates=[1.5]), r"candidates.*\[0, 1\]"),
        (dict(candidates=[]), r"candidates"),
        (dict(mode="best"), r"`mode`='best'"),
        (dict(metric=lambda t, p: 0.0, y=None), r"needs the held-out targets"),
    ],
)
def test_bad_arguments(kwargs, message):
    model, x, y = trained_model()
    kwargs = {"y": y, **kwargs}
    with pytest.raises(ValueError, match=message):
        keras_norms.tune_inference_example_weight(model, x, verbose=0, **kwargs)


def test_models_without_ghosts_need_the_training_batch_size():
    model = keras.Sequential([keras.Input((3,)), keras_norms.BatchNormalization(), keras.layers.Dense(1)])
    model.compile(loss="mse")
    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    with pytest.raises(ValueError, match="training_batch_size"):
        keras_norms.tune_inference_example_weight(model, x, y, verbose=0)
    result = keras_norms.tune_inference_example_weight(model, x, y, training_batch_size=8, verbose=0)
    assert list(result.scores) == default_candidates(8)
    plain = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    plain.compile(loss="mse")
    with pytest.raises(ValueError, match="no layer with an `inference_example_weight`"):
        keras_norms.tune_inference_example_weight(plain, x, x, verbose=0)

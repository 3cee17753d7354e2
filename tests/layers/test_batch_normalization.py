"""BatchNormalization superset: parity with Keras and the Ghost BN / example-weighing semantics."""

import keras
import numpy as np
import pytest

import keras_norms
from tests import reference as ref
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.tolerances import GRADIENT
from tests.tolerances import assert_close


def data(shape, seed=0):
    # Moderate |mean|/std: Keras's torch moments are one-pass (spec §1.5).
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * 1.5 + 0.5).astype("float32")


def set_random_weights(layer, seed=1):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(0.6, 1.4, size=w.shape).astype("float32") for w in layer.weights])


KERAS_CONFIGS = [
    dict(),
    dict(axis=1),
    dict(axis=3, epsilon=1.001e-5, momentum=0.9),  # Keras Applications style
    dict(center=False),
    dict(scale=False, momentum=0.5),
    dict(renorm=True, renorm_clipping={"rmax": 1.3, "rmin": 0.7, "dmax": 0.4}, renorm_momentum=0.8, momentum=0.7),
]


@pytest.mark.parametrize("kwargs", KERAS_CONFIGS, ids=str)
def test_matches_keras_batch_normalization_outputs_gradients_and_state(kwargs):
    """virtual_batch_size=None, alpha=0: equal to Keras BN over several steps."""
    ours = keras_norms.BatchNormalization(**kwargs)
    theirs = keras.layers.BatchNormalization(**kwargs)
    shape = (6, 5, 4, 3)
    for layer in (ours, theirs):
        layer.build(shape)
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]
    set_random_weights(theirs)
    ours.set_weights(theirs.get_weights())
    upstream = data(shape, seed=5)
    for step in range(4):
        x = data(shape, seed=10 + step)
        y1, dx1, dw1 = layer_gradients(ours, x, upstream)
        y2, dx2, dw2 = layer_gradients(theirs, x, upstream)
        assert_close(y1, y2, err_msg=f"step {step} output")
        assert_close(dx1, dx2, err_msg=f"step {step} d/dx", **GRADIENT)
        for a, b in zip(dw1, dw2):
            assert_close(a, b, err_msg=f"step {step} d/dweights", **GRADIENT)
        for a, b in zip(ours.get_weights(), theirs.get_weights()):
            assert_close(a, b, err_msg=f"step {step} state")
    x = data(shape, seed=99)
    assert_close(to_numpy(ours(x, training=False)), to_numpy(theirs(x, training=False)))


def test_trains_like_keras_batch_normalization_in_fit():
    def model(norm):
        keras.utils.set_random_seed(3)
        return keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(8), norm, keras.layers.ReLU(), keras.layers.Dense(1)]
        )

    ours, theirs = model(keras_norms.BatchNormalization(momentum=0.8)), model(
        keras.layers.BatchNormalization(momentum=0.8)
    )
    ours.set_weights(theirs.get_weights())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, :1] * 2 - x[:, 1:2]).astype("float32")
    for m in (ours, theirs):
        m.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        m.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert_close(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


def test_masked_moments_match_keras():
    shape = (4, 6, 3)
    mask = np.random.default_rng(2).uniform(size=shape[:-1]) > 0.3
    ours, theirs = keras_norms.BatchNormalization(), keras.layers.BatchNormalization()
    x = data(shape)
    y1, y2 = ours(x, training=True, mask=mask), theirs(x, training=True, mask=mask)
    assert_close(to_numpy(y1), to_numpy(y2))
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        assert_close(a, b)
    expected, _, _ = ref.batch_norm_train(x, None, None, mask=mask)
    assert_close(to_numpy(y1), expected)


def test_weights_files_move_between_keras_and_keras_norms(tmp_path):
    theirs = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.BatchNormalization()])
    set_random_weights(theirs.layers[0])
    theirs.save_weights(tmp_path / "keras.weights.h5")
    ours = keras.Sequential([keras.Input((4, 4, 3)), keras_norms.BatchNormalization()])
    ours.load_weights(tmp_path / "keras.weights.h5")
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_array_equal(a, b)
    ours.save_weights(tmp_path / "ours.weights.h5")
    back = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.BatchNormalization()])
    back.load_weights(tmp_path / "ours.weights.h5")
    x = data((2, 4, 4, 3))
    np.testing.assert_array_equal(to_numpy(back(x)), to_numpy(theirs(x)))


@pytest.mark.parametrize("batch", [5, 8, 12])
def test_virtual_batch_size_at_least_batch_is_plain_batch_norm(batch):
    x = data((batch, 3, 2))
    ghost = keras_norms.GhostBatchNormalization(virtual_batch_size=12)
    plain = keras_norms.BatchNormalization()
    assert_close(to_numpy(ghost(x, training=True)), to_numpy(plain(x, training=True)))
    assert_close(to_numpy(ghost.moving_variance), to_numpy(plain.moving_variance))


@pytest.mark.parametrize("batch, ghost", [(9, 4), (7, 2), (13, 5), (3, 2)])
def test_uneven_ghosts_match_a_loop_over_ghosts(batch, ghost):
    x = data((batch, 4, 3), seed=batch)
    layer = keras_norms.GhostBatchNormalization(virtual_batch_size=ghost, momentum=0.0)
    y = layer(x, training=True)
    expected, mean, variance = ref.ghost_batch_norm_train(x, None, None, virtual_batch_size=ghost)
    assert_close(to_numpy(y), expected)
    # momentum 0: the moving statistics are the size-weighted ghost statistics.
    assert_close(to_numpy(layer.moving_mean), mean)
    assert_close(to_numpy(layer.moving_variance), variance)


def test_ghost_of_one_dense_example_is_rejected_at_build():
    layer = keras_norms.GhostBatchNormalization(virtual_batch_size=1)
    with pytest.raises(ValueError, match=r"virtual_batch_size`=1.*rank-2 inputs.*>= 2"):
        layer(data((4, 3)), training=True)
    assert not layer.built
    # Conv features: a ghost of one is instance normalization, and allowed.
    x = data((3, 5, 2))
    expected, _, _ = ref.ghost_batch_norm_train(x, None, None, virtual_batch_size=1)
    assert_close(to_numpy(keras_norms.GhostBatchNormalization(virtual_batch_size=1)(x, training=True)), expected)


def test_trailing_dense_ghost_of_one_outputs_beta():
    layer = keras_norms.GhostBatchNormalization(virtual_batch_size=4, beta_initializer="ones")
    y = to_numpy(layer(data((5, 3)), training=True))
    np.testing.assert_array_equal(y[4], np.ones(3, "float32"))


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(6, 4, 4, 3), (6, 5)])
def test_example_weighing_inference(alpha, shape):
    layer = keras_norms.BatchNormalization(inference_example_weight=alpha)
    layer.build(shape)
    set_random_weights(layer)
    w = {v.name: to_numpy(v) for v in layer.weights}
    x = data(shape, seed=4)
    expected = ref.batch_norm_inference(
        x, w["moving_mean"], w["moving_variance"], w["gamma"], w["beta"], example_weight=alpha
    )
    y = to_numpy(layer(x, training=False))
    assert_close(y, expected)
    # Per example: the output for example 0 does not depend on the rest of the batch.
    assert_close(to_numpy(layer(x[:1], training=False)), y[:1])


def test_example_weight_zero_is_keras_inference():
    ours = keras_norms.BatchNormalization(inference_example_weight=0.0)
    theirs = keras.layers.BatchNormalization()
    x = data((4, 3, 3, 2))
    for layer in (ours, theirs):
        layer.build(x.shape)
    set_random_weights(theirs)
    ours.set_weights(theirs.get_weights())
    np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(theirs(x)), rtol=1e-6, atol=1e-6)


def test_example_weight_one_on_dense_inputs_outputs_beta():
    layer = keras_norms.BatchNormalization(inference_example_weight=1.0, beta_initializer="ones")
    y = to_numpy(layer(data((3, 4)), training=False))
    np.testing.assert_array_equal(y, np.ones((3, 4), "float32"))

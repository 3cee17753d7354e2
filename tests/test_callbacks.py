"""BatchRenormSchedule: the schedule's values, and that changes take effect inside fit."""

import keras
import numpy as np
import pytest

import keras_norms
from tests.backend_utils import to_numpy
from tests.tolerances import assert_close


def test_bounds_follow_the_piecewise_linear_schedule():
    s = keras_norms.BatchRenormSchedule(rmax=3.0, dmax=5.0, warmup_steps=10, rmax_steps=50, dmax_steps=30)
    assert s.bounds(0) == (1.0, 0.0)
    assert s.bounds(9) == (1.0, 0.0)
    assert s.bounds(10) == (1.0, 0.0)
    assert s.bounds(30) == pytest.approx((2.0, 5.0))
    assert s.bounds(50) == pytest.approx((3.0, 5.0))
    assert s.bounds(1000) == pytest.approx((3.0, 5.0))
    assert keras_norms.BatchRenormSchedule(**s.get_config()).get_config() == s.get_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rmax=0.5, dmax=1.0), r"`rmax`=0.5"),
        (dict(rmax=2.0, dmax=-1.0), r"`dmax`=-1.0"),
        (dict(rmax=2.0, dmax=1.0, warmup_steps=10, rmax_steps=5), r"`rmax_steps`=5"),
        (dict(rmax=2.0, dmax=1.0, update_every=0), r"`update_every`=0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_norms.BatchRenormSchedule(**kwargs)


def model_and_data(virtual_batch_size=None):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(6),
            keras_norms.BatchNormalization(
                renorm=True, momentum=0.5, renorm_momentum=0.5, virtual_batch_size=virtual_batch_size
            ),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(48, 5)) * 2 + 1).astype("float32")
    return model, x, (x[:, :1] - x[:, 1:2]).astype("float32")


@pytest.mark.parametrize("virtual_batch_size", [None, 4])
def test_a_change_made_by_the_callback_takes_effect_during_fit(virtual_batch_size):
    """Schedule switching at step 3 == training 3 steps tight, then the rest loose by hand."""
    schedule = keras_norms.BatchRenormSchedule(rmax=2.0, dmax=1.0, warmup_steps=3, update_every=1)
    scheduled, x, y = model_and_data(virtual_batch_size)
    history = scheduled.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[schedule])
    assert history.history["renorm_rmax"] == [2.0]
    assert scheduled.layers[1].renorm_clipping == {"rmax": 2.0, "rmin": 0.5, "dmax": 1.0}

    manual, _, _ = model_and_data(virtual_batch_size)
    manual.layers[1].renorm_clipping = {"rmax": 1.0, "rmin": 1.0, "dmax": 0.0}
    manual.make_train_function(force=True)
    manual.fit(x[:24], y[:24], batch_size=8, epochs=1, shuffle=False, verbose=0)
    manual.layers[1].renorm_clipping = {"rmax": 2.0, "rmin": 0.5, "dmax": 1.0}
    manual.make_train_function(force=True)
    manual.fit(x[24:], y[24:], batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(scheduled.get_weights(), manual.get_weights()):
        assert_close(a, b, rtol=1e-5, atol=1e-6)

    # And the switch mattered: staying at plain BN gives other weights.
    unscheduled, _, _ = model_and_data(virtual_batch_size)
    unscheduled.layers[1].renorm_clipping = {"rmax": 1.0, "rmin": 1.0, "dmax": 0.0}
    unscheduled.make_train_function(force=True)
    unscheduled.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    differences = [np.abs(a - b).max() for a, b in zip(scheduled.get_weights(), unscheduled.get_weights())]
    assert max(differences) > 1e-4


def test_needs_a_renorm_layer():
    model = keras.Sequential([keras.Input((3,)), keras_norms.BatchNormalization(), keras.layers.Dense(1)])
    model.compile(loss="mse")
    with pytest.raises(ValueError, match="no layer with renorm=True"):
        model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0,
                  callbacks=[keras_norms.BatchRenormSchedule(rmax=2.0, dmax=1.0)])


def test_renorm_at_rmax_one_dmax_zero_equals_batch_norm_with_and_without_ghosts():
    x = (np.random.default_rng(2).normal(size=(10, 3, 4)) * 2 + 1).astype("float32")
    tight = {"rmax": 1.0, "rmin": 1.0, "dmax": 0.0}
    for ghost in (None, 4):
        renorm = keras_norms.BatchNormalization(renorm=True, renorm_clipping=tight, virtual_batch_size=ghost)
        plain = keras_norms.BatchNormalization(virtual_batch_size=ghost)
        assert_close(to_numpy(renorm(x, training=True)), to_numpy(plain(x, training=True)))
    # A ghost size >= the batch is plain renorm.
    a = keras_norms.BatchNormalization(renorm=True, virtual_batch_size=16)
    b = keras_norms.BatchNormalization(renorm=True)
    assert_close(to_numpy(a(x, training=True)), to_numpy(b(x, training=True)))
    for u, v in zip(a.get_weights(), b.get_weights()):
        assert_close(u, v)

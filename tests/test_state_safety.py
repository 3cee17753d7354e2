"""State safety: a call that raises changes nothing, and non-finite inputs propagate as documented.

* A call that raises (an input of the wrong rank or channel count, a `training` that is not a bool) raises a
  documented error and leaves every variable and the config as they were (`test_conformance.py` checks the wrong
  channel count in training; this file the rest).
* A build that raises (an input the layer cannot take) leaves the layer unbuilt and without variables, and a valid
  input then builds it normally.
* NaN and inf in a batch propagate exactly as in the float64 oracle, on every backend: in inference to the outputs
  of their own example, in training to the statistics they enter, the outputs normalized with them and the state
  entries updated from them; every other entry keeps its finite, correct value (`docs/numerics.md`, "NaN and inf").
  The layer has just refused an input, so this also checks that a failed call leaves a working layer.
"""

import functools

import keras
import numpy as np
import pytest

from keras_norms.layers._base import NormalizationLayer
from tests.backend_utils import call_both_modes
from tests.backend_utils import to_numpy
from tests.cases import CASES
from tests.test_conformance import build
from tests.test_conformance import f64
from tests.test_conformance import make_input
from tests.test_error_catalogue import documented_error
from tests.tolerances import assert_close

BACKEND = keras.backend.backend()
# `training` values that must raise; None, True, False, 0, 1 and NumPy bools are accepted.
BAD_TRAINING = ("False", 0.5, 2, [True], np.array([True, False]))


def snapshot(layer):
    return {w.path: to_numpy(w) for w in layer.weights}


def assert_unchanged(layer, before, what):
    after = snapshot(layer)
    assert after.keys() == before.keys(), f"{what} added or removed variables"
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=f"{what} changed {path}")


def bad_calls(case):
    """`(description, input, training)` of calls that must raise a documented error."""
    shape = case.input_shape
    calls = [("wrong channel count, inference", make_input(shape[:-1] + (shape[-1] + 1,)), False)]
    # Keras's dense and convolution layers take inputs of higher rank (TensorFlow convolves the extra axes as batch
    # axes), so only the lower rank must fail there.
    if case.channel_kwarg == "axis":
        calls.append(("one axis more", make_input(shape[:-1] + (2,) + shape[-1:]), True))
    if case.channel_kwarg is not None and len(shape) > 2:
        calls.append(("one axis less", make_input(shape[:1] + shape[2:]), True))
    if issubclass(case.layer, NormalizationLayer):  # the layers with a training branch
        calls += [(f"training={t!r}", make_input(shape), t) for t in BAD_TRAINING]
    return calls


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_failed_calls_change_no_variable(case):
    layer, _ = build(case)
    before, config = snapshot(layer), layer.get_config()
    for what, x, training in bad_calls(case):
        with pytest.raises(Exception) as info:
            layer(x, training=training)
        assert documented_error(info.value), f"{what}: undocumented {info.value!r}"
        assert_unchanged(layer, before, what)
    assert layer.get_config() == config


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_failed_build_leaves_the_layer_unbuilt(case):
    layer = case.build()
    with pytest.raises(Exception) as info:
        layer(np.ones((), "float32"))  # rank 0: no layer takes it
    assert documented_error(info.value), f"undocumented {info.value!r}"
    assert not layer.built and not layer.weights
    layer.build(case.input_shape)
    fresh = case.build()
    fresh.build(case.input_shape)
    assert [(w.name, tuple(w.shape)) for w in layer.weights] == [(w.name, tuple(w.shape)) for w in fresh.weights]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_non_finite_inputs_propagate_to_what_depends_on_them(case):
    """A NaN and an inf in a batch reach exactly the outputs and state entries that depend on them.

    Which entries depend on an input entry comes from the float64 oracle on finite data (an entry depends on
    `x[i]` if it changes when `x[i]` moves by +-100), not from running the oracle on NaN: the oracles' own
    arithmetic (a block-diagonal kernel for the depthwise convolution, `0 * NaN` in example weighing with
    weight 0) would spread a NaN further than the math does, while a +-100 move misses an output that a
    threshold clips both ways (TLU: max(NaN, tau) is NaN, max(x +- 100, tau) may be tau twice). So, in inference
    and in training from the same state: every output that depends on the NaN is non-finite (an inf may give a
    finite 0, as in x / inf); an output is non-finite only where it depends on the NaN or the inf, or where the
    oracle fed the NaN and inf gives a non-finite value; every other output keeps the value of the clean input.
    The state is exact: an entry is non-finite if and only if it depends on the NaN or the inf, and the others
    are updated as from the clean input. Run on a layer that has just refused an input: a failed call leaves a
    working layer.
    """
    layer, weights = build(case)
    wrong = make_input(case.input_shape[:-1] + (case.input_shape[-1] + 1,))
    with pytest.raises(ValueError):
        layer(wrong, training=True)
    x = make_input(case.input_shape)
    # Example 1 at its first position (where a group norm cell takes its shift), the last example at its last.
    nan_at = (1,) + (0,) * (x.ndim - 2) + (x.shape[-1] - 1,)
    inf_at = tuple(size - 1 for size in x.shape[:-1]) + (0,)
    bad = x.copy()
    bad[nan_at], bad[inf_at] = np.nan, np.inf
    outputs = dict(zip((False, True), call_both_modes(layer, bad)))
    for training, y in outputs.items():
        oracle = functools.partial(case.oracle, weights=f64(weights), training=training, **case.kwargs)
        clean_y, clean_state = oracle(x.astype("float64"))
        on_nan_y, on_nan_state = depends(oracle, x, nan_at)
        on_inf_y, on_inf_state = depends(oracle, x, inf_at)
        with np.errstate(invalid="ignore"):
            structural = ~np.isfinite(oracle(bad.astype("float64"))[0])
        check(y, clean_y, on_nan_y, on_inf_y | structural, what=f"output, training={training}")
    for w in layer.non_trainable_weights:  # the state after the training call
        hit = on_nan_state.get(w.name, False) | on_inf_state.get(w.name, False)
        assert not np.all(hit), f"{w.name}: the test should leave some entries finite"
        clean = clean_state.get(w.name, weights[w.name])
        check(to_numpy(w), clean, hit, hit, what=w.name)


def _mask(x, index):
    mask = np.zeros(x.shape, bool)
    mask[index] = True
    return mask


def depends(oracle, x, index, delta=100.0):
    """Boolean masks of the oracle's output and state entries that change when `x[index]` moves by +-delta."""
    base_y, base_state = oracle(x.astype("float64"))
    y_mask, state_mask = np.zeros(base_y.shape, bool), {}
    for step in (delta, -delta):
        moved = x.astype("float64")
        moved[index] += step
        y, state = oracle(moved)
        y_mask |= _changed(y, base_y)
        for name, value in state.items():
            state_mask[name] = state_mask.get(name, False) | _changed(value, base_state[name])
    return y_mask, state_mask


def _changed(a, b):
    return np.abs(np.asarray(a, np.float64) - b) > 1e-9 * (1.0 + np.abs(b))


def check(actual, clean, must_be_non_finite, may_be_non_finite, what):
    """`must <= non-finite entries of actual <= must | may`; the other entries close to `clean`."""
    non_finite = ~np.isfinite(actual)
    np.testing.assert_array_equal(non_finite & must_be_non_finite, must_be_non_finite, err_msg=f"{what}: finite")
    untouched = ~(must_be_non_finite | may_be_non_finite)
    assert not non_finite[untouched].any(), f"{what}: non-finite entries that depend on no NaN or inf"
    assert_close(actual[untouched], clean[untouched], err_msg=f"{what}: entries that depend on no NaN or inf")

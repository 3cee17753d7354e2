"""Masks in training for Ghost BN, ghost Batch Renorm, BatchGroupNormalization and BatchChannelNormalization.

Keras BN's convention: the mask covers the leading axes of an `(N, T, C)` sequence and is broadcast over the
channels; in training, masked entries are left out of every batch statistic (so of the moving state) but are
normalized like the others; at inference the mask only passes through. Expected values come from the float64
oracles of `tests/reference/`.
"""

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms import config
from keras_norms.ops import _dispatch
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.cases import batch_norm_oracle
from tests.reference import numerical_gradient
from tests.reference.batch_channel_norm import batch_channel_norm_oracle
from tests.reference.batch_group_norm import batch_group_norm_oracle
from tests.test_conformance import f64
from tests.test_conformance import make_input
from tests.test_conformance import random_weights
from tests.test_conformance import state_of
from tests.tolerances import GRADIENT
from tests.tolerances import assert_close

SHAPE = (5, 4, 6)  # 5 sequences of 4 steps: ghosts / example groups of 2, the last one smaller
_CLIPPING = {"rmax": 1.3, "rmin": 0.8, "dmax": 0.4}
CASES = {
    "ghost": (keras_norms.BatchNormalization, dict(virtual_batch_size=2, momentum=0.5), batch_norm_oracle),
    "ghost_renorm": (
        keras_norms.BatchNormalization,
        dict(virtual_batch_size=2, momentum=0.5, renorm=True, renorm_clipping=_CLIPPING, renorm_momentum=0.7),
        batch_norm_oracle,
    ),
    "bgn": (keras_norms.BatchGroupNormalization, dict(groups=2, momentum=0.5), batch_group_norm_oracle),
    "bcn": (keras_norms.BatchChannelNormalization, dict(groups=2, momentum=0.5), batch_channel_norm_oracle),
    "bcn_estimate": (
        keras_norms.BatchChannelNormalization,
        dict(groups=2, mode="estimate", momentum=0.5),
        batch_channel_norm_oracle,
    ),
}
# BCN's group step is per example over all its entries (as keras.layers.GroupNormalization): a masked value moves
# its own example's unmasked outputs, never the statistics.
_GROUP_STEP_SEES_MASKED = ("bcn", "bcn_estimate")


def random_mask(seed=3):
    mask = np.random.default_rng(seed).uniform(size=SHAPE[:-1]) > 0.35
    mask[:2] = False  # the first ghost / example group has no unmasked entry
    mask[2, 0] = mask[4, 1] = True
    return mask


def built(name):
    """The layer with random weights, the weights, and its training-mode oracle `(x, weights, **more)`."""
    layer_class, kwargs, oracle = CASES[name]
    layer = layer_class(**kwargs)
    layer.build(SHAPE)
    return layer, random_weights(layer), (lambda x, w, **more: oracle(x, f64(w), True, **kwargs, **more))


def train(layer, x, mask):
    return to_numpy(layer(x, training=True, mask=mask))


class _WithMask(keras.layers.Layer):
    """Calls `inner` with a fixed mask, for the gradient helper (which passes none)."""

    def __init__(self, inner, mask, **kwargs):
        super().__init__(**kwargs)
        self.inner, self.mask = inner, mask
        self.built = True  # `inner` is

    def call(self, inputs, training=None):
        return self.inner(inputs, training=training, mask=keras.ops.convert_to_tensor(self.mask))


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_and_state_match_the_oracle(name):
    layer, weights, oracle = built(name)
    x, mask = make_input(SHAPE), random_mask()
    y = train(layer, x, mask)
    expected, new_state = oracle(x.astype("float64"), weights, mask=mask)
    assert np.isfinite(y).all()
    assert_close(y, expected, err_msg=f"{name} output")
    for key, value in state_of(layer).items():
        assert_close(value, new_state.get(key, weights[key]), err_msg=f"{name} {key}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_masked_values_never_move_the_statistics(name):
    x, mask = make_input(SHAPE), random_mask()
    huge = np.where(mask[..., None], x, np.float32(1e6))
    layer, _, _ = built(name)
    twin, _, _ = built(name)
    y, y_huge = train(layer, x, mask), train(twin, huge, mask)
    for (key, value), other in zip(state_of(layer).items(), state_of(twin).values()):
        assert_close(other, value, err_msg=key)
    assert np.isfinite(y_huge).all()
    if name not in _GROUP_STEP_SEES_MASKED:
        assert_close(y_huge[mask], y[mask])


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_all_masked_ghost_is_left_out_of_the_statistics(name):
    # Ghosts / example groups of 2: the first one, all masked, must weigh nothing, so the state and the other
    # outputs are those of the batch without it.
    x, mask = make_input(SHAPE), random_mask()
    layer, _, _ = built(name)
    rest, _, _ = built(name)
    y, y_rest = train(layer, x, mask), train(rest, x[2:], mask[2:])
    assert np.isfinite(y).all()
    assert_close(y[2:], y_rest)
    for (key, value), other in zip(state_of(layer).items(), state_of(rest).values()):
        assert_close(value, other, err_msg=key)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_match_the_oracle(name):
    layer, weights, oracle = built(name)
    x, mask = make_input(SHAPE), random_mask()
    upstream = np.random.default_rng(7).normal(size=SHAPE)
    _, dx, dweights = layer_gradients(_WithMask(layer, mask), x, upstream.astype("float32"))

    def loss(x64, **replaced):
        # Quantities behind a stop-gradient (renorm's r, d; BCN's estimates) stay at the unperturbed input's.
        y, _ = oracle(x64, {**weights, **replaced}, mask=mask, frozen_input=x)
        return float(np.sum(y * upstream))

    assert np.isfinite(dx).all()
    assert_close(dx, numerical_gradient(loss, x.astype("float64")), err_msg="d/dx", **GRADIENT)
    for variable, grad in zip(layer.trainable_weights, dweights):
        expected = numerical_gradient(lambda v: loss(x.astype("float64"), **{variable.name: v}), weights[variable.name])
        assert_close(grad, expected, err_msg=f"d/d{variable.name}", **GRADIENT)


@pytest.mark.parametrize("name", ["ghost", "bgn", "bcn"])
def test_inference_passes_the_mask_through(name):
    layer, _, _ = built(name)
    x, mask = make_input(SHAPE), random_mask()
    before = state_of(layer)
    assert_close(to_numpy(layer(x, training=False, mask=mask)), to_numpy(layer(x, training=False)))
    assert layer.supports_masking and layer.compute_mask(x, mask) is mask
    for key, value in state_of(layer).items():
        np.testing.assert_array_equal(value, before[key])


def test_mask_reaches_the_layers_from_embedding():
    model = keras.Sequential([
        keras.Input((4,), dtype="int32"),
        keras.layers.Embedding(10, 6, mask_zero=True),
        keras_norms.BatchGroupNormalization(groups=2, momentum=0.0),
    ])
    tokens = np.array([[3, 5, 0, 0], [2, 7, 9, 0], [4, 1, 8, 6]], "int32")
    model(tokens, training=True)
    embedded = to_numpy(model.layers[0](tokens))[tokens > 0]
    assert_close(to_numpy(model.layers[-1].moving_mean), embedded.mean(axis=0))


@pytest.mark.parametrize("op", ["ghost_batch_norm", "batch_group_norm"])
def test_kernels_decline_a_mask(op):
    x, mask = make_input((4, 3, 4)), np.ones((4, 3), bool)
    kwargs = dict(virtual_batch_size=2) if op == "ghost_batch_norm" else dict(groups=2)
    with config.record_dispatch() as calls:
        getattr(keras_norms.ops, op)(x, mask=mask, **kwargs)
    has_kernel = (op, keras.backend.backend()) in _dispatch.registered_kernels()
    reason = "mask given (the reference handles it)" if has_kernel else "no kernel on this backend"
    assert calls == [(op, "reference", reason)]

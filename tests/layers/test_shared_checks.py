"""Checks every layer gets from `keras_norms/layers/_base.py`: the input's rank, and the `epsilon` message.

Run over the conformance registry (`tests/cases.py`), so a new layer is covered by adding its case.
"""

import inspect
import re

import keras
import numpy as np
import pytest

import keras_norms
from tests.cases import CASES

# The layers whose statistics need a batch axis and a channel axis, i.e. rank >= 2. (EvoNorm and FRN need rank >= 3
# and say so in their own messages; NormPropReLU is elementwise and takes any rank.)
RANK_2_LAYERS = (
    keras_norms.BatchNormalization,
    keras_norms.GhostBatchNormalization,
    keras_norms.BatchGroupNormalization,
    keras_norms.BatchChannelNormalization,
    keras_norms.MemorizedBatchNormalization,
    keras_norms.ProxyNormalization,
)


def _one_case_per_layer(layers):
    seen, cases = set(), []
    for case in CASES:
        if case.layer in layers and case.layer not in seen:
            seen.add(case.layer)
            cases.append(case)
    return cases


@pytest.mark.parametrize("case", _one_case_per_layer(RANK_2_LAYERS), ids=repr)
@pytest.mark.parametrize("training", [False, True])
def test_rank_1_input_blames_the_input_and_leaves_the_layer_unbuilt(case, training):
    """Regression (issue 17): a rank-1 input raised "invalid 'axis'=-1. Axis 0 is the batch axis", which blamed the
    argument and showed no shape. The message now names the layer and the input shape, says the rank needed and how
    to add a feature axis; the failed call builds nothing, and a valid input then builds the layer normally."""
    assert {c.layer for c in _one_case_per_layer(RANK_2_LAYERS)} == set(RANK_2_LAYERS)
    layer = case.build(name="under_test")
    with pytest.raises(ValueError) as info:
        layer(np.ones((8,), "float32"), training=training)
    message = str(info.value)
    for part in (
        f"{case.layer.__name__} (layer 'under_test')",
        "input shape (8,)",
        "needs inputs of rank >= 2 (batch, ..., channels)",
        "keras.ops.expand_dims(x, -1)",
        "Reshape((1,))",
    ):
        assert part in message, f"{part!r} missing from: {message}"
    assert "invalid `axis`" not in message
    assert not layer.built and not layer.weights
    y = layer(np.ones(case.input_shape, "float32"), training=training)
    assert tuple(y.shape) == case.input_shape


@pytest.mark.parametrize("case", _one_case_per_layer(RANK_2_LAYERS), ids=repr)
def test_rank_1_symbolic_input_blames_the_input(case):
    """Regression (issue 17): the same message for a symbolic rank-1 input (`keras.Input(())`, shape (None,))."""
    layer = case.build(name="under_test")
    with pytest.raises(ValueError, match=re.escape("input shape (None,) of rank 1, but the layer needs inputs")):
        layer(keras.Input(()))
    assert not layer.built and not layer.weights


@pytest.mark.parametrize("layer", [keras_norms.EvoNormB0, keras_norms.EvoNormS0], ids=lambda c: c.__name__)
def test_rank_1_input_to_evonorm_shows_the_shape(layer):
    """Regression (issue 17), the other batch-statistics layers: EvoNorm's own rank check names the shape."""
    with pytest.raises(ValueError, match=re.escape("needs an input of rank >= 3 (batch, spatial axes, channels), "
                                                   "received shape (8,)")):
        layer()(np.ones((8,), "float32"))


def _declared_default(cls, argument):
    """The default Python gives `argument`: that of the first `__init__` in the MRO whose signature declares it."""
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            parameter = inspect.signature(vars(klass)["__init__"]).parameters.get(argument)
            if parameter is not None:
                return parameter.default
    return None


EPSILON_CASES = [
    (case, argument)
    for case in _one_case_per_layer({c.layer for c in CASES})
    for argument in ("epsilon", "ws_epsilon")
    if _declared_default(case.layer, argument) is not None
]


@pytest.mark.parametrize("case, argument", EPSILON_CASES, ids=lambda v: v if isinstance(v, str) else repr(v))
@pytest.mark.parametrize("value", [float("nan"), 0.0, -1.0, "small"])
def test_bad_epsilon_message_quotes_the_layers_own_default(case, argument, value):
    """Regression (issue 17): `EvoNormS0(epsilon=float("nan"))` suggested "such as 1e-3", BN's default, while its
    own is 1e-5 (and `ScaledWS*(ws_epsilon=...)` suggested 1e-5, its default being 1e-6). Every layer's message
    quotes the default of its own signature."""
    default = _declared_default(case.layer, argument)
    signature = inspect.signature(case.layer.__init__).parameters
    if argument in signature:  # not for GhostBatchNormalization, which passes it on through **kwargs
        assert default == signature[argument].default
    with pytest.raises(ValueError) as info:
        case.build(**{argument: value})
    message = str(info.value)
    assert f"{case.layer.__name__} (layer '" in message and f"`{argument}`={value!r}" in message, message
    quoted = re.search(r"such as (\S+) \(the default\)", message)
    assert quoted, message
    assert float(quoted.group(1)) == default, f"quotes {quoted.group(1)}, the default is {default}: {message}"


def test_every_epsilon_layer_is_covered():
    """The registry cases above include the layers whose defaults differ (1e-3, 1e-5, 1e-6, 1e-8)."""
    defaults = {(case.layer.__name__, arg): _declared_default(case.layer, arg) for case, arg in EPSILON_CASES}
    assert defaults[("EvoNormS0", "epsilon")] == 1e-5
    assert defaults[("BatchNormalization", "epsilon")] == 1e-3
    assert defaults[("FilterResponseNormalization", "epsilon")] == 1e-6
    assert defaults[("NormPropDense", "epsilon")] == 1e-8
    assert defaults[("ScaledWSConv2D", "ws_epsilon")] == 1e-6

"""Fuzzed inputs over every registered layer: each draw matches the NumPy oracle or raises a documented error.

One hypothesis test per layer class of the conformance registry (`tests/cases.py`); each draw picks one of the
class's registry cases (its constructor example) and then, at random:

* the input rank (2 to 5; a layer that takes fewer ranks must raise a documented error at build for the others),
  the spatial sizes (1 to 4) and the batch size (1 to 33, so sizes that ghost or example groups do not divide);
* where the channel axis is (any non-batch axis, given as a positive or negative `axis`; channels first or last
  for `data_format` layers);
* the dtype policy: `float32`, `float16`, `bfloat16` (variables in 16 bits too), `mixed_float16`,
  `mixed_bfloat16`;
* the magnitude m, log-uniform in [1e-6, 1e4]: random data with max |x| = m and a mean of up to 4 standard
  deviations, or a constant input (one constant, or one per channel: zero variance; powers of two, see
  `make_input`);
* training or inference, and random weights and state.

Outputs must be finite and match the float64 oracle on the input rounded to the compute dtype (GN, IN and LN, whose
`autocast` is off as in Keras, normalize the float32 input unrounded), within the dtype's tolerance
(`tests/tolerances.py`), and so must the state after the call. A constant input through a fused kernel (torch's
`x * s + (beta - mean * s)`) also gets the rounding of `x * s` as an absolute tolerance: at zero variance `s` is
`gamma / sqrt(epsilon)`, and the exact output, beta, is missed by about `|x| |gamma| 2**-24 / sqrt(epsilon)`.
Outputs that scale with the input (`normalized=False`: WS, NormProp, TLU, Proxy Norm) get an absolute tolerance
relative to the larger of their largest entry and the input's (their terms as large as |x| |w| may cancel). Not
compared, because the exact answer is not a finite 16-bit number: outputs beyond half the 16-bit range, and state
beyond it (a float16 policy keeps float16 state, as Keras does). Skipped: float16 channels-first convolutions on
TensorFlow's CPU, which has no kernel for them (plain Keras convolutions fail alike).

The channel axis is moved, not the oracle: it always sees channels-last data, and the layer the same data with the
channel axis where the draw put it.

Profiles (hypothesis settings profiles, chosen by `KERAS_NORMS_FUZZ_PROFILE`): `default` (derandomized, so CI is
reproducible with the hypothesis release pinned in `requirements/ci-cpu.txt`; 8 draws per layer class, 2 on JAX
where every draw is a new XLA compilation) and `deep` (200 random draws per class:
`KERAS_NORMS_FUZZ_PROFILE=deep pytest -n 2 tests/test_fuzz.py`, on 2 cores about 1 min on PyTorch and TensorFlow,
5 min on JAX).
"""

import os
import re

import keras
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import assume
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_norms import config
from tests.backend_utils import to_numpy
from tests.cases import CASES
from tests.test_conformance import random_weights
from tests.test_error_catalogue import documented_error
from tests.tolerances import TOLERANCES
from tests.tolerances import assert_close

BACKEND = keras.backend.backend()
_COMMON = dict(deadline=None, database=None, print_blob=True, suppress_health_check=list(HealthCheck))
settings.register_profile(
    "keras_norms_fuzz_default", max_examples=2 if BACKEND == "jax" else 8, derandomize=True, **_COMMON
)
settings.register_profile("keras_norms_fuzz_deep", max_examples=200, **_COMMON)
PROFILE = settings.get_profile("keras_norms_fuzz_" + os.environ.get("KERAS_NORMS_FUZZ_PROFILE", "default"))

POLICIES = ("float32", "float16", "bfloat16", "mixed_float16", "mixed_bfloat16")
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
# A fused kernel computes y = x * s + (beta - mean * s), s = gamma / sqrt(var + epsilon): the two products round at
# 2**-24 |x s| each, which no longer cancels to a small relative error when var = 0 (s = gamma / sqrt(epsilon)).
FUSED_ROUNDING = 4 * 2.0**-24
# Layers that take fewer ranks than 2 to 5 (the convolutions: their own rank, see `ranks_of`).
RANKS = {
    "FilterResponseNormalization": (3, 4, 5),
    "FilterResponseNormalizationTLU": (3, 4, 5),
    "TLU": (3, 4, 5),
    "EvoNormB0": (3, 4, 5),
    "EvoNormS0": (3, 4, 5),
}

CASES_BY_NAME = {case.name: case for case in CASES}
CLASSES = {}
for _case in CASES:
    CLASSES.setdefault(_case.layer.__name__, []).append(_case)


def ranks_of(case):
    """`(ranks drawn, ranks that must work)`."""
    if case.channel_kwarg == "data_format":  # a convolution of fixed rank
        return (len(case.input_shape),), (len(case.input_shape),)
    return (2, 3, 4, 5), RANKS.get(case.layer.__name__, (2, 3, 4, 5))


@st.composite
def draws(draw, cases):
    case = CASES_BY_NAME[draw(st.sampled_from([c.name for c in cases]))]
    drawn_ranks, _ = ranks_of(case)
    rank = draw(st.sampled_from(drawn_ranks))
    channels = case.input_shape[-1]
    spatial = tuple(draw(st.lists(st.integers(1, 4), min_size=rank - 2, max_size=rank - 2)))
    shape = (draw(st.integers(1, 33)),) + spatial + (channels,)
    if case.channel_kwarg == "axis":
        position = draw(st.integers(1, rank - 1))
        axis = position if draw(st.booleans()) else position - rank
        overrides = {"axis": axis}
    elif case.channel_kwarg == "data_format" and draw(st.booleans()):
        position, overrides = 1, case.channels_first_kwargs()
    else:
        position, overrides = rank - 1, {}
    return dict(
        case=case.name,
        shape=shape,
        position=position,
        overrides=overrides,
        policy=draw(st.sampled_from(POLICIES)),
        training=draw(st.booleans()),
        log_magnitude=draw(st.floats(-6.0, 4.0)),
        offset=draw(st.floats(-4.0, 4.0)),
        kind=draw(st.sampled_from(("random", "constant", "channel_constant"))),
        seed=draw(st.integers(0, 2**16)),
    )


def make_input(shape, kind, log_magnitude, offset, rng):
    """Channels-last float64 data with max |x| = 10**log_magnitude (or constants of about that size)."""
    if kind == "random":
        z = rng.normal(size=shape) + offset
        return z * (10.0**log_magnitude / np.abs(z).max())
    # Constants +-2**e (e within 3 of log2 m, or 0): the float32 mean of n of them is exact however it is computed
    # (XLA divides by n as a multiplication by 1/n), so the variance is exactly 0 and the zero-variance paths are
    # what is tested. Other constants get a mean off by an ulp, which (x - mean) / sqrt(epsilon) amplifies to
    # |x| 6e-8 / sqrt(epsilon): float32 round-off, reported rather than tested.
    count = 1 if kind == "constant" else shape[-1]
    exponents = np.round(np.log2(10.0**log_magnitude)) - rng.integers(0, 4, size=count)
    constants = rng.choice([-1.0, 0.0, 1.0], size=count, p=[0.45, 0.1, 0.45]) * 2.0**exponents
    return np.broadcast_to(constants, shape).copy()


def input_dtype(layer):
    """The dtype `__call__` hands `call`: the compute dtype, or the input's own (float32) with `autocast` off."""
    return layer.compute_dtype if layer.autocast else "float32"


def run_layer(layer, x, training):
    """`(output as float64 NumPy, output dtype)` of `layer(x, training=training)`.

    On JAX one jitted stateless call (as in `fit`), the new state written back.
    """
    if BACKEND != "jax":
        y = layer(x, training=training)
        return to_numpy(keras.ops.cast(y, "float32")).astype("float64"), keras.backend.standardize_dtype(y.dtype)
    import jax

    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    step = jax.jit(lambda tv, ntv, x: layer.stateless_call(tv, ntv, x, training=training))
    # stateless_call runs `call`, without `__call__`'s cast of the input to the compute dtype.
    y, new_state = step(trainable, non_trainable, x.astype(NUMPY_DTYPES[input_dtype(layer)]))
    for variable, value in zip(layer.non_trainable_variables, new_state):
        variable.assign(value)
    return np.asarray(y, np.float64), keras.backend.standardize_dtype(y.dtype)


def check_draw(d):
    case, shape, position = CASES_BY_NAME[d["case"]], d["shape"], d["position"]
    rng = np.random.default_rng(d["seed"])
    layer = case.build(**d["overrides"], dtype=d["policy"])
    compute = layer.compute_dtype
    x = make_input(shape, d["kind"], d["log_magnitude"], d["offset"], rng)
    x_layer = np.moveaxis(x, -1, position).astype("float32")
    try:
        layer.build(x_layer.shape)
    except Exception as error:
        _, must_work = ranks_of(case)
        assert len(shape) not in must_work, f"rank {len(shape)} must work: {error!r}"
        assert documented_error(error), f"undocumented error: {error!r}"
        return
    assert len(shape) in ranks_of(case)[1], f"rank {len(shape)} input built without the documented error"
    random_weights(layer, seed=d["seed"] + 1)
    weights = {w.name: to_numpy(w).astype("float64") for w in layer.weights}
    try:
        with config.record_dispatch() as calls:
            y, y_dtype = run_layer(layer, x_layer, d["training"])
    except Exception as error:
        # TensorFlow's CPU kernels have no float16 channels-first 1D/2D (transposed) convolution (plain
        # keras.layers.Conv1D, Conv2D and Conv2DTranspose fail alike): a platform gap, not a keras_norms error.
        assume(not (BACKEND == "tensorflow" and re.search(r"only supports (the )?NHWC", str(error))))
        raise

    # GN, IN and LN turn autocast off (as Keras's layers do): a float32 input is normalized unrounded.
    x_rounded = x.astype("float32").astype(NUMPY_DTYPES[input_dtype(layer)]).astype("float64")
    oracle_kwargs = {k: v for k, v in case.kwargs.items() if k not in ("axis", "data_format")}
    expected, new_state = case.oracle(x_rounded, weights, d["training"], **oracle_kwargs)
    # An exact output beyond the 16-bit range is inf, correctly: not a draw to compare.
    assume(np.abs(expected).max() < 0.5 * float(ml_dtypes.finfo(NUMPY_DTYPES[compute]).max))
    y = np.moveaxis(y, position, -1)
    assert y_dtype == compute, f"output dtype {y_dtype}, compute dtype {compute}"
    assert np.isfinite(y).all(), "non-finite output"
    # An output that scales with the input (WS, NormProp, TLU, Proxy Norm) sums terms as large as |x| |w|, which
    # may cancel (a constant input meets standardized weights summing to 0): its rounding error scales with the
    # input's magnitude, not with |y|.
    scale = max(np.abs(expected).max(), np.abs(x_rounded).max())
    scaled = {} if case.normalized else {"atol": TOLERANCES[compute]["atol"] * float(scale)}
    if d["kind"] != "random" and any(record.path == "fast" for record in calls) and hasattr(layer, "epsilon"):
        # A zero-variance input through a fused kernel: its exact output, beta, is missed by the rounding of
        # x * s (|x| 128, gamma 1, epsilon 1e-3: 2.4e-4); the reference's (x - mean) * s is exact.
        gamma = np.abs(weights["gamma"]).max() if "gamma" in weights else 1.0
        rounding = FUSED_ROUNDING * np.abs(x_rounded).max() * gamma / np.sqrt(layer.epsilon)
        scaled["atol"] = max(scaled.get("atol", 0.0), TOLERANCES[compute]["atol"] + float(rounding))
    assert_close(y, expected, dtype=compute, err_msg=f"{case.name} output", **scaled)
    for w in layer.non_trainable_weights:
        value = to_numpy(w).astype("float64")
        dtype = keras.backend.standardize_dtype(w.dtype)
        expected_value = new_state.get(w.name, weights[w.name])
        # Under a float16 policy the state is float16 too (as in Keras): a second moment of 1e8 is inf, correctly.
        if np.abs(expected_value).max() >= float(ml_dtypes.finfo(NUMPY_DTYPES[dtype]).max):
            continue
        assert np.isfinite(value).all(), f"non-finite {w.name}"
        assert_close(value, expected_value, dtype=dtype, err_msg=f"{case.name} {w.name}")


def _draw(case, shape, position=None, overrides=None, policy="float32", training=True, kind="random"):
    position = len(shape) - 1 if position is None else position
    return dict(case=case, shape=shape, position=position, overrides=overrides or {}, policy=policy,
                training=training, log_magnitude=0.0, offset=0.0, kind=kind, seed=0)


_FIRST = {"data_format": "channels_first"}
# Draws that found bugs, run in every profile. Channels-first convolutions whose last spatial size equals the
# channel count: Keras's TensorFlow `ops.add` put the bias on the wrong axis. Batch-group norm with one value per
# cell: the torch fast path called F.group_norm, which raises. Instance norm with one value per channel and
# example, |x| = 100: F.group_norm's x * s + (beta - mean * s) missed the exact output, beta, by 1e-4.
REGRESSIONS = {
    "InstanceNormalization": [
        dict(_draw("instance_norm", (2, 1, 6), 1, {"axis": -2}, training=False), log_magnitude=2.0)
    ],
    "WSConv2D": [_draw("ws_conv2d", (2, 3, 3, 3), 1, _FIRST)],
    "WSConv3D": [_draw("ws_conv3d_even_kernel", (1, 1, 1, 2, 2), 1, _FIRST, training=False)],
    "NormPropConv1D": [_draw("norm_prop_conv1d_causal_dilated", (2, 3, 3), 1, _FIRST)],
    "BatchGroupNormalization": [_draw("batch_group_norm_uneven_one_channel_per_group", (1, 1, 4), 1, {"axis": -2})],
}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_fuzzed_inputs_match_the_oracle_or_raise_documented_errors(name):
    def check(d):
        check_draw(d)

    for regression in REGRESSIONS.get(name, ()):
        check = example(d=regression)(check)
    PROFILE(given(d=draws(CLASSES[name]))(check))()

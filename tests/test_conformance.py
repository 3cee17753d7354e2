"""Shared checks that every registered layer passes (see `tests/cases.py`).

Each test runs once per case on the current backend; the three backend runs
together form the matrix.
"""

import keras
import ml_dtypes
import numpy as np
import pytest

from keras_norms import config
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.cases import CASES
from tests.reference import numerical_gradient
from tests.tolerances import GRADIENT
from tests.tolerances import TOLERANCES
from tests.tolerances import assert_close

SEED = 1234


def make_input(shape, seed=SEED, scale=2.0, offset=1.5):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * scale + offset).astype("float32")


def random_weights(layer, seed=SEED + 1):
    """Sets non-default weights so that every parameter matters; returns them by name."""
    rng = np.random.default_rng(seed)
    values = {}
    for w in layer.weights:
        shape = tuple(w.shape)
        if "variance" in w.name or "stddev" in w.name or w.name == "gamma":
            value = rng.uniform(0.6, 1.6, size=shape)
        elif "second_moment" in w.name:  # E[x^2] >= E[x]^2: a variance plus the mean's square
            mean = values.get(w.name.replace("second_moment", "mean"), 0.0)
            value = rng.uniform(0.6, 1.6, size=shape) + np.square(mean)
        elif w.name.endswith("_count"):  # a counter (MBN's memory_count): a non-negative integer
            value = np.full(shape, rng.integers(1, 8), dtype="float64")
        else:
            value = rng.normal(size=shape) * 0.5
        values[w.name] = value.astype("float32")
        w.assign(values[w.name])
    return values


def build(case, shape=None, **overrides):
    layer = case.build(**overrides)
    layer.build(shape or case.input_shape)
    return layer, random_weights(layer)


def state_of(layer):
    return {w.name: to_numpy(w) for w in layer.non_trainable_weights}


def f64(weights):
    return {k: np.asarray(v, np.float64) for k, v in weights.items()}


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_matches_numpy_reference(case, training):
    layer, weights = build(case)
    x = make_input(case.input_shape)
    y = layer(x, training=training)
    expected, new_state = case.oracle(x.astype("float64"), f64(weights), training, **case.kwargs)
    assert_close(to_numpy(y), expected, err_msg=f"{case.name} output")
    state = state_of(layer)
    for name, value in state.items():
        assert_close(value, new_state.get(name, weights[name]), err_msg=f"{case.name} {name}")


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_gradients_match_finite_differences(case, training):
    layer, weights = build(case)
    x = make_input(case.input_shape)
    upstream = np.random.default_rng(7).normal(size=case.input_shape)
    _, dx, dweights = layer_gradients(layer, x, upstream.astype("float32"), training=training)
    w64 = f64(weights)

    def loss(x64, **replaced):
        # Stop-gradient quantities (e.g. renorm's r, d) stay at the unperturbed input's values.
        y, _ = case.oracle(x64, {**w64, **replaced}, training, frozen_input=x, **case.kwargs)
        return float(np.sum(y * upstream))

    assert_close(dx, numerical_gradient(loss, x.astype("float64")), err_msg="d/dx", **GRADIENT)
    for variable, grad in zip(layer.trainable_weights, dweights):
        expected = numerical_gradient(lambda v: loss(x.astype("float64"), **{variable.name: v}), w64[variable.name])
        assert_close(grad, expected, err_msg=f"d/d{variable.name}", **GRADIENT)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_state_changes_only_in_training(case):
    layer, weights = build(case)
    x = make_input(case.input_shape)
    before = state_of(layer)
    layer(x, training=False)
    for name, value in state_of(layer).items():
        np.testing.assert_array_equal(value, before[name], err_msg=f"inference changed {name}")
    layer(x, training=True)
    changed = [n for n, v in state_of(layer).items() if not np.array_equal(v, before[n])]
    assert changed == list(before), f"training left {set(before) - set(changed)} unchanged"

    # trainable=False runs in inference mode, as in Keras: no update, inference output.
    frozen, _ = build(case)
    frozen.trainable = False
    before = state_of(frozen)
    y = frozen(x, training=True)
    assert_close(to_numpy(y), to_numpy(frozen(x, training=False)))
    for name, value in state_of(frozen).items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_config_round_trip(case):
    layer, weights = build(case)
    config_ = layer.get_config()
    clone = type(layer).from_config(config_)
    assert clone.get_config() == config_
    clone.build(case.input_shape)
    clone.set_weights(layer.get_weights())
    x = make_input(case.input_shape)
    assert_close(to_numpy(clone(x, training=False)), to_numpy(layer(x, training=False)))
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer)
    assert revived.get_config() == config_
    # The unbuilt config equals the built one: build() never rewrites arguments.
    fresh = case.build()
    assert fresh.get_config() == {**config_, "name": fresh.name}


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_keras_save_and_load(case, tmp_path):
    layer, _ = build(case)
    model = keras.Sequential([keras.Input(case.input_shape[1:]), layer])
    path = tmp_path / f"{case.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = make_input(case.input_shape)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(to_numpy(loaded(x, training=False)), to_numpy(model(x, training=False)))
    np.testing.assert_array_equal(to_numpy(loaded(x, training=True)), to_numpy(model(x, training=True)))


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_mixed_precision_large_inputs(case, policy, training):
    keras.config.set_dtype_policy(policy)
    layer, weights = build(case)
    dtype = policy.split("_")[1]
    assert all(w.dtype == "float32" for w in layer.weights), "weights must stay float32"
    # |x| up to 1e4: x**2 overflows float16 (max 65504) unless statistics are float32.
    x = make_input(case.input_shape, scale=3e3, offset=2e3).clip(-1e4, 1e4)
    x_rounded = x.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else "float16")
    y = layer(x, training=training)
    assert keras.backend.standardize_dtype(y.dtype) == dtype
    y = to_numpy(y).astype("float64")
    assert np.isfinite(y).all()
    expected, _ = case.oracle(x_rounded.astype("float64"), f64(weights), training, **case.kwargs)
    # An unnormalized output (WS) sums terms as large as |x|: its rounding error scales with max|y|.
    scaled = {} if case.normalized else {"atol": TOLERANCES[dtype]["atol"] * float(np.abs(expected).max())}
    assert_close(y, expected, dtype=dtype, **scaled)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_symbolic_shapes(case):
    layer, _ = build(case)
    rank = len(case.input_shape)
    inputs = keras.Input(shape=(None,) * (rank - 2) + case.input_shape[-1:])
    outputs = layer(inputs)
    assert tuple(outputs.shape) == (None,) * (rank - 1) + case.input_shape[-1:]
    model = keras.Model(inputs, outputs)
    for shape in (case.input_shape, (3,) + tuple(s + 1 for s in case.input_shape[1:-1]) + case.input_shape[-1:]):
        x = make_input(shape)
        assert_close(to_numpy(model(x, training=False)), to_numpy(layer(x, training=False)))


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_channels_first_equals_channels_last(case, training):
    if case.channel_kwarg is None:
        pytest.skip(f"{case.name}: features are always last")
    x = make_input(case.input_shape)
    last, _ = build(case)
    x_first = np.moveaxis(x, -1, 1)
    first, _ = build(case, x_first.shape, **case.channels_first_kwargs())
    expected = np.moveaxis(to_numpy(last(x, training=training)), -1, 1)
    assert_close(to_numpy(first(x_first, training=training)), expected)
    for a, b in zip(first.get_weights(), last.get_weights()):
        assert_close(a, b)


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_batch_size_one(case, training):
    shape = (1,) + case.input_shape[1:]
    layer, weights = build(case, shape)
    x = make_input(shape)
    y = to_numpy(layer(x, training=training))
    assert np.isfinite(y).all()
    expected, _ = case.oracle(x.astype("float64"), f64(weights), training, **case.kwargs)
    assert_close(y, expected)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_fit_step_reaches_every_weight(case):
    layer, _ = build(case)
    model = keras.Sequential([keras.Input(case.input_shape[1:]), layer])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [to_numpy(w) for w in model.weights]
    x = make_input(case.input_shape)
    target = make_input(case.input_shape, seed=9)
    model.fit(x, target, batch_size=case.input_shape[0], epochs=1, verbose=0, shuffle=False)
    for w, old in zip(model.weights, before):
        assert not np.array_equal(to_numpy(w), old), f"{w.name} did not change in a fit step"
        assert np.isfinite(to_numpy(w)).all()


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_fast_path_equals_reference(case, training):
    """Outputs, gradients and state updates agree with fast paths on and off."""
    x = make_input(case.input_shape)
    upstream = np.random.default_rng(3).normal(size=case.input_shape).astype("float32")
    results = {}
    for enabled in (True, False):
        with config.fast_paths(enabled):
            layer, _ = build(case)
            results[enabled] = layer_gradients(layer, x, upstream, training) + (state_of(layer),)
    (y1, dx1, dw1, s1), (y0, dx0, dw0, s0) = results[True], results[False]
    assert_close(y1, y0)
    assert_close(dx1, dx0, **GRADIENT)
    for a, b in zip(dw1, dw0):
        assert_close(a, b, **GRADIENT)
    for name in s0:
        assert_close(s1[name], s0[name])


@pytest.mark.parametrize(
    "case, kwargs, error, message",
    [(c, *bad) for c in CASES for bad in c.bad_arguments],
    ids=lambda v: repr(v) if not isinstance(v, dict) else "-".join(map(str, v)),
)
def test_bad_arguments_raise_clear_errors(case, kwargs, error, message):
    with pytest.raises(error, match=message):
        case.build(**kwargs)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_bad_inputs_raise_and_leave_state_untouched(case):
    x = make_input(case.input_shape)
    if case.channel_kwarg is not None:
        overrides, message = case.bad_channel_kwargs()
        with pytest.raises(ValueError, match=message):
            case.build(**overrides)(x)
    layer, _ = build(case)
    before = [to_numpy(w) for w in layer.weights]
    wrong_channels = case.input_shape[:-1] + (case.input_shape[-1] + 1,)
    with pytest.raises(ValueError):
        layer(make_input(wrong_channels), training=True)
    for w, old in zip(layer.weights, before):
        np.testing.assert_array_equal(to_numpy(w), old)


BATCH_INDEPENDENT = [case for case in CASES if case.batch_independent]


@pytest.mark.parametrize("case", BATCH_INDEPENDENT, ids=repr)
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_example_alone_equals_example_among_others(case, training):
    """A batch-independent layer gives example i the same output alone as in a batch of 8 random others."""
    layer, _ = build(case)
    example = make_input((1,) + case.input_shape[1:])
    others = make_input((8,) + case.input_shape[1:], seed=77, scale=5.0, offset=-3.0)
    batch = np.concatenate([others[:3], example, others[3:]])
    alone = to_numpy(layer(example, training=training))
    among_others = to_numpy(layer(batch, training=training))[3:4]
    assert_close(among_others, alone)

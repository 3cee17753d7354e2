"""BatchGroupNormalization: the oracle, the GroupNorm/BN identities, the moving state, errors and fast paths.

The float64 oracle (`tests/reference/batch_group_norm.py`) is written from the spec (ALGORITHMS.md §2, §6); the
shared checks (serialization, save/load, mixed precision, symbolic shapes, gradients by finite differences, ...)
come from the conformance registry.
"""

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms import config
from keras_norms.layers.batch_group_normalization import BatchGroupNormalization
from keras_norms.ops import group as group_ops
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.reference import batch_group_norm as ref
from tests.tolerances import GRADIENT
from tests.tolerances import assert_close

BACKEND = keras.backend.backend()


def data(shape, seed=0, scale=1.5, offset=0.5):
    # Moderate |mean|/std: Keras's GroupNormalization uses keras.ops.moments, one-pass on torch (spec §1.5).
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * scale + offset).astype("float32")


def set_random_weights(layer, seed=1):
    """Random affine and a valid moving state (second moment >= mean**2); returns the weights by name."""
    rng = np.random.default_rng(seed)
    values = {}
    for w in layer.weights:
        if w.name == "gamma":
            values[w.name] = rng.uniform(0.6, 1.4, w.shape)
        elif w.name == "moving_second_moment":
            values[w.name] = values["moving_mean"] ** 2 + rng.uniform(0.5, 2.0, w.shape)
        else:
            values[w.name] = rng.normal(size=w.shape) * 0.5
        values[w.name] = values[w.name].astype("float32")
        w.assign(values[w.name])
    return values


def f64(weights):
    return {k: np.asarray(v, np.float64) for k, v in weights.items()}


def built(shape, **kwargs):
    layer = BatchGroupNormalization(**kwargs)
    layer.build(shape)
    return layer, set_random_weights(layer)


CONFIGS = [
    ("even_rank4", (6, 3, 3, 4), dict(groups=2, examples_per_group=2)),
    ("uneven_rank3_one_channel_per_group", (7, 4, 4), dict(groups=-1)),
    ("uneven_rank4_three_examples", (8, 2, 3, 6), dict(groups=3, examples_per_group=3)),
    ("rank2", (6, 8), dict(groups=4, examples_per_group=2)),
    ("rank2_uneven", (7, 8), dict(groups=2, examples_per_group=3)),
    ("rank5", (4, 2, 3, 2, 4), dict(groups=2, examples_per_group=2)),
    ("channels_first", (5, 6, 3, 3), dict(groups=3, examples_per_group=2, axis=1)),
    ("channels_first_rank3_uneven", (5, 4, 7), dict(groups=2, examples_per_group=2, axis=1)),
    ("positive_last_axis", (4, 3, 3, 6), dict(groups=2, examples_per_group=4, axis=3)),
    ("channels_in_the_middle", (4, 3, 6, 2), dict(groups=3, examples_per_group=2, axis=2)),
    ("examples_per_group_above_batch", (3, 4, 4), dict(groups=2, examples_per_group=8)),
    ("one_group", (6, 3, 4), dict(groups=1, examples_per_group=2)),
    ("no_affine", (6, 4, 4), dict(groups=2, center=False, scale=False)),
]
CONFIG_IDS = [c[0] for c in CONFIGS]


@pytest.mark.parametrize("name, shape, kwargs", CONFIGS, ids=CONFIG_IDS)
def test_training_matches_the_oracle_output_and_state(name, shape, kwargs):
    layer, weights = built(shape, momentum=0.8, **kwargs)
    x = data(shape, seed=len(shape))
    y = layer(x, training=True)
    expected, new_state = ref.batch_group_norm_oracle(x.astype("float64"), f64(weights), True, momentum=0.8, **kwargs)
    assert_close(to_numpy(y), expected, err_msg=f"{name} output")
    for w in layer.non_trainable_weights:
        assert_close(to_numpy(w), new_state[w.name], err_msg=f"{name} {w.name}")


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("name, shape, kwargs", CONFIGS, ids=CONFIG_IDS)
def test_inference_matches_the_oracle(name, shape, kwargs, alpha):
    layer, weights = built(shape, inference_example_weight=alpha, **kwargs)
    x = data(shape, seed=3)
    before = [to_numpy(w) for w in layer.weights]
    y = to_numpy(layer(x, training=False))
    expected, _ = ref.batch_group_norm_oracle(
        x.astype("float64"), f64(weights), False, inference_example_weight=alpha, **kwargs
    )
    assert_close(y, expected, err_msg=name)
    for w, old in zip(layer.weights, before):
        np.testing.assert_array_equal(to_numpy(w), old)
    # Inference is per example: the first example's output ignores the rest of the batch.
    assert_close(to_numpy(layer(x[:1], training=False)), y[:1])


@pytest.mark.parametrize("shape, groups", [((1, 5, 4, 8), 4), ((1, 6, 6), 3), ((1, 3, 3, 8), -1)])
@pytest.mark.parametrize("examples_per_group", [1, 2])
def test_batch_size_one_trains_as_keras_group_normalization(shape, groups, examples_per_group):
    ours, _ = built(shape, groups=groups, examples_per_group=examples_per_group, epsilon=1e-5)
    theirs = keras.layers.GroupNormalization(groups=groups, epsilon=1e-5)
    theirs.build(shape)
    theirs.set_weights([to_numpy(ours.gamma), to_numpy(ours.beta)])
    x = data(shape, seed=5)
    assert_close(to_numpy(ours(x, training=True)), to_numpy(theirs(x, training=True)))


@pytest.mark.parametrize("shape, groups", [((6, 5, 4, 8), 4), ((5, 6, 6), 2), ((4, 8), 2)])
def test_one_example_per_group_is_keras_group_normalization(shape, groups):
    """E=1 trains as GN; with inference_example_weight=1 it is GN at inference too (and only then)."""
    ours, _ = built(shape, groups=groups, examples_per_group=1, inference_example_weight=1.0)
    theirs = keras.layers.GroupNormalization(groups=groups, epsilon=1e-3)
    theirs.build(shape)
    theirs.set_weights([to_numpy(ours.gamma), to_numpy(ours.beta)])
    x = data(shape, seed=6)
    expected = to_numpy(theirs(x))
    assert_close(to_numpy(ours(x, training=True)), expected)
    assert_close(to_numpy(ours(x, training=False)), expected)
    # The default alpha = 0 uses the population moments at inference: not GN.
    population = BatchGroupNormalization(groups=groups, examples_per_group=1)
    population.build(shape)
    population.set_weights(ours.get_weights())
    assert not np.allclose(to_numpy(population(x, training=False)), expected, atol=1e-3)


@pytest.mark.parametrize("shape", [(6, 4, 3), (5, 7)])
def test_one_channel_per_group_is_batch_norm_or_ghost_batch_norm(shape):
    x = data(shape, seed=8)
    full = BatchGroupNormalization(groups=-1, examples_per_group=shape[0])
    assert_close(to_numpy(full(x, training=True)), to_numpy(keras_norms.BatchNormalization()(x, training=True)))
    ghost = BatchGroupNormalization(groups=-1, examples_per_group=2)
    expected = keras_norms.GhostBatchNormalization(virtual_batch_size=2)(x, training=True)
    assert_close(to_numpy(ghost(x, training=True)), to_numpy(expected))


@pytest.mark.parametrize("shape, axis", [((6, 3, 3, 4), -1), ((7, 4, 5), 1), ((5, 6), -1)])
def test_moving_state_is_the_momentum_mix_of_full_batch_raw_moments(shape, axis):
    layer = BatchGroupNormalization(groups=2, examples_per_group=2, axis=axis, momentum=0.7)
    x = data(shape, seed=9, offset=2.0)
    layer(x, training=True)  # from the initial state: zeros and ones
    axes = tuple(i for i in range(len(shape)) if i != axis % len(shape))
    x64 = x.astype("float64")
    assert_close(to_numpy(layer.moving_mean), 0.3 * x64.mean(axis=axes))
    assert_close(to_numpy(layer.moving_second_moment), 0.7 + 0.3 * (x64**2).mean(axis=axes))
    # A second step mixes again, once per step whatever the number of example groups.
    mean, second = to_numpy(layer.moving_mean), to_numpy(layer.moving_second_moment)
    x2 = data(shape, seed=10)
    layer(x2, training=True)
    assert_close(to_numpy(layer.moving_mean), 0.7 * mean + 0.3 * x2.astype("float64").mean(axis=axes))
    assert_close(to_numpy(layer.moving_second_moment), 0.7 * second + 0.3 * (x2.astype("float64") ** 2).mean(axis=axes))


def test_weights_names_order_and_dtypes():
    keras.config.set_dtype_policy("mixed_float16")
    layer = BatchGroupNormalization(groups=2)
    layer.build((None, 4, 6))
    assert [w.name for w in layer.weights] == ["gamma", "beta", "moving_mean", "moving_second_moment"]
    assert [w.trainable for w in layer.weights] == [True, True, False, False]
    assert all(w.dtype == "float32" for w in layer.weights)
    np.testing.assert_array_equal(to_numpy(layer.moving_mean), np.zeros(6))
    np.testing.assert_array_equal(to_numpy(layer.moving_second_moment), np.ones(6))


@pytest.mark.parametrize("shape, axis", [((2, 4, 4, 6), -1), ((2, 6, 4, 4), 1)])
def test_channels_not_divisible_by_groups_raise_at_build(shape, axis):
    layer = BatchGroupNormalization(groups=4, axis=axis)
    with pytest.raises(ValueError, match=r"BatchGroupNormalization .*`groups`=4\. It must divide the 6 channels"):
        layer(data(shape), training=True)
    assert not layer.built


def test_default_groups_need_a_multiple_of_32_channels():
    with pytest.raises(ValueError, match=r"`groups`=32.*divide the 16 channels.*-1 for one channel per group"):
        BatchGroupNormalization()(data((2, 3, 3, 16)))
    assert tuple(BatchGroupNormalization()(data((2, 3, 3, 64))).shape) == (2, 3, 3, 64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(groups=0), r"`groups`=0.*positive int.*or -1"),
        (dict(groups=-2), r"`groups`=-2.*positive int.*or -1"),
        (dict(groups=2.0), r"`groups`=2.0.*positive int"),
        (dict(groups=True), r"`groups`=True.*positive int"),
        (dict(examples_per_group=0), r"`examples_per_group`=0.*positive int"),
        (dict(examples_per_group=1.5), r"`examples_per_group`=1.5.*positive int"),
        (dict(axis=(1, 2)), r"`axis`=\(1, 2\).*Pass one int"),
        (dict(momentum=-0.1), r"`momentum`=-0.1.*\[0, 1\]"),
        (dict(epsilon=-1e-3), r"`epsilon`=-0.001.*positive float"),
        (dict(inference_example_weight=1.5), r"`inference_example_weight`=1.5.*\[0, 1\]"),
    ],
    ids=str,
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=r"BatchGroupNormalization \(layer '.*'\): invalid " + message):
        BatchGroupNormalization(**kwargs)


def test_batch_axis_is_rejected_at_build():
    layer = BatchGroupNormalization(groups=1, axis=0)
    with pytest.raises(ValueError, match=r"`axis`=0.*batch axis"):
        layer(data((4, 3)))
    with pytest.raises(ValueError, match=r"axis=0 is the batch axis"):
        group_ops.batch_group_norm(data((4, 3)), axis=0, groups=1)


def test_config_holds_the_arguments_verbatim():
    layer = BatchGroupNormalization(groups=-1, examples_per_group=3, axis=1, inference_example_weight=0.25)
    config_ = layer.get_config()
    layer.build((None, 5, 4))
    assert layer.get_config() == config_
    assert {k: config_[k] for k in ("groups", "examples_per_group", "axis", "inference_example_weight")} == {
        "groups": -1,
        "examples_per_group": 3,
        "axis": 1,
        "inference_example_weight": 0.25,
    }
    assert keras.saving.get_registered_name(BatchGroupNormalization) == "keras_norms>BatchGroupNormalization"


# ----------------------------------------------------------------------------------------------- ops


@pytest.mark.parametrize(
    "shape, axis, groups, examples", [((7, 3, 4), -1, 2, 3), ((6, 8, 2), 1, 4, 2), ((5, 6), 1, -1, 5)]
)
def test_batch_group_moments_match_a_loop_over_cells(shape, axis, groups, examples):
    x = data(shape, seed=11)
    mean, variance, counts = group_ops.batch_group_moments(x, axis, groups, examples)
    xl = np.moveaxis(x.astype("float64"), axis, -1)
    c = xl.shape[-1]
    g_count = c if groups == -1 else groups
    starts = range(0, shape[0], examples)
    expected_mean = np.zeros((len(starts), g_count))
    expected_variance = np.zeros_like(expected_mean)
    for k, start in enumerate(starts):
        for g in range(g_count):
            cell = xl[start : start + examples, ..., g * (c // g_count) : (g + 1) * (c // g_count)]
            expected_mean[k, g], expected_variance[k, g] = cell.mean(), cell.var()
    assert_close(to_numpy(mean), expected_mean)
    assert_close(to_numpy(variance), expected_variance)
    assert_close(to_numpy(counts), [min(examples, shape[0] - s) for s in starts])


def test_ops_validate_groups_and_examples():
    x = data((4, 6))
    with pytest.raises(ValueError, match=r"groups=4 does not divide the 6 channels"):
        group_ops.batch_group_norm(x, groups=4)
    with pytest.raises(ValueError, match=r"`examples_per_group` must be a positive int"):
        group_ops.batch_group_norm(x, groups=2, examples_per_group=0)
    with pytest.raises(ValueError, match=r"`groups` must be a positive int or -1"):
        group_ops.batch_group_norm_inference(x, np.zeros(6), np.ones(6), groups=0)


def test_training_variance_is_two_pass_with_a_large_offset():
    """|mean|/std = 1e3: the two-pass cell variance keeps float32 accuracy where E[x^2]-E[x]^2 would not."""
    shape = (4, 6, 6, 4)
    x = data(shape, seed=12, scale=1.0, offset=1e3)
    y, _, _ = group_ops.batch_group_norm(x, groups=2, examples_per_group=2)
    expected, _, _ = ref.batch_group_norm_train(x.astype("float64"), None, None, groups=2, examples_per_group=2)
    assert_close(to_numpy(y), expected, rtol=1e-3, atol=1e-3)


def test_inference_mix_is_cancellation_safe_with_a_large_offset():
    """alpha=1: the example's own group variance is two-pass, not S2 - S1**2 in float32 (off by ~0.1 here)."""
    shape = (3, 5, 5, 4)
    layer = BatchGroupNormalization(groups=2, examples_per_group=1, inference_example_weight=1.0)
    x = data(shape, seed=13, scale=1.0, offset=1e3)
    y = to_numpy(layer(x, training=False))
    weights = {w.name: to_numpy(w) for w in layer.weights}
    expected, _ = ref.batch_group_norm_oracle(
        x.astype("float64"), f64(weights), False, groups=2, inference_example_weight=1.0
    )
    assert_close(y, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_an_inconsistent_state_is_clamped_not_nan(alpha):
    """A state with E[x^2] < E[x]^2 (impossible for real data, possible for loaded weights): variance clamped at 0."""
    shape = (4, 3, 4)
    layer = BatchGroupNormalization(groups=2, inference_example_weight=alpha)
    layer.build(shape)
    layer.moving_mean.assign(np.full(4, 3.0, "float32"))
    layer.moving_second_moment.assign(np.full(4, 1.0, "float32"))
    x = data(shape, seed=14, scale=0.1)
    y = to_numpy(layer(x, training=False))
    assert np.isfinite(y).all()
    weights = {w.name: to_numpy(w) for w in layer.weights}
    expected, _ = ref.batch_group_norm_oracle(
        x.astype("float64"), f64(weights), False, groups=2, inference_example_weight=alpha
    )
    assert_close(y, expected)


# ---------------------------------------------------------------------------------------- compiling


@pytest.mark.skipif(BACKEND != "tensorflow", reason="an unknown batch size while tracing exists in TF graphs only")
@pytest.mark.parametrize("jit_compile", [False, True])
def test_unknown_batch_size_in_a_tf_graph(jit_compile):
    import tensorflow as tf

    layer, _ = built((None, 5, 4), groups=2, examples_per_group=3, momentum=0.5)
    eager = BatchGroupNormalization(groups=2, examples_per_group=3, momentum=0.5)
    eager.build((None, 5, 4))
    eager.set_weights(layer.get_weights())

    @tf.function(input_signature=[tf.TensorSpec([None, 5, 4], tf.float32)], jit_compile=jit_compile)
    def train(x):
        return layer(x, training=True)

    for batch in (9, 10, 2, 1):
        x = data((batch, 5, 4), seed=batch)
        assert_close(to_numpy(train(x)), to_numpy(eager(x, training=True)), err_msg=f"batch {batch}")
        for a, b in zip(layer.get_weights(), eager.get_weights()):
            assert_close(a, b)


@pytest.mark.skipif(BACKEND == "torch", reason="XLA compilation is a TensorFlow/JAX feature")
def test_fit_compiled_equals_fit_eager():
    rng = np.random.default_rng(0)
    x, target = rng.normal(size=(20, 6, 6, 3)).astype("float32"), rng.normal(size=(20, 2)).astype("float32")
    models = {}
    for jit in (True, False):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((6, 6, 3)),
                keras.layers.Conv2D(8, 3, use_bias=False),
                BatchGroupNormalization(groups=4, examples_per_group=3, inference_example_weight=0.5),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2),
            ]
        )
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", jit_compile=jit, run_eagerly=not jit)
        model.fit(x, target, batch_size=10, epochs=2, shuffle=False, verbose=0)  # groups of 3, 3, 3, 1
        models[jit] = model
    for a, b in zip(models[True].get_weights(), models[False].get_weights()):
        assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert_close(models[True].predict(x, verbose=0), models[False].predict(x, verbose=0), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------- fast paths

# (shape, layer kwargs, the torch kernel runs?); the TF/JAX one-pass kernel runs for all of rank 3 or more.
FAST_PATH_CASES = [
    ((8, 4, 4, 6), dict(groups=3, examples_per_group=2), True),
    ((8, 4, 4, 6), dict(groups=-1, examples_per_group=4, axis=3), True),
    ((8, 6, 4, 4), dict(groups=3, examples_per_group=2, axis=1), True),
    ((6, 6, 5), dict(groups=2, examples_per_group=1, axis=1), True),
    ((3, 5, 6), dict(groups=2, examples_per_group=8), True),  # E capped at the batch: one group
    ((6, 12), dict(groups=4, examples_per_group=3), False),  # rank 2: measured slower, declined on every backend
    ((1, 5, 8), dict(groups=4, examples_per_group=2), True),
    ((7, 4, 6), dict(groups=2, examples_per_group=2), False),  # a smaller trailing example group
    ((4, 5, 6, 5), dict(groups=3, examples_per_group=2, axis=2), False),  # channels in the middle
    # one value per cell: the output is beta, which F.group_norm's fused x * s + (beta - mean * s) misses by round-off
    ((2, 6, 1), dict(groups=6, examples_per_group=1, axis=1), False),
]


@pytest.mark.parametrize("shape, kwargs, on_torch", FAST_PATH_CASES, ids=str)
def test_fast_path_taken_or_declined_and_equal_to_reference(shape, kwargs, on_torch):
    x = data(shape, seed=15)
    upstream = data(shape, seed=16)
    results = {}
    for enabled in (True, False):
        layer, _ = built(shape, **kwargs)
        with config.fast_paths(enabled), config.record_dispatch() as calls:
            results[enabled] = layer_gradients(layer, x, upstream, training=True) + (layer.get_weights(),)
        taken = on_torch if BACKEND == "torch" else len(shape) >= 3
        expected = "fast" if (enabled and taken) else "reference"
        assert [record[:2] for record in calls] == [("batch_group_norm", expected)]
    (y1, dx1, dw1, s1), (y0, dx0, dw0, s0) = results[True], results[False]
    assert_close(y1, y0, err_msg="output")
    assert_close(dx1, dx0, err_msg="d/dx", **GRADIENT)
    for a, b in zip(dw1, dw0):
        assert_close(a, b, err_msg="d/dweights", **GRADIENT)
    for a, b in zip(s1, s0):
        assert_close(a, b, err_msg="state")


def test_inference_takes_the_reference():
    layer, _ = built((4, 3, 6), groups=2)
    with config.record_dispatch() as calls:
        layer(data((4, 3, 6)), training=False)
    assert calls == [("batch_group_norm_inference", "reference", "no kernel on this backend")]


@pytest.mark.skipif(BACKEND != "torch", reason="the F.group_norm kernel exists on torch only")
def test_torch_kernel_declines_half_precision_and_keeps_two_pass_accuracy():
    import torch

    from keras_norms._backends.torch import group as torch_group
    from keras_norms.ops._dispatch import Declined

    x = torch.tensor(data((8, 4, 4, 6)))
    for dtype in ("float16", "bfloat16"):
        declined = torch_group.batch_group_norm(x.to(getattr(torch, dtype)), None, None, 3, 1e-3, 3, 2)
        assert isinstance(declined, Declined) and declined.reason == f"{dtype} input (kernel takes float32/float64)"
    # Regression guard: torch's CPU group_norm on a channels-last (permuted) view computes E[x^2]-E[x]^2 in
    # float32 and is off by ~0.3 at |mean|/std = 300; the kernel must use a contiguous (N/E, C, E*S) layout.
    shifted = data((8, 8, 8, 16), seed=17, scale=1.0, offset=300.0)
    y, mean, second = torch_group.batch_group_norm(torch.tensor(shifted), None, None, 3, 1e-3, 4, 2)
    expected, mean64, second64 = ref.batch_group_norm_train(shifted.astype("float64"), None, None, -1, 1e-3, 4, 2)
    assert_close(to_numpy(y.detach()), expected, rtol=1e-3, atol=1e-3)
    assert_close(to_numpy(mean), mean64)
    assert_close(to_numpy(second), second64)
    # The input is left alone.
    before = torch.tensor(shifted)
    torch_group.batch_group_norm(before, None, None, 3, 1e-3, 4, 2)
    torch.testing.assert_close(before, torch.tensor(shifted), rtol=0, atol=0)


@pytest.mark.parametrize("shape, axis, examples", [((8, 6, 6, 8), -1, 2), ((7, 8, 6), 1, 3)], ids=str)
def test_fast_path_keeps_precision_at_a_large_mean(shape, axis, examples):
    """|mean|/std = 300 against float64: the shifted one-pass kernel (TF, JAX) stays within 2e-6; every path
    is at least as accurate as the two-pass reference (off by ~1e-4 here: its float32 mean sums large values)."""
    x = data(shape, seed=18, scale=1.0, offset=300.0)
    expected, mean64, second64 = ref.batch_group_norm_train(x.astype("float64"), None, None, axis, 1e-3, 4, examples)
    fast = [to_numpy(t) for t in group_ops.batch_group_norm(x, axis=axis, groups=4, examples_per_group=examples)]
    with config.fast_paths(False):
        two_pass = to_numpy(group_ops.batch_group_norm(x, axis=axis, groups=4, examples_per_group=examples)[0])
    reference_error = np.abs(two_pass - expected).max()
    assert_close(fast[0], expected, rtol=1e-5, atol=max(1e-5, 2.0 * reference_error))
    assert_close(fast[1], mean64)
    assert_close(fast[2], second64)
    if BACKEND != "torch":
        assert_close(fast[0], expected, rtol=1e-6, atol=2e-6)

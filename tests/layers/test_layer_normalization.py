"""LayerNormalization and RMSNormalization: drop-ins for Keras's layers, checked against them on the current backend.

The float64 oracles (`tests/reference/layer_norm.py`) are written from the papers' equations; the shared checks
(serialization, save/load, mixed precision against the oracle, symbolic shapes, finite-difference gradients, batch
independence, ...) come from the conformance registry (`tests/cases_layer_norm.py`). Here: parity with the Keras
layers (outputs, gradients, weights both ways, `.weights.h5`, config, masks, mixed precision), several axes and
channels first against the oracle, a large mean, and the errors at build.
"""

from contextlib import nullcontext

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms import config
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.reference.layer_norm import layer_norm
from tests.reference.layer_norm import rms_norm
from tests.tolerances import GRADIENT
from tests.tolerances import assert_close

BACKEND = keras.backend.backend()
LN, RMS = keras_norms.LayerNormalization, keras_norms.RMSNormalization
KERAS = {LN: keras.layers.LayerNormalization, RMS: keras.layers.RMSNormalization}
ORACLE = {LN: lambda x, w, kw: layer_norm(x, w.get("gamma"), w.get("beta"), kw.get("axis", -1), kw.get("epsilon", 1e-3)),
          RMS: lambda x, w, kw: rms_norm(x, w.get("scale"), kw.get("axis", -1), kw.get("epsilon", 1e-6))}
ALL = ("tensorflow", "jax", "torch")


def data(shape, seed=0, scale=1.5, offset=0.5):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * scale + offset).astype("float32")


def pair(cls, shape, seed=1, **kwargs):
    """Keras's layer with random weights and ours with its weights (through set_weights)."""
    theirs, ours = KERAS[cls](**kwargs), cls(**kwargs)
    theirs.build(shape)
    ours.build(shape)
    rng = np.random.default_rng(seed)
    theirs.set_weights([rng.uniform(0.6, 1.6, w.shape).astype("float32") for w in theirs.weights])
    ours.set_weights(theirs.get_weights())
    return theirs, ours


# (name, class, shape, kwargs, backends where Keras's layer runs: on others it raises, Keras's torch layer norm
# hands a middle axis to F.layer_norm and its RMS norm broadcasts a middle axis's scale against the last one).
CONFIGS = [
    ("ln_rank4_last", LN, (2, 3, 4, 6), {}, ALL),
    ("ln_rank4_all_features", LN, (2, 3, 4, 6), dict(axis=[1, 2, 3]), ALL),
    ("ln_rank4_channels_first", LN, (2, 6, 3, 4), dict(axis=1, epsilon=1e-5), ("tensorflow", "jax")),
    ("ln_rank4_mixed_signs", LN, (2, 3, 4, 6), dict(axis=[-1, 1]), ALL),  # weights (6, 3), reshaped as Keras does
    ("ln_rank3_unscaled", LN, (3, 7, 4), dict(scale=False), ALL),
    ("ln_rank2_uncentered", LN, (4, 8), dict(center=False), ALL),
    ("rms_rank4_last", RMS, (2, 3, 4, 6), {}, ALL),
    ("rms_rank3_two_trailing", RMS, (3, 5, 4), dict(axis=[-2, -1], epsilon=1e-3), ALL),
    ("rms_rank4_channels_first", RMS, (2, 6, 3, 4), dict(axis=1), ()),
]
IDS = [c[0] for c in CONFIGS]


@pytest.mark.parametrize("name, cls, shape, kwargs, keras_backends", CONFIGS, ids=IDS)
def test_outputs_and_gradients_equal_keras_and_the_oracle(name, cls, shape, kwargs, keras_backends):
    theirs, ours = pair(cls, shape, **kwargs)
    assert [(w.name, tuple(w.shape)) for w in ours.weights] == [(w.name, tuple(w.shape)) for w in theirs.weights]
    x = data(shape, seed=len(shape))
    upstream = data(shape, seed=7, offset=0.0)
    y1, dx1, dw1 = layer_gradients(ours, x, upstream)
    weights = {w.name: to_numpy(w).astype("float64") for w in ours.weights}
    assert_close(y1, ORACLE[cls](x, weights, kwargs), err_msg=f"{name} vs the oracle")
    if BACKEND not in keras_backends:
        return
    # Keras's call takes no `training`: a model passes it only to the layers that do.
    y0, dx0, dw0 = layer_gradients(keras.Sequential([keras.Input(shape[1:]), theirs]), x, upstream)
    # Keras's folded x * a - mu * a loses about |mu|/sigma ulps: 1e-5 against Keras, as against the oracle.
    assert_close(y1, y0, err_msg=f"{name} output")
    assert_close(dx1, dx0, err_msg=f"{name} input gradient", **GRADIENT)
    assert len(dw1) == len(dw0)
    for a, b in zip(dw1, dw0):
        assert_close(a, b, err_msg=f"{name} weight gradient", **GRADIENT)


@pytest.mark.parametrize("cls", [LN, RMS], ids=["ln", "rms"])
def test_set_weights_both_ways_and_weights_h5_from_keras(cls, tmp_path):
    shape = (2, 4, 5, 8)
    x = data(shape)
    theirs, ours = pair(cls, shape)
    assert_close(to_numpy(ours(x)), to_numpy(theirs(x)))
    rng = np.random.default_rng(5)
    ours.set_weights([rng.normal(size=w.shape).astype("float32") for w in ours.weights])
    fresh = KERAS[cls]()
    fresh.build(shape)
    fresh.set_weights(ours.get_weights())
    assert_close(to_numpy(fresh(x)), to_numpy(ours(x)))
    # A .weights.h5 file written from a model with Keras's layer loads into the same model with ours.
    models = [keras.Sequential([keras.Input(shape[1:]), keras.layers.Dense(8, name="dense"), layer(name="norm")])
              for layer in (KERAS[cls], cls)]
    models[0].set_weights([rng.normal(size=w.shape).astype("float32") for w in models[0].weights])
    path = str(tmp_path / "model.weights.h5")
    models[0].save_weights(path)
    models[1].load_weights(path)
    for a, b in zip(models[1].get_weights(), models[0].get_weights()):
        np.testing.assert_array_equal(a, b)
    assert_close(to_numpy(models[1](x)), to_numpy(models[0](x)))


@pytest.mark.parametrize(
    "cls, kwargs",
    [(LN, dict(axis=(1, 2), epsilon=1e-5, center=False, gamma_regularizer="l2", beta_constraint="non_neg")),
     (RMS, dict(axis=[-2, -1], epsilon=1e-4))],
    ids=["ln", "rms"],
)
def test_config_keys_equal_keras_and_a_built_keras_config_rebuilds_ours(cls, kwargs):
    theirs, ours = KERAS[cls](**kwargs), cls(**kwargs)
    assert list(ours.get_config()) == list(theirs.get_config())
    theirs.build((2, 3, 4, 5))  # Keras's build rewrites `axis` (sorted list); its config still rebuilds ours
    rebuilt = cls.from_config(theirs.get_config())
    assert rebuilt.get_config() == {**theirs.get_config(), "name": rebuilt.name}
    before = ours.get_config()
    ours.build((2, 3, 4, 5))
    assert ours.get_config() == before  # building does not rewrite the config


def test_masks_as_in_keras():
    """LayerNormalization passes a mask through (masked steps normalized with the others); RMSNormalization, as
    Keras's, does not support masking: the mask stops there."""
    x = data((2, 5, 8))
    x[0, 3:] = 0.0  # padded steps of the first sequence
    inputs = keras.Input((5, 8))
    for cls in (LN, RMS):
        theirs, ours = pair(cls, (2, 5, 8))
        assert ours.supports_masking == theirs.supports_masking == (cls is LN)
        outputs = {}
        for label, layer in (("theirs", theirs), ("ours", ours)):
            # Keras warns where a layer drops a mask (each time the model runs).
            with pytest.warns(UserWarning, match="does not support masking") if cls is RMS else nullcontext():
                h = layer(keras.layers.Masking(0.0)(inputs))
                pooled = keras.layers.GlobalAveragePooling1D()(h)  # mask-aware: averages the unmasked steps only
                outputs[label] = to_numpy(keras.Model(inputs, pooled)(x))
        assert_close(outputs["ours"], outputs["theirs"], err_msg=cls.__name__)


@pytest.mark.parametrize("enabled", [True, False], ids=["fast_paths", "reference"])
def test_large_mean_within_float32_tolerance_of_float64(enabled):
    """|mean| / std = 300: the statistics must not cancel (a one-pass E[x^2] - E[x]^2 in float32 would)."""
    shape = (4, 8, 8, 16)
    x = data(shape, seed=11, scale=1.0, offset=300.0)
    upstream = data(shape, seed=12, offset=0.0)
    layer = LN()
    layer.build(shape)
    with config.fast_paths(enabled), config.record_dispatch() as calls:
        y, dx, _ = layer_gradients(layer, x, upstream)
    assert calls[0].path == ("fast" if enabled and BACKEND == "torch" else "reference")
    x64, u = x.astype("float64"), upstream.astype("float64")
    expected = layer_norm(x64)
    # A float32 x near 300 is only known to 3e-5 (its ulp), the mean's rounding to as much: 1e-4 on y of norm ~3.
    assert_close(y, expected, rtol=1e-4, atol=1e-4)
    # d/dx of sum(u * y) per row, from the equation: (u - mean(u) - y mean(u y)) / sigma.
    sigma = np.sqrt(x64.var(axis=-1, keepdims=True) + 1e-3)
    expected_dx = (u - u.mean(axis=-1, keepdims=True) - expected * (u * expected).mean(axis=-1, keepdims=True)) / sigma
    assert_close(dx, expected_dx, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("cls", [LN, RMS], ids=["ln", "rms"])
@pytest.mark.parametrize("input_dtype", ["float32", "compute"])
def test_mixed_precision_as_keras(cls, input_dtype):
    """Layer norm normalizes a float32 input before any 16-bit rounding (autocast off), RMS norm rounds it first
    (autocast on): both as Keras's layers do."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        shape = (2, 4, 4, 8)
        theirs, ours = pair(cls, shape)
        assert ours.autocast == theirs.autocast == (cls is RMS)
        assert [w.dtype for w in ours.weights] == [w.dtype for w in theirs.weights]
        x = data(shape, offset=40.0)
        if input_dtype == "compute":
            x = keras.ops.cast(x, ours.compute_dtype)
        y0, y1 = theirs(x), ours(x)
        assert keras.backend.standardize_dtype(y1.dtype) == keras.backend.standardize_dtype(y0.dtype) == "float16"
        assert_close(to_numpy(keras.ops.cast(y1, "float32")), to_numpy(keras.ops.cast(y0, "float32")), "float16")
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize(
    "cls, axis, shape, message",
    [
        (LN, 0, (2, 5, 6), r"LayerNormalization \(layer 'norm'\): invalid `axis`=0\. For an input of rank 3 it "
                           r"names the axes \[0\]: pass distinct axes other than 0"),
        (RMS, [-1, 2], (2, 5, 6), r"RMSNormalization \(layer 'norm'\): invalid `axis`=\[-1, 2\].*axes \[2, 2\]"),
        (LN, [1, 2], (None, None, 6), r"the normalized axes \[1, 2\] of input shape \(None, None, 6\) have sizes "
                                      r"\(None, 6\)"),
    ],
    ids=["batch_axis", "axis_twice", "unknown_size"],
)
def test_axis_errors_at_build(cls, axis, shape, message):
    layer = cls(axis=axis, name="norm")
    with pytest.raises(ValueError, match=message):
        layer.build(shape)
    assert not layer.weights

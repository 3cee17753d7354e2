"""Weight Standardization and Scaled WS (spec §7): parity with the Keras layers, statistics, fan-in, gradients,
mixed precision, LoRA, and folding into plain Keras layers for export."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_norms.models.fold import fold_weight_standardization
from keras_norms.layers import weight_standardization as wsl
from keras_norms.ops import weight_standardization as ws_ops
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.reference import numerical_gradient
from tests.reference import weight_standardization as ref
from tests.tolerances import GRADIENT
from tests.tolerances import assert_close

K = keras.layers
RELU_GAMMA = 1.7128585504


def make(cls, *args, **kwargs):
    """`cls(*args, **kwargs)` with a constant initial kernel: the tests set the weights themselves, and JAX compiles
    every random initializer anew for each shape (about a second each)."""
    key = "depthwise_initializer" if issubclass(cls, K.DepthwiseConv2D) else "kernel_initializer"
    return cls(*args, **{key: "zeros", **kwargs})


def data(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * 1.5 + 0.5).astype("float32")


def randomize(layer, seed=1):
    """Random raw weights (a kernel with non-zero mean, gains around 1); returns them by name, float32."""
    rng = np.random.default_rng(seed)
    values = {}
    for w in layer.weights:
        if w.name == "gain":
            value = rng.uniform(0.5, 1.5, size=w.shape)
        elif w.name == "kernel":
            value = rng.normal(size=w.shape) * 0.7 + 0.2
        else:
            value = rng.normal(size=w.shape) * 0.5
        values[w.name] = value.astype("float32")
        w.assign(values[w.name])
    return values


def oracle_kernel(layer, weights):
    """The standardized kernel from the float64 oracle, for `layer`'s layout and arguments."""
    layout = LAYOUT[type(layer)]
    if isinstance(layer, wsl.ScaledWeightStandardizationMixin):
        return ref.scaled_standardize(weights["kernel"], layout, weights["gain"], layer.ws_epsilon, layer.gamma)
    return ref.standardize(weights["kernel"], layout, layer.ws_epsilon)


LAYOUT = {
    wsl.WSConv1D: "conv",
    wsl.WSConv2D: "conv",
    wsl.WSConv3D: "conv",
    wsl.ScaledWSConv1D: "conv",
    wsl.ScaledWSConv2D: "conv",
    wsl.ScaledWSConv3D: "conv",
    wsl.WSDense: "dense",
    wsl.WSDepthwiseConv2D: "depthwise",
    wsl.WSConv2DTranspose: "transpose",
}

# (WS class, Keras class, kwargs, channels-last input shape); the shapes are tiny on purpose.
CONFIGS = [
    (wsl.WSConv1D, K.Conv1D, dict(filters=4, kernel_size=3, padding="causal", dilation_rate=2), (2, 9, 3)),
    (wsl.WSConv1D, K.Conv1D, dict(filters=4, kernel_size=3, strides=2), (2, 9, 3)),
    (wsl.WSConv2D, K.Conv2D, dict(filters=4, kernel_size=3), (2, 6, 6, 3)),
    (wsl.WSConv2D, K.Conv2D, dict(filters=6, kernel_size=3, groups=2, strides=2, padding="same"), (2, 7, 6, 4)),
    (wsl.WSConv3D, K.Conv3D, dict(filters=4, kernel_size=2, padding="same", use_bias=False), (2, 3, 4, 3, 2)),
    (wsl.WSDepthwiseConv2D, K.DepthwiseConv2D, dict(kernel_size=3, depth_multiplier=2, padding="same"), (2, 5, 6, 3)),
    (wsl.WSConv2DTranspose, K.Conv2DTranspose, dict(filters=4, kernel_size=3, strides=2, padding="same"), (2, 4, 5, 3)),
    (wsl.WSConv2DTranspose, K.Conv2DTranspose, dict(filters=4, kernel_size=2, strides=2), (2, 4, 3, 3)),
    (wsl.WSDense, K.Dense, dict(units=4, activation="relu"), (3, 2, 5)),
    (wsl.ScaledWSConv1D, K.Conv1D, dict(filters=4, kernel_size=3, padding="same"), (2, 7, 3)),
    (wsl.ScaledWSConv2D, K.Conv2D, dict(filters=4, kernel_size=3, gamma=RELU_GAMMA, ws_epsilon=1e-4), (2, 6, 6, 3)),
    (wsl.ScaledWSConv3D, K.Conv3D, dict(filters=4, kernel_size=2), (2, 3, 3, 3, 2)),
]
CONFIG_IDS = [f"{c[0].__name__}-{'-'.join(f'{k}={v}' for k, v in c[2].items())}" for c in CONFIGS]
WS_ONLY = ("ws_epsilon", "gamma", "gain_initializer")


def keras_kwargs(kwargs):
    return {k: v for k, v in kwargs.items() if k not in WS_ONLY}


def channels_first(shape):
    return (shape[0], shape[-1]) + tuple(shape[1:-1])


def oracle_of(cls):
    """The registry oracle adapter (float64 forward pass) for a WS class."""
    if issubclass(cls, wsl.ScaledWeightStandardizationMixin):
        return ref.scaled_ws_conv_oracle
    return {"conv": ref.ws_conv_oracle, "depthwise": ref.ws_depthwise_oracle,
            "transpose": ref.ws_conv_transpose_oracle, "dense": ref.ws_dense_oracle}[LAYOUT[cls]]


def assert_standardized(layer, weights, w_hat):
    """Zero mean and unit biased variance (up to epsilon) over the fan-in axes, per output unit."""
    w_hat = np.asarray(w_hat, np.float64)
    raw = weights["kernel"].astype("float64")
    axes = ref.FAN_IN_AXES[LAYOUT[type(layer)]](raw.ndim)
    fan_in = int(np.prod([raw.shape[a] for a in axes]))
    expected_var = raw.var(axis=axes) / (raw.var(axis=axes) + layer.ws_epsilon)  # 1 up to epsilon
    if isinstance(layer, wsl.ScaledWeightStandardizationMixin):  # undo g * gamma * I**-0.5
        gain = weights["gain"].astype("float64") * layer.gamma / np.sqrt(fan_in)
        w_hat = w_hat / gain.reshape([1 if a in axes else raw.shape[a] for a in range(raw.ndim)])
    assert_close(w_hat.mean(axis=axes), 0.0, atol=1e-6, err_msg="mean over the fan-in")
    assert_close(w_hat.var(axis=axes), expected_var, rtol=1e-5, err_msg="variance over the fan-in")
    assert np.all(np.abs(w_hat.var(axis=axes) - 1.0) < 2e-3)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("cls, plain_cls, kwargs, shape", CONFIGS, ids=CONFIG_IDS)
def test_standardized_kernel_and_equality_with_the_keras_layer_holding_it(cls, plain_cls, kwargs, shape, data_format):
    if data_format == "channels_first":
        if cls is wsl.WSDense:
            pytest.skip("Dense has no data_format")
        kwargs = {**kwargs, "data_format": data_format}
        shape = channels_first(shape)
    layer = make(cls, **kwargs)
    layer.build(shape)
    assert [w.name for w in layer.weights if w.name != "gain"] == ["kernel", "bias"][: 1 + layer.use_bias]
    weights = randomize(layer)
    expected_kernel = oracle_kernel(layer, weights)
    w_hat = to_numpy(layer.standardized_kernel())
    assert w_hat.dtype == np.float32
    assert_close(w_hat, expected_kernel, err_msg="standardized kernel")
    assert_standardized(layer, weights, w_hat)

    plain = make(plain_cls, **keras_kwargs(kwargs))
    plain.build(shape)
    plain.set_weights([expected_kernel.astype("float32")] + ([weights["bias"]] if layer.use_bias else []))
    x = data(shape)
    y = to_numpy(layer(x))
    # On TensorFlow, keras.layers.Conv*D add the bias along the wrong axis for channels-first outputs whose last
    # axis has as many entries as there are channels (see wsl.add_channel_vector); the WS layers do not.
    if data_format == "channels_last" or keras.backend.backend() != "tensorflow":
        assert_close(y, to_numpy(plain(x)), err_msg="vs keras layer")
    # And against the NumPy forward pass (the registry's oracle adapters), which reads channels-last data.
    w64 = {k: v.astype("float64") for k, v in weights.items()}
    last_kwargs = {k: v for k, v in kwargs.items() if k != "data_format"}
    first = data_format == "channels_first"
    x_last = np.moveaxis(x, 1, -1) if first else x
    expected, state = oracle_of(cls)(x_last.astype("float64"), w64, True, **last_kwargs)
    assert state == {}
    assert_close(y, np.moveaxis(expected, -1, 1) if first else expected, err_msg="vs NumPy oracle")


def test_kernel_layouts_reduce_over_the_documented_axes():
    assert ws_ops.fan_in_axes(4, (-1,)) == [0, 1, 2]  # Conv2D (kh, kw, in/groups, out)
    assert ws_ops.fan_in_axes(2, (-1,)) == [0]  # Dense (in, out)
    assert ws_ops.fan_in_axes(4, wsl.WSDepthwiseConv2D._output_axes) == [0, 1]  # (kh, kw, in, mult)
    assert ws_ops.fan_in_axes(4, wsl.WSConv2DTranspose._output_axes) == [0, 1, 3]  # (kh, kw, out, in)


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64")  # JAX without x64 truncates to float32
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_ops_match_the_oracle_and_compute_in_float32_or_wider(dtype):
    rng = np.random.default_rng(3)
    kernel = (rng.normal(size=(3, 2, 4, 5)) * 0.3 + 0.1).astype(dtype)
    gain = rng.uniform(0.5, 1.5, size=(5,)).astype("float32")
    y = ws_ops.standardize_weights(kernel, (0, 1, 2), 1e-5)
    z = ws_ops.scaled_standardize_weights(kernel, [-4, -3, -2], gain, 1e-6, gamma=RELU_GAMMA)
    stored = keras.backend.standardize_dtype(keras.ops.convert_to_tensor(kernel).dtype)  # JAX without x64: float32
    stats_dtype = "float64" if stored == "float64" else "float32"
    assert keras.backend.standardize_dtype(y.dtype) == stats_dtype
    tol = dict(rtol=1e-9, atol=1e-9) if stats_dtype == "float64" else {}
    assert_close(to_numpy(y), ref.standardize(kernel, "conv", 1e-5), **tol)
    assert_close(to_numpy(z), ref.scaled_standardize(kernel, "conv", gain, 1e-6, RELU_GAMMA), **tol)
    # the transposed layout: output channels on axis 2, fan-in over (0, 1, 3)
    t = ws_ops.standardize_weights(kernel, (0, 1, 3), 1e-5)
    assert_close(to_numpy(t), ref.standardize(kernel, "transpose", 1e-5), **tol)


FAN_IN_ONE = [
    (wsl.WSConv1D, dict(filters=4, kernel_size=1), (2, 5, 1)),
    (wsl.WSConv2D, dict(filters=4, kernel_size=1), (2, 5, 5, 1)),
    (wsl.WSConv2D, dict(filters=4, kernel_size=1, groups=2), (2, 5, 5, 2)),  # one input channel per group
    (wsl.WSConv3D, dict(filters=2, kernel_size=1), (2, 3, 3, 3, 1)),
    (wsl.WSDepthwiseConv2D, dict(kernel_size=1), (2, 5, 5, 3)),
    (wsl.WSConv2DTranspose, dict(filters=4, kernel_size=1, strides=2), (2, 5, 5, 1)),
    (wsl.WSDense, dict(units=3), (4, 1)),
    (wsl.ScaledWSConv2D, dict(filters=4, kernel_size=1), (2, 5, 5, 1)),
]


@pytest.mark.parametrize("cls, kwargs, shape", FAN_IN_ONE, ids=lambda v: getattr(v, "__name__", None))
def test_fan_in_one_raises_at_build(cls, kwargs, shape):
    layer = make(cls, **kwargs, name="tiny")
    with pytest.raises(ValueError, match=rf"{cls.__name__} \(layer 'tiny'\): the kernel of shape .* has fan-in 1"):
        layer.build(shape)
    assert not layer.weights  # refused before the kernel exists
    with pytest.raises(ValueError, match="fan-in 1"):
        cls(**kwargs)(keras.Input(shape[1:]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(ws_epsilon=0.0), r"WSConv2D \(layer '.*'\): invalid `ws_epsilon`=0.0. Pass a positive float"),
    (dict(ws_epsilon=float("nan")), r"`ws_epsilon`=nan"),
    (dict(ws_epsilon=True), r"`ws_epsilon`=True"),
])
def test_bad_epsilon_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        wsl.WSConv2D(4, 3, **kwargs)


def test_bad_gamma_raises():
    with pytest.raises(ValueError, match=r"ScaledWSConv2D .*`gamma`=0.0.*1.7128585504 for ReLU"):
        wsl.ScaledWSConv2D(4, 3, gamma=0.0)


@pytest.mark.parametrize("cls, plain_cls, kwargs, shape", CONFIGS[::2], ids=CONFIG_IDS[::2])
def test_weights_move_between_ws_and_keras_layers(cls, plain_cls, kwargs, shape):
    plain = make(plain_cls, **keras_kwargs(kwargs))
    plain.build(shape)
    randomize(plain, seed=5)
    layer = make(cls, **kwargs)
    layer.build(shape)
    extra = [np.full(w.shape, 0.5, "float32") for w in layer.weights if w.name == "gain"]  # Scaled WS: + gain
    layer.set_weights(plain.get_weights() + extra)
    for a, b in zip(layer.get_weights(), plain.get_weights() + extra):
        np.testing.assert_array_equal(a, b)
    weights = {w.name: to_numpy(w) for w in layer.weights}
    assert_close(to_numpy(layer.standardized_kernel()), oracle_kernel(layer, weights))
    back = make(plain_cls, **keras_kwargs(kwargs))
    back.build(shape)
    back.set_weights(layer.get_weights()[: len(back.weights)])
    x = data(shape)
    np.testing.assert_array_equal(to_numpy(back(x)), to_numpy(plain(x)))


def _conv_net(ws):
    conv, dense = (wsl.WSConv2D, wsl.WSDense) if ws else (K.Conv2D, K.Dense)
    return keras.Sequential([keras.Input((6, 6, 3)), make(conv, 4, 3, name="conv"), K.BatchNormalization(name="bn"),
                             K.Flatten(), make(dense, 2, name="head")])


def test_keras_weights_files_load_through_a_plain_twin(tmp_path):
    """Keras keys `.weights.h5` entries by class name (`layers/conv2d` vs `layers/ws_conv2d`), so a plain model's
    weights file does not load into its WS version directly: load it into the plain twin, then `set_weights`."""
    plain = _conv_net(ws=False)
    for layer in plain.layers:
        randomize(layer, seed=8)
    plain.save_weights(tmp_path / "plain.weights.h5")
    ws = _conv_net(ws=True)
    with pytest.raises(ValueError):
        ws.load_weights(tmp_path / "plain.weights.h5")
    twin = _conv_net(ws=False)
    twin.load_weights(tmp_path / "plain.weights.h5")
    ws.set_weights(twin.get_weights())
    for a, b in zip(ws.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_scaled_ws_gain_init_and_fan_in_scaling():
    layer = make(wsl.ScaledWSConv2D, 5, 3, gamma=RELU_GAMMA)
    layer.build((2, 6, 6, 4))
    assert [w.name for w in layer.weights] == ["kernel", "bias", "gain"]
    assert [w.name for w in layer.trainable_weights] == ["kernel", "bias", "gain"]
    np.testing.assert_array_equal(to_numpy(layer.gain), np.ones(5, "float32"))
    assert layer.ws_epsilon == 1e-6 and layer.gamma == RELU_GAMMA
    randomize(layer)
    layer.gain.assign(np.ones(5, "float32"))
    fan_in = 3 * 3 * 4
    scaled = to_numpy(layer.standardized_kernel()).astype("float64")
    plain_ws = ref.standardize(to_numpy(layer.kernel), "conv", 1e-6)
    assert_close(scaled, plain_ws * RELU_GAMMA / np.sqrt(fan_in))
    # sum_j W_hat_ij**2 = gamma**2 (up to epsilon): unit-variance, uncorrelated inputs give output variance gamma**2
    assert_close((scaled**2).sum(axis=(0, 1, 2)), np.full(5, RELU_GAMMA**2), rtol=1e-4)
    gain = np.array([0.5, 1.0, 2.0, -1.0, 0.0], "float32")
    layer.gain.assign(gain)
    assert_close(to_numpy(layer.standardized_kernel()), scaled * gain)
    # ScaledWSConv2D(gamma=1) == WSConv2D * I**-0.5 (same epsilon)
    unit = make(wsl.ScaledWSConv2D, 5, 3, ws_epsilon=1e-5)
    unit.build((2, 6, 6, 4))
    unit.set_weights(layer.get_weights()[:2] + [np.ones(5, "float32")])
    assert_close(to_numpy(unit.standardized_kernel()), ref.standardize(to_numpy(layer.kernel), "conv", 1e-5) / 6.0)
    assert unit.get_config()["gain_initializer"]["class_name"] == "Ones"


GRADIENT_CASES = [
    (wsl.WSConv2D, dict(filters=4, kernel_size=2, groups=2, padding="same"), (1, 3, 3, 4)),
    (wsl.WSConv2DTranspose, dict(filters=2, kernel_size=3, strides=2, padding="same"), (1, 2, 2, 3)),
    (wsl.ScaledWSConv1D, dict(filters=3, kernel_size=3, gamma=RELU_GAMMA, ws_epsilon=1e-3), (2, 5, 2)),
]  # every registered case also goes through the conformance suite's finite-difference check


@pytest.mark.parametrize("cls, kwargs, shape", GRADIENT_CASES, ids=lambda v: getattr(v, "__name__", None))
def test_gradient_reaches_the_raw_kernel(cls, kwargs, shape):
    layer = make(cls, **kwargs)
    layer.build(shape)
    weights = randomize(layer)
    x = data(shape)
    y_shape = tuple(layer.compute_output_shape(shape))
    upstream = np.random.default_rng(7).normal(size=y_shape).astype("float32")
    y, dx, dweights = layer_gradients(layer, x, upstream)
    w64 = {k: v.astype("float64") for k, v in weights.items()}
    oracle = oracle_of(cls)

    def loss(x64, **replaced):
        out, _ = oracle(x64, {**w64, **replaced}, True, **kwargs)
        return float(np.sum(out * upstream))

    assert_close(dx, numerical_gradient(loss, x.astype("float64")), err_msg="d/dx", **GRADIENT)
    grads = dict(zip([w.name for w in layer.trainable_weights], dweights))
    for name, grad in grads.items():
        expected = numerical_gradient(lambda v: loss(x.astype("float64"), **{name: v}), w64[name])
        assert_close(grad, expected, err_msg=f"d/d{name}", **GRADIENT)
    # Scale and shift invariance per output unit: dL/dW sums to 0 over the fan-in, and is orthogonal to W - mean
    # (exactly so at epsilon = 0).
    raw, grad = w64["kernel"], grads["kernel"].astype("float64")
    axes = ref.FAN_IN_AXES[LAYOUT[cls]](raw.ndim)
    centred = raw - raw.mean(axis=axes, keepdims=True)
    scale = np.abs(grad).sum(axis=axes) * np.abs(centred).max()
    assert np.all(np.abs(grad.sum(axis=axes)) <= 1e-4 * np.abs(grad).sum(axis=axes) + 1e-6)
    assert np.all(np.abs((grad * centred).sum(axis=axes)) <= 1e-2 * scale + 1e-6)


@pytest.mark.parametrize("kind", ["overflow", "fine"])
def test_mixed_float16_reads_the_float32_master_kernel(kind):
    keras.config.set_dtype_policy("mixed_float16")
    layer = make(wsl.WSConv2D, 4, 3, padding="same")
    shape = (2, 5, 5, 3)
    layer.build(shape)
    assert all(w.dtype == "float32" for w in layer.weights)
    noise = np.random.default_rng(0).normal(size=layer.kernel.shape)
    # "overflow": squares of 300s overflow float16 (max 65504), so float16 statistics would give inf.
    # "fine": float16's spacing at 8 is 0.0078, so a rounded copy would lose the deviations of 0.002 that the
    # float32 master kernel keeps. Only statistics of the float32 master kernel standardize both correctly.
    kernel = (300.0 * noise if kind == "overflow" else 8.0 + 0.002 * noise).astype("float32")
    layer.kernel.assign(kernel)
    layer.bias.assign(np.zeros(4, "float32"))
    x = data(shape)
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    y = to_numpy(y).astype("float64")
    assert np.isfinite(y).all()
    expected, _ = ref.ws_conv_oracle(x.astype("float16").astype("float64"), {"kernel": kernel.astype("float64"),
                                     "bias": np.zeros(4)}, True, padding="same")
    assert np.abs(expected).max() > 1.0  # a real signal, not the zero kernel of a failed variance
    assert_close(y, expected, dtype="float16", atol=2e-3 * np.abs(expected).max())


def test_mixed_float16_fit_step_updates_float32_kernel_and_gain():
    keras.config.set_dtype_policy("mixed_float16")
    model = keras.Sequential([
        keras.Input((6, 6, 3)),
        make(wsl.ScaledWSConv2D, 4, 3, padding="same", gamma=RELU_GAMMA),
        K.GroupNormalization(groups=2),
        K.ReLU(),
        K.GlobalAveragePooling2D(),
        make(wsl.WSDense, 2),
    ])
    for i, layer in enumerate(model.layers):
        randomize(layer, seed=20 + i)
    model.compile(optimizer="sgd", loss="mse")
    before = [to_numpy(w) for w in model.trainable_weights]
    model.fit(data((4, 6, 6, 3)), np.ones((4, 2), "float32"), epochs=1, batch_size=4, verbose=0)
    for w, old in zip(model.trainable_weights, before):
        assert w.dtype == "float32"
        assert np.isfinite(to_numpy(w)).all()
        assert not np.array_equal(to_numpy(w), old), f"{w.name} unchanged"


def test_lora_delta_is_standardized_with_the_kernel():
    layer = make(wsl.WSConv2D, 4, 3, lora_rank=2, lora_alpha=4)
    layer.build((2, 5, 5, 3))
    weights = randomize(layer)
    assert [w.name for w in layer.trainable_weights] == ["bias", "lora_kernel_a", "lora_kernel_b"]
    effective = weights["kernel"] + 2.0 * (weights["lora_kernel_a"] @ weights["lora_kernel_b"])
    assert_close(to_numpy(layer.standardized_kernel()), ref.standardize(effective, "conv", 1e-5))
    folded = fold_weight_standardization(keras.Sequential([keras.Input((5, 5, 3)), layer]))
    assert type(folded.layers[0]) is K.Conv2D and "lora_rank" not in folded.layers[0].get_config()
    x = data((2, 5, 5, 3))
    assert_close(to_numpy(folded(x)), to_numpy(layer(x)))


def test_ws_dense_refuses_quantization():
    layer = make(wsl.WSDense, 4)
    layer.build((2, 3))
    with pytest.raises(NotImplementedError, match="fold_weight_standardization"):
        layer.quantize("int8")


# --------------------------------------------------------------------------------------------- folding
def functional_model():
    inputs = keras.Input((8, 8, 3), name="image")
    h = make(wsl.WSConv2D, 6, 3, padding="same", use_bias=False, name="stem")(inputs)
    h = K.BatchNormalization(name="bn")(h)
    h = K.ReLU()(h)
    h = make(wsl.WSDepthwiseConv2D, 3, padding="same", name="dw")(h)
    h = make(wsl.ScaledWSConv2D, 4, 3, strides=2, gamma=RELU_GAMMA, name="scaled")(h)
    up = make(wsl.WSConv2DTranspose, 3, 2, strides=2, name="up")(h)
    h = K.GlobalAveragePooling2D()(up)
    outputs = make(wsl.WSDense, 2, name="head")(h)
    return keras.Model(inputs, outputs, name="ws_net")


def sequential_model():
    return keras.Sequential([
        keras.Input((9, 3), name="series"),
        make(wsl.WSConv1D, 4, 3, padding="causal"),
        make(wsl.ScaledWSConv1D, 4, 3),
        K.GroupNormalization(groups=2),
        K.Flatten(),
        make(wsl.WSDense, 3),
    ], name="ws_seq")


def _randomize_model(model):
    for i, layer in enumerate(model.layers):
        if layer.weights and not isinstance(layer, K.BatchNormalization):
            randomize(layer, seed=10 + i)
    bn = [layer for layer in model.layers if isinstance(layer, K.BatchNormalization)]
    for layer in bn:  # non-trivial moving statistics
        layer.set_weights([np.random.default_rng(3).uniform(0.5, 1.5, w.shape).astype("float32")
                           for w in layer.weights])


@pytest.fixture(scope="module")
def folded_models(tmp_path_factory):
    """{kind: (model, folded, x, expected, path)} for a Functional and a Sequential model, folded and saved."""
    folder = tmp_path_factory.mktemp("folded")
    result = {}
    for kind, build_model, shape in (("functional", functional_model, (2, 8, 8, 3)),
                                     ("sequential", sequential_model, (2, 9, 3))):
        model = build_model()
        _randomize_model(model)
        x = data(shape, seed=4)
        expected = to_numpy(model(x, training=False))
        folded = fold_weight_standardization(model)
        folded.save(folder / f"{kind}.keras")
        np.save(folder / f"{kind}_x.npy", x)
        result[kind] = (model, folded, x, expected, folder / kind)
    return result


@pytest.mark.parametrize("kind", ["functional", "sequential"])
def test_folding_gives_a_plain_keras_model_with_equal_outputs(folded_models, kind):
    model, folded, x, expected, _ = folded_models[kind]
    assert type(folded) is type(model) and folded.name == model.name
    assert not any(isinstance(layer, wsl.WeightStandardizationMixin) for layer in folded.layers)
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    assert [layer.name for layer in folded.layers if isinstance(layer, K.InputLayer)] == [
        layer.name for layer in model.layers if isinstance(layer, K.InputLayer)]
    for layer in model.layers:
        if isinstance(layer, wsl.WeightStandardizationMixin):
            clone = folded.get_layer(layer.name)
            assert type(clone) is layer._plain_layer
            assert_close(to_numpy(clone.kernel), oracle_kernel(layer, {w.name: to_numpy(w) for w in layer.weights}))
    assert_close(to_numpy(folded(x, training=False)), expected)
    # The source model is unchanged and shares no variable with the folded one.
    assert {id(v) for v in model.weights}.isdisjoint({id(v) for v in folded.weights})
    assert_close(to_numpy(model(x, training=False)), expected)
    assert "keras_norms" not in json.dumps(folded.get_config())


def test_saved_folded_models_load_without_keras_norms(folded_models):
    """Both saved folded models load and run in a fresh process (same backend) that never imports keras_norms."""
    script = ["import sys, numpy as np, keras"]
    for kind, (_, _, _, _, stem) in folded_models.items():
        script += [
            f"m = keras.saving.load_model({str(stem) + '.keras'!r})",
            f"np.save({str(stem) + '_y.npy'!r}, keras.ops.convert_to_numpy(m(np.load({str(stem) + '_x.npy'!r}),"
            " training=False)))",
        ]
    script += [
        "assert not [k for k in sys.modules if k.startswith('keras_norms')], 'keras_norms was imported'",
        "print('backend', keras.backend.backend())",
    ]
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    stem = next(iter(folded_models.values()))[4]
    done = subprocess.run([sys.executable, "-c", "\n".join(script)], env=env, cwd=stem.parent,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["backend", keras.backend.backend()], done.stdout
    for _, _, _, expected, stem in folded_models.values():
        assert_close(np.load(str(stem) + "_y.npy"), expected)


class _Block(keras.layers.Layer):
    """A custom layer holding a WS layer: keras.models.clone_model cannot rebuild its inside."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = make(wsl.WSConv2D, 4, 3, padding="same")

    def call(self, x):
        return self.conv(x)


def test_fold_warns_about_ws_layers_inside_custom_layers():
    inputs = keras.Input((5, 5, 3))
    model = keras.Model(inputs, _Block()(inputs))
    randomize(model.layers[1].conv)
    with pytest.warns(UserWarning, match="were not folded"):
        folded = fold_weight_standardization(model)
    x = data((2, 5, 5, 3))
    assert_close(to_numpy(folded(x)), to_numpy(model(x)))  # still equivalent, weights copied


def test_fold_refuses_an_unbuilt_model():
    with pytest.raises(ValueError, match="built Functional or Sequential"):
        fold_weight_standardization(keras.Sequential([wsl.WSConv2D(4, 3)]))

"""convert_normalization, freeze_normalization, fold_batch_normalization (issue 7).

One Keras Applications ResNet50 (weights=None, 32x32 input, random BN
weights and statistics) is built per module and converted to every target:
it must build and keep every carried weight bit-equal; forward and backward
run, for every target, on a small residual model with the same layer kinds
(tests/test_applications.py trains converted Applications, ResNet50 GN+WS on
JAX among them). The identity target and folding must keep the outputs. Small
Sequential and nested models cover the rest.
"""

import warnings

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms.models.convert import TARGETS
from keras_norms.models.convert import convert_normalization
from keras_norms.models.fold import fold_batch_normalization
from keras_norms.models.freeze import freeze_normalization
from keras_norms.layers import conversion_targets
from keras_norms.layers import is_batch_normalization
from keras_norms.layers import is_normalization
from keras_norms.layers import weight_standardization as wsl
from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.tolerances import assert_close

K = keras.layers

# target -> (class name, options, {new weight: old BN weight} copied bit-equal)
AFFINE = {"gamma": "gamma", "beta": "beta"}
ALL = {**AFFINE, "moving_mean": "moving_mean", "moving_variance": "moving_variance"}
EXPECTED = {
    "batch_norm": ("BatchNormalization", {}, ALL),
    "ghost_batch_norm": ("GhostBatchNormalization", {"virtual_batch_size": 2}, ALL),
    "batch_group_norm": ("BatchGroupNormalization", {}, {**AFFINE, "moving_mean": "moving_mean"}),
    "group_norm": ("GroupNormalization", {}, AFFINE),
    "instance_norm": ("InstanceNormalization", {}, AFFINE),
    "layer_norm": ("LayerNormalization", {}, AFFINE),
    "batch_channel_norm": ("BatchChannelNormalization", {}, ALL),
    "filter_response_norm": ("FilterResponseNormalization", {}, AFFINE),
    "evonorm_s0": ("EvoNormS0", {}, AFFINE),
    "evonorm_b0": ("EvoNormB0", {}, {**AFFINE, "moving_variance": "moving_variance"}),
    "memorized_batch_norm": ("MemorizedBatchNormalization", {}, AFFINE),
}


def test_every_registered_target_is_tested():
    assert set(TARGETS) == set(EXPECTED)


def numpy_weights(layer):
    return {w.name: to_numpy(w) for w in layer.weights}


@pytest.fixture(scope="module")
def resnet():
    """(model, x, y_inference, {layer name: {weight name: array}}): ResNet50 with random, well-conditioned BN."""
    model = keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, K.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights([
                rng.uniform(0.5, 1.5, shape).astype("float32"),  # gamma
                rng.uniform(-0.1, 0.1, shape).astype("float32"),  # beta
                rng.uniform(-0.1, 0.1, shape).astype("float32"),  # moving_mean
                rng.uniform(0.5, 1.5, shape).astype("float32"),  # moving_variance
            ])
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    weights = {layer.name: numpy_weights(layer) for layer in model.layers}
    return model, x, to_numpy(model(x, training=False)), weights


def assert_carried(original, converted, target, weights, ws):
    """Every convolution and other layer keeps all its weights; each BN what EXPECTED says."""
    class_name, _, mapping = EXPECTED[target]
    assert [layer.name for layer in converted.layers] == [layer.name for layer in original.layers]
    for layer in original.layers:
        new = converted.get_layer(layer.name)
        new_weights = numpy_weights(new)
        if isinstance(layer, K.BatchNormalization):
            assert type(new) is getattr(keras_norms, class_name), layer.name  # not Keras's class of the same name
            for new_name, old_name in mapping.items():
                np.testing.assert_array_equal(new_weights[new_name], weights[layer.name][old_name], err_msg=layer.name)
            continue
        if isinstance(layer, K.Conv2D):
            assert type(new) is (wsl.WSConv2D if ws else K.Conv2D), layer.name
        else:
            assert type(new) is type(layer), layer.name
        assert new_weights.keys() == weights[layer.name].keys(), layer.name
        for name, value in weights[layer.name].items():
            np.testing.assert_array_equal(new_weights[name], value, err_msg=f"{layer.name}/{name}")


@pytest.mark.parametrize("target", list(EXPECTED))
def test_resnet50_converts_and_keeps_weights(resnet, target):
    model, x, expected, weights = resnet
    _, options, _ = EXPECTED[target]
    ws = target != "batch_norm"
    converted = convert_normalization(model, target, convolutions="ws" if ws else None, **options)
    assert type(converted) is type(model) and converted.name == model.name
    assert_carried(model, converted, target, weights, ws)
    bn = converted.get_layer("conv2_block1_1_bn")  # Keras Applications: axis=3, epsilon=1.001e-5
    assert bn.axis == 3 and bn.epsilon == pytest.approx(1.001e-5)
    if "groups" in bn.get_config():
        assert bn.get_config()["groups"] == 32
    check_derived_state(target, converted, weights)
    if target == "batch_norm":  # the identity: same outputs as the Keras BN model
        assert_close(to_numpy(converted(x, training=False)), expected)


# A ResNet50 forward and backward costs 10-40 s on JAX and torch (eager): every target trains on the small
# residual model below instead (same layer kinds, Keras Applications' axis=3 and epsilon=1.001e-5); the
# Applications train in tests/test_applications.py and in the smoke run of examples/finetune_applications.py.


def assert_trains(model, x, classes):
    """Forward and backward in training mode: every trainable weight gets a finite, non-zero gradient."""
    upstream = np.random.default_rng(1).normal(size=(x.shape[0], classes)).astype("float32")
    y, dx, grads = layer_gradients(model, x, upstream, training=True)
    assert y.shape == (x.shape[0], classes) and np.isfinite(y).all() and np.isfinite(dx).all()
    assert len(grads) == len(model.trainable_weights)
    for variable, grad in zip(model.trainable_weights, grads):
        assert np.isfinite(grad).all(), variable.path
    dead = [v.path for v, g in zip(model.trainable_weights, grads) if not np.any(g)]
    assert not dead, f"no gradient reaches {dead}"


def small_residual_model():
    inputs = keras.Input((8, 8, 3))
    x = K.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = K.BatchNormalization(axis=3, epsilon=1.001e-5, name="bn1")(x)
    x = K.ReLU()(x)
    y = K.Conv2D(16, 3, padding="same", name="conv2")(x)
    y = K.BatchNormalization(axis=3, epsilon=1.001e-5, name="bn2")(y)
    x = K.ReLU()(K.Add()([x, y]))
    x = K.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, K.Dense(4)(x), name="small_residual")


@pytest.mark.parametrize("target", list(EXPECTED))
def test_every_target_trains_on_a_small_residual_model(target):
    model = small_residual_model()
    _, options, _ = EXPECTED[target]
    converted = convert_normalization(model, target, convolutions="ws", **options)
    assert type(converted.get_layer("bn2")).__name__ == EXPECTED[target][0]
    x = np.random.default_rng(4).normal(size=(4, 8, 8, 3)).astype("float32")
    assert_trains(converted, x, classes=4)


def test_fused_activations_on_resnet50(resnet):
    """FRN: each ReLU that only a BN feeds becomes a TLU of the same name (33 in ResNet50: the stem's and two per
    bottleneck block; the ReLU after each residual Add stays); at conversion TLU(tau=0) is that ReLU exactly."""
    model, x, _, _ = resnet
    kept = convert_normalization(model, "filter_response_norm")
    fused = convert_normalization(model, "filter_response_norm", activations="fuse")
    assert [layer.name for layer in fused.layers] == [layer.name for layer in model.layers]
    tlus = [layer.name for layer in fused.layers if isinstance(layer, keras_norms.TLU)]
    expected = ["conv1_relu"] + [
        f"conv{stage}_block{block}_{i}_relu"
        for stage, blocks in ((2, 3), (3, 4), (4, 6), (5, 3)) for block in range(1, blocks + 1) for i in (1, 2)
    ]
    assert tlus == expected
    assert all(fused.get_layer(name).axis == 3 for name in tlus)
    assert isinstance(fused.get_layer("conv2_block1_out"), K.Activation), "the ReLU after an Add is kept"
    for layer in model.layers:  # every weight carried as without fusing (test_resnet50_converts_and_keeps_weights)
        if layer.name not in tlus:
            expected_weights = numpy_weights(kept.get_layer(layer.name))
            got = numpy_weights(fused.get_layer(layer.name))
            assert got.keys() == expected_weights.keys(), layer.name
            for name, value in expected_weights.items():
                np.testing.assert_array_equal(got[name], value, err_msg=f"{layer.name}/{name}")
    for training in (False, True):
        np.testing.assert_array_equal(to_numpy(fused(x, training=training)), to_numpy(kept(x, training=training)))


@pytest.mark.parametrize("target", ["evonorm_b0", "evonorm_s0"])
def test_fused_activations_remove_the_relu_after_evonorm(target):
    model = keras.Sequential([
        keras.Input((6, 6, 3)),
        K.Conv2D(8, 3, padding="same", name="conv"),
        K.BatchNormalization(name="bn"),
        K.Activation("relu", name="act"),
        K.Conv2D(8, 1, name="head"),
        K.BatchNormalization(name="head_bn"),
    ])
    options = {"groups": 4} if target == "evonorm_s0" else {}
    kept = convert_normalization(model, target, **options)
    fused = convert_normalization(model, target, activations="fuse", **options)
    assert [type(layer).__name__ for layer in fused.layers] == [
        "Conv2D", EXPECTED[target][0], "Identity", "Conv2D", EXPECTED[target][0]]
    assert fused.get_layer("act").name == "act"
    x = np.random.default_rng(2).normal(size=(3, 6, 6, 3)).astype("float32")
    # The EvoNorm's own output, negative values included, now reaches the next convolution; before, its ReLU.
    evonorm_out = to_numpy(keras.Model(fused.inputs[0], fused.get_layer("act").output)(x, training=False))
    kept_out = to_numpy(keras.Model(kept.inputs[0], kept.get_layer("act").output)(x, training=False))
    assert (evonorm_out < 0).any()
    assert_close(kept_out, np.maximum(evonorm_out, 0.0))
    assert_trains(keras.Sequential([fused, K.GlobalAveragePooling2D(), K.Dense(3)]), x, classes=3)


def test_only_plain_relus_are_fused():
    model = keras.Sequential([
        keras.Input((6, 6, 3)),
        K.Conv2D(8, 3, name="conv"),
        K.BatchNormalization(name="bn"),
        K.ReLU(max_value=6.0, name="relu6"),
        K.Conv2D(8, 1, name="conv2"),
        K.BatchNormalization(name="bn2"),
        K.Activation("swish", name="swish"),
        K.Conv2D(8, 1, name="conv3"),
        K.BatchNormalization(name="bn3"),
        K.ReLU(name="relu"),
    ])
    fused = convert_normalization(model, "filter_response_norm", activations="fuse")
    kinds = {layer.name: type(layer).__name__ for layer in fused.layers}
    assert (kinds["relu6"], kinds["swish"], kinds["relu"]) == ("ReLU", "Activation", "TLU")


def test_fused_model_saves_and_loads(tmp_path):
    fused = convert_normalization(small_residual_model(), "filter_response_norm", activations="fuse")
    tlu = [layer for layer in fused.layers if isinstance(layer, keras_norms.TLU)]
    assert len(tlu) == 1, "bn1's ReLU is fused; the one after the Add is not"
    tlu[0].tau.assign(np.linspace(-0.5, 0.5, 16).astype("float32"))
    x = np.random.default_rng(5).normal(size=(2, 8, 8, 3)).astype("float32")
    path = tmp_path / "fused.keras"
    fused.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(x, training=False)), to_numpy(fused(x, training=False)))


def check_derived_state(target, converted, weights):
    """BGN's second moment and MBN's memory come from the BN statistics: variance + mean**2 (float64 here)."""
    if target not in ("batch_group_norm", "memorized_batch_norm"):
        return
    old = weights["conv3_block2_2_bn"]
    second_moment = old["moving_variance"].astype(np.float64) + old["moving_mean"].astype(np.float64) ** 2
    new = converted.get_layer("conv3_block2_2_bn")
    if target == "batch_group_norm":
        assert_close(to_numpy(new.moving_second_moment), second_moment)
        return
    memory_mean, memory_second = to_numpy(new.memory_mean), to_numpy(new.memory_second_moment)
    assert memory_mean.shape == (4, 128)  # the default memory_size x 128 channels
    np.testing.assert_array_equal(memory_mean[0], old["moving_mean"])
    assert_close(memory_second[0], second_moment)
    assert not memory_mean[1:].any() and not memory_second[1:].any()
    assert float(to_numpy(new.memory_count)) == 1.0


def test_folding_keeps_the_outputs(resnet):
    model, x, expected, weights = resnet
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every ResNet50 BN follows a Conv2D: all fold
        folded = fold_batch_normalization(model)
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    assert not any(isinstance(layer, K.BatchNormalization) for layer in folded.layers)
    assert type(folded.get_layer("conv1_bn")) is K.Identity
    conv = folded.get_layer("conv1_conv")
    assert type(conv) is K.Conv2D and conv.use_bias
    # conv1_conv has a bias b: W' = W s, b' = (b - mean) s + beta with s = gamma / sqrt(var + eps).
    bn, old = weights["conv1_bn"], weights["conv1_conv"]
    s = bn["gamma"].astype(np.float64) / np.sqrt(bn["moving_variance"].astype(np.float64) + 1.001e-5)
    assert_close(to_numpy(conv.kernel), old["kernel"] * s)
    assert_close(to_numpy(conv.bias), (old["bias"] - bn["moving_mean"]) * s + bn["beta"])
    # Measured: ~1e-6 of the output scale on all backends; the float32 tolerance holds.
    assert_close(to_numpy(folded(x, training=False)), expected)
    assert_close(to_numpy(model(x, training=False)), expected)  # the source is unchanged


# ------------------------------------------------------------------------------------ small models
def sequential_model():
    return keras.Sequential([
        keras.Input((6, 6, 3), name="image"),
        K.Conv2D(24, 3, padding="same", use_bias=False, name="conv"),
        K.BatchNormalization(axis=3, epsilon=1.001e-5, name="bn"),
        K.ReLU(name="relu"),
        K.DepthwiseConv2D(3, padding="same", name="dw"),
        K.BatchNormalization(name="dw_bn"),
        K.GlobalAveragePooling2D(name="pool"),
        K.Dense(4, name="dense"),
        K.BatchNormalization(name="dense_bn"),
    ], name="seq")


def nested_model():
    inner_inputs = keras.Input((6, 6, 8), name="inner_in")
    h = K.Conv2D(8, 3, padding="same", name="inner_conv")(inner_inputs)
    h = K.BatchNormalization(name="inner_bn")(h)
    inner = keras.Model(inner_inputs, K.ReLU(name="inner_relu")(h), name="inner")
    inputs = keras.Input((6, 6, 3), name="image")
    h = K.Conv2D(8, 1, name="stem")(inputs)
    h = K.BatchNormalization(name="stem_bn")(h)
    h = inner(h)
    h = K.Add(name="add")([h, K.Conv2D(8, 1, name="skip")(inputs)])  # a BN that follows no convolution:
    h = K.BatchNormalization(name="add_bn")(h)  # converted, but not foldable
    return keras.Model(inputs, K.GlobalAveragePooling2D(name="pool")(h), name="outer")


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):
        if not isinstance(layer, keras.Model):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()])


def leaf_weights(model):
    return {layer.name: numpy_weights(layer) for layer in model._flatten_layers() if not isinstance(layer, keras.Model)}


def test_sequential_model_converts():
    model = sequential_model()
    randomize(model)
    before = leaf_weights(model)
    converted = convert_normalization(model, "group_norm", convolutions="ws")
    assert type(converted) is keras.Sequential and converted.name == "seq"
    types = {layer.name: type(layer) for layer in converted.layers}
    assert types == {
        "conv": wsl.WSConv2D, "bn": keras_norms.GroupNormalization, "relu": K.ReLU, "dw": wsl.WSDepthwiseConv2D,
        "dw_bn": keras_norms.GroupNormalization, "pool": K.GlobalAveragePooling2D, "dense": wsl.WSDense,
        "dense_bn": keras_norms.GroupNormalization,
    }
    # Default groups: the largest divisor of C that is <= 32 with >= 2 channels per group.
    assert [converted.get_layer(n).groups for n in ("bn", "dw_bn", "dense_bn")] == [12, 12, 2]
    assert converted.get_layer("bn").axis == 3 and converted.get_layer("bn").epsilon == pytest.approx(1.001e-5)
    after = leaf_weights(converted)
    for name in ("conv", "dw", "dense", "relu", "pool"):
        assert after[name].keys() == before[name].keys()
        for weight, value in before[name].items():
            np.testing.assert_array_equal(after[name][weight], value)
    for name in ("bn", "dw_bn", "dense_bn"):
        for weight in ("gamma", "beta"):
            np.testing.assert_array_equal(after[name][weight], before[name][weight])
    y = to_numpy(converted(np.ones((2, 6, 6, 3), "float32"), training=True))
    assert y.shape == (2, 4) and np.isfinite(y).all()


def test_sequential_model_folds():
    model = sequential_model()
    randomize(model)
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 3)).astype("float32")
    expected = to_numpy(model(x, training=False))
    folded = fold_batch_normalization(model)
    assert type(folded) is keras.Sequential
    assert [type(layer) for layer in folded.layers if layer.name.endswith("bn")] == [K.Identity] * 3
    assert_close(to_numpy(folded(x, training=False)), expected)


def test_nested_model_converts_and_folds():
    model = nested_model()
    randomize(model, seed=3)
    before = leaf_weights(model)
    converted = convert_normalization(model, "batch_channel_norm", convolutions="ws")
    inner = converted.get_layer("inner")
    assert isinstance(inner, keras.Model) and inner is not model.get_layer("inner")
    assert type(inner.get_layer("inner_bn")) is keras_norms.BatchChannelNormalization
    assert type(inner.get_layer("inner_conv")) is wsl.WSConv2D
    assert type(converted.get_layer("stem")) is wsl.WSConv2D
    assert type(converted.get_layer("add_bn")) is keras_norms.BatchChannelNormalization
    after = leaf_weights(converted)
    assert type(converted.get_layer("skip")) is K.Conv2D  # feeds no normalization
    for name in ("stem", "inner_conv", "skip"):
        for weight, value in before[name].items():
            np.testing.assert_array_equal(after[name][weight], value)
    for name in ("stem_bn", "inner_bn", "add_bn"):
        for weight in ("gamma", "beta", "moving_mean", "moving_variance"):
            np.testing.assert_array_equal(after[name][weight], before[name][weight])
    x = np.random.default_rng(4).normal(size=(2, 6, 6, 3)).astype("float32")
    assert np.isfinite(to_numpy(converted(x, training=True))).all()

    expected = to_numpy(model(x, training=False))
    with pytest.warns(UserWarning, match=r"\['add_bn'\]"):
        folded = fold_batch_normalization(model)
    assert type(folded.get_layer("inner").get_layer("inner_bn")) is K.Identity
    assert type(folded.get_layer("stem_bn")) is K.Identity
    assert type(folded.get_layer("add_bn")) is K.BatchNormalization
    assert_close(to_numpy(folded(x, training=False)), expected)


def test_identity_target_matches_in_training_mode_too():
    model = sequential_model()
    randomize(model, seed=5)
    converted = convert_normalization(model, "batch_norm")
    x = np.random.default_rng(6).normal(size=(4, 6, 6, 3)).astype("float32")
    assert_close(to_numpy(converted(x, training=True)), to_numpy(model(x, training=True)))
    # Both updated their moving statistics the same way.
    for name in ("bn", "dw_bn", "dense_bn"):
        assert_close(to_numpy(converted.get_layer(name).moving_mean), to_numpy(model.get_layer(name).moving_mean))


def test_training_the_converted_model_leaves_the_source_intact():
    """Regression: carried weights were assigned as the same JAX array, which fit() then donated (deleted)."""
    model = sequential_model()
    randomize(model, seed=11)
    before = leaf_weights(model)
    converted = convert_normalization(model, "batch_channel_norm", convolutions="ws")
    converted.compile(optimizer="sgd", loss="mse")
    converted.fit(np.ones((4, 6, 6, 3), "float32"), np.zeros((4, 4), "float32"), batch_size=4, verbose=0)
    for name, values in leaf_weights(model).items():
        for weight, value in values.items():
            np.testing.assert_array_equal(value, before[name][weight])


def test_callable_target_and_options():
    model = sequential_model()
    randomize(model, seed=7)
    converted = convert_normalization(
        model, lambda layer: K.LayerNormalization(axis=-1, epsilon=layer.epsilon, name=layer.name)
    )
    ln = converted.get_layer("bn")
    assert type(ln) is K.LayerNormalization and ln.epsilon == pytest.approx(1.001e-5)
    np.testing.assert_array_equal(to_numpy(ln.gamma), to_numpy(model.get_layer("bn").gamma))
    converted = convert_normalization(model, "batch_group_norm", groups=4, examples_per_group=1)
    assert converted.get_layer("bn").groups == 4 and converted.get_layer("bn").examples_per_group == 1
    assert type(converted.get_layer("conv")) is K.Conv2D  # convolutions=None keeps them


def test_freeze_normalization_runs_bn_in_inference_mode():
    model = convert_normalization(sequential_model(), "batch_channel_norm")
    randomize(model, seed=8)
    names = freeze_normalization(model)
    assert names == ["bn", "dw_bn", "dense_bn"]
    assert [layer.trainable for layer in model.layers] == [True, False, True, True, False, True, True, False]
    state = to_numpy(model.get_layer("bn").moving_mean)
    x = np.random.default_rng(9).normal(size=(2, 6, 6, 3)).astype("float32")
    assert_close(to_numpy(model(x, training=True)), to_numpy(model(x, training=False)))
    np.testing.assert_array_equal(to_numpy(model.get_layer("bn").moving_mean), state)
    assert freeze_normalization(model, frozen=False) == names
    assert all(layer.trainable for layer in model.layers)


def test_freeze_warns_on_a_compiled_model():
    model = sequential_model()
    model.compile(optimizer="sgd", loss="mse")
    with pytest.warns(UserWarning, match="compile"):
        freeze_normalization(model)


# ------------------------------------------------------------------------------------------ errors
def test_errors_name_the_layer_and_the_fix():
    model = sequential_model()
    with pytest.raises(ValueError, match="invalid `to`='group_nrom'.*group_norm"):
        convert_normalization(model, "group_nrom")
    with pytest.raises(ValueError, match="invalid `convolutions`='scaled'"):
        convert_normalization(model, "group_norm", convolutions="scaled")
    with pytest.raises(ValueError, match="callable"):
        convert_normalization(model, lambda layer: K.LayerNormalization(), groups=2)
    with pytest.raises(ValueError, match=r"layer 'bn'.*: it has 24 channels.*`groups`=16"):
        convert_normalization(model, "group_norm", groups=16)
    with pytest.raises(ValueError, match="layer 'bn'.*virtual_batch_size"):
        convert_normalization(model, "ghost_batch_norm")
    with pytest.raises(ValueError, match="built Functional or Sequential"):
        convert_normalization(keras.Sequential([K.Conv2D(4, 3), K.BatchNormalization()]), "group_norm")
    with pytest.raises(ValueError, match="built Functional or Sequential"):
        fold_batch_normalization(keras.Sequential([K.Conv2D(4, 3), K.BatchNormalization()]))
    separable = keras.Sequential([keras.Input((6, 6, 3)), K.SeparableConv2D(4, 3, name="sep"), K.BatchNormalization()])
    with pytest.raises(ValueError, match="layer 'sep' \\(SeparableConv2D\\).*no weight-standardized"):
        convert_normalization(separable, "group_norm", groups=2, convolutions="ws")
    with pytest.raises(ValueError, match="invalid `activations`='relu'"):
        convert_normalization(model, "filter_response_norm", activations="relu")
    with pytest.raises(ValueError, match="activations='fuse' with `to`='group_norm'.*activations='keep'"):
        convert_normalization(model, "group_norm", activations="fuse")
    with pytest.raises(ValueError, match="frozen"):
        freeze_normalization(model, frozen="yes")


# ---------------------------------------------------------------- the layers' own conversion (issue 18)
def _random_bn(cls=K.BatchNormalization, channels=8, **kwargs):
    """A built BN (Keras Applications' axis=3 and epsilon) with random weights and statistics."""
    bn = cls(axis=3, epsilon=1.001e-5, name="bn", **kwargs)
    bn.build((None, 4, 4, channels))
    rng = np.random.default_rng(7)
    bn.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in bn.weights])
    return bn


@pytest.mark.parametrize("target", sorted(conversion_targets()))
@pytest.mark.parametrize("source", [K.BatchNormalization, keras_norms.BatchNormalization])
def test_each_layer_converts_from_a_batch_normalization_itself(target, source):
    cls = conversion_targets()[target]
    assert cls.conversion_target == target
    bn = _random_bn(source)
    old = numpy_weights(bn)
    _, options, mapping = EXPECTED[target]
    layer = cls.from_batch_normalization(bn, **options)
    assert type(layer) is cls and layer.built and layer.name == "bn"
    assert layer.axis == 3 and layer.epsilon == pytest.approx(1.001e-5)
    if "groups" in layer.get_config():
        assert layer.groups == 4  # 8 channels: the largest divisor <= 32 leaving >= 2 channels per group
    new = numpy_weights(layer)
    for new_name, old_name in mapping.items():
        np.testing.assert_array_equal(new[new_name], old[old_name], err_msg=new_name)
    second_moment = old["moving_variance"].astype(np.float64) + old["moving_mean"].astype(np.float64) ** 2
    if target == "batch_group_norm":
        assert_close(new["moving_second_moment"], second_moment)
    if target == "memorized_batch_norm":
        assert_close(new["memory_second_moment"][0], second_moment)
        assert float(new["memory_count"]) == 1.0


def test_conversion_options_win_and_groups_must_divide():
    bn = _random_bn()
    layer = keras_norms.BatchGroupNormalization.from_batch_normalization(bn, groups=2, epsilon=1e-3, name="bgn")
    assert (layer.groups, layer.epsilon, layer.name) == (2, 1e-3, "bgn")
    with pytest.raises(ValueError, match=r"it has 8 channels, which `groups`=3 does not divide"):
        keras_norms.EvoNormS0.from_batch_normalization(bn, groups=3)
    # With final_affine="group", the per-channel gamma and beta of the BN go to BCN's batch step.
    bcn = keras_norms.BatchChannelNormalization.from_batch_normalization(bn, final_affine="group")
    np.testing.assert_array_equal(to_numpy(bcn.batch_gamma), to_numpy(bn.gamma))
    np.testing.assert_array_equal(to_numpy(bcn.batch_beta), to_numpy(bn.beta))
    assert tuple(bcn.gamma.shape) == (4,)


def test_one_predicate_each_for_batch_normalization_and_normalization():
    bn_like = [K.BatchNormalization(), keras_norms.BatchNormalization(), keras_norms.GhostBatchNormalization(
        virtual_batch_size=2)]
    others = [K.LayerNormalization(), K.GroupNormalization(groups=1), keras_norms.TLU(), keras_norms.NormPropReLU(),
              keras_norms.FilterResponseNormalization(), keras_norms.BatchGroupNormalization()]
    kernels = [K.Dense(2), keras_norms.WSConv2D(2, 3), keras_norms.NormPropDense(2)]
    assert [is_batch_normalization(layer) for layer in bn_like + others + kernels] == [True] * 3 + [False] * 9
    assert [is_normalization(layer) for layer in bn_like + others + kernels] == [True] * 9 + [False] * 3

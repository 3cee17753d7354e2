"""Weight decay on gamma and beta (spec §5): `DecayToward` and `add_gamma_beta_decay`."""

import warnings

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms.regularizers import DecayToward
from keras_norms.regularizers import add_gamma_beta_decay
from tests.backend_utils import to_numpy
from tests.tolerances import assert_close


def penalty(w, weight_decay, target):
    """NumPy oracle: TF `l2_loss` convention, λ·½·Σ(w - t)², in float64."""
    w = np.asarray(w, np.float64)
    return weight_decay * 0.5 * np.sum((w - target) ** 2)


@keras.saving.register_keras_serializable(package="keras_norms_tests")
class LayerScale(keras.layers.Layer):
    """Not a normalization layer, but it has a `gamma` weight: must be skipped."""

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="gamma")

    def call(self, x):
        return x * self.gamma


# ------------------------------------------------------------- DecayToward
@pytest.mark.parametrize("target", [0.0, 1.0, -0.5])
def test_penalty_matches_numpy_with_the_half_convention(target):
    w = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    got = to_numpy(DecayToward(0.3, target)(w))
    assert got.shape == ()
    assert_close(got, penalty(w, 0.3, target))


def test_penalty_accepts_a_variable():
    w = np.random.default_rng(1).normal(size=(6,)).astype("float32")
    variable = keras.Variable(w)
    assert_close(to_numpy(DecayToward(2.0, 1.0)(variable)), penalty(w, 2.0, 1.0))


def test_target_zero_equals_keras_l2_of_half_the_coefficient():
    w = np.random.default_rng(2).normal(size=(7,)).astype("float32")
    ours = to_numpy(DecayToward(0.02)(w))
    theirs = to_numpy(keras.regularizers.L2(0.01)(w))
    assert_close(ours, theirs)


def test_config_round_trip_and_keras_serialization():
    reg = DecayToward(5e-4, target=1.0)
    assert reg.get_config() == {"weight_decay": 5e-4, "target": 1.0}
    again = DecayToward.from_config(reg.get_config())
    assert again.get_config() == reg.get_config()
    assert keras.saving.get_registered_name(DecayToward) == "keras_norms>DecayToward"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(reg))
    assert isinstance(restored, DecayToward)
    assert restored.get_config() == reg.get_config()
    via_get = keras.regularizers.get(keras.regularizers.serialize(reg))
    assert isinstance(via_get, DecayToward) and via_get.target == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weight_decay=-1e-4), r"DecayToward: invalid `weight_decay`=-0\.0001\. Pass a finite float >= 0"),
        (dict(weight_decay=float("nan")), r"DecayToward: invalid `weight_decay`=nan"),
        (dict(weight_decay=float("inf")), r"DecayToward: invalid `weight_decay`=inf"),
        (dict(weight_decay="1e-4"), r"DecayToward: invalid `weight_decay`='1e-4'"),
        (dict(weight_decay=True), r"DecayToward: invalid `weight_decay`=True"),
        (dict(weight_decay=1e-4, target=None), r"DecayToward: invalid `target`=None\. Pass a finite float"),
        (dict(weight_decay=1e-4, target=float("inf")), r"DecayToward: invalid `target`=inf"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DecayToward(**kwargs)


# ---------------------------------------------------------- the utility
def build_model(seed=0):
    """A functional model with every kind of norm layer, nested Sequential included."""
    inputs = keras.Input((4, 4, 8))
    x = keras.layers.BatchNormalization(name="keras_bn")(inputs)
    x = keras.layers.LayerNormalization(name="keras_ln")(x)
    x = keras.layers.GroupNormalization(groups=2, name="keras_gn")(x)
    x = keras_norms.BatchNormalization(name="kn_bn")(x)
    x = LayerScale(name="layer_scale")(x)
    inner = keras.Sequential(
        [keras.layers.Dense(6, name="inner_dense"), keras_norms.BatchNormalization(name="inner_bn")],
        name="inner",
    )
    x = inner(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs, name="net")


NORM_LAYERS = ["keras_bn", "keras_ln", "keras_gn", "kn_bn", "inner_bn"]


def norm_layers(model):
    return [layer for layer in model._flatten_layers() if layer.name in NORM_LAYERS]


def randomize_gamma_beta(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in norm_layers(model):
        for variable in (layer.gamma, layer.beta):
            variable.assign(rng.normal(1.0, 0.5, size=variable.shape).astype("float32"))


def expected_penalty(model, weight_decay):
    return sum(
        penalty(to_numpy(layer.gamma), weight_decay, 1.0) + penalty(to_numpy(layer.beta), weight_decay, 0.0)
        for layer in norm_layers(model)
    )


def total(losses):
    return sum(float(to_numpy(loss)) for loss in losses)


def test_adds_one_term_per_gamma_and_beta_with_the_numpy_value():
    model = build_model()
    assert model.losses == []
    randomize_gamma_beta(model)
    changed = add_gamma_beta_decay(model, 0.1)
    assert sorted(changed) == sorted(NORM_LAYERS)
    assert len(model.losses) == 2 * len(NORM_LAYERS)
    assert_close(total(model.losses), expected_penalty(model, 0.1))
    for layer in norm_layers(model):
        assert layer.gamma.regularizer.get_config() == {"weight_decay": 0.1, "target": 1.0}
        assert layer.beta.regularizer.get_config() == {"weight_decay": 0.1, "target": 0.0}
        assert layer.gamma_regularizer is layer.gamma.regularizer
        assert layer.beta_regularizer is layer.beta.regularizer
    assert model.get_layer("layer_scale").gamma.regularizer is None
    assert model.get_layer("inner").get_layer("inner_dense").kernel.regularizer is None


def test_calling_twice_replaces_rather_than_stacks():
    model = build_model()
    add_gamma_beta_decay(model, 0.1)
    add_gamma_beta_decay(model, 0.3)
    randomize_gamma_beta(model, seed=3)
    assert len(model.losses) == 2 * len(NORM_LAYERS)
    assert_close(total(model.losses), expected_penalty(model, 0.3))


@pytest.mark.parametrize("rms", [keras.layers.RMSNormalization, keras_norms.RMSNormalization], ids=["keras", "ours"])
def test_rms_normalization_gets_scale_decay_only(rms):
    model = keras.Sequential([keras.Input((5,)), rms(name="rms")])
    layer = model.get_layer("rms")
    scale = np.random.default_rng(4).normal(size=(5,)).astype("float32")
    layer.scale.assign(scale)
    assert add_gamma_beta_decay(model, 0.5) == ["rms"]
    assert len(model.losses) == 1
    assert_close(total(model.losses), penalty(scale, 0.5, 1.0))


def test_scale_and_center_false_keep_only_the_existing_weight():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.BatchNormalization(scale=False, name="no_gamma"),
            keras_norms.BatchNormalization(center=False, name="no_beta"),
        ]
    )
    assert add_gamma_beta_decay(model, 1.0) == ["no_gamma", "no_beta"]
    assert len(model.losses) == 2
    config = model.get_layer("no_beta").get_config()
    assert config["gamma_regularizer"]["config"] == {"weight_decay": 1.0, "target": 1.0}


def test_get_config_from_config_and_keras_file_keep_the_regularizers(tmp_path):
    model = build_model()
    randomize_gamma_beta(model, seed=5)
    add_gamma_beta_decay(model, 0.2)
    expected = total(model.losses)

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    assert len(clone.losses) == 2 * len(NORM_LAYERS)
    assert_close(total(clone.losses), expected)

    path = tmp_path / "decay.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert len(loaded.losses) == 2 * len(NORM_LAYERS)
    assert_close(total(loaded.losses), expected)
    gamma_regularizer = loaded.get_layer("inner").get_layer("inner_bn").gamma.regularizer
    assert isinstance(gamma_regularizer, DecayToward) and gamma_regularizer.target == 1.0


def test_training_on_the_penalty_alone_moves_gamma_toward_1_and_beta_toward_0():
    model = build_model()
    for layer in norm_layers(model):
        layer.gamma.assign(np.full(layer.gamma.shape, 2.0, "float32"))
        layer.beta.assign(np.full(layer.beta.shape, 0.5, "float32"))
    add_gamma_beta_decay(model, 1.0)
    # The data loss is exactly zero (with a gradient for every weight), so
    # the penalty alone moves the weights.
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        loss=lambda y_true, y_pred: 0.0 * keras.ops.mean(y_pred),
    )
    x = np.random.default_rng(6).normal(size=(4, 4, 4, 8)).astype("float32")
    y = np.zeros((4, 4, 4, 2), "float32")
    steps = 3
    model.fit(x, y, epochs=steps, batch_size=4, verbose=0)
    # SGD on λ·½·(w - t)²: w - t shrinks by (1 - lr·λ) = 0.9 per step.
    for layer in norm_layers(model):
        gamma, beta = to_numpy(layer.gamma), to_numpy(layer.beta)
        assert np.all(np.abs(gamma - 1.0) < 1.0) and np.all(np.abs(beta) < 0.5)
        assert_close(gamma, 1.0 + 0.9**steps, err_msg=layer.name)
        assert_close(beta, 0.5 * 0.9**steps, err_msg=layer.name)


def test_frozen_layers_contribute_no_terms():
    model = build_model()
    for layer in norm_layers(model):
        layer.trainable = False
    add_gamma_beta_decay(model, 0.1)
    assert model.losses == []
    model.get_layer("keras_bn").trainable = True  # attached, dormant while frozen
    assert len(model.losses) == 2


def test_unbuilt_model_raises():
    model = keras.Sequential([keras.layers.Dense(3), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match=r"add_gamma_beta_decay: model '.*' is not built.*model\.build"):
        add_gamma_beta_decay(model, 1e-4)


@pytest.mark.parametrize("weight_decay", [-1.0, float("nan"), None])
def test_bad_weight_decay_raises(weight_decay):
    with pytest.raises(ValueError, match=r"add_gamma_beta_decay: invalid `weight_decay`"):
        add_gamma_beta_decay(build_model(), weight_decay)


def test_not_a_model_raises_type_error():
    with pytest.raises(TypeError, match=r"add_gamma_beta_decay: `model` must be a Keras model"):
        add_gamma_beta_decay("model", 1e-4)


def test_warns_when_the_optimizer_decays_gamma_and_beta_toward_zero():
    model = build_model()
    model.compile(optimizer=keras.optimizers.AdamW(weight_decay=0.01), loss="mse")
    with pytest.warns(UserWarning, match=r"decoupled weight decay.*exclude_from_weight_decay"):
        add_gamma_beta_decay(model, 1e-4)


def test_no_warning_when_gamma_and_beta_are_excluded():
    model = build_model()
    optimizer = keras.optimizers.AdamW(weight_decay=0.01)
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta"])
    model.compile(optimizer=optimizer, loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        add_gamma_beta_decay(model, 1e-4)


def test_warns_when_the_train_function_was_already_made():
    model = build_model()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.zeros((2, 4, 4, 8), "float32"), np.zeros((2, 4, 4, 2), "float32"), verbose=0)
    with pytest.warns(UserWarning, match=r"already has a train function.*model\.compile"):
        add_gamma_beta_decay(model, 1e-4)


def test_next_batch_norm_cancels_a_common_rescaling_of_gamma_and_beta():
    """Spec §5.2 [derived], the check quoted in docs/guides/gamma_beta_decay.md.

    BN -> ReLU -> bias-free conv -> BN: multiplying all of the first BN's
    gamma and beta by k > 0 leaves the second BN's training output unchanged
    up to epsilon (here 1e-10), while rescaling a single channel does not.
    """
    inputs = keras.Input((5, 5, 4))
    x = keras_norms.BatchNormalization(name="bn1")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(3, 3, use_bias=False)(x)
    outputs = keras_norms.BatchNormalization(epsilon=1e-10, name="bn2")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 5, 5, 4)).astype("float32")
    bn1 = model.get_layer("bn1")
    gamma = rng.uniform(0.5, 1.5, size=(4,)).astype("float32")
    beta = rng.normal(size=(4,)).astype("float32")

    def output(g, b):
        bn1.gamma.assign(g)
        bn1.beta.assign(b)
        return to_numpy(model(x, training=True))

    reference = output(gamma, beta)
    assert_close(output(3.0 * gamma, 3.0 * beta), reference, rtol=1e-4, atol=1e-4)
    one_channel = np.array([3.0, 1.0, 1.0, 1.0], "float32")
    assert not np.allclose(output(one_channel * gamma, one_channel * beta), reference, atol=1e-2)

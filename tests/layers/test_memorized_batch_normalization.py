"""MemorizedBatchNormalization and Double Forward training (spec §9).

The memory is replayed step by step against the float64 NumPy oracle
(`tests/reference/memorized_batch_norm.py`), and Double Forward is checked
through `fit` on the current backend: after a step the memory holds the
batch's moments under the *updated* weights, computed here in NumPy from the
weights after the step.
"""

import keras
import numpy as np
import pytest

import keras_norms
from tests.backend_utils import to_numpy
from tests.reference.memorized_batch_norm import MemoryReplay
from tests.reference.memorized_batch_norm import batch_raw_moments
from tests.tolerances import assert_close

MBN = keras_norms.MemorizedBatchNormalization


def batches(count, shape, seed=0):
    rng = np.random.default_rng(seed)
    # Different means and scales per batch, so that pooling over slots matters.
    return [(rng.normal(size=shape) * rng.uniform(0.5, 2.0) + rng.normal() * 2).astype("float32") for _ in range(count)]


def state(layer):
    return {w.name: to_numpy(w) for w in layer.non_trainable_weights}


# ------------------------------------------------------------------ the layer, replayed step by step


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(memory_size=3), (4, 3, 2, 5)),
        (dict(memory_size=4, memory_weights=[1.0, 0.5, 0.25, 0.125], epsilon=1e-5), (3, 5)),
        (dict(memory_size=2, axis=1, center=False), (2, 4, 3)),
    ],
    ids=["uniform_k3", "decaying_k4_dense", "k2_axis1_unscaled_batch2"],
)
def test_replay_matches_reference_step_by_step(kwargs, shape):
    axis = kwargs.get("axis", -1)
    channels = shape[axis]
    layer = MBN(**kwargs)
    layer.build(shape)
    rng = np.random.default_rng(5)
    gamma = rng.uniform(0.5, 1.5, channels).astype("float32")
    layer.gamma.assign(gamma)
    beta = None
    if layer.center:
        beta = rng.normal(size=channels).astype("float32")
        layer.beta.assign(beta)
    replay = MemoryReplay(channels, gamma=gamma, beta=beta, **{k: v for k, v in kwargs.items() if k != "center"})
    probe = batches(1, shape, seed=99)[0]
    # Before any batch: inference with mean 0 and variance 1 (documented), not NaN.
    assert_close(to_numpy(layer(probe, training=False)), replay(probe, training=False))
    for step, x in enumerate(batches(2 * kwargs["memory_size"] + 3, shape)):
        y = to_numpy(layer(x, training=True))
        assert_close(y, replay(x, training=True), err_msg=f"training output, step {step}")
        for name, value in replay.state().items():
            assert_close(state(layer)[name], value, err_msg=f"{name} after step {step}")
        y = to_numpy(layer(probe, training=False))
        assert_close(y, replay(probe, training=False), err_msg=f"inference, step {step}")
    # The counter is wrapped into [k, 2k) once full: exact in float32 however long training runs.
    k = kwargs["memory_size"]
    assert k <= float(state(layer)["memory_count"]) < 2 * k


def test_memory_fills_then_overwrites_the_oldest_slot():
    layer = MBN(memory_size=3)
    xs = batches(5, (6, 2))
    for x in xs:
        layer(x, training=True)
    m1, m2 = state(layer)["memory_mean"], state(layer)["memory_second_moment"]
    # Slots after 5 batches: [b3, b4, b2] (slot = n mod 3).
    for slot, batch in zip(range(3), (xs[3], xs[4], xs[2])):
        e1, e2 = batch_raw_moments(batch)
        assert_close(m1[slot], e1)
        assert_close(m2[slot], e2)


def test_first_batch_and_memory_size_one_are_batch_normalization():
    x = batches(3, (8, 3, 3, 4))
    keras_bn = keras.layers.BatchNormalization(epsilon=1e-3)
    ours = MBN(memory_size=1)
    for xi in x:
        assert_close(to_numpy(ours(xi, training=True)), to_numpy(keras_bn(xi, training=True)))
    first = MBN(memory_size=4)
    assert_close(to_numpy(first(x[0], training=True)), to_numpy(keras.layers.BatchNormalization()(x[0], training=True)))


def test_empty_memory_inference_equals_a_fresh_keras_batch_normalization():
    x = batches(1, (5, 4, 4, 3))[0]
    assert_close(
        to_numpy(MBN()(x, training=False)), to_numpy(keras.layers.BatchNormalization()(x, training=False))
    )


def test_inference_is_batch_independent_and_uses_the_memory_not_the_batch():
    layer = MBN(memory_size=2)
    for x in batches(3, (6, 3)):
        layer(x, training=True)
    x = batches(1, (6, 3), seed=3)[0]
    together = to_numpy(layer(x, training=False))
    alone = np.concatenate([to_numpy(layer(x[i : i + 1], training=False)) for i in range(6)])
    assert_close(together, alone)


def test_memorized_moments_receive_no_gradient():
    """Only the current batch's moments carry gradient (spec §9.2): d loss / d memory = 0."""
    layer = MBN(memory_size=3)
    for x in batches(2, (4, 3)):
        layer(x, training=True)
    x = batches(1, (4, 3), seed=8)[0]
    upstream = np.random.default_rng(1).normal(size=x.shape).astype("float32")
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_weights]

        def loss(non_trainable):
            y, _ = layer.stateless_call(trainable, non_trainable, jnp.asarray(x), training=True)
            return jnp.sum(y * upstream)

        grads = jax.grad(loss)([v.value for v in layer.non_trainable_weights])
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch([v.value for v in layer.non_trainable_weights])
            y = layer(x, training=True)
            total = tf.reduce_sum(y * upstream)
        grads = tape.gradient(total, [v.value for v in layer.non_trainable_weights])
    else:
        import torch

        memory = [v.value for v in layer.non_trainable_weights]
        for tensor in memory:
            tensor.requires_grad_(True)
        try:
            y = layer(torch.as_tensor(x), training=True)
            grads = torch.autograd.grad((y * torch.as_tensor(upstream)).sum(), memory, allow_unused=True)
        finally:
            for tensor in memory:
                tensor.requires_grad_(False)
    for variable, grad in zip(layer.non_trainable_weights, grads):
        if grad is not None:
            np.testing.assert_array_equal(to_numpy(grad), 0.0, err_msg=variable.name)


def test_memory_is_saved_and_restored(tmp_path):
    model = keras.Sequential([keras.Input((3,)), MBN(memory_size=3)])
    for x in batches(2, (5, 3)):
        model(x, training=True)
    model.save(tmp_path / "mbn.keras")
    loaded = keras.saving.load_model(tmp_path / "mbn.keras")
    for name, value in state(model.layers[0]).items():
        np.testing.assert_array_equal(state(loaded.layers[0])[name], value)
    assert float(state(loaded.layers[0])["memory_count"]) == 2.0


def test_compiled_fit_matches_the_replayed_memory():
    """Ring-buffer writes under the backend's compiled train function (jit/tf.function)."""
    x = batches(1, (12, 4), seed=2)[0]
    model = keras.Sequential([keras.Input((4,)), MBN(memory_size=2)])  # gamma, beta: something to train
    model.compile(optimizer="sgd", loss="mse", jit_compile="auto")
    model.fit(x, x, batch_size=4, epochs=1, shuffle=False, verbose=0)
    replay = MemoryReplay(4, memory_size=2)
    for start in range(0, 12, 4):
        replay(x[start : start + 4], training=True)
    for name, value in replay.state().items():
        assert_close(state(model.layers[0])[name], value, err_msg=name)


# ------------------------------------------------------------------ Double Forward


def dense_mbn_model(dropout=0.0, memory_size=3, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    h = keras.layers.Dense(4, name="features")(inputs)
    if dropout:
        h = keras.layers.Dropout(dropout)(h)
    h = MBN(memory_size=memory_size, name="mbn")(h)
    outputs = keras.layers.Dense(1, name="head")(keras.layers.ReLU()(h))
    return keras.Model(inputs, outputs)


def data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype("float32"), rng.normal(size=(n, 1)).astype("float32")


def features_moments(model, x):
    """E[h], E[h^2] of the Dense features, in float64 NumPy from the model's current weights."""
    kernel, bias = (np.asarray(w, np.float64) for w in model.get_layer("features").get_weights())
    return batch_raw_moments(x.astype("float64") @ kernel + bias)


def fit_steps(model, x, y, steps, batch_size):
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    model.fit(x, y, batch_size=batch_size, epochs=steps * batch_size // len(x), shuffle=False, verbose=0)


@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["plain", "dropout"])
def test_double_forward_memory_holds_the_batch_under_the_updated_weights(dropout):
    x, y = data()
    model = keras_norms.with_double_forward(dense_mbn_model(dropout))
    before = features_moments(model, x)
    fit_steps(model, x, y, steps=1, batch_size=8)
    mbn = model.get_layer("mbn")
    after = features_moments(model, x)
    assert np.abs(after[0] - before[0]).max() > 1e-2, "the step must move the features for this test to mean anything"
    assert float(state(mbn)["memory_count"]) == 1.0  # once per step, after Forward 2
    # Forward 2 ran with Dropout off (training=False) and the weights after the update.
    assert_close(state(mbn)["memory_mean"][0], after[0])
    assert_close(state(mbn)["memory_second_moment"][0], after[1])


def test_without_double_forward_the_memory_holds_the_batch_before_the_update():
    x, y = data()
    model = dense_mbn_model()
    before = features_moments(model, x)
    fit_steps(model, x, y, steps=1, batch_size=8)
    mbn = model.get_layer("mbn")
    assert float(state(mbn)["memory_count"]) == 1.0
    assert_close(state(mbn)["memory_mean"][0], before[0])
    assert_close(state(mbn)["memory_second_moment"][0], before[1])


def test_double_forward_counter_advances_once_per_step():
    x, y = data(12)
    model = keras_norms.with_double_forward(dense_mbn_model(memory_size=2))
    fit_steps(model, x, y, steps=3, batch_size=4)
    mbn = model.get_layer("mbn")
    # 3 batches through a 2-slot memory: counter 3 (in [k, 2k)), the last batch in slot 0.
    assert float(state(mbn)["memory_count"]) == 3.0
    last = features_moments(model, x[8:12])
    assert_close(state(mbn)["memory_mean"][0], last[0])
    assert_close(state(mbn)["memory_second_moment"][0], last[1])


def test_double_forward_does_not_update_keras_batch_normalization_twice():
    def build():
        keras.utils.set_random_seed(1)
        inputs = keras.Input((5,))
        h = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(4)(inputs))
        h = MBN(name="mbn")(h)
        return keras.Model(inputs, keras.layers.Dense(1)(h))

    x, y = data()
    plain, double = build(), keras_norms.with_double_forward(build())
    for model in (plain, double):
        fit_steps(model, x, y, steps=1, batch_size=8)
    for a, b in zip(plain.get_layer("bn").non_trainable_weights, double.get_layer("bn").non_trainable_weights):
        assert_close(to_numpy(b), to_numpy(a), err_msg=a.name)


def test_double_forward_mixin_on_a_subclassed_model():
    class Net(keras_norms.DoubleForwardMixin, keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.features = keras.layers.Dense(4)
            self.mbn = MBN(memory_size=2)
            self.head = keras.layers.Dense(1)

        def call(self, x, training=False):
            return self.head(self.mbn(self.features(x), training=training))

    keras.utils.set_random_seed(0)
    x, y = data()
    model = Net()
    model(x[:1])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    kernel, bias = (np.asarray(w, np.float64) for w in model.features.get_weights())
    expected = batch_raw_moments(x.astype("float64") @ kernel + bias)
    assert float(state(model.mbn)["memory_count"]) == 1.0
    assert_close(state(model.mbn)["memory_mean"][0], expected[0])
    assert_close(state(model.mbn)["memory_second_moment"][0], expected[1])


def test_with_double_forward_shares_weights_saves_and_loads(tmp_path):
    x, y = data()
    base = dense_mbn_model()
    model = keras_norms.with_double_forward(base)
    assert isinstance(model, keras_norms.DoubleForwardMixin)
    assert keras_norms.with_double_forward(model) is model
    fit_steps(model, x, y, steps=1, batch_size=8)
    for a, b in zip(base.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.save(tmp_path / "df.keras")
    loaded = keras.saving.load_model(tmp_path / "df.keras")
    assert isinstance(loaded, keras_norms.DoubleForwardMixin)
    for name, value in state(model.get_layer("mbn")).items():
        np.testing.assert_array_equal(state(loaded.get_layer("mbn"))[name], value)
    np.testing.assert_array_equal(to_numpy(loaded(x, training=False)), to_numpy(model(x, training=False)))


def test_with_double_forward_rejects_a_model_without_symbolic_inputs():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="DoubleForwardMixin"):
        keras_norms.with_double_forward(Net())


def test_double_forward_without_memorized_layers_trains_as_usual():
    x, y = data()
    keras.utils.set_random_seed(0)
    plain = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
    keras.utils.set_random_seed(0)
    double = keras_norms.with_double_forward(keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)]))
    for model in (plain, double):
        fit_steps(model, x, y, steps=1, batch_size=8)
    for a, b in zip(plain.get_weights(), double.get_weights()):
        assert_close(b, a)

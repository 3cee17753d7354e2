"""The layers compile: XLA on TensorFlow (`jit_compile=True`), `jax.jit` on JAX.

Compiled results must equal eager ones; Ghost BN must also work when the
batch size is unknown while tracing (a TensorFlow graph with a `None` batch).
"""

import keras
import numpy as np
import pytest

import keras_norms
from tests.backend_utils import to_numpy
from tests.tolerances import assert_close

BACKEND = keras.backend.backend()


def small_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(8, 3, use_bias=False),
            keras_norms.GhostBatchNormalization(virtual_batch_size=4),
            keras.layers.ReLU(),
            keras.layers.Conv2D(8, 3, use_bias=False),
            keras_norms.BatchNormalization(inference_example_weight=0.25),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(20, 6, 6, 3)).astype("float32"), rng.normal(size=(20, 2)).astype("float32")


@pytest.mark.skipif(BACKEND == "torch", reason="XLA compilation is a TensorFlow/JAX feature")
def test_fit_compiled_equals_fit_eager():
    x, y = data()
    models = {}
    for jit in (True, False):
        model = small_model()
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", jit_compile=jit, run_eagerly=not jit)
        # batch 10 with ghosts of 4: uneven ghosts (4, 4, 2) inside the compiled step.
        model.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0)
        models[jit] = model
    for a, b in zip(models[True].get_weights(), models[False].get_weights()):
        assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert_close(models[True].predict(x, verbose=0), models[False].predict(x, verbose=0), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="an unknown batch size while tracing exists in TF graphs only")
@pytest.mark.parametrize("jit_compile", [False, True])
def test_ghost_batches_with_unknown_batch_size_in_a_tf_graph(jit_compile):
    import tensorflow as tf

    layer = keras_norms.GhostBatchNormalization(virtual_batch_size=4, momentum=0.5)
    layer.build((None, 5, 3))
    eager = keras_norms.GhostBatchNormalization(virtual_batch_size=4, momentum=0.5)
    eager.build((None, 5, 3))

    @tf.function(input_signature=[tf.TensorSpec([None, 5, 3], tf.float32)], jit_compile=jit_compile)
    def train(x):
        return layer(x, training=True)

    for batch in (8, 10, 3):
        x = np.random.default_rng(batch).normal(size=(batch, 5, 3)).astype("float32")
        assert_close(to_numpy(train(x)), to_numpy(eager(x, training=True)))
        assert_close(to_numpy(layer.moving_variance), to_numpy(eager.moving_variance))


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit")
def test_jax_jit_of_stateless_call_equals_eager():
    import jax

    x = data()[0]
    model = small_model()
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]

    @jax.jit
    def step(tv, ntv, x):
        return model.stateless_call(tv, ntv, x, training=True)

    y_jit, ntv_jit = step(tv, ntv, x)
    y_eager = model(x, training=True)
    assert_close(to_numpy(y_jit), to_numpy(y_eager))
    for new, variable in zip(ntv_jit, model.non_trainable_variables):
        assert_close(to_numpy(new), to_numpy(variable))
    text = jax.jit(lambda x: model.stateless_call(tv, ntv, x, training=True)[0]).lower(x).as_text()
    assert "stablehlo" in text or "mhlo" in text

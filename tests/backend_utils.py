"""Backend-specific test helpers: gradients of a layer call, both modes of a call, tensor conversion.

Tests may branch on the backend; the package's layers may not.
"""

import keras
import numpy as np


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def call_both_modes(layer, x):
    """`(inference output, training output)` of two calls from the same state, then the state after training.

    `layer` is a layer or a model. Eager calls (inference first); on JAX one jitted function computes both (one
    compilation per layer) and the new state is written back, so the variables hold the state after training on
    every backend.
    """
    if keras.backend.backend() != "jax":
        return to_numpy(layer(x, training=False)), to_numpy(layer(x, training=True))
    import jax

    def both(trainable, non_trainable, x):
        y_inference, _ = layer.stateless_call(trainable, non_trainable, x, training=False)
        y_training, state = layer.stateless_call(trainable, non_trainable, x, training=True)
        return y_inference, y_training, state

    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    y_inference, y_training, state = jax.jit(both)(trainable, non_trainable, x)
    for variable, value in zip(layer.non_trainable_variables, state):
        variable.assign(value)
    return to_numpy(y_inference), to_numpy(y_training)


def layer_gradients(layer, x, upstream, training=True):
    """Output and gradients of `sum(layer(x) * upstream)`.

    Returns:
        `(y, dx, dweights)` as NumPy arrays; `dweights` follows
        `layer.trainable_weights`. The layer's state updates happen as in a
        normal call.
    """
    backend = keras.backend.backend()
    x = np.asarray(x)
    upstream = np.asarray(upstream)
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=training)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
        variables = [v.value for v in layer.trainable_weights]
        dx, *dw = tape.gradient(loss, [xt] + variables)
        return to_numpy(y), to_numpy(dx), [to_numpy(g) for g in dw]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_weights]
        non_trainable = [v.value for v in layer.non_trainable_weights]

        def loss_fn(xt, tv):
            y, new_nt = layer.stateless_call(tv, non_trainable, xt, training=training)
            return jnp.sum(y.astype(jnp.float32) * upstream), (y, new_nt)

        # Under jax.jit, as `fit` runs it: one compilation per test instead of one per primitive and shape
        # in eager mode (5 s per call for the one-pass group norm with its gradients, 0.3 s jitted).
        step = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))
        (_, (y, new_nt)), (dx, dw) = step(jnp.asarray(x), trainable)
        for variable, value in zip(layer.non_trainable_weights, new_nt):
            variable.assign(value)
        return to_numpy(y), to_numpy(dx), [to_numpy(g) for g in dw]
    if backend == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        for v in layer.trainable_weights:
            v.value.grad = None
        y = layer(xt, training=training)
        (y.float() * torch.as_tensor(upstream)).sum().backward()
        dw = [v.value.grad for v in layer.trainable_weights]
        dw = [np.zeros(v.shape) if g is None else g.detach().cpu().numpy() for v, g in zip(layer.trainable_weights, dw)]
        return y.detach().cpu().numpy(), xt.grad.detach().cpu().numpy(), dw
    raise NotImplementedError(f"no gradient helper for backend {backend}")

"""Double Forward train step, JAX trainer (see `keras_norms.models.double_forward`).

The JAX trainer is stateless: Keras's step returns the new state
`(trainable, non_trainable, optimizer, metrics)` instead of writing
variables. Forward 2 is a `stateless_call` with the updated trainable
variables and the non-trainable ones that Forward 1 produced; the
non-trainable variables it returns (the refreshed memories) replace them.
No gradient is taken through it. `phase(layers, name)` and
`forward_kwargs(model)` come from `keras_norms.models.double_forward`, which calls
this step.
"""

import keras


def double_forward_train_step(model, train_step, layers, state, data, *, phase, forward_kwargs):
    """Forward 1 and the update (Keras's stateless step), then a stateless Forward 2."""
    with phase(layers, "hold"):
        logs, state = train_step(state, data)
    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    with phase(layers, "refresh"):
        _, non_trainable = model.stateless_call(trainable, non_trainable, x, **forward_kwargs(model))
    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

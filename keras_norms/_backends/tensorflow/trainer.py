"""Double Forward train step, TensorFlow trainer (see `keras_norms.models.double_forward`).

`phase(layers, name)` and `forward_kwargs(model)` come from
`keras_norms.models.double_forward`, which calls this step.
"""

import keras


def double_forward_train_step(model, train_step, layers, data, *, phase, forward_kwargs):
    """Forward 1 and the update (Keras's step, inside its gradient tape), then Forward 2.

    Forward 2 runs after the tape is closed, so it records no gradient; in
    the traced step TensorFlow orders it after the optimizer's variable
    writes (automatic control dependencies on the same resources).
    """
    with phase(layers, "hold"):
        logs = train_step(data)
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    with phase(layers, "refresh"):
        model(x, **forward_kwargs(model))
    return logs

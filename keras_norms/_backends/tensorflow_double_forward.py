"""Double Forward train step, TensorFlow trainer (see `keras_norms.double_forward`)."""

import keras

from keras_norms.double_forward import double_forward_phase
from keras_norms.double_forward import forward_kwargs


def double_forward_train_step(model, train_step, layers, data):
    """Forward 1 and the update (Keras's step, inside its gradient tape), then Forward 2.

    Forward 2 runs after the tape is closed, so it records no gradient; in
    the traced step TensorFlow orders it after the optimizer's variable
    writes (automatic control dependencies on the same resources).
    """
    with double_forward_phase(layers, "hold"):
        logs = train_step(data)
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    with double_forward_phase(layers, "refresh"):
        model(x, **forward_kwargs(model))
    return logs

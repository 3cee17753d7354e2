"""Double Forward train step, PyTorch trainer (see `keras_norms.double_forward`)."""

import keras
import torch

from keras_norms.double_forward import double_forward_phase
from keras_norms.double_forward import forward_kwargs


def double_forward_train_step(model, train_step, layers, data):
    """Forward 1 and the update (Keras's step), then Forward 2 under `torch.no_grad()`."""
    with double_forward_phase(layers, "hold"):
        logs = train_step(data)
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    with torch.no_grad(), double_forward_phase(layers, "refresh"):
        model(x, **forward_kwargs(model))
    return logs

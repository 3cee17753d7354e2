"""Double Forward train step, PyTorch trainer (see `keras_norms.models.double_forward`).

`phase(layers, name)` and `forward_kwargs(model)` come from
`keras_norms.models.double_forward`, which calls this step.
"""

import keras
import torch


def double_forward_train_step(model, train_step, layers, data, *, phase, forward_kwargs):
    """Forward 1 and the update (Keras's step), then Forward 2 under `torch.no_grad()`."""
    with phase(layers, "hold"):
        logs = train_step(data)
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    with torch.no_grad(), phase(layers, "refresh"):
        model(x, **forward_kwargs(model))
    return logs

"""Freezing normalization layers for fine-tuning.

`freeze_normalization` sets `trainable=False` on the normalization layers of
a model: in Keras 3 a frozen batch normalization runs in inference mode
(moving statistics, no updates) even under `fit`. Peer: timm
`freeze_batch_norm_2d` (BN -> FrozenBatchNorm2d).
"""

import warnings

import keras

from keras_norms.layers import is_normalization

def freeze_normalization(model, frozen=True):
    """Freezes (or unfreezes) every normalization layer of `model`, in place.

    Sets `trainable=frozen is False` on each `keras.layers.BatchNormalization`,
    `GroupNormalization`, `LayerNormalization`, `RMSNormalization` and each
    keras_norms normalization layer, at any depth (nested models and custom
    layers included); other layers are untouched. A frozen layer's
    $\\gamma,\\beta$ receive no update, and a frozen layer with batch
    statistics (batch normalization, BGN, BCN, ...) runs in **inference mode**
    even when the model is called with `training=True` (Keras 3 semantics,
    $y=\\gamma(x-\\mu_{\\text{moving}})/\\sqrt{\\sigma^2_{\\text{moving}}+\\epsilon}+\\beta$
    for BN), and its moving statistics stay as they are. This is the usual
    recipe for fine-tuning a pretrained model at a small batch size.

    Call it before `compile()`: the train function reads the trainable state
    when it is built (it warns when the model is already compiled).

    Args:
        model: a `keras.Model` (or any layer).
        frozen: bool, True to freeze, False to unfreeze. Defaults to True.

    Returns:
        The names of the layers whose `trainable` was set, in traversal
        order.

    Raises:
        ValueError: if `model` is not a Keras layer or `frozen` is not a bool.

    Example:

    ```python
    model = keras.applications.ResNet50(weights="imagenet", include_top=False)
    keras_norms.freeze_normalization(model)
    model.compile(...)  # BN layers now use their moving statistics in fit()
    ```

    Reference:
        - [Ioffe & Szegedy, 2015](https://arxiv.org/abs/1502.03167)
        - Keras, "Transfer learning & fine-tuning" guide (BatchNormalization
          with `trainable=False` runs in inference mode)
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            f"freeze_normalization: `model` must be a keras.Model or layer, received {type(model).__name__}."
        )
    if not isinstance(frozen, bool):
        raise ValueError(f"freeze_normalization: invalid `frozen`={frozen!r}. Pass True or False.")
    names = []
    for layer in model._flatten_layers(include_self=True):
        if is_normalization(layer):
            layer.trainable = not frozen
            names.append(layer.name)
    if names and getattr(model, "compiled", False):
        warnings.warn(
            "freeze_normalization: the model is already compiled; call compile() "
            "again so that training sees the new trainable state.",
            stacklevel=2,
        )
    return names

"""Folding weight-standardized layers into plain Keras layers, for export.

WS is a deterministic reparameterization of the kernel: training and
inference compute the same function, and a plain Keras layer holding the
standardized kernel reproduces the WS layer's outputs. The folded model
loads without keras_norms.
"""

import warnings

from keras import ops

from keras_norms import _clone
from keras_norms.layers.weight_standardization import WeightStandardizationMixin

# Arguments of the WS layers that their Keras counterparts do not take; LoRA
# is merged into the folded kernel.
_WS_ONLY = ("ws_epsilon", "gamma", "gain_initializer", "lora_rank", "lora_alpha")


def _plain_copy(layer):
    """An unbuilt Keras counterpart of the WS `layer` (same config and name)."""
    config = {k: v for k, v in layer.get_config().items() if k not in _WS_ONLY}
    return layer._plain_layer.from_config(config)


def _copy_weights(layer, clone):
    """Copies `layer`'s weights into `clone`: for a WS layer, its standardized kernel and its bias."""
    if isinstance(layer, WeightStandardizationMixin):
        weights = [ops.convert_to_numpy(layer.standardized_kernel())]
        if layer.bias is not None:
            weights.append(ops.convert_to_numpy(layer.bias))
        clone.set_weights(weights)
    elif clone is not layer:
        clone.set_weights(layer.get_weights())


def fold_weight_standardization(model):
    """An equivalent model with every WS layer replaced by its Keras layer.

    Each `WSConv1D/2D/3D`, `WSDepthwiseConv2D`, `WSConv2DTranspose`,
    `WSDense` and `ScaledWSConv1D/2D/3D` becomes the corresponding
    `keras.layers` layer (same name and arguments, LoRA merged) whose
    `kernel` is the standardized kernel

    $$\\hat W=\\frac{W-\\mu}{\\sqrt{\\sigma^2+\\epsilon}}\\quad\\text{or, for Scaled WS,}\\quad
      \\hat W=g\\,\\gamma\\,I^{-1/2}\\frac{W-\\mu}{\\sqrt{\\sigma^2+\\epsilon}},$$

    computed once in float32; `bias` is copied. Every other layer is cloned
    from its config with its weights copied (the input model is left
    unchanged and shares no variable with the result). The result computes
    the same function to float32 round-off, costs nothing per call for the
    standardization, and can be saved to `.keras` and loaded without
    keras_norms.

    Nested Functional and Sequential models are folded too. WS layers inside
    a custom (subclassed) layer are not reachable by
    `keras.models.clone_model`: they stay as they are, with a warning.

    Args:
        model: a built Functional or Sequential `keras.Model`.

    Returns:
        A new model of the same kind, with the same inputs and outputs.

    Raises:
        ValueError: if `model` is not a built Functional or Sequential model
            (from `keras.models.clone_model`, or for an unbuilt model).

    Example:

    ```python
    folded = keras_norms.fold_weight_standardization(model)
    folded.save("model.keras")  # loads with keras alone
    ```

    References:
        - [Qiao et al., 2019](https://arxiv.org/abs/1903.10520) (Weight
          Standardization)
        - [Brock et al., 2021a](https://arxiv.org/abs/2101.08692) (Scaled WS,
          NF-ResNets)
    """
    _clone.check_model(model, "fold_weight_standardization")

    def replace(layer):
        if isinstance(layer, WeightStandardizationMixin):
            return _plain_copy(layer)
        return layer.__class__.from_config(layer.get_config())

    folded, pairs = _clone.clone(model, replace)
    for layer, clone in pairs:
        _copy_weights(layer, clone)
    left = [layer.name for layer in folded._flatten_layers() if isinstance(layer, WeightStandardizationMixin)]
    if left:
        warnings.warn(
            f"fold_weight_standardization: the WS layers {left} sit inside custom "
            "layers that keras.models.clone_model cannot rebuild, and were not folded; "
            "the folded model still needs keras_norms to load.",
            stacklevel=2,
        )
    return folded

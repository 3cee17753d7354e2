"""Folding for export: weight-standardized and weight-normalized layers, and inference batch normalization.

`fold_weight_standardization`: WS and Weight Normalization are deterministic
reparameterizations of the kernel, so a plain Keras layer holding the
effective kernel reproduces the layer's outputs; the folded model loads
without keras_norms.
`fold_batch_normalization` merges each inference-mode batch normalization
into the convolution or dense layer before it (peer: torch
`fuse_conv_bn_eval`).
"""

import warnings

import keras
import numpy as np
from keras import ops

from keras_norms.layers import is_batch_normalization
from keras_norms.layers.weight_normalization import WeightNormalization
from keras_norms.layers.weight_standardization import WeightStandardizationMixin
from keras_norms.models import clone as _clone

# Arguments of the WS layers that their Keras counterparts do not take; LoRA
# is merged into the folded kernel.
_WS_ONLY = ("ws_epsilon", "gamma", "gain_initializer", "lora_rank", "lora_alpha")


def _reparameterized(layer):
    return isinstance(layer, (WeightStandardizationMixin, WeightNormalization))


def _plain_copy(layer):
    """An unbuilt Keras counterpart of the WS `layer`, or the layer a `WeightNormalization` wraps (same name)."""
    if isinstance(layer, WeightNormalization):
        return type(layer.layer).from_config({**layer.layer.get_config(), "name": layer.name})
    config = {k: v for k, v in layer.get_config().items() if k not in _WS_ONLY}
    return layer._plain_layer.from_config(config)


def _copy_weights(layer, clone):
    """Copies `layer`'s weights into `clone`: for a WS or WN layer, its effective kernel and its bias."""
    if _reparameterized(layer):
        if isinstance(layer, WeightNormalization):
            kernel, bias = layer.normalized_kernel(), layer.layer.bias
        else:
            kernel, bias = layer.standardized_kernel(), layer.bias
        clone.set_weights([ops.convert_to_numpy(w) for w in (kernel, bias) if w is not None])
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

    computed once in float32; `bias` is copied. Each `WeightNormalization`
    becomes the layer it wraps (with the wrapper's name), whose `kernel` is
    $w=g\\,v/\\lVert v\\rVert$ (one function for both: a model may mix WS
    and WN layers, and a single clone folds them together). Every other layer is cloned
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
        if _reparameterized(layer):
            return _plain_copy(layer)
        return layer.__class__.from_config(layer.get_config())

    folded, pairs = _clone.clone(model, replace)
    for layer, clone in pairs:
        _copy_weights(layer, clone)
    left = [layer.name for layer in folded._flatten_layers() if _reparameterized(layer)]
    if left:
        warnings.warn(
            f"fold_weight_standardization: the WS and WN layers {left} sit inside custom "
            "layers that keras.models.clone_model cannot rebuild, and were not folded; "
            "the folded model still needs keras_norms to load.",
            stacklevel=2,
        )
    return folded


# Foldable producers (exact classes) -> axis of the kernel that indexes the
# output channels ("depthwise": the last two, flattened as c * multiplier + m).
_OUTPUT_AXIS = {
    keras.layers.Conv1D: -1,
    keras.layers.Conv2D: -1,
    keras.layers.Conv3D: -1,
    keras.layers.Dense: -1,
    keras.layers.Conv1DTranspose: -2,
    keras.layers.Conv2DTranspose: -2,
    keras.layers.Conv3DTranspose: -2,
    keras.layers.DepthwiseConv1D: "depthwise",
    keras.layers.DepthwiseConv2D: "depthwise",
}


def _foldable(norm, producer, exclusive):
    """Whether the batch normalization `norm` can be folded into `producer`."""
    if producer is None or not exclusive or type(producer) not in _OUTPUT_AXIS:
        return False
    if getattr(norm, "inference_example_weight", 0.0) != 0.0:
        return False  # per-example statistics at inference: not affine
    config = producer.get_config()
    if config.get("activation", "linear") != "linear" or config.get("lora_rank"):
        return False
    if getattr(producer.dtype_policy, "quantization_mode", None):
        return False
    ndim = len(norm.input.shape)
    channel = 1 if config.get("data_format") == "channels_first" else ndim - 1
    return norm.axis % ndim == channel


def _folded_weights(producer, norm):
    """The producer's kernel and bias with `norm` (inference mode) folded in, in float64 then cast."""

    def numpy(name):
        variable = getattr(norm, name, None)
        return None if variable is None else np.asarray(keras.ops.convert_to_numpy(variable), np.float64)

    mean, variance = numpy("moving_mean"), numpy("moving_variance")
    gamma, beta = numpy("gamma"), numpy("beta")
    scale = (np.ones_like(mean) if gamma is None else gamma) / np.sqrt(variance + norm.epsilon)
    shift = (np.zeros_like(mean) if beta is None else beta) - mean * scale
    dtype = producer.kernel.dtype
    kernel = np.asarray(keras.ops.convert_to_numpy(producer.kernel), np.float64)
    axis = _OUTPUT_AXIS[type(producer)]
    if axis == "depthwise":
        kernel = kernel * scale.reshape(kernel.shape[-2:])
    else:
        shape = [1] * kernel.ndim
        shape[axis] = -1
        kernel = kernel * scale.reshape(shape)
    bias = shift
    if producer.bias is not None:
        bias = np.asarray(keras.ops.convert_to_numpy(producer.bias), np.float64) * scale + shift
    return [kernel.astype(dtype), bias.astype(dtype)]


def fold_batch_normalization(model):
    """An equivalent model, in inference mode, with batch normalization folded into the layer before it.

    Each `keras.layers.BatchNormalization` or `keras_norms.BatchNormalization`
    (Ghost BN included, with `inference_example_weight=0`) whose input is
    the output of a `Conv1D/2D/3D`, `Conv1D/2D/3DTranspose`,
    `DepthwiseConv1D/2D` or `Dense` layer (exactly these classes, no
    activation, no LoRA, not quantized), used by nothing else, along that
    layer's channel axis, is merged into it: with
    $s=\\gamma/\\sqrt{\\sigma^2_{\\text{moving}}+\\epsilon}$ per output channel,

    $$W'=W\\,s,\\qquad b'=(b-\\mu_{\\text{moving}})\\,s+\\beta ,$$

    computed in float64 and cast to the kernel's dtype; the layer gets
    `use_bias=True`, and the batch normalization becomes a
    `keras.layers.Identity` of the same name (so the structure and every
    layer name stay). The result computes what `model` computes in inference
    mode (`training=False`), to float32 round-off. Other layers are cloned
    with their weights; the input model is left unchanged and shares no
    variable with the result. Batch normalizations that cannot be folded
    stay as they are, with a warning naming them.

    Args:
        model: a built Functional or Sequential `keras.Model` (nested ones
            are folded too).

    Returns:
        A new model of the same kind, with the same inputs and outputs.

    Raises:
        ValueError: if `model` is not a built Functional or Sequential model.

    Example:

    ```python
    folded = keras_norms.fold_batch_normalization(model)
    folded.save("model.keras")
    ```

    Reference:
        - [Jacob et al., 2018](https://arxiv.org/abs/1712.05877) (batch
          normalization folding, §3.2)
        - torch `torch.nn.utils.fusion.fuse_conv_bn_eval`
    """
    _clone.check_model(model, "fold_batch_normalization")
    partner, skipped = {}, []
    for sub in _clone.submodels(model):
        for layer, producer, exclusive in _clone.producers(sub).values():
            if not is_batch_normalization(layer):
                continue
            if _foldable(layer, producer, exclusive):
                partner[id(layer)] = producer
                partner[id(producer)] = layer
            else:
                skipped.append(layer.name)

    def replace(layer):
        if id(layer) in partner and is_batch_normalization(layer):
            return keras.layers.Identity(name=layer.name)
        config = layer.get_config()
        if id(layer) in partner:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    folded, pairs = _clone.clone(model, replace)
    for layer, new in pairs:
        if id(layer) not in partner:
            new.set_weights(layer.get_weights())
        elif not is_batch_normalization(layer):
            new.set_weights(_folded_weights(layer, partner[id(layer)]))
    if skipped:
        warnings.warn(
            f"fold_batch_normalization: the batch normalizations {skipped} do not "
            "directly follow a foldable layer used by them alone (Conv*, Conv*Transpose, "
            "DepthwiseConv*, Dense without activation, on the channel axis), and were "
            "kept as they are.",
            stacklevel=2,
        )
    return folded

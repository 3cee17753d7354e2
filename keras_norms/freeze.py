"""Freezing normalization layers for fine-tuning, and folding BN for export.

`freeze_normalization` sets `trainable=False` on the normalization layers of
a model: in Keras 3 a frozen batch normalization runs in inference mode
(moving statistics, no updates) even under `fit`. `fold_batch_normalization`
merges each inference-mode batch normalization into the convolution or dense
layer before it. Peers: timm `freeze_batch_norm_2d` (BN -> FrozenBatchNorm2d),
torch `fuse_conv_bn_eval`.
"""

import warnings

import keras
import numpy as np

from keras_norms import _clone
from keras_norms.convert import is_batch_normalization
from keras_norms.layers._base import NormalizationLayer

_KERAS_NORMALIZATION = tuple(
    getattr(keras.layers, name)
    for name in ("BatchNormalization", "GroupNormalization", "LayerNormalization", "RMSNormalization")
    if hasattr(keras.layers, name)
)

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


def is_normalization(layer):
    """Whether `layer` is a Keras or keras_norms normalization layer."""
    return isinstance(layer, _KERAS_NORMALIZATION + (NormalizationLayer,)) or is_batch_normalization(layer)


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

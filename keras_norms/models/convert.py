"""Converting the batch normalization of a built model to another normalization.

`convert_normalization` rebuilds a Functional or Sequential model (a Keras
Applications ResNet or MobileNet, say) with every batch normalization layer
replaced by the chosen normalization, and optionally the convolutions that
feed them by their weight-standardized versions, carrying over the weights
that keep their meaning. Peers: timm's `convert_sync_batchnorm` and
`freeze` (torch only); kecam's `clone_model` surgery (tf.keras only).
"""

import warnings

import keras

from keras_norms.models import clone as _clone
from keras_norms.layers import conversion_targets
from keras_norms.layers import is_batch_normalization
from keras_norms.layers import weight_standardization as ws
from keras_norms.layers._base import carry_weights

# What a callable target's layer gets from the old one: the weights of these names and matching shapes.
_CALLABLE_CARRIES = {name: name for name in ("gamma", "beta", "moving_mean", "moving_variance")}


# name -> class with `from_batch_normalization`: the one table of targets, read from the layer classes.
_TARGETS = conversion_targets()
TARGETS = tuple(_TARGETS)

# Kernel layers and their weight-standardized versions (exact classes: a
# subclass may compute something else).
_WS_OF = {
    keras.layers.Conv1D: ws.WSConv1D,
    keras.layers.Conv2D: ws.WSConv2D,
    keras.layers.Conv3D: ws.WSConv3D,
    keras.layers.DepthwiseConv2D: ws.WSDepthwiseConv2D,
    keras.layers.Conv2DTranspose: ws.WSConv2DTranspose,
    keras.layers.Dense: ws.WSDense,
}
_KERNEL_LAYERS = tuple(
    getattr(keras.layers, name)
    for name in (
        "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
        "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D", "Dense", "EinsumDense",
    )
    if hasattr(keras.layers, name)
)


def _replacement(layer, to, options):
    """`(new_layer, carry(old, new) or None)` for the batch normalization `layer`.

    A registered target's layer is built and carries its weights already; a callable's gets them after cloning.
    """
    try:
        if callable(to):
            return to(layer), lambda old, new: carry_weights(old, new, _CALLABLE_CARRIES)
        return _TARGETS[to].from_batch_normalization(layer, **options), None
    except (ValueError, TypeError, NotImplementedError) as error:
        raise type(error)(
            f"convert_normalization: cannot convert layer '{layer.name}' "
            f"({type(layer).__name__}) to {to!r}: {error}"
        ) from error


def _check_target(to, options):
    if callable(to):
        if options:
            raise ValueError(
                "convert_normalization: keyword arguments "
                f"{sorted(options)} apply to registered target names only; with a "
                "callable `to`, pass them inside the callable."
            )
        return
    if not isinstance(to, str) or to not in _TARGETS:
        raise ValueError(
            f"convert_normalization: invalid `to`={to!r}. Pass one of {list(_TARGETS)}, "
            "or a callable receiving the old layer and returning the new (unbuilt) layer."
        )


def conversion_table():
    """The targets of `convert_normalization` as a Markdown table, read from the layer classes.

    One row per registered target name: the layer class, the weights it
    carries from the batch normalization and the weights it adds (each
    class's `conversion_carries` and `conversion_adds`). The fine-tuning
    guide shows it between its `<!-- generated: targets -->` markers
    (`tests/test_conversion_table.py` checks that it is current and rewrites
    it when run as a script).

    Returns:
        str: the Markdown table, one line per row, ending with a newline.
    """
    lines = ["| `to` | layer | carried from BN | new weights |", "|---|---|---|---|"]
    for name, cls in _TARGETS.items():
        lines.append(f'| `"{name}"` | `keras_norms.{cls.__name__}` | {cls.conversion_carries} | {cls.conversion_adds} |')
    return "\n".join(lines) + "\n"


def _check_activations(activations, to):
    if activations not in ("keep", "fuse"):
        raise ValueError(
            f"convert_normalization: invalid `activations`={activations!r}. Pass 'keep' (convert the "
            "normalizations only) or 'fuse' (the ReLU after a converted FRN becomes a TLU, the one after "
            "an EvoNorm is removed)."
        )
    if activations == "fuse" and not callable(to) and to not in _FUSED_TARGETS:
        raise ValueError(
            f"convert_normalization: activations='fuse' with `to`={to!r}, which has no activation to "
            f"fuse: it applies to {list(_FUSED_TARGETS)} (and callables). Pass activations='keep', "
            "or one of those targets."
        )


def _fed_convolutions(model):
    """`{id(conv): norm}` for each kernel layer whose output feeds a batch normalization."""
    fed = {}
    for sub in _clone.submodels(model):
        for layer, producer, _ in _clone.producers(sub).values():
            if is_batch_normalization(layer) and isinstance(producer, _KERNEL_LAYERS):
                fed[id(producer)] = layer
    return fed


def _is_plain_relu(layer):
    """An `Activation("relu")` or a `ReLU()` with its defaults: the ReLU of a BN + ReLU pair."""
    if type(layer) is keras.layers.Activation:
        return layer.activation is keras.activations.relu
    if type(layer) is keras.layers.ReLU:
        return layer.max_value is None and not layer.negative_slope and not layer.threshold
    return False


def _paired_relus(model):
    """`{id(relu): norm}` for each plain ReLU whose only input is a batch normalization's output, used by it alone."""
    paired = {}
    for sub in _clone.submodels(model):
        for layer, producer, exclusive in _clone.producers(sub).values():
            if _is_plain_relu(layer) and exclusive and producer is not None and is_batch_normalization(producer):
                paired[id(layer)] = producer
    return paired


# Targets that bring their own activation, for activations="fuse".
_FUSED_TARGETS = ("filter_response_norm", "evonorm_b0", "evonorm_s0")


def _fused_activation(norm, relu):
    """What replaces `relu`, the ReLU after the converted layer `norm`, with activations="fuse"; None: keep it.

    FRN gets its TLU (whose thresholds start at 0: at conversion it computes the ReLU); a layer that applies its
    own nonlinearity (EvoNorm-B0/S0, FRN + TLU) gets an identity.
    """
    from keras_norms.layers import evonorm
    from keras_norms.layers import filter_response_normalization as frn

    if isinstance(norm, (evonorm.EvoNormB0, evonorm.EvoNormS0, frn.FilterResponseNormalizationTLU)):
        return keras.layers.Identity(name=relu.name, dtype=relu.dtype_policy)
    if isinstance(norm, frn.FilterResponseNormalization):
        return frn.TLU(axis=norm.axis, name=relu.name, dtype=relu.dtype_policy)
    return None


def convert_normalization(model, to, convolutions=None, activations="keep", **options):
    """A copy of `model` with every batch normalization replaced by another normalization.

    Rebuilds a built Functional or Sequential model (nested ones included)
    with each `keras.layers.BatchNormalization` and
    `keras_norms.BatchNormalization` (Ghost BN included) replaced by the
    normalization `to`, and, with `convolutions="ws"`, each convolution whose
    output feeds one of them by its weight-standardized version
    ($\\hat W=(W-\\mu_W)/\\sqrt{\\sigma_W^2+\\epsilon}$ per output channel).
    Layer names are kept; every other layer is cloned from its config. The
    input model is left unchanged and shares no variable with the result.

    **The new layers** take from the old one, where their constructor has the
    argument: `axis` (Keras Applications' positive axis works), `epsilon`
    (e.g. Keras Applications' 1.001e-5), `momentum`, `center`, `scale`, the
    gamma/beta initializers, regularizers and constraints, `synchronized`
    (cross-device batch statistics), `name`, `dtype` and `trainable`;
    `**options` override them. Grouped targets get
    `groups`: by default, per layer, the largest divisor $G$ of the channel
    count $C$ with $G\\le 32$ and $C/G\\ge 2$ (32 for every ResNet50 layer);
    an explicit `groups` must divide every layer's $C$.

    **Weights carried over** (exact copies): each target layer's
    `from_batch_normalization` builds it and carries the weights that keep
    their meaning (γ, β, and the moving statistics where the layer has
    them); the table of targets, what each carries and what it adds, is in
    the guide "Fine-tuning Keras Applications" (and
    `keras_norms.convert.conversion_table()`).
    With `final_affine="group"`, BCN's γ, β are per group and the old γ, β
    go to `batch_gamma`, `batch_beta` instead. Every convolution keeps its
    kernel and bias (a WS layer stores the raw kernel and standardizes it
    when called, so a pretrained kernel computes something new: fine-tune
    after converting). All other layers keep all their weights.

    **Activations.** FRN is meant to be followed by a TLU (it does not
    centre, and the learned threshold makes up for it), and EvoNorm-B0/S0
    replace a BN + ReLU pair: their nonlinearity is inside. With
    `activations="fuse"`, each plain ReLU (`Activation("relu")` or `ReLU()`)
    whose only input is a converted layer's output, used by nothing else, is
    replaced too, keeping its name: by `keras_norms.TLU` after FRN (its
    thresholds start at 0, so the converted model first computes FRN + ReLU)
    and by `keras.layers.Identity` after EvoNorm (or FRN + TLU from a callable
    `to`). Other activations (MobileNetV2's ReLU6, EfficientNet's swish)
    stay. A normalization that no such ReLU follows (ResNet50's last one in
    each block, before the residual `Add`) stays as it is; keras_norms'
    EvoNorms have no switch to turn their nonlinearity off (timm's
    `apply_act=False`). The default, `"keep"`, converts normalizations only.

    **Other layers.** Only batch normalization (and, with
    `activations="fuse"`, the ReLUs above) is converted.
    `LayerNormalization` (ConvNeXt's only normalization), `GroupNormalization`,
    `RMSNormalization` and the keras_norms layers other than BN are kept as
    they are, with their weights: they do not depend on the batch, so small
    batches do not hurt them. A model without batch normalization gives an
    unchanged copy and a warning. Preprocessing layers (EfficientNet's
    `Rescaling` and `Normalization`), custom layers (ConvNeXt's `LayerScale`)
    and `keras.ops` calls in the graph are cloned from their configs with
    their weights. With `convolutions="ws"`, only a layer whose output is a
    converted layer's input is standardized: the convolutions of
    pre-activation networks (ResNet50V2, DenseNet121) that reach the next
    normalization through an `Add`, `Concatenate` or pooling layer, and
    EfficientNet's squeeze-excitation convolutions, stay plain.

    Args:
        model: a built Functional or Sequential `keras.Model`.
        to: a registered name (the guide's table) or a callable receiving the old layer and returning the new,
            unbuilt layer (give it `name=layer.name` to keep the name);
            weights named `gamma`, `beta`, `moving_mean`, `moving_variance`
            of matching shape carry over.
        convolutions: None (keep the convolutions) or `"ws"`: replace each
            `Conv1D/2D/3D`, `DepthwiseConv2D`, `Conv2DTranspose` or `Dense`
            whose output is the input of a converted layer by `WSConv1D/2D/3D`,
            `WSDepthwiseConv2D`, `WSConv2DTranspose`, `WSDense` (default
            `ws_epsilon`). Defaults to None.
        activations: `"keep"` (the model's activations are kept) or
            `"fuse"`: the ReLU after each converted FRN becomes a TLU, the
            one after each converted EvoNorm is removed (see above); for the
            targets `"filter_response_norm"`, `"evonorm_b0"`, `"evonorm_s0"`
            and callables. Defaults to `"keep"`.
        **options: arguments of the target layer for every converted layer,
            e.g. `groups=16`, `virtual_batch_size=4`, `mode="estimate"`.

    Returns:
        A new, built model of the same kind with the same inputs and outputs.

    Raises:
        ValueError: for a model that is not a built Functional or Sequential
            model, an unknown `to`, `convolutions` or `activations`,
            `activations="fuse"` with a target that has no activation to
            fuse, options with a callable `to`, a `groups` that does not divide a layer's channels, a
            convolution without a weight-standardized version (named), or a
            layer the target rejects (the message names the layer).

    Example:

    ```python
    model = keras.applications.ResNet50(weights="imagenet")
    gn_ws = keras_norms.convert_normalization(model, "group_norm", convolutions="ws")
    frn_tlu = keras_norms.convert_normalization(model, "filter_response_norm", activations="fuse")
    ```

    Reference:
        - [Wu & He, 2018](https://arxiv.org/abs/1803.08494) (Group
          Normalization)
        - [Qiao et al., 2019](https://arxiv.org/abs/1903.10520) (Weight
          Standardization, Batch-Channel Normalization)
        - timm `convert_sync_batchnorm`, `freeze_batch_norm_2d` (the torch
          counterparts)
    """
    _clone.check_model(model, "convert_normalization")
    _check_target(to, options)
    if convolutions not in (None, "ws"):
        raise ValueError(
            f"convert_normalization: invalid `convolutions`={convolutions!r}. Pass None "
            "(keep the convolutions) or 'ws' (weight-standardize the convolutions "
            "that feed a normalization)."
        )
    _check_activations(activations, to)
    fed = _fed_convolutions(model) if convolutions == "ws" else {}
    paired = _paired_relus(model) if activations == "fuse" else {}
    carries, converted_norms, fused = {}, {}, set()

    def replace(layer):
        if is_batch_normalization(layer):
            new, carries[id(layer)] = _replacement(layer, to, options)
            converted_norms[id(layer)] = new
            return new
        if id(layer) in paired and id(paired[id(layer)]) in converted_norms:
            new = _fused_activation(converted_norms[id(paired[id(layer)])], layer)
            if new is not None:
                fused.add(id(layer))  # a new layer in a ReLU's place: no weights to carry
                return new
        if id(layer) in fed and not isinstance(layer, ws.WeightStandardizationMixin):
            ws_class = _WS_OF.get(type(layer))
            if ws_class is None:
                raise ValueError(
                    f"convert_normalization: layer '{layer.name}' ({type(layer).__name__}) "
                    f"feeds '{fed[id(layer)].name}' but has no weight-standardized version "
                    f"in keras_norms (those are: {sorted(c.__name__ for c in _WS_OF)}). "
                    "Pass convolutions=None, or convert the model without it."
                )
            return ws_class.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    converted, pairs = _clone.clone(model, replace)
    for layer, new in pairs:
        if id(layer) in carries:
            if carries[id(layer)] is not None:
                carries[id(layer)](layer, new)
        elif id(layer) not in fused:
            new.set_weights(layer.get_weights())
    if not carries:
        warnings.warn(
            f"convert_normalization: model '{model.name}' has no batch normalization "
            "layer; the result is an unchanged copy. LayerNormalization, GroupNormalization "
            "and the other batch-independent normalizations are kept as they are.",
            stacklevel=2,
        )
    return converted

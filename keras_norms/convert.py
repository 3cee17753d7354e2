"""Converting the batch normalization of a built model to another normalization.

`convert_normalization` rebuilds a Functional or Sequential model (a Keras
Applications ResNet or MobileNet, say) with every batch normalization layer
replaced by the chosen normalization, and optionally the convolutions that
feed them by their weight-standardized versions, carrying over the weights
that keep their meaning. Peers: timm's `convert_sync_batchnorm` and
`freeze` (torch only); kecam's `clone_model` surgery (tf.keras only).
"""

import importlib
import inspect
import warnings

import keras
import numpy as np

from keras_norms import _clone
from keras_norms.layers import weight_standardization as ws

_KERAS_NORMS_BN = "keras_norms.layers.batch_normalization"

# The BN arguments every target receives when its constructor takes them
# (the old layer's values); `groups` is added for grouped targets.
_COMMON = (
    "axis",
    "momentum",
    "epsilon",
    "center",
    "scale",
    "beta_initializer",
    "gamma_initializer",
    "beta_regularizer",
    "gamma_regularizer",
    "beta_constraint",
    "gamma_constraint",
    "synchronized",
)
_DEFAULT_GROUPS = 32
_AFFINE = {"gamma": "gamma", "beta": "beta"}
_STATISTICS = {"moving_mean": "moving_mean", "moving_variance": "moving_variance"}


def _class(module, name):
    """A loader of `keras_norms.layers.<module>.<name>`, imported when first used."""

    def load():
        return getattr(importlib.import_module(f"keras_norms.layers.{module}"), name)

    return load


# name -> (class loader, {target weight: old BN weight} carried bit-equal, extra carry or None)
def _bgn_second_moment(old, new):
    """BGN keeps raw moments: its second moment is variance + mean**2 (computed in float64)."""
    if new.moving_second_moment is None:
        return
    mean = np.asarray(keras.ops.convert_to_numpy(old.moving_mean), np.float64)
    variance = np.asarray(keras.ops.convert_to_numpy(old.moving_variance), np.float64)
    new.moving_second_moment.assign((variance + mean**2).astype(new.moving_second_moment.dtype))


def _mbn_memory(old, new):
    """MBN keeps a memory of batch moments: slot 0 gets the moving mean and variance + mean**2, count 1."""
    mean = np.asarray(keras.ops.convert_to_numpy(old.moving_mean), np.float64)
    variance = np.asarray(keras.ops.convert_to_numpy(old.moving_variance), np.float64)
    for variable, value in ((new.memory_mean, mean), (new.memory_second_moment, variance + mean**2)):
        memory = np.zeros(variable.shape, np.float64)
        memory[0] = value
        variable.assign(memory.astype(variable.dtype))
    new.memory_count.assign(np.ones(new.memory_count.shape, new.memory_count.dtype))


def _bcn_affine(new):
    # Per-channel final affine: the old gamma/beta restore the pretrained scale
    # after the group step; a per-group one cannot hold them, so they go to
    # the batch step.
    if new.final_affine == "channel":
        return {**_AFFINE, **_STATISTICS}
    return {"batch_gamma": "gamma", "batch_beta": "beta", **_STATISTICS}


_TARGETS = {
    "batch_norm": (_class("batch_normalization", "BatchNormalization"), "all", None),
    "ghost_batch_norm": (_class("batch_normalization", "GhostBatchNormalization"), "all", None),
    "batch_group_norm": (
        _class("batch_group_normalization", "BatchGroupNormalization"),
        {**_AFFINE, "moving_mean": "moving_mean"},
        _bgn_second_moment,
    ),
    "group_norm": (lambda: keras.layers.GroupNormalization, _AFFINE, None),
    "batch_channel_norm": (_class("batch_channel_normalization", "BatchChannelNormalization"), _bcn_affine, None),
    "filter_response_norm": (_class("filter_response_normalization", "FilterResponseNormalization"), _AFFINE, None),
    "evonorm_s0": (_class("evonorm", "EvoNormS0"), _AFFINE, None),
    "evonorm_b0": (_class("evonorm", "EvoNormB0"), {**_AFFINE, "moving_variance": "moving_variance"}, None),
    "memorized_batch_norm": (
        _class("memorized_batch_normalization", "MemorizedBatchNormalization"),
        _AFFINE,
        _mbn_memory,
    ),
}
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


def is_batch_normalization(layer):
    """Whether `layer` is a Keras or keras_norms batch normalization (Ghost BN included)."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return True
    return any(cls.__module__ == _KERAS_NORMS_BN for cls in type(layer).__mro__)


def _channels(layer):
    variable = next(v for v in layer.weights if v.name in ("moving_mean", "gamma"))
    return int(variable.shape[0])


def _default_groups(channels):
    """The largest divisor of `channels` that is <= 32 and leaves >= 2 channels per group (1 if none)."""
    limit = min(_DEFAULT_GROUPS, channels // 2)
    return max([g for g in range(1, limit + 1) if channels % g == 0], default=1)


def _accepts(cls):
    """The constructor arguments of `cls` and of its bases up to `keras.layers.Layer` (for `**kwargs` chains)."""
    names = set()
    for base in cls.__mro__:
        if base is keras.layers.Layer or not issubclass(base, keras.layers.Layer):
            break
        if "__init__" in vars(base):
            names |= set(inspect.signature(base.__init__).parameters)
    return names - {"self", "args", "kwargs"}


def _constructor_kwargs(layer, cls, options):
    """The arguments of the new layer: the old layer's, then `options` (which win)."""
    config = layer.get_config()
    accepted = _accepts(cls)
    if is_batch_normalization(layer) and cls.__module__ == _KERAS_NORMS_BN:
        # keras_norms BN takes every argument of both BNs: the identity.
        kwargs = {k: v for k, v in config.items() if k in accepted or k in ("name", "dtype", "trainable")}
    else:
        kwargs = {k: config[k] for k in _COMMON if k in accepted and k in config}
        kwargs.update(name=config["name"], dtype=config["dtype"], trainable=config["trainable"])
    if "groups" in accepted and "groups" not in options:
        kwargs["groups"] = _default_groups(_channels(layer))
    kwargs.update(options)
    groups = kwargs.get("groups")
    channels = _channels(layer)
    if "groups" in options and isinstance(groups, int) and groups > 0 and channels % groups:
        # No prefix or layer name: `_replacement` wraps this as "convert_normalization: cannot convert layer ...: ".
        raise ValueError(
            f"it has {channels} channels, "
            f"which `groups`={groups} does not divide. Pass a `groups` that divides the "
            "channel count of every normalization layer, or leave `groups` out (the "
            "default takes, per layer, the largest divisor <= 32 leaving >= 2 channels per group)."
        )
    return kwargs


def _carry(old, new, mapping):
    """Assigns `old`'s weights to `new` as `{new weight name: old weight name}` says."""
    olds = {v.name: v for v in old.weights}
    news = {v.name: v for v in new.weights}
    if mapping == "all":
        mapping = {name: name for name in news}
    for target, source in mapping.items():
        if target in news and source in olds and tuple(news[target].shape) == tuple(olds[source].shape):
            # A copy: on JAX an assigned array is shared, and fit() donates (deletes) it.
            news[target].assign(np.array(keras.ops.convert_to_numpy(olds[source])))


def _replacement(layer, to, options):
    """`(new_layer, carry(old, new))` for the batch normalization `layer`."""
    try:
        if callable(to):
            return to(layer), lambda old, new: _carry(old, new, {**_AFFINE, **_STATISTICS})
        load, mapping, extra = _TARGETS[to]
        cls = load()
        new = cls(**_constructor_kwargs(layer, cls, options))
    except (ValueError, TypeError, NotImplementedError) as error:
        raise type(error)(
            f"convert_normalization: cannot convert layer '{layer.name}' "
            f"({type(layer).__name__}) to {to!r}: {error}"
        ) from error

    def carry(old, new):
        _carry(old, new, mapping(new) if callable(mapping) else mapping)
        if extra is not None:
            extra(old, new)

    return new, carry


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
    try:
        _TARGETS[to][0]()
    except ImportError as error:
        raise ValueError(
            f"convert_normalization: the target {to!r} needs a layer that this "
            f"keras_norms installation lacks ({error}). Upgrade keras_norms or pick "
            f"another of {list(_TARGETS)}."
        ) from error


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

    **Weights carried over** (exact copies):

    | `to` | class | carried | new weights (their initializer) |
    |---|---|---|---|
    | `"batch_norm"` | `keras_norms.BatchNormalization` | all (the identity) | none |
    | `"ghost_batch_norm"` | `keras_norms.GhostBatchNormalization` (pass `virtual_batch_size`) | all | none |
    | `"batch_group_norm"` | `keras_norms.BatchGroupNormalization` | γ, β, moving mean | `moving_second_moment` = moving variance + mean² |
    | `"group_norm"` | `keras.layers.GroupNormalization` | γ, β | none |
    | `"batch_channel_norm"` | `keras_norms.BatchChannelNormalization` | γ, β → final γ, β; moving mean, variance | `batch_gamma` ones, `batch_beta` zeros |
    | `"filter_response_norm"` | `keras_norms.FilterResponseNormalization` | γ, β | none (with `activations="fuse"`: the TLU after it, `tau` zeros) |
    | `"evonorm_s0"`, `"evonorm_b0"` | `keras_norms.EvoNormS0`, `EvoNormB0` | γ, β (B0: moving variance) | `v` ones |
    | `"memorized_batch_norm"` | `keras_norms.MemorizedBatchNormalization` | γ, β | memory slot 0 = moving mean and variance + mean², count 1 (other slots empty) |

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
        to: a registered name (the table above) or a callable receiving the old layer and returning the new,
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

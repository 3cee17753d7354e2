"""Weight decay on the scale and shift of normalization layers.

The Four Things paper's item (c): decay $\\gamma$ toward 1 and $\\beta$ toward
0 with an L2 penalty in TensorFlow's `l2_loss` form (with the factor 1/2).
Keras's own `L2` has no 1/2 and always pulls toward 0, so this module provides
a regularizer with a target, `DecayToward`, and `add_gamma_beta_decay`, which
attaches it to every normalization layer of a built model.

References:
    Summers & Dinneen, "Four Things Everyone Should Know to Improve Batch
    Normalization", ICLR 2020 (official code:
    github.com/ceciliaresearch/four_things_batch_norm). In the released code
    the layer's `weight_decay` argument is not passed on to the regularizer
    factory, whose default of 0 switches the penalties off; here the
    coefficient is required and always applied.
"""

import math
import numbers
import warnings

import keras
from keras import backend
from keras import ops

from keras_norms.layers import KERAS_NORMALIZATION
from keras_norms.layers import RMSNormalization
from keras_norms.layers import is_normalization
from keras_norms.layers.normalization_propagation import NormPropMixin


def _finite_float(value):
    """`value` as a Python float, or None for a bool, non-number or non-finite value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _check_weight_decay(owner, value):
    number = _finite_float(value)
    if number is None or number < 0.0:
        raise ValueError(
            f"{owner}: invalid `weight_decay`={value!r}. Pass a finite float "
            ">= 0, the coefficient λ of λ·½·Σ(w - target)², e.g. 5e-4."
        )
    return number


@keras.saving.register_keras_serializable(package="keras_norms")
class DecayToward(keras.regularizers.Regularizer):
    """L2 weight decay toward a target value, in TF's `l2_loss` (½) convention.

    Pulls a weight toward `target` instead of toward 0. The penalty and its
    gradient are

    $$R(w)=\\lambda\\cdot\\tfrac12\\sum_i (w_i-t)^2,\\qquad
      \\frac{\\partial R}{\\partial w_i}=\\lambda\\,(w_i-t),$$

    with $\\lambda$ = `weight_decay` and $t$ = `target`. Note the factor ½ of
    TensorFlow's `tf.nn.l2_loss`, used by the Four Things reference code:
    `keras.regularizers.L2(l)` computes $l\\sum_i w_i^2$ without it, so with
    `target=0` this regularizer equals `keras.regularizers.L2(weight_decay / 2)`.
    With `target=1` it is the paper's decay of a normalization scale $\\gamma$
    toward 1; `add_gamma_beta_decay` attaches it to every normalization layer
    of a model.

    The sum is computed in float32 (float64 weights stay float64) and the
    result is a scalar. Like every Keras weight regularizer, it contributes to
    the loss only through trainable variables.

    Args:
        weight_decay: float >= 0, the coefficient $\\lambda$. Required.
        target: float, the value $t$ the weight is pulled toward. Defaults to
            0.0.

    Returns:
        Called on a tensor or variable `w`, a scalar tensor $R(w)$.

    Raises:
        ValueError: if `weight_decay` is not a finite float >= 0 or `target`
            is not a finite float (the message names the argument).

    Example:

    ```python
    import keras
    from keras_norms.regularizers import DecayToward

    layer = keras.layers.BatchNormalization(
        gamma_regularizer=DecayToward(5e-4, target=1.0),
        beta_regularizer=DecayToward(5e-4),  # = keras.regularizers.L2(2.5e-4)
    )
    ```

    Reference:
        - [Summers & Dinneen, 2020](https://arxiv.org/abs/1906.03548),
          item (c), and its official code (the ½ convention and the target 1
          for $\\gamma$).
    """

    def __init__(self, weight_decay, target=0.0):
        self.weight_decay = _check_weight_decay(type(self).__name__, weight_decay)
        number = _finite_float(target)
        if number is None:
            raise ValueError(
                f"{type(self).__name__}: invalid `target`={target!r}. Pass a "
                "finite float, the value the weight decays toward (1.0 for a "
                "normalization scale gamma, 0.0 for a shift beta)."
            )
        self.target = number

    def __call__(self, x):
        x = ops.convert_to_tensor(x)
        dtype = "float64" if backend.standardize_dtype(x.dtype) == "float64" else "float32"
        x = ops.cast(x, dtype)
        return (self.weight_decay * 0.5) * ops.sum(ops.square(x - self.target))

    def get_config(self):
        return {"weight_decay": self.weight_decay, "target": self.target}

    def __repr__(self):
        return f"{type(self).__name__}(weight_decay={self.weight_decay}, target={self.target})"


# ------------------------------------------------------------------ utility
# (layer attribute of the variable, layer attribute of its regularizer, target)
_GAMMA_BETA = (("gamma", "gamma_regularizer", 1.0), ("beta", "beta_regularizer", 0.0))
_SCALE_ONLY = (("scale", None, 1.0),)


def _slots(layer):
    """The `(variable attribute, regularizer attribute, target)` triples to set on `layer`."""
    keras_rms = getattr(keras.layers, "RMSNormalization", None)
    if isinstance(layer, RMSNormalization) or (keras_rms is not None and isinstance(layer, keras_rms)):
        return _SCALE_ONLY
    if isinstance(layer, KERAS_NORMALIZATION):
        return _GAMMA_BETA
    if is_normalization(layer) or isinstance(layer, NormPropMixin):
        # The NormProp layers' per-unit gamma, beta are a normalization's scale and shift too. Only a
        # variable counts: a gamma/beta variable, or (before build) the matching *_regularizer attribute.
        return tuple(
            slot
            for slot in _GAMMA_BETA
            if isinstance(getattr(layer, slot[0], None), keras.Variable)
            or (getattr(layer, slot[0], None) is None and hasattr(layer, slot[1]))
        )
    return ()


def _decoupled_decay_on(optimizer, variables):
    """`(rate, variables)`: the decoupled weight-decay rate of `optimizer` and
    the variables among `variables` it applies to (none when the rate is 0)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    try:
        rate = float(optimizer.weight_decay)
    except (AttributeError, TypeError, ValueError):  # no optimizer, or weight_decay=None
        return None, []
    if rate == 0.0:
        return rate, []
    uses = getattr(optimizer, "_use_weight_decay", None)
    decayed = []
    for variable in variables:
        try:
            used = True if uses is None else bool(uses(variable))
        except Exception:  # a private API that changed: assume decay applies
            used = True
        if used:
            decayed.append(variable)
    return rate, decayed


def add_gamma_beta_decay(model, weight_decay):
    """Decays every normalization scale toward 1 and shift toward 0 in the loss.

    Walks a **built** model recursively (nested models and layers included)
    and, for every normalization layer, sets the regularizer of its scale
    $\\gamma$ to `DecayToward(weight_decay, 1.0)` and of its shift $\\beta$ to
    `DecayToward(weight_decay, 0.0)`, so the loss gains

    $$\\sum_{\\text{layers}}\\lambda\\cdot\\tfrac12\\Big(\\sum_c(\\gamma_c-1)^2
      +\\sum_c\\beta_c^2\\Big)$$

    with $\\lambda$ = `weight_decay` (the ½ of TF's `l2_loss`, as in the Four
    Things reference code). Normalization layers are
    `keras.layers.BatchNormalization`, `GroupNormalization`,
    `LayerNormalization` and `RMSNormalization` (its `scale` only; keras_norms'
    `RMSNormalization` too), their
    subclasses, and every `keras_norms` layer with `gamma`/`beta` weights.
    Other layers, including custom layers that happen to have a `gamma`
    weight (e.g. a LayerScale), are left alone. A layer without a scale or a
    shift (`scale=False`, `center=False`) gets only the regularizer it can use.

    Both the variable's `regularizer` and the layer's `gamma_regularizer` /
    `beta_regularizer` attribute are set: the first makes the penalty part of
    `model.losses` now, the second makes `get_config`, `from_config` and
    `.keras` save/load keep it. `keras.layers.RMSNormalization` has no
    regularizer argument, so its penalty lives on the variable only and is
    lost by `from_config` or loading: call this function again after loading.
    Calling it again replaces the regularizers (it never stacks them).

    Notes:
        * Call it **before** `model.compile()`, or call `compile()` again
          afterwards: a train function that was already traced keeps the
          losses it saw (it warns when the model has one).
        * Keras collects weight penalties from **trainable** variables only:
          layers with `trainable=False` (e.g. frozen BN when fine-tuning) get
          the regularizer but contribute nothing until they are unfrozen.
        * Decoupled weight decay (`keras.optimizers.AdamW`, or any optimizer's
          `weight_decay=`) always pulls toward 0 and would fight the pull of
          $\\gamma$ toward 1: exclude these variables from it with
          `optimizer.exclude_from_weight_decay(var_names=["gamma", "beta"])`
          (plus `"scale"` for RMSNormalization) before the optimizer is built.
          This function warns when the model's optimizer would decay them.

    Args:
        model: a built `keras.Model` (or layer). Build it with
            `model.build(input_shape)`, by creating it from `keras.Input`, or
            by calling it on data.
        weight_decay: float >= 0, the coefficient $\\lambda$. Required: the
            paper's value is not confirmed, choose it for your training setup
            (weight-decay coefficients of the order of 1e-4 to 5e-4 are common).

    Returns:
        The list of the names of the layers whose regularizers were set, in
        the order `model._flatten_layers()` visits them.

    Raises:
        ValueError: if `model` is not built or `weight_decay` is not a finite
            float >= 0.
        TypeError: if `model` is not a Keras layer or model.

    Example:

    ```python
    import keras, keras_norms
    from keras_norms.regularizers import add_gamma_beta_decay

    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(16, 3, use_bias=False),
        keras_norms.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    add_gamma_beta_decay(model, 5e-4)  # before compile()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    ```

    Reference:
        - [Summers & Dinneen, 2020](https://arxiv.org/abs/1906.03548),
          item (c).
    """
    owner = "add_gamma_beta_decay"
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"{owner}: `model` must be a Keras model or layer, received "
            f"{type(model).__name__}. Pass a keras.Model."
        )
    weight_decay = _check_weight_decay(owner, weight_decay)
    if not model.built:
        raise ValueError(
            f"{owner}: model '{model.name}' is not built, so its normalization "
            "layers have no gamma/beta variables yet. Call model.build(input_shape) "
            "or call it on data first (a model created from keras.Input is "
            "built already)."
        )
    changed = []
    affected = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        slots = _slots(layer)
        for variable_attr, regularizer_attr, target in slots:
            regularizer = DecayToward(weight_decay, target)
            variable = getattr(layer, variable_attr, None)
            if isinstance(variable, keras.Variable):
                variable.regularizer = regularizer
                affected.append(variable)
            if regularizer_attr is not None:
                setattr(layer, regularizer_attr, regularizer)
        if slots:
            changed.append(layer.name)

    trainable = [v for v in affected if v.trainable]
    rate, decayed = _decoupled_decay_on(getattr(model, "optimizer", None), trainable)
    if decayed:
        names = sorted({v.name for v in decayed})
        warnings.warn(
            f"{owner}: the optimizer of model '{model.name}' applies decoupled "
            f"weight decay (weight_decay={rate}) toward 0 "
            f"to {len(decayed)} of the normalization variables (names {names}), "
            "which fights the decay of gamma toward 1. Exclude them before the "
            f"optimizer is built: optimizer.exclude_from_weight_decay(var_names={names}).",
            stacklevel=2,
        )
    if affected and getattr(model, "train_function", None) is not None:
        warnings.warn(
            f"{owner}: model '{model.name}' already has a train function, which "
            "may not include the new penalties. Call model.compile(...) again.",
            stacklevel=2,
        )
    return changed

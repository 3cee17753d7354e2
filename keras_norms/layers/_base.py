"""Shared anatomy of the keras_norms layers: argument checks, storage, weights, config and conversion.

Every layer reports a bad argument the same way (a `ValueError` naming the
layer, the argument, the value and the fix), stores its constructor
arguments and serializes them back the same way (`LayerArguments`), creates
its scale, shift and non-trainable state the same way (`autocast=False`),
and, when it can replace a batch normalization, says so itself
(`NormalizationLayer.from_batch_normalization`).
"""

import inspect
import math
import numbers

import keras
import numpy as np
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

from keras_norms.ops import _stats

# Argument name suffix -> (resolve, serialize) for the Keras objects a layer takes by name or instance.
_KERAS_OBJECTS = {
    "initializer": (initializers.get, initializers.serialize),
    "regularizer": (regularizers.get, regularizers.serialize),
    "constraint": (constraints.get, constraints.serialize),
    "activation": (keras.activations.get, keras.activations.serialize),
}
_NOT_ARGUMENTS = ("self", "args", "kwargs", "__class__")

# The arguments of a batch normalization that a layer replacing it takes, where its constructor has them.
BN_ARGUMENTS = (
    "axis", "momentum", "epsilon", "center", "scale", "beta_initializer", "gamma_initializer", "beta_regularizer",
    "gamma_regularizer", "beta_constraint", "gamma_constraint", "synchronized",
)
_MAX_DEFAULT_GROUPS = 32


def _keras_object(name):
    """`(resolve, serialize)` for the argument `name`, or None for a plain value."""
    return _KERAS_OBJECTS.get(name.rsplit("_", 1)[-1])


class LayerArguments:
    """Argument checks, storage and config of every keras_norms layer (a mixin; not public).

    `_store_arguments(locals())`, called by a constructor right after
    `super().__init__(**kwargs)`, stores each of its arguments as the
    attribute of the same name, in signature order: through
    `self._check_<argument>(value)` where the class defines one (which
    returns the value to store or raises), else resolved by Keras where the
    name ends in `_initializer`, `_regularizer`, `_constraint` or is
    `activation`, else verbatim. `_config_of(*names)` serializes them back,
    and `NormalizationLayer.get_config` returns every stored argument, so
    that a layer's config is its signature.
    """

    _momentum_fix = "Pass a float in [0, 1]."  # the fix of a bad `momentum` (a layer may say more)
    _groups_note = ""  # appended to the error of a `groups` that does not divide the channels

    def _owner(self):
        """How error messages name this layer: its class and its name."""
        return f"{type(self).__name__} (layer '{self.name}')"

    def _error(self, argument, value, fix):
        return ValueError(f"{self._owner()}: invalid `{argument}`={value!r}. {fix}")

    # ------------------------------------------------------------ storage
    def _store_arguments(self, arguments):
        names = tuple(name for name in arguments if name not in _NOT_ARGUMENTS)
        for name in names:
            value = arguments[name]
            check = getattr(self, f"_check_{name}", None)
            if check is not None:
                value = check(value)
            elif _keras_object(name) is not None:
                value = _keras_object(name)[0](value)
            setattr(self, name, value)
        # A subclass constructor may store again what its parent's stored (new values, same names).
        self._argument_names = tuple(dict.fromkeys(getattr(self, "_argument_names", ()) + names))

    def _config_of(self, *names):
        """`{name: the attribute, serialized}` for each of `names`."""
        config = {}
        for name in names:
            value = getattr(self, name)
            known = _keras_object(name)
            config[name] = value if known is None else known[1](value)
        return config

    # ------------------------------------------------------------ checks
    def _check_axis(self, axis):
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise self._error("axis", axis, "Pass one int, the channel axis (e.g. -1 or 1).")
        return axis

    def _check_bool(self, argument, value, fix="Pass True or False."):
        if not isinstance(value, bool):
            raise self._error(argument, value, fix)
        return value

    def _check_choice(self, argument, value, choices):
        if value not in choices:
            raise self._error(argument, value, f"Pass one of {list(choices)}.")
        return value

    def _check_positive_int(self, argument, value, fix):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self._error(argument, value, fix)
        return value

    def _check_positive(self, argument, value, fix=None):
        """`value` as a finite float > 0; `fix` defaults to one quoting the class's default."""
        number = as_float(value)
        if number is None or not number > 0.0 or math.isinf(number):
            raise self._error(argument, value, fix or positive_float_fix(type(self), argument))
        return number

    def _check_epsilon(self, epsilon):
        return self._check_positive("epsilon", epsilon)

    def _check_unit_float(self, argument, value, fix="Pass a float in [0, 1]."):
        number = as_float(value)
        if number is None or not 0.0 <= number <= 1.0:
            raise self._error(argument, value, fix)
        return number

    def _check_momentum(self, momentum):
        return self._check_unit_float("momentum", momentum, self._momentum_fix)

    def _check_inference_example_weight(self, weight):
        return self._check_unit_float("inference_example_weight", weight)

    def _check_synchronized(self, synchronized):
        fix = "Pass True (batch statistics over every replica) or False (each replica's own)."
        return self._check_bool("synchronized", synchronized, fix)

    def _check_groups(self, groups):
        if isinstance(groups, bool) or not isinstance(groups, int) or (groups < 1 and groups != -1):
            raise self._error(
                "groups",
                groups,
                "Pass a positive int dividing the channel count, or -1 for one channel per group.",
            )
        return groups

    def _groups_of(self, channels, input_shape):
        """The number of groups of `channels` channels: `groups`, or `channels` for -1.

        Raises:
            ValueError: if `groups` does not divide `channels`, naming the
                largest divisor not above it.
        """
        if self.groups == -1:
            return channels
        if channels % self.groups:
            divisor = max(d for d in range(1, min(self.groups, channels) + 1) if channels % d == 0)
            raise self._error(
                "groups",
                self.groups,
                f"It must divide the {channels} channels of axis {self.axis} "
                f"(input shape {tuple(input_shape)}): pass a divisor of {channels}, "
                f"e.g. groups={divisor} (the largest one <= {self.groups}), or -1 "
                f"for one channel per group.{self._groups_note}",
            )
        return self.groups

    # ------------------------------------------------------------ weights
    def _add_affine(self, name, shape, kind=None, initializer=None):
        """A trainable float32 weight with the `<kind>_initializer`, `_regularizer`, `_constraint` attributes."""
        kind = kind or name
        return self.add_weight(
            shape=shape,
            name=name,
            initializer=initializer or getattr(self, f"{kind}_initializer"),
            regularizer=getattr(self, f"{kind}_regularizer", None),
            constraint=getattr(self, f"{kind}_constraint", None),
            trainable=True,
            autocast=False,
        )

    def _add_gamma_beta(self, shape, gamma_initializer=None):
        """Creates `gamma` (unless `scale=False`) then `beta` (unless `center=False`), as Keras BN does."""
        if getattr(self, "scale", True):
            self.gamma = self._add_affine("gamma", shape, initializer=gamma_initializer)
        if getattr(self, "center", True):
            self.beta = self._add_affine("beta", shape)


class NormalizationLayer(LayerArguments, keras.layers.Layer):
    """Base class of the keras_norms normalization layers (not public).

    Besides the checks and storage of `LayerArguments`: the check of
    `training`, of the input's channel axis, non-trainable state
    (`_state`), `get_config` (every stored argument) and, for a class that
    sets `conversion_target`, `from_batch_normalization`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # The scale and shift, where the layer has them: created at build by `_add_gamma_beta`.
        self.gamma = None
        self.beta = None

    def __call__(self, *args, **kwargs):
        # `training` picks a Python branch of `call` (batch statistics and state updates, or not): a value that is
        # not a bool would pick one silently (the string "False" is true), a symbolic one cannot pick at all.
        if "training" in kwargs:
            kwargs["training"] = self._check_training(kwargs["training"])
        elif len(args) > 1:
            args = (args[0], self._check_training(args[1])) + args[2:]
        return super().__call__(*args, **kwargs)

    def _check_training(self, training):
        """`training` as None or a Python bool.

        Raises:
            ValueError: unless `training` is None, a Python or NumPy bool,
                0, 1, or a concrete scalar boolean tensor.
        """
        if training is None or isinstance(training, bool):
            return training
        if isinstance(training, (np.bool_, numbers.Integral)) and training in (0, 1):
            return bool(training)
        if isinstance(training, keras.KerasTensor) or keras.ops.is_tensor(training):
            if tuple(training.shape) == () and keras.backend.standardize_dtype(training.dtype) == "bool":
                try:
                    return bool(training)
                except TypeError:  # a traced or symbolic tensor: no value yet
                    raise ValueError(
                        f"{self._owner()}: `training` is a symbolic tensor ({training!r}), but the layer "
                        "chooses batch or moving statistics in Python and needs its value. Pass a Python bool, "
                        "and trace one function per mode (as Keras's fit() and predict() do)."
                    ) from None
        raise self._error(
            "training",
            training,
            "Pass True (batch statistics, state updated), False (inference), or None (Keras's call context "
            "decides, e.g. True inside fit()).",
        )

    def _channel_axis_and_size(self, input_shape):
        """The channel axis of `input_shape` (non-negative) and its static size.

        Raises:
            ValueError: if the input has no feature axis (rank < 2), `axis` is
                out of range or is the batch axis 0, or the channel dimension
                has unknown size.
        """
        if len(input_shape) < 2:
            # Checked before `axis`: on a rank-1 input every axis is wrong, and the input is what needs fixing. Keras's
            # own BatchNormalization takes it, but its statistics then reduce over no axis (output = beta).
            raise ValueError(
                f"{self._owner()}: received input shape {tuple(input_shape)} of rank {len(input_shape)}, but the "
                "layer needs inputs of rank >= 2 (batch, ..., channels): axis 0 is the batch axis. Add a feature "
                "axis, e.g. keras.ops.expand_dims(x, -1) or a Reshape((1,)) layer."
            )
        axis = _stats.canonical_axis(self.axis, len(input_shape), self._owner())
        if axis == 0:
            raise self._error("axis", self.axis, "Axis 0 is the batch axis; pass the channel axis.")
        channels = input_shape[axis]
        if channels is None:
            raise ValueError(
                f"{self._owner()}: the channel axis {self.axis} of input shape "
                f"{tuple(input_shape)} has unknown size. Give the input a "
                "static channel dimension."
            )
        return axis, channels

    def _check_rank(self, input_shape):
        """Hook: raises a `ValueError` for an input rank the layer does not take (any rank >= 2 here)."""

    @staticmethod
    def _cast_all(dtype, *weights):
        """The weights cast to `dtype`, the upcast input's (the ops compute in it); an absent weight stays None."""
        return tuple(None if w is None else ops.cast(w, dtype) for w in weights)

    def _build_channels(self, input_shape):
        """Checks the input shape; records the channel axis and the input spec; returns the channel count."""
        self._check_rank(input_shape)
        self._channel_axis, channels = self._channel_axis_and_size(input_shape)
        self.input_spec = keras.InputSpec(ndim=len(input_shape), axes={self.axis: channels})
        return channels

    def compute_output_shape(self, input_shape):
        _stats.canonical_axis(self.axis, len(input_shape), self._owner())
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self._config_of(*self._argument_names)}

    # ------------------------------------------------------------ conversion
    # The name `convert_normalization` knows the class by, set in the body of each class that can replace a
    # batch normalization (a subclass does not inherit it: see `keras_norms.layers.conversion_targets`), and
    # the two cells of its row in the targets table of the fine-tuning guide.
    conversion_target = None
    conversion_carries = "γ, β"
    conversion_adds = "none"
    # {new weight: BN weight} copied bit-equal by `from_batch_normalization` ("all": every weight, by name).
    _carried_weights = {"gamma": "gamma", "beta": "beta"}
    # The BN arguments the new layer takes, where its constructor has them (None: all it has).
    _converted_arguments = BN_ARGUMENTS

    @classmethod
    def from_batch_normalization(cls, bn, **options):
        """A layer of this class in place of the batch normalization `bn`, built, with the weights it can carry.

        The arguments are `bn`'s `axis`, `momentum`, `epsilon`, `center`,
        `scale`, gamma/beta initializers, regularizers and constraints,
        `synchronized`, `name`, `dtype` and `trainable`, where this class's
        constructor has them; a grouped layer gets, by default, the largest
        divisor of the channel count $C$ that is <= 32 and leaves >= 2
        channels per group; `options` override them all. The layer is built
        for `bn`'s input shape, and the weights that keep their meaning are
        copied from `bn` (the class's `conversion_carries`; the others, its
        `conversion_adds`, are initialized or derived from `bn`'s moving
        statistics). `keras_norms.convert_normalization` calls it for each
        batch normalization of a model.

        Args:
            bn: a built `keras.layers.BatchNormalization` or
                `keras_norms.BatchNormalization` (Ghost BN included).
            **options: constructor arguments of this class, which win over
                those taken from `bn`, e.g. `groups=16`.

        Returns:
            A new, built layer of this class.

        Raises:
            ValueError: if an explicit `groups` does not divide the channel
                count, or the class rejects an argument or `bn`'s input
                shape (its own message).

        Example:

        ```python
        bn = keras.layers.BatchNormalization()
        bn.build((None, 8, 8, 64))
        bgn = keras_norms.BatchGroupNormalization.from_batch_normalization(bn, groups=16)
        ```
        """
        layer = cls(**converted_arguments(bn, cls, options, cls._converted_arguments))
        build_like(layer, bn)
        if layer.built:
            layer._carry_from_batch_normalization(bn)
        return layer

    def _carry_from_batch_normalization(self, bn):
        carry_weights(bn, self, self._carried_weights)

    # ------------------------------------------------------------ population statistics
    # The state `keras_norms.recompute_batch_statistics` sets from the exact moments of the layer's input,
    # {variable name: "mean" | "variance" | "second_moment" | "stddev"}; None: the layer has no such state.
    population_statistics = None

    def _set_population_moments(self, mean, variance):
        """Sets the state named in `population_statistics` from per-channel float64 `mean` and `variance`."""
        assign_population_state(self, self.population_statistics, mean, variance, self.epsilon)

    def _update_moving(self, variable, value, momentum=None):
        """Moves `variable` toward the batch statistic `value` (no gradient through it) by `momentum`."""
        variable.assign(ops.cast(self._moving_average(variable, value, momentum), variable.dtype))

    def _moving_average(self, variable, value, momentum=None):
        momentum = self.momentum if momentum is None else momentum
        return ops.cast(variable, value.dtype) * momentum + ops.stop_gradient(value) * (1.0 - momentum)

    def _state(self, name, shape, initializer):
        # A fresh copy: state never shares a (seeded) initializer object. Copied
        # through from_config, since initializers.serialize imports TensorFlow
        # on every backend (seconds per process).
        initializer = initializers.get(initializer)
        if isinstance(initializer, initializers.Initializer):
            initializer = initializer.__class__.from_config(initializer.get_config())
        return self.add_weight(
            shape=shape, name=name, initializer=initializer, trainable=False, autocast=False
        )


def default_of(cls, argument):
    """The default of `argument` in the nearest `__init__` of `cls` (MRO order) that declares it, or None."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        parameter = inspect.signature(init).parameters.get(argument) if init is not None else None
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return None


def positive_float_fix(cls, argument):
    """The fix for a bad positive-float `argument` of layer class `cls`, quoting the class's own default.

    Read from the signature rather than written in each message, so that a message cannot drift from its default.
    """
    default = default_of(cls, argument)
    if not isinstance(default, float):
        return "Pass a positive float."
    short = f"{default:.0e}"
    if float(short) == default:  # 1e-05 -> 1e-5, as the docstrings write it
        mantissa, exponent = short.split("e")
        short = f"{mantissa}e{int(exponent)}"
    else:
        short = repr(default)
    return f"Pass a positive float such as {short} (the default)."


def as_float(value):
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


# ------------------------------------------------------------------ conversion from a batch normalization
def constructor_arguments(cls):
    """The constructor arguments of `cls` and of its bases up to `keras.layers.Layer` (for `**kwargs` chains)."""
    names = set()
    for base in cls.__mro__:
        if base is keras.layers.Layer or not issubclass(base, keras.layers.Layer):
            break
        if "__init__" in vars(base):
            names |= set(inspect.signature(base.__init__).parameters)
    return names - set(_NOT_ARGUMENTS)


def default_groups(channels):
    """The largest divisor of `channels` that is <= 32 and leaves >= 2 channels per group (1 if none)."""
    limit = min(_MAX_DEFAULT_GROUPS, channels // 2)
    return max([g for g in range(1, limit + 1) if channels % g == 0], default=1)


def bn_channels(bn):
    """The channel count of the built batch normalization `bn`."""
    variable = next(v for v in bn.weights if v.name in ("moving_mean", "gamma"))
    return int(variable.shape[0])


def converted_arguments(bn, cls, options, names=BN_ARGUMENTS):
    """The constructor arguments of a `cls` replacing `bn`.

    `bn`'s arguments among `names` (None: all) that `cls` takes, its `name`,
    `dtype` and `trainable`, a default `groups` if `cls` takes one, then
    `options`, which win.

    Raises:
        ValueError: if `options` has a `groups` that does not divide `bn`'s
            channel count (without prefix: `convert_normalization` adds the
            layer and the target).
    """
    config, accepted, channels = bn.get_config(), constructor_arguments(cls), bn_channels(bn)
    kwargs = {k: v for k, v in config.items() if k in accepted and (names is None or k in names)}
    kwargs.update(name=config["name"], dtype=config["dtype"], trainable=config["trainable"])
    if "groups" in accepted:
        kwargs["groups"] = default_groups(channels)
    kwargs.update(options)
    groups = options.get("groups")
    if isinstance(groups, int) and groups > 0 and channels % groups:
        raise ValueError(
            f"it has {channels} channels, "
            f"which `groups`={groups} does not divide. Pass a `groups` that divides the "
            "channel count of every normalization layer, or leave `groups` out (the "
            "default takes, per layer, the largest divisor <= 32 leaving >= 2 channels per group)."
        )
    return kwargs


def build_like(layer, bn):
    """Builds `layer` for the input shape `bn` was built for (if it was)."""
    build_config = bn.get_build_config()
    if build_config:
        layer.build_from_config(build_config)


def carry_weights(old, new, mapping):
    """Assigns `old`'s weights to `new` as `{new weight name: old weight name}` says ("all": same names)."""
    olds = {v.name: v for v in old.weights}
    news = {v.name: v for v in new.weights}
    if mapping == "all":
        mapping = {name: name for name in news}
    for target, source in mapping.items():
        if target in news and source in olds and tuple(news[target].shape) == tuple(olds[source].shape):
            # A copy: on JAX an assigned array is shared, and fit() donates (deletes) it.
            news[target].assign(np.array(keras.ops.convert_to_numpy(olds[source])))


def assign_population_state(layer, statistics, mean, variance, epsilon):
    """Assigns each of `layer`'s variables named in `statistics` its statistic of `mean` and `variance` (float64).

    A name the layer lacks (e.g. `renorm_mean` without renorm) is skipped.
    """
    variance = np.maximum(variance, 0.0)
    values = {
        "mean": mean,
        "variance": variance,
        "second_moment": variance + mean**2,
        "stddev": np.sqrt(variance + epsilon),
    }
    for name, statistic in statistics.items():
        variable = getattr(layer, name, None)
        if variable is not None:
            variable.assign(values[statistic].astype(variable.dtype))


def bn_moments(bn):
    """`(moving mean, moving variance + mean**2)` of `bn`, in float64: the raw moments its statistics give."""
    mean = np.asarray(keras.ops.convert_to_numpy(bn.moving_mean), np.float64)
    variance = np.asarray(keras.ops.convert_to_numpy(bn.moving_variance), np.float64)
    return mean, variance + mean**2

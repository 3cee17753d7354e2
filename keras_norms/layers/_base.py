"""Shared anatomy of the normalization layers: argument checks and state.

Every layer reports a bad argument the same way (a `ValueError` naming the
layer, the argument, the value and the fix) and creates its non-trainable
state the same way (`trainable=False`, `autocast=False`).
"""

import inspect
import math
import numbers

import keras
import numpy as np
from keras import initializers

from keras_norms.ops import _stats


class NormalizationLayer(keras.layers.Layer):
    """Base class of the keras_norms normalization layers (not public)."""

    def _owner(self):
        """How error messages name this layer: its class and its name."""
        return f"{type(self).__name__} (layer '{self.name}')"

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

    def _error(self, argument, value, fix):
        return ValueError(
            f"{type(self).__name__} (layer '{self.name}'): invalid "
            f"`{argument}`={value!r}. {fix}"
        )

    def _check_axis(self, axis):
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise self._error("axis", axis, "Pass one int, the channel axis (e.g. -1 or 1).")
        return axis

    def _check_unit_float(self, argument, value):
        number = _as_float(value)
        if number is None or not 0.0 <= number <= 1.0:
            raise self._error(argument, value, "Pass a float in [0, 1].")
        return number

    def _check_synchronized(self, synchronized):
        if not isinstance(synchronized, bool):
            raise self._error(
                "synchronized",
                synchronized,
                "Pass True (batch statistics over every replica) or False (each replica's own).",
            )
        return synchronized

    def _check_epsilon(self, epsilon):
        number = _as_float(epsilon)
        if number is None or not number > 0.0 or math.isinf(number):
            raise self._error("epsilon", epsilon, positive_float_fix(type(self), "epsilon"))
        return number

    def _add_gamma_beta(self, shape):
        """Creates `gamma` (if `scale`) then `beta` (if `center`), as Keras BN does."""
        if self.scale:
            self.gamma = self.add_weight(
                shape=shape,
                name="gamma",
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
                trainable=True,
                autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                shape=shape,
                name="beta",
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                trainable=True,
                autocast=False,
            )

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


def _as_float(value):
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number

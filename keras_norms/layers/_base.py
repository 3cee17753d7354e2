"""Shared anatomy of the normalization layers: argument checks and state.

Every layer reports a bad argument the same way (a `ValueError` naming the
layer, the argument, the value and the fix) and creates its non-trainable
state the same way (`trainable=False`, `autocast=False`).
"""

import math

import keras
from keras import initializers

from keras_norms.ops import _stats


class NormalizationLayer(keras.layers.Layer):
    """Base class of the keras_norms normalization layers (not public)."""

    def _owner(self):
        """How error messages name this layer: its class and its name."""
        return f"{type(self).__name__} (layer '{self.name}')"

    def _channel_axis_and_size(self, input_shape):
        """The channel axis of `input_shape` (non-negative) and its static size.

        Raises:
            ValueError: if `axis` is out of range, is the batch axis 0, or
                names a channel dimension of unknown size.
        """
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

    def _check_epsilon(self, epsilon):
        number = _as_float(epsilon)
        if number is None or not number > 0.0 or math.isinf(number):
            raise self._error("epsilon", epsilon, "Pass a positive float such as 1e-3.")
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
        if not callable(initializer) or isinstance(initializer, initializers.Initializer):
            initializer = initializers.get(initializers.serialize(initializer))
        return self.add_weight(
            shape=shape, name=name, initializer=initializer, trainable=False, autocast=False
        )


def _as_float(value):
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number

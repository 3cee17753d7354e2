"""Float64 NumPy oracles for Normalization Propagation (``ALGORITHMS.md`` §11).

Written from the specification, independently of ``keras_norms.ops``:

* §11.2 / the "Decision for keras_norms" box: each output unit's weight vector (its fan-in: every kernel axis but
  the last for ``Conv*D`` ``k... + (in // groups, out)`` and ``Dense`` ``(in, out)``) is divided by
  ``sqrt(sum W**2 + eps)``; the layer computes ``u = gamma * (W_hat x) + beta`` per output unit, then the
  activation; there is no bias;
* the NormProp ReLU ``(max(u, 0) - m) / s`` with ``m = E[max(Z, 0)]`` and ``s**2 = Var[max(Z, 0)]`` for
  ``Z ~ N(0, 1)``. Here they are written as ``m = phi(0)`` (the standard normal density at 0: the integral of
  ``z phi(z)`` over ``z > 0``) and ``s**2 = E[max(Z, 0)**2] - m**2 = 1/2 - m**2``, not as the package's
  ``1/sqrt(2 pi)`` and ``sqrt((1 - 1/pi) / 2)``.

The convolutions and the dense product are the naive float64 forward passes of ``tests.reference.
weight_standardization``.
"""

import math
import statistics

import numpy as np

from tests.reference.weight_standardization import conv
from tests.reference.weight_standardization import dense

__all__ = [
    "RELU_MEAN",
    "RELU_STD",
    "norm_prop_conv_oracle",
    "norm_prop_dense_oracle",
    "norm_prop_relu",
    "norm_prop_relu_oracle",
    "normalize_rows",
]

RELU_MEAN = statistics.NormalDist().pdf(0.0)  # phi(0), from the standard library
RELU_STD = math.sqrt(0.5 - RELU_MEAN**2)


def normalize_rows(kernel, epsilon):
    """``W_i / sqrt(sum_j W_ij**2 + eps)`` for each output unit i (the last kernel axis), float64."""
    kernel = np.asarray(kernel, np.float64)
    out = np.empty_like(kernel)
    for i in range(kernel.shape[-1]):
        row = kernel[..., i]
        out[..., i] = row / math.sqrt(float((row * row).sum()) + epsilon)
    return out


def norm_prop_relu(u):
    return (np.maximum(np.asarray(u, np.float64), 0.0) - RELU_MEAN) / RELU_STD


def _affine_and_activation(u, weights, activation, channel_axis=-1):
    shape = [1] * u.ndim
    shape[channel_axis] = -1
    u = u * np.asarray(weights["gamma"], np.float64).reshape(shape) + np.asarray(weights["beta"], np.float64).reshape(
        shape
    )
    if activation in (None, "linear"):
        return u
    if activation == "relu":
        return np.maximum(u, 0.0)
    raise NotImplementedError(f"oracle activation {activation!r}")


# --------------------------------------------------------------------------------------------- registry adapters
# Signature of tests/cases.py: oracle(x, weights, training, frozen_input=None, **layer_kwargs) -> (y, new_state).
# NormProp has no state and computes the same function in training and inference.
def norm_prop_conv_oracle(x, weights, training, frozen_input=None, *, strides=1, padding="valid", dilation_rate=1,
                          groups=1, epsilon=1e-8, activation=None, data_format=None, **_):
    kernel = normalize_rows(weights["kernel"], epsilon)
    x = np.asarray(x, np.float64)
    if data_format == "channels_first":
        x = np.moveaxis(x, 1, -1)
    u = _affine_and_activation(conv(x, kernel, strides, padding, dilation_rate, groups), weights, activation)
    return (np.moveaxis(u, -1, 1) if data_format == "channels_first" else u), {}


def norm_prop_dense_oracle(x, weights, training, frozen_input=None, *, epsilon=1e-8, activation=None, **_):
    u = dense(x, normalize_rows(weights["kernel"], epsilon))
    return _affine_and_activation(u, weights, activation), {}


def norm_prop_relu_oracle(x, weights, training, frozen_input=None, **_):
    return norm_prop_relu(x), {}

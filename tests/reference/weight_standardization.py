"""Float64 NumPy oracles for Weight Standardization and Scaled WS (``ALGORITHMS.md`` §7).

Written from the specification, independently of ``keras_norms.ops``:

* §7.1 WS: per output unit, over the fan-in axes of the kernel layout, biased variance, epsilon inside the square
  root: ``W_hat = (W - mean) / sqrt(var + eps)``;
* §7.2 Scaled WS (timm convention, the "Decision for keras_norms" box):
  ``W_hat = gain * gamma * fan_in**-0.5 * (W - mean) / sqrt(var + eps)``;
* the Keras kernel layouts of §1.3 / §7.1: ``Conv*D`` ``k... + (in // groups, out)`` (fan-in: all axes but the
  last), ``Dense`` ``(in, out)`` (axis 0), ``DepthwiseConv2D`` ``(kh, kw, in, mult)`` (axes 0, 1),
  ``Conv2DTranspose`` ``(kh, kw, out, in)`` (axes 0, 1, 3);
* the forward passes those kernels go through, channels last, in float64: N-D convolution (strides, "valid",
  "same" and 1D "causal" padding, dilation, groups), depthwise 2D convolution, transposed 2D convolution
  (dilation 1; defined as the adjoint of the strided convolution, TensorFlow's padding convention) and dense.

Everything is deliberately naive: a loop over output units for the statistics, a loop over kernel taps for the
convolutions, so that it can serve as a reference for the vectorized float32 package code.
"""

import itertools
import math

import numpy as np

__all__ = [
    "FAN_IN_AXES",
    "conv",
    "conv2d_transpose",
    "dense",
    "depthwise_conv2d",
    "scaled_standardize",
    "scaled_ws_conv_oracle",
    "standardize",
    "ws_conv_oracle",
    "ws_conv_transpose_oracle",
    "ws_dense_oracle",
    "ws_depthwise_oracle",
]

# Kernel layout -> fan-in axes, as a function of the kernel rank.
FAN_IN_AXES = {
    "conv": lambda ndim: tuple(range(ndim - 1)),
    "dense": lambda ndim: (0,),
    "depthwise": lambda ndim: tuple(range(ndim - 2)),
    "transpose": lambda ndim: tuple(range(ndim - 2)) + (ndim - 1,),
}


def _f64(a):
    return np.asarray(a, np.float64)


def _units_by_fan_in(kernel, axes):
    """The kernel as a (units, fan_in) matrix, and the permutation that made it."""
    units = [a for a in range(kernel.ndim) if a not in axes]
    perm = units + list(axes)
    moved = np.transpose(kernel, perm)
    return moved.reshape(int(np.prod([kernel.shape[a] for a in units])), -1), perm, moved.shape


def _back(matrix, perm, moved_shape):
    return np.transpose(matrix.reshape(moved_shape), np.argsort(perm))


def standardize(kernel, layout, epsilon):
    """WS of ``kernel`` (layout "conv", "dense", "depthwise" or "transpose"), float64."""
    kernel = _f64(kernel)
    axes = FAN_IN_AXES[layout](kernel.ndim)
    rows, perm, moved_shape = _units_by_fan_in(kernel, axes)
    out = np.empty_like(rows)
    for i, row in enumerate(rows):
        mean = row.sum() / row.size
        var = ((row - mean) ** 2).sum() / row.size  # biased, two-pass
        out[i] = (row - mean) / math.sqrt(var + epsilon)
    return _back(out, perm, moved_shape)


def scaled_standardize(kernel, layout, gain, epsilon, gamma=1.0):
    """Scaled WS (timm): ``gain * gamma * I**-0.5 * WS(kernel)``; ``gain`` has one value per output unit."""
    kernel = _f64(kernel)
    axes = FAN_IN_AXES[layout](kernel.ndim)
    fan_in = int(np.prod([kernel.shape[a] for a in axes]))
    rows, perm, moved_shape = _units_by_fan_in(standardize(kernel, layout, epsilon), axes)
    gain = np.ones(rows.shape[0]) if gain is None else _f64(gain).reshape(-1)
    rows = rows * (gain[:, None] * gamma / math.sqrt(fan_in))
    return _back(rows, perm, moved_shape)


# --------------------------------------------------------------------------------------------- forward passes
def _tuple(value, rank):
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * rank


def _padding_1d(length, k, stride, dilation, padding):
    """(left pad, right pad, output length) of one spatial axis, TensorFlow's convention."""
    span = (k - 1) * dilation + 1
    if padding == "valid":
        return 0, 0, (length - span) // stride + 1
    if padding == "same":
        out = -(-length // stride)
        total = max((out - 1) * stride + span - length, 0)
        return total // 2, total - total // 2, out
    if padding == "causal":
        return span - 1, 0, (length - 1) // stride + 1
    raise ValueError(f"padding={padding!r}")


def conv(x, kernel, strides=1, padding="valid", dilation_rate=1, groups=1):
    """N-D convolution (cross-correlation), channels last: ``x`` (N, *spatial, C), ``kernel`` (*k, C/groups, F)."""
    x, kernel = _f64(x), _f64(kernel)
    rank = x.ndim - 2
    ks, strides, dils = kernel.shape[:rank], _tuple(strides, rank), _tuple(dilation_rate, rank)
    pads = [_padding_1d(x.shape[1 + a], ks[a], strides[a], dils[a], padding) for a in range(rank)]
    xp = np.pad(x, [(0, 0)] + [(lo, hi) for lo, hi, _ in pads] + [(0, 0)])
    out_len = [p[2] for p in pads]
    cin, filters = kernel.shape[-2], kernel.shape[-1]
    fpg = filters // groups
    y = np.zeros((x.shape[0], *out_len, filters))
    for tap in itertools.product(*[range(k) for k in ks]):
        window = tuple(
            slice(tap[a] * dils[a], tap[a] * dils[a] + (out_len[a] - 1) * strides[a] + 1, strides[a])
            for a in range(rank)
        )
        patch = xp[(slice(None), *window)]  # (N, *out, C)
        for g in range(groups):
            y[..., g * fpg:(g + 1) * fpg] += patch[..., g * cin:(g + 1) * cin] @ kernel[tap][:, g * fpg:(g + 1) * fpg]
    return y


def depthwise_conv2d(x, kernel, strides=1, padding="valid", dilation_rate=1):
    """Depthwise 2D convolution: ``kernel`` (kh, kw, C, M); output channel ``c * M + m``."""
    x, kernel = _f64(x), _f64(kernel)
    kh, kw, c, m = kernel.shape
    full = np.zeros((kh, kw, c, c * m))
    for ci in range(c):
        full[:, :, ci, ci * m:(ci + 1) * m] = kernel[:, :, ci, :]
    return conv(x, full, strides, padding, dilation_rate)  # a dense conv whose kernel is block-diagonal


def conv2d_transpose(x, kernel, strides=1, padding="valid"):
    """Transposed 2D convolution, ``kernel`` (kh, kw, F, C), dilation 1, no output padding.

    The adjoint of the strided convolution that maps an (H_out, W_out, F) input to x's (H, W, C), with
    H_out = H*s + max(k - s, 0) ("valid") or H*s ("same"):
    ``y[p, a] += x[i, b] * kernel[t, a, b]`` for every input position i and tap t with ``p = i*s + t - pad``.
    """
    x, kernel = _f64(x), _f64(kernel)
    n, h, w, _ = x.shape
    kh, kw, filters, _ = kernel.shape
    s = _tuple(strides, 2)
    out, pad = [], []
    for length, k, st in ((h, kh, s[0]), (w, kw, s[1])):
        o = length * st + max(k - st, 0) if padding == "valid" else length * st
        out.append(o)
        pad.append(0 if padding == "valid" else max((length - 1) * st + k - o, 0) // 2)
    size = [max((h - 1) * s[0] + kh, out[0] + pad[0]), max((w - 1) * s[1] + kw, out[1] + pad[1])]
    y = np.zeros((n, size[0], size[1], filters))
    for ti, tj in itertools.product(range(kh), range(kw)):
        contribution = x @ kernel[ti, tj].T  # (N, H, W, F)
        y[:, ti:ti + (h - 1) * s[0] + 1:s[0], tj:tj + (w - 1) * s[1] + 1:s[1]] += contribution
    return y[:, pad[0]:pad[0] + out[0], pad[1]:pad[1] + out[1]]


def dense(x, kernel):
    return np.tensordot(_f64(x), _f64(kernel), axes=[[-1], [0]])


def _finish(y, weights, use_bias, activation):
    if use_bias:
        y = y + _f64(weights["bias"])
    if activation in (None, "linear"):
        return y
    if activation == "relu":
        return np.maximum(y, 0.0)
    raise NotImplementedError(f"oracle activation {activation!r}")


# --------------------------------------------------------------------------------------------- registry adapters
# Signature of tests/cases.py: oracle(x, weights, training, frozen_input=None, **layer_kwargs) -> (y, new_state).
# WS layers have no state and compute the same function in training and inference.
def _conv_forward(x, kernel, strides, padding, dilation_rate, groups, data_format):
    if data_format == "channels_first":
        x = np.moveaxis(x, 1, -1)
    y = conv(x, kernel, strides, padding, dilation_rate, groups)
    return y if data_format != "channels_first" else np.moveaxis(y, -1, 1)


def ws_conv_oracle(x, weights, training, frozen_input=None, *, strides=1, padding="valid", dilation_rate=1,
                   groups=1, ws_epsilon=1e-5, use_bias=True, activation=None, data_format=None, **_):
    kernel = standardize(weights["kernel"], "conv", ws_epsilon)
    y = _conv_forward(x, kernel, strides, padding, dilation_rate, groups, data_format)
    return _finish(y, weights, use_bias, activation), {}


def scaled_ws_conv_oracle(x, weights, training, frozen_input=None, *, strides=1, padding="valid", dilation_rate=1,
                          groups=1, ws_epsilon=1e-6, gamma=1.0, use_bias=True, activation=None, data_format=None,
                          **_):
    kernel = scaled_standardize(weights["kernel"], "conv", weights["gain"], ws_epsilon, gamma)
    y = _conv_forward(x, kernel, strides, padding, dilation_rate, groups, data_format)
    return _finish(y, weights, use_bias, activation), {}


def ws_depthwise_oracle(x, weights, training, frozen_input=None, *, strides=1, padding="valid", dilation_rate=1,
                        ws_epsilon=1e-5, use_bias=True, activation=None, **_):
    kernel = standardize(weights["kernel"], "depthwise", ws_epsilon)
    return _finish(depthwise_conv2d(x, kernel, strides, padding, dilation_rate), weights, use_bias, activation), {}


def ws_conv_transpose_oracle(x, weights, training, frozen_input=None, *, strides=1, padding="valid",
                             ws_epsilon=1e-5, use_bias=True, activation=None, **_):
    kernel = standardize(weights["kernel"], "transpose", ws_epsilon)
    return _finish(conv2d_transpose(x, kernel, strides, padding), weights, use_bias, activation), {}


def ws_dense_oracle(x, weights, training, frozen_input=None, *, ws_epsilon=1e-5, use_bias=True, activation=None,
                    **_):
    kernel = standardize(weights["kernel"], "dense", ws_epsilon)
    return _finish(dense(x, kernel), weights, use_bias, activation), {}

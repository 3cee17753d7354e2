"""Float64 NumPy oracles for Weight Normalization (Salimans & Kingma, 2016), written from the paper.

* eq. 2: ``w = g * v / ||v||`` per output unit, the norm over the unit's fan-in (the kernel layouts of
  ``tests.reference.weight_standardization.FAN_IN_AXES``), with 1e-12 added to the sum of squares;
* §3, data-dependent initialization: with ``t = v.x / ||v||`` (no bias) and its mean and biased variance per output
  channel over the batch and spatial positions, ``g = 1 / sqrt(var + 1e-10)`` and ``b = -mean * g``.
"""

import math

import numpy as np

from tests.reference import weight_standardization as ws_ref

LAYOUTS = {
    "Dense": "dense",
    "Conv1D": "conv",
    "Conv2D": "conv",
    "Conv3D": "conv",
    "DepthwiseConv2D": "depthwise",
    "Conv2DTranspose": "transpose",
}


def weight_norm(kernel, layout, g=None):
    """``g * v / sqrt(sum v**2 + 1e-12)`` per output unit (``g`` None: the unit direction), float64."""
    kernel = np.asarray(kernel, np.float64)
    axes = ws_ref.FAN_IN_AXES[layout](kernel.ndim)
    rows, perm, moved_shape = ws_ref._units_by_fan_in(kernel, axes)
    gains = np.ones(rows.shape[0]) if g is None else np.asarray(g, np.float64).reshape(-1)
    out = np.empty_like(rows)
    for i, row in enumerate(rows):
        out[i] = gains[i] * row / math.sqrt((row**2).sum() + 1e-12)
    return ws_ref._back(out, perm, moved_shape)


def forward(x, kernel, inner, inner_kwargs):
    """The wrapped layer's function before its bias, channels last, float64."""
    kw = {k: inner_kwargs[k] for k in ("strides", "padding", "dilation_rate", "groups") if k in inner_kwargs}
    if inner == "Dense":
        return ws_ref.dense(x, kernel)
    if inner == "DepthwiseConv2D":
        kw.pop("groups", None)
        return ws_ref.depthwise_conv2d(x, kernel, **kw)
    if inner == "Conv2DTranspose":
        return ws_ref.conv2d_transpose(x, kernel, kw.get("strides", 1), kw.get("padding", "valid"))
    return ws_ref.conv(x, kernel, **kw)


def data_init(x, kernel, inner, inner_kwargs):
    """The paper's initial ``(g, b)`` per output channel, from the batch ``x``."""
    t = forward(x, weight_norm(kernel, LAYOUTS[inner]), inner, inner_kwargs)
    t = t.reshape(-1, t.shape[-1])
    mean = t.mean(axis=0)
    var = ((t - mean) ** 2).mean(axis=0)
    g = 1.0 / np.sqrt(var + 1e-10)
    return g, -mean * g


def weight_norm_oracle(x, weights, training, frozen_input=None, *, layer, data_init=True, **_):
    """Registry adapter: ``layer`` is the case's `tests.case.Fresh` inner layer; weights ``g``, ``kernel``, ``bias``."""
    inner, kw = layer.cls.__name__, layer.kwargs
    g, bias = weights["g"], weights.get("bias")
    state = {}
    if data_init and training and not weights["initialized"]:
        g, bias = globals()["data_init"](x, weights["kernel"], inner, kw)
        g = g.reshape(np.shape(weights["g"]))
        state = {"initialized": 1.0, "g": g, "bias": bias}
    y = forward(x, weight_norm(weights["kernel"], LAYOUTS[inner], g), inner, kw)
    return ws_ref._finish(y, {"bias": bias}, kw.get("use_bias", True), kw.get("activation")), state

"""Weight Standardization (WS) and Scaled WS of a kernel, on `keras.ops`.

Both functions standardize each output channel of a kernel over its fan-in
axes, in float32 (float64 stays float64), with the
two-pass biased variance of `keras_norms.ops.moments` and epsilon inside the
square root. Which axes are the fan-in depends on the kernel layout:

| Keras layer | kernel shape | fan-in axes |
|---|---|---|
| `Conv1D/2D/3D` (grouped included) | `kernel_size + (in // groups, out)` | all but the last |
| `Dense` | `(in, out)` | `(0,)` |
| `DepthwiseConv2D` | `(kh, kw, in, multiplier)` | `(0, 1)` |
| `Conv2DTranspose` | `(kh, kw, out, in)` | `(0, 1, 3)` |

References:
    Qiao, Wang, Liu, Shen & Yuille, "Micro-Batch Training with
    Batch-Channel Normalization and Weight Standardization",
    arXiv:1903.10520 (official code: github.com/joe-siyuan-qiao/
    WeightStandardization).
    Brock, De & Smith, "Characterizing signal propagation to close the
    performance gap in unnormalized ResNets", arXiv:2101.08692; Brock, De,
    Smith & Simonyan, "High-Performance Large-Scale Image Recognition Without
    Normalization", arXiv:2102.06171.
"""

import math

from keras import ops

from keras_norms.ops import _stats


def fan_in_axes(ndim, output_axes):
    """The kernel axes a rank-`ndim` kernel is standardized over.

    Args:
        ndim: int, the kernel rank.
        output_axes: ints (negative or positive), the kernel axes that index
            the standardized units: `(-1,)` for `Conv*D` and `Dense`,
            `(-2, -1)` for `DepthwiseConv2D`, `(-2,)` for `Conv2DTranspose`.

    Returns:
        A sorted list of the other axes, non-negative.
    """
    keep = {axis % ndim for axis in output_axes}
    return [axis for axis in range(ndim) if axis not in keep]


def fan_in(shape, axes):
    """The fan-in $I$: the product of `shape` over `axes` (static ints)."""
    return math.prod(int(shape[axis]) for axis in axes)


def _canonical_axes(axes, ndim):
    axes = sorted({int(axis) % ndim for axis in axes})
    if not axes:
        raise ValueError("keras_norms.ops: `axes` must name at least one fan-in axis of the kernel.")
    return axes


def standardize_weights(kernel, axes, epsilon):
    """Weight Standardization of `kernel` over its fan-in `axes`.

    For each output unit $i$ (every index of the axes not in `axes`) and
    fan-in index $j$ (the indices of `axes`), with $I$ the fan-in:

    $$\\mu_i=\\frac1I\\sum_jW_{ij},\\qquad
      \\sigma^2_i=\\frac1I\\sum_j(W_{ij}-\\mu_i)^2,\\qquad
      \\hat W_{ij}=\\frac{W_{ij}-\\mu_i}{\\sqrt{\\sigma^2_i+\\epsilon}}$$

    The variance is the biased (population) one, computed in two passes, and
    $\\epsilon$ is added inside the square root. Gradients flow through
    $\\mu_i$ and $\\sigma_i$. (Implementations differ: the official PyTorch
    snippet divides by the unbiased std plus $\\epsilon$, the official TF
    snippet by the biased std plus $\\epsilon$; which form the paper states
    is not confirmed. They differ negligibly for fan-in >= 27. See the Design
    notes page of the documentation, section Weight Standardization and
    Scaled WS.)

    Args:
        kernel: tensor or variable, any float dtype; float16 and bfloat16
            are upcast to float32. Pass the float32 master value: inside a
            mixed-precision layer call, a variable created with
            `autocast=True` reads as float16 (the WS layers create their
            kernel with `autocast=False`).
        axes: ints, the fan-in axes (see the module docstring per layout).
        epsilon: float > 0 added to the variance.

    Returns:
        $\\hat W$ with `kernel`'s shape, in float32 (float64 for a float64
        kernel).
    """
    w = _stats.upcast(kernel)
    axes = _canonical_axes(axes, len(w.shape))
    mean, variance = _stats.moments(w, axes, keepdims=True)
    # Python floats, not ops.cast(float): on TensorFlow that goes through float32.
    return (w - mean) * ops.rsqrt(variance + float(epsilon))


def scaled_standardize_weights(kernel, axes, gain, epsilon, gamma=1.0):
    """Scaled Weight Standardization (NF-ResNets/NF-Nets, timm convention).

    With $\\mu_i,\\sigma^2_i$ the biased mean and variance over the fan-in
    `axes` (as in `standardize_weights`), $I$ the fan-in, $g_i$ the gain of
    output unit $i$ and $\\gamma$ the fixed activation constant:

    $$\\hat W_{ij}=g_i\\,\\gamma\\,I^{-1/2}\\,
      \\frac{W_{ij}-\\mu_i}{\\sqrt{\\sigma^2_i+\\epsilon}}$$

    $\\epsilon$ sits inside the square root next to the variance (timm's
    `ScaledStdConv2d`), not DeepMind's floor $\\sqrt{\\max(I\\sigma^2_i,
    10^{-4})}$; the two agree whenever $I\\sigma^2_i\\ge10^{-4}$ and
    $\\epsilon\\ll\\sigma^2_i$.

    Args:
        kernel: tensor or variable, any float dtype (statistics in float32).
        axes: ints, the fan-in axes.
        gain: `None` (no gain) or a tensor holding one value per output unit,
            of shape `kernel.shape` without `axes` (`(out,)` for a
            `Conv*D` kernel).
        epsilon: float > 0 added to the variance.
        gamma: float, the activation constant $\\gamma$ (1.0: none; for
            ReLU 1.7128585504 analytic, 1.7139588594 DeepMind's measured
            value). Defaults to 1.0.

    Returns:
        $\\hat W$ with `kernel`'s shape, in float32 (float64 for a float64
        kernel).
    """
    w = _stats.upcast(kernel)
    ndim = len(w.shape)
    axes = _canonical_axes(axes, ndim)
    mean, variance = _stats.moments(w, axes, keepdims=True)
    scale = ops.rsqrt(variance + float(epsilon)) * (float(gamma) / math.sqrt(fan_in(w.shape, axes)))
    if gain is not None:
        unit_shape = [1 if axis in axes else int(w.shape[axis]) for axis in range(ndim)]
        scale = scale * ops.reshape(ops.cast(gain, w.dtype), unit_shape)
    return (w - mean) * scale

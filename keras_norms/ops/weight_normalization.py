"""Weight Normalization of a kernel, and its data-dependent initialization, on `keras.ops`.

Each output unit's weight vector is reparameterized by a direction $v$ and a
gain $g$, $w = g\\,v/\\lVert v\\rVert$; which kernel axes index the output units
depends on the layout (see `keras_norms.ops.weight_standardization`): the last
axis for `Conv*D` and `Dense`, axis -2 for `Conv2DTranspose`, the last two
for `DepthwiseConv2D`.

Reference:
    Salimans & Kingma, "Weight Normalization: A Simple Reparameterization to
    Accelerate Training of Deep Neural Networks", arXiv:1602.07868.
"""

from keras import ops

from keras_norms.ops import _stats
from keras_norms.ops.norm_prop import l2_normalize_weights

# Added to the sum of squares: a zero direction gives a zero kernel, not NaN.
KERNEL_EPSILON = 1e-12
# Added to the pre-activation variance of the data-dependent initialization (tf-addons' value).
INIT_EPSILON = 1e-10


def weight_norm(kernel, g, axes, epsilon=KERNEL_EPSILON):
    """The weight-normalized kernel $w = g\\,v/\\lVert v\\rVert$.

    For each output unit $i$ (every index of the axes not in `axes`) and
    fan-in index $j$ (the indices of `axes`):

    $$w_{ij}=g_i\\,\\frac{v_{ij}}{\\sqrt{\\sum_jv_{ij}^2+\\epsilon}}$$

    computed in float32 (float64 stays float64); gradients flow through the
    norm (the paper's gradient, eq. 3).

    Args:
        kernel: the direction $v$, tensor or variable, any float dtype (pass
            the float32 master value).
        g: `None` (the unit-norm direction alone) or a tensor with one value
            per output unit, of shape `kernel.shape` without `axes`.
        axes: ints, the fan-in axes.
        epsilon: float > 0 added to the sum of squares. Defaults to 1e-12.

    Returns:
        $w$ with `kernel`'s shape, in float32 (float64 for a float64 kernel).

    Raises:
        ValueError: if `axes` is empty.
    """
    return l2_normalize_weights(kernel, axes, epsilon, gamma=g)


def weight_norm_gain(kernel, axes, epsilon=KERNEL_EPSILON):
    """$\\lVert v_i\\rVert=\\sqrt{\\sum_jv_{ij}^2+\\epsilon}$ per output unit: the gain for which $w = v$.

    Args:
        kernel: the direction $v$, any float dtype.
        axes: ints, the fan-in axes.
        epsilon: float > 0 added to the sum of squares. Defaults to 1e-12.

    Returns:
        A float32 (float64) tensor of shape `kernel.shape` without `axes`.
    """
    v = _stats.upcast(kernel)
    return ops.sqrt(ops.sum(ops.square(v), axis=sorted(a % len(v.shape) for a in axes)) + float(epsilon))


def weight_norm_init(pre_activation, channel_axis, epsilon=INIT_EPSILON):
    """The data-dependent initialization of the gain and bias (Salimans & Kingma, §3).

    With $t$ the pre-activation of a unit computed with the unit-norm
    direction and no bias, $t = v\\cdot x/\\lVert v\\rVert$, and $\\mu$, $\\sigma^2$
    its mean and biased variance over every axis but `channel_axis` (the
    batch and spatial positions), in float32:

    $$g=\\frac{1}{\\sqrt{\\sigma^2+\\epsilon}},\\qquad b=-\\frac{\\mu}{\\sqrt{\\sigma^2+\\epsilon}}$$

    so that $g\\,t+b$ has mean 0 and variance 1 on this batch, per unit.

    Args:
        pre_activation: $t$, any float dtype, channels on `channel_axis`.
        channel_axis: int, the axis of the output units.
        epsilon: float > 0 added to the variance. Defaults to 1e-10.

    Returns:
        `(g, b)`, two float32 (float64) vectors with one entry per channel.
    """
    t = _stats.upcast(pre_activation)
    axis = _stats.canonical_axis(channel_axis, len(t.shape))
    mean, variance = _stats.moments(t, _stats.reduction_axes(len(t.shape), axis))
    scale = ops.rsqrt(variance + float(epsilon))
    return scale, -mean * scale

"""Normalization Propagation (NormProp): weight normalization and the re-centred ReLU.

NormProp normalizes the data once and propagates the
normalization analytically: if a layer's input has zero mean and identity
covariance, dividing each output unit's weight vector by its $\\ell_2$ norm
gives pre-activations of unit variance; a ReLU of a standard normal has the
mean $1/\\sqrt{2\\pi}$ and the standard deviation
$\\sqrt{\\tfrac12(1-\\tfrac1\\pi)}$, which the next layer's input is re-centred
and re-scaled by. No batch statistic is used.

`RELU_MEAN` and `RELU_STD` are computed from their closed forms:

| constant | closed form | value |
|---|---|---|
| `RELU_MEAN` $=E[\\max(Z,0)]$ | $1/\\sqrt{2\\pi}$ | 0.3989422804 |
| `RELU_STD` $=\\sqrt{\\operatorname{Var}[\\max(Z,0)]}$ | $\\sqrt{\\tfrac12(1-\\tfrac1\\pi)}$ | 0.5838193701 |

for $Z\\sim\\mathcal N(0,1)$.

Reference:
    Arpit, Zhou, Kota & Govindaraju, "Normalization Propagation: A Parametric
    Technique for Removing Internal Covariate Shift in Deep Networks",
    ICML 2016, arXiv:1603.01431.
"""

from keras import ops

from keras_norms.ops import _stats
from keras_norms.ops._common import RELU_MEAN
from keras_norms.ops._common import RELU_STD
from keras_norms.ops._dispatch import dispatch

__all__ = ["RELU_MEAN", "RELU_STD", "l2_normalize_weights", "norm_prop_relu"]


def l2_normalize_weights(kernel, axes, epsilon=1e-8, gamma=None):
    """Divides each output unit's weight vector by its $\\ell_2$ norm (NormProp).

    For each output unit $i$ (every index of the axes not in `axes`) and
    fan-in index $j$ (the indices of `axes`), with an optional per-unit scale
    $\\gamma_i$:

    $$\\hat W_{ij}=\\gamma_i\\,\\frac{W_{ij}}{\\sqrt{\\sum_jW_{ij}^2+\\epsilon}}$$

    computed in float32 (float64 stays float64), $\\epsilon$ inside the square
    root; gradients flow through the norm, as in weight normalization. A zero
    weight vector gives zeros, not NaN. Contrary to Weight Standardization
    the vector is not centred.

    Args:
        kernel: tensor or variable, any float dtype; float16 and bfloat16
            are upcast to float32. Pass the float32 master value (the NormProp
            layers create their kernel with `autocast=False`).
        axes: ints, the fan-in axes: every kernel axis but the last for a
            `Conv1D/2D/3D` kernel `kernel_size + (in // groups, out)`, `(0,)`
            for a `Dense` kernel `(in, out)`.
        epsilon: float > 0 added to the sum of squares. Defaults to 1e-8.
        gamma: `None` (no scale) or a tensor with one value per output unit,
            of shape `kernel.shape` without `axes` (`(out,)` for the layouts
            above). Defaults to `None`.

    Returns:
        $\\hat W$ with `kernel`'s shape, in float32 (float64 for a float64
        kernel).

    Raises:
        ValueError: if `axes` is empty.
    """
    w = _stats.upcast(kernel)
    ndim = len(w.shape)
    axes = sorted({int(axis) % ndim for axis in axes})
    if not axes:
        raise ValueError("keras_norms.ops.l2_normalize_weights: `axes` must name at least one fan-in axis.")
    # Python float epsilon: ops.cast(float) would go through float32 on TensorFlow.
    scale = ops.rsqrt(ops.sum(ops.square(w), axis=axes, keepdims=True) + float(epsilon))
    if gamma is not None:
        unit_shape = [1 if axis in axes else int(w.shape[axis]) for axis in range(ndim)]
        scale = scale * ops.reshape(ops.cast(gamma, w.dtype), unit_shape)
    return w * scale


def norm_prop_relu(x):
    """The NormProp ReLU: a ReLU re-centred and re-scaled to zero mean, unit variance.

    $$y=\\frac{\\max(x,0)-1/\\sqrt{2\\pi}}{\\sqrt{\\tfrac12\\left(1-\\tfrac1\\pi\\right)}}$$

    with the fixed constants `RELU_MEAN` and `RELU_STD`: for
    $x\\sim\\mathcal N(0,1)$, $y$ has mean 0 and variance 1. The constants do not
    depend on the preceding layer's $\\gamma,\\beta$ (NormProp's design).
    Computed in float32 (float64 stays float64) and cast back to `x`'s dtype.
    PyTorch has a kernel with one autograd node (`_backends/torch/activations.py`).

    Args:
        x: tensor, any float dtype.

    Returns:
        A tensor of `x`'s shape and dtype.
    """
    dtype = getattr(x, "dtype", None) or "float32"
    return ops.cast(dispatch("norm_prop_relu", _norm_prop_relu_reference, _stats.upcast(x)), dtype)


def _norm_prop_relu_reference(x):
    return (ops.relu(x) - RELU_MEAN) / RELU_STD

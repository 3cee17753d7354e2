"""Layer normalization and RMS normalization: per example, over the feature axes.

Both normalize each slice of `x` spanned by the normalized axes $\\mathcal A$
(every other index fixed; typically one example's features) and apply an
elementwise affine whose weights span those axes. They never mix examples:
the statistics are per slice, so the batch size and the other examples do
not matter.

Statistics are computed in float32 (float64 stays float64) and results come
back in that dtype for the caller to cast. Weights hold the sizes of the
normalized axes in ascending order of the axes, and are reshaped (not
transposed) to broadcast against `x`, as `keras.ops.layer_normalization`
does.

References:
    Ba, Kiros & Hinton, "Layer Normalization", 2016, arXiv:1607.06450;
    Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019,
    arXiv:1910.07467. Peers: `keras.ops.layer_normalization`,
    `keras.ops.rms_normalization`, PyTorch `F.layer_norm`, `F.rms_norm`.
"""

from keras import ops

from keras_norms.ops import _common
from keras_norms.ops import _stats
from keras_norms.ops._dispatch import dispatch


def _prepared(x, axis, op):
    """`x` upcast, and `axis` (an int or a list of ints) as the sorted tuple of its distinct non-negative axes.

    Raises:
        ValueError: for an axis that is not an int in `[-ndim, ndim)`, naming the op.
    """
    x = _stats.upcast(x)
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return x, tuple(sorted({_stats.canonical_axis(a, len(x.shape), f"keras_norms.ops.{op}") for a in axes}))


def _weight(v, x, axes):
    """A weight spanning `axes` (or `None`) reshaped to broadcast against `x`; a rank-`ndim` one is kept."""
    ndim = len(x.shape)
    if v is None or len(v.shape) == ndim:
        return v
    shape = [1] * ndim
    for axis in axes:
        shape[axis] = -1 if x.shape[axis] is None else x.shape[axis]
    return ops.reshape(v, shape)


def layer_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3):
    """Layer normalization: each slice over the axes $\\mathcal A$ = `axis` standardized, then scaled and shifted.

    $$\\mu=\\operatorname{mean}_{\\mathcal A}x,\\qquad
      \\sigma^2=\\operatorname{mean}_{\\mathcal A}(x-\\mu)^2,\\qquad
      y=\\gamma\\,\\frac{x-\\mu}{\\sqrt{\\sigma^2+\\epsilon}}+\\beta$$

    with $\\gamma,\\beta$ spanning $\\mathcal A$. Two-pass in float32 (or
    float64); gradients flow through the statistics. The same function as
    `keras.ops.layer_normalization` (whose folded form
    $x\\,a-\\mu a+\\beta$ loses about $|\\mu|/\\sigma$ ulps); PyTorch's
    `F.layer_norm` replaces it where the normalized axes are the trailing ones
    (see `docs/fast-paths.md`).

    Args:
        x: tensor of any rank >= 1.
        gamma: optional scale with the sizes of the normalized axes (in
            ascending order of the axes), or broadcastable to `x` (`None`: 1).
        beta: optional shift, shaped as `gamma` (`None`: 0).
        axis: int or list of ints, the axes normalized over.
        epsilon: float added to the variance inside the square root.

    Returns:
        The output, in float32 or wider.

    Raises:
        ValueError: for an axis out of range.
    """
    x, axes = _prepared(x, axis, "layer_norm")
    # Kernels receive the sorted tuple of non-negative axes and the weights as given.
    return dispatch("layer_norm", _layer_norm_reference, x, _stats.like(gamma, x), _stats.like(beta, x), axes, epsilon)


def _layer_norm_reference(x, gamma, beta, axis, epsilon):
    mean, variance = _stats.moments(x, axis, keepdims=True)
    gamma, beta = _weight(gamma, x, axis), _weight(beta, x, axis)
    return _common.normalize_folded(x, mean, variance, gamma, beta, epsilon)


def rms_norm(x, scale=None, axis=-1, epsilon=1e-6):
    """RMS normalization: each slice over the axes $\\mathcal A$ = `axis` divided by its root mean square.

    $$y=\\gamma\\,\\frac{x}{\\sqrt{\\operatorname{mean}_{\\mathcal A}x^2+\\epsilon}}$$

    with the scale $\\gamma$ spanning $\\mathcal A$; no centring, no shift.
    Computed in float32 (or float64); gradients flow through the mean square.
    The same function as `keras.ops.rms_normalization`; PyTorch's `F.rms_norm`
    replaces it where the normalized axes are the trailing ones.

    Args:
        x: tensor of any rank >= 1.
        scale: optional $\\gamma$ with the sizes of the normalized axes (in
            ascending order of the axes), or broadcastable to `x` (`None`: 1).
        axis: int or list of ints, the axes normalized over.
        epsilon: float added to the mean square inside the square root.

    Returns:
        $y$, in float32 (float64 for a float64 input).

    Raises:
        ValueError: for an axis that `x` does not have.
    """
    x, axes = _prepared(x, axis, "rms_norm")
    return dispatch("rms_norm", _rms_norm_reference, x, _stats.like(scale, x), axes, epsilon)


def _rms_norm_reference(x, scale, axis, epsilon):
    # Sums over a count, not ops.mean: Keras's torch mean runs float64 in float32.
    mean_square = ops.sum(ops.square(x), axis=axis, keepdims=True) / ops.cast(_common.count(x, axis), x.dtype)
    return _common.scale_and_shift(x * ops.rsqrt(mean_square + epsilon), _weight(scale, x, axis), None)

"""Filter Response Normalization (FRN) and the Thresholded Linear Unit (TLU).

Singh & Krishnan, "Filter Response Normalization Layer: Eliminating Batch
Dependence in the Training of Deep Neural Networks", CVPR 2020,
arXiv:1911.09737. Peers: tensorflow-addons `FilterResponseNormalization` and
`TLU`; timm `FilterResponseNormTlu2d`.

FRN divides each example's channel by the root mean square of that channel
over the spatial positions; there is **no mean subtraction** and nothing is
shared between examples. TLU, $\\max(y,\\tau_c)$, is the activation that
goes with it: a ReLU with a learned per-channel threshold, which handles the
arbitrary offset the missing centring allows.

Written in `keras.ops` only. The mean square is computed in float32 or wider
(see `_stats`): in float16, $x^2$ overflows for $|x|>256$. `filter_response_norm`
returns that dtype and the caller casts; `tlu` returns the dtype of `x`.

Shapes: `x` has rank >= 2 with the batch on axis 0 and channels on `axis`
(not 0); the other axes are the spatial axes (rank 2 has none: $S=1$, the
sign regime described in `filter_response_norm`). Per-channel vectors have
shape `(C,)`.
"""

from keras import KerasTensor
from keras import ops

from keras_norms.ops import _common
from keras_norms.ops import _stats
from keras_norms.ops._dispatch import dispatch


def _check_axis(axis, ndim, owner):
    if ndim < 2:
        raise ValueError(
            f"{owner}: expected an input of rank >= 2 (batch, ..., channels), "
            f"received rank {ndim}."
        )
    fix = ". Pass the channel axis (e.g. -1 or 1); the mean square is taken over the other non-batch axes."
    return _stats.channel_axis(axis, ndim, owner, fix)


def mean_square(x, axis=-1):
    """Per-example, per-channel mean square over the spatial axes.

    $$\\nu^2_{n,c}=\\frac1S\\sum_{s}x^2_{n,s,c}$$

    over the $S$ positions of all axes but the batch axis and `axis`, in
    float32 or wider, with the reduced axes kept (size 1). For a rank-2 input
    ($S=1$) it is $x^2$.

    Args:
        x: tensor of rank >= 2.
        axis: int, the channel axis (not 0).

    Returns:
        $\\nu^2$, broadcastable to `x`, in float32 or wider.
    """
    x = _stats.upcast(x)
    ndim = len(x.shape)
    axis = _check_axis(axis, ndim, "keras_norms.ops.mean_square")
    axes = _common.spatial_axes(ndim, axis)
    if not axes:  # an empty axis list means "all axes" to some backends' sum
        return ops.square(x)
    # A sum over a count, not ops.mean: Keras's torch mean runs float64 in float32.
    count = ops.cast(_common.count(x, axes), x.dtype)
    return ops.sum(ops.square(x), axis=axes, keepdims=True) / count


def filter_response_norm(
    x, gamma=None, beta=None, epsilon=1e-6, axis=-1, learned_epsilon=None
):
    """Filter Response Normalization: no centring, per example and channel.

    $$\\nu^2_{n,c}=\\frac1S\\sum_{s}x^2_{n,s,c},\\qquad
      y=\\gamma_c\\,\\frac{x}{\\sqrt{\\nu^2_{n,c}+\\epsilon_{\\text{tot}}}}+\\beta_c,
      \\qquad \\epsilon_{\\text{tot}}=\\epsilon+|\\epsilon_l|$$

    where $s$ runs over the $S$ positions of every axis except the batch
    axis and `axis`, and $\\epsilon_l$ is `learned_epsilon` (0 when `None`;
    the tensorflow-addons form). Computed as
    $x\\cdot\\big(\\gamma_c/\\sqrt{\\nu^2+\\epsilon_{\\text{tot}}}\\big)+\\beta_c$,
    one per-(example, channel) scale, in float32 or wider. Each example is
    normalized on its own: the result does not depend on the batch, in
    training or at inference.

    With a single position ($S=1$: 1x1 maps, or rank 2), $\\nu^2=x^2$ and
    $x/\\sqrt{x^2+\\epsilon}\\approx\\operatorname{sign}(x)$, whose gradient
    vanishes away from 0 (at $\\epsilon=10^{-6}$, $\\pm0.01$ maps to
    $\\pm0.995$); a larger total epsilon, e.g. a learned one, keeps the
    curve smooth.

    Args:
        x: tensor of rank >= 2, batch on axis 0.
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        epsilon: float > 0, the fixed part of the constant added to $\\nu^2$
            inside the square root.
        axis: int, the channel axis (not 0).
        learned_epsilon: optional tensor broadcastable to $\\nu^2$ (a scalar
            or shape `(1,)`), whose absolute value is added to `epsilon`.

    Returns:
        The normalized tensor, in float32 or wider (float16 and bfloat16
        inputs give float32).

    Raises:
        ValueError: for a bad `axis` or an input of rank < 2.
    """
    x = _stats.upcast(x)
    ndim = len(x.shape)
    owner = "keras_norms.ops.filter_response_norm"
    axis = _check_axis(axis, ndim, owner)
    total_epsilon = epsilon
    if learned_epsilon is not None:
        total_epsilon = epsilon + ops.abs(_stats.like(learned_epsilon, x))
    scale = ops.rsqrt(mean_square(x, axis) + total_epsilon)
    gamma, beta = _channel_vector(gamma, x, axis), _channel_vector(beta, x, axis)
    return _common.scale_and_shift(x * scale, gamma, beta)


def tlu(x, tau, axis=-1):
    """Thresholded Linear Unit: a ReLU with a learned per-channel threshold.

    $$z=\\max(x,\\tau_c)=\\max(x-\\tau_c,0)+\\tau_c$$

    `tau` has one entry per channel, shape `(C,)` (tensorflow-addons' `TLU`
    uses one per position and channel instead). The maximum is taken in the
    dtype of `x`: rounding is monotone, so this equals the float32 maximum
    rounded to that dtype. Where $x=\\tau_c$ the gradient follows the
    backend's `maximum` (PyTorch and JAX split it in half, TensorFlow gives
    it to $x$). PyTorch has a kernel with a hand-written backward
    (`keras_norms/_backends/torch/tlu.py`); see `docs/fast-paths.md`.

    Args:
        x: tensor of rank >= 2, batch on axis 0.
        tau: `(C,)` thresholds.
        axis: int, the channel axis (not 0).

    Returns:
        A tensor of the shape and dtype of `x`.

    Raises:
        ValueError: for a bad `axis` or an input of rank < 2.
    """
    if not isinstance(x, KerasTensor) and not ops.is_tensor(x):
        x = ops.convert_to_tensor(x, dtype=getattr(x, "dtype", None))
    axis = _check_axis(axis, len(x.shape), "keras_norms.ops.tlu")
    return dispatch("tlu", _tlu_reference, x, tau, axis)


def _tlu_reference(x, tau, axis):
    return ops.maximum(x, _channel_vector(tau, x, axis))


def _channel_vector(v, x, axis):
    """A `(C,)` vector in `x`'s dtype, shaped to broadcast along `axis` of `x`."""
    return _common.channel_vector(_stats.like(v, x), len(x.shape), axis)

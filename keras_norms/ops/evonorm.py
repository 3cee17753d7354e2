"""EvoNorm-B0 and EvoNorm-S0 as functions.

Liu, Brock, Simonyan & Le, "Evolving Normalization-Activation Layers",
NeurIPS 2020 (arXiv:2004.02967). The equations and defaults follow the
official TensorFlow implementation (`tensorflow/tpu`, the official ResNet
model): $\\epsilon=10^{-5}$, moving-average decay 0.9 (Keras
`momentum=0.9`), 32 groups, a biased moving variance.

Both layers fuse the normalization with the nonlinearity: there is no
separate activation. B0 divides by the larger of a batch standard deviation
and $v_c x$ plus an instance standard deviation; S0 multiplies by a
sigmoid gate $\\sigma(v_c x)$ and divides by a per-example group standard
deviation.

Everything is written in `keras.ops`; statistics are computed in float32 or
wider (see `_stats`), two-pass, and results come back in that dtype for the
caller to cast. The three ops go through `dispatch`: backend kernels
(`keras_norms/_backends/{torch,xla}/evonorm.py`, one-pass shifted moments) give the same
outputs and gradients; see `docs/fast-paths.md`. S0's group moments come from the helper group normalization
uses (`_stats.group_moments`).

Shapes: `x` has rank >= 3 (EvoNorm acts on feature maps: B0's instance
variance is taken over the spatial axes) with the batch on axis 0 and
channels on `axis` (not 0); per-channel vectors have shape `(C,)`.
"""

from keras import ops

from keras_norms.ops import _common
from keras_norms.ops import _replicas
from keras_norms.ops import _stats
from keras_norms.ops._dispatch import dispatch
from keras_norms.ops._dispatch import run_reference


def _prepare(x, axis, owner):
    """`x` upcast, `axis` non-negative; rank >= 3 and `axis` != 0 checked."""
    x = _stats.upcast(x)
    ndim = len(x.shape)
    if ndim < 3:
        raise ValueError(
            f"{owner}: EvoNorm needs an input of rank >= 3 (batch, spatial "
            f"axes, channels), received rank {ndim} (shape {tuple(x.shape)}). "
            "For (N, C) features, add a length-1 spatial axis, e.g. "
            "keras.layers.Reshape((1, C)); note that B0's instance variance "
            "is then 0."
        )
    axis = _stats.channel_axis(axis, ndim, owner)
    return x, axis


def _vector(v, x, axis):
    """A `(C,)` vector as `x`'s dtype, shaped to broadcast along `axis`."""
    return _common.channel_vector(_stats.like(v, x), len(x.shape), axis)


def _b0(x, variance, v, gamma, beta, axis, epsilon):
    """B0 with a given per-channel variance (broadcastable to `x`)."""
    v, gamma, beta = (_vector(t, x, axis) for t in (v, gamma, beta))
    _, instance_variance = _stats.moments(x, _common.spatial_axes(len(x.shape), axis), keepdims=True)
    left = ops.sqrt(variance + epsilon)
    right = ops.sqrt(instance_variance + epsilon)
    right = right + (x if v is None else v * x)
    return _common.scale_and_shift(x / ops.maximum(left, right), gamma, beta)


def evonorm_b0(x, v=None, gamma=None, beta=None, axis=-1, epsilon=1e-5, synchronized=False):
    """EvoNorm-B0 in training mode (batch statistics, with gradient).

    $$y=\\frac{x}{\\max\\!\\Big(\\sqrt{s^2_{b,c}+\\epsilon},\\;
      v_c\\,x+\\sqrt{s^2_{n,c}+\\epsilon}\\Big)}\\,\\gamma_c+\\beta_c$$

    with $s^2_{b,c}$ the biased variance of channel $c$ over the batch and
    the spatial axes (every axis but `axis`), $s^2_{n,c}$ the biased
    variance of example $n$, channel $c$ over the spatial axes (the instance
    variance), and an elementwise max. Gradients flow through both
    variances, as in the official code. The max is never below
    $\\sqrt\\epsilon$, so the division is safe. At batch size 1 the batch
    variance equals the instance variance.

    Args:
        x: tensor of rank >= 3.
        v: optional `(C,)` gate weights (`None`: 1).
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        axis: int, the channel axis (not 0).
        epsilon: float added to both variances inside the square roots.
        synchronized: bool. True: $s^2_b$ is the variance of the global
            batch across replicas (`_replicas.moments`, with gradient);
            False: of this replica's batch (see `batch_norm`). The instance
            variance is per example either way.

    Returns:
        `(y, variance)`: the output and the `(C,)` biased batch variance $s^2_b$
        (for the moving average), in float32 or wider.

    Raises:
        ValueError: for an input of rank < 3 or a bad `axis`.
    """
    x, axis = _prepare(x, axis, "keras_norms.ops.evonorm_b0")
    shards = _replicas.device_slices(x)
    if not synchronized and shards > 1:
        return _replicas.per_device(lambda xs: evonorm_b0(xs, v, gamma, beta, axis, epsilon), shards, x)
    if _replicas.synchronizes(synchronized):
        # Not dispatched: a fused kernel would see this replica's batch only.
        return run_reference("evonorm_b0", "synchronized across replicas", _evonorm_b0_reference,
                             x, v, gamma, beta, axis, epsilon, moments=_replicas.moments)
    v, gamma, beta = (_stats.like(t, x) for t in (v, gamma, beta))
    # Kernels receive the upcast `x`, a non-negative axis and vectors of x's dtype.
    return dispatch("evonorm_b0", _evonorm_b0_reference, x, v, gamma, beta, axis, epsilon)


def _evonorm_b0_reference(x, v, gamma, beta, axis, epsilon, moments=_stats.moments):
    _, variance = moments(x, _stats.reduction_axes(len(x.shape), axis), keepdims=True)
    y = _b0(x, variance, v, gamma, beta, axis, epsilon)
    return y, ops.reshape(variance, (-1,))


def evonorm_b0_inference(x, moving_variance, v=None, gamma=None, beta=None, axis=-1, epsilon=1e-5):
    """EvoNorm-B0 in inference mode: the moving variance replaces $s^2_b$.

    $$y=\\frac{x}{\\max\\!\\Big(\\sqrt{\\hat s^2_c+\\epsilon},\\;
      v_c\\,x+\\sqrt{s^2_{n,c}+\\epsilon}\\Big)}\\,\\gamma_c+\\beta_c$$

    with $\\hat s^2$ = `moving_variance` (no gradient flows into it) and the
    instance variance $s^2_{n,c}$ of the example itself, so each example's
    output depends on no other example.

    Args:
        x: tensor of rank >= 3.
        moving_variance: `(C,)` variance $\\hat s^2$.
        v: optional `(C,)` gate weights (`None`: 1).
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        axis: int, the channel axis (not 0).
        epsilon: float added to both variances inside the square roots.

    Returns:
        The output, in float32 or wider.

    Raises:
        ValueError: for an input of rank < 3 or a bad `axis`.
    """
    x, axis = _prepare(x, axis, "keras_norms.ops.evonorm_b0_inference")
    moving_variance, v, gamma, beta = (_stats.like(t, x) for t in (moving_variance, v, gamma, beta))
    # Kernels receive the upcast `x`, a non-negative axis and vectors of x's dtype.
    return dispatch(
        "evonorm_b0_inference", _evonorm_b0_inference_reference, x, moving_variance, v, gamma, beta, axis, epsilon
    )


def _evonorm_b0_inference_reference(x, moving_variance, v, gamma, beta, axis, epsilon):
    variance = _vector(ops.stop_gradient(moving_variance), x, axis)
    return _b0(x, variance, v, gamma, beta, axis, epsilon)


def evonorm_s0(x, v=None, gamma=None, beta=None, axis=-1, epsilon=1e-5, groups=32):
    """EvoNorm-S0: a sigmoid gate over a per-example group standard deviation.

    $$y=\\frac{x\\,\\sigma(v_c\\,x)}{\\sqrt{s^2_{n,g}+\\epsilon}}\\,\\gamma_c+\\beta_c$$

    with $\\sigma$ the logistic sigmoid and $s^2_{n,g}$ the biased, centred
    variance of example $n$ over the $C_g=C/G$ consecutive channels of group
    $g\\ni c$ and all spatial positions (two-pass, the group-norm variance).
    Gradients flow through it. Training and inference are the same function,
    and each example's output depends on no other example. With group size
    1 and 1x1 maps the variance is 0 and the denominator $\\sqrt\\epsilon$
    (x316 at $\\epsilon=10^{-5}$): finite, but large.

    Args:
        x: tensor of rank >= 3 (batch, spatial axes, channels).
        v: optional `(C,)` gate weights (`None`: 1).
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        axis: int, the channel axis (not 0).
        epsilon: float added to the group variance inside the square root.
        groups: positive int $G$ dividing the channel count, or -1 for one
            channel per group (the variance of each channel over the
            spatial positions).

    Returns:
        The output, in float32 or wider.

    Raises:
        ValueError: for an input of rank < 3, a bad `axis`, or `groups` not
            dividing the channel count.
    """
    owner = "keras_norms.ops.evonorm_s0"
    x, axis = _prepare(x, axis, owner)
    groups = _common.resolve_groups(groups, x.shape[axis], owner)
    v, gamma, beta = (_stats.like(t, x) for t in (v, gamma, beta))
    # Kernels receive the upcast `x`, a non-negative axis and the resolved (positive) groups.
    return dispatch("evonorm_s0", _evonorm_s0_reference, x, v, gamma, beta, axis, epsilon, groups)


def _evonorm_s0_reference(x, v, gamma, beta, axis, epsilon, groups):
    view, _, variance = _stats.group_moments(x, axis, groups)
    v, gamma, beta = (_common.group_vector(_stats.like(t, x), len(view.shape), axis, groups) for t in (v, gamma, beta))
    gate = ops.sigmoid(view if v is None else v * view)
    y = _common.scale_and_shift(view * gate / ops.sqrt(variance + epsilon), gamma, beta)
    return ops.reshape(y, ops.shape(x))

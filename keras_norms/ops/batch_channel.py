"""Batch-Channel normalization (BCN) and group normalization as functions.

Qiao, Wang, Liu, Shen & Yuille, "Micro-Batch Training with Batch-Channel
Normalization and Weight Standardization", arXiv:1903.10520 (official code:
github.com/joe-siyuan-qiao/Batch-Channel-Normalization).

BCN runs three steps (as in the official code):

1. a per-channel batch-knowledge normalization with its own affine
   $\\gamma^b,\\beta^b$: ordinary batch normalization (`"batch"` mode) or
   normalization with **estimated** population statistics behind a
   stop-gradient (`"estimate"` mode, EstBN, for micro-batches);
2. group normalization without affine ($G$ groups of consecutive channels,
   per example);
3. a final affine, per channel or per group (the official code's final
   affine is per group).

Steps 2 and 3 are one call of `group_norm`, which a backend may replace by a
fused kernel through `dispatch` (`keras_norms/_backends/`); a per-group
affine is expanded to channels first. Step 1 reuses `batch_norm` and
`batch_norm_inference`, and with them their fast paths. Everything is
written in `keras.ops`; statistics are computed in float32 or wider (see
`_stats`), and results come back in that dtype for the caller to cast.

Shapes: `x` has any rank >= 2 with the batch on axis 0 and channels on `axis`
(not 0); per-channel vectors have shape `(C,)`, per-group ones `(G,)`.
"""

from keras import ops

from keras_norms.ops import _common
from keras_norms.ops import _replicas
from keras_norms.ops import _stats
from keras_norms.ops._dispatch import dispatch
from keras_norms.ops.normalization import batch_norm
from keras_norms.ops.normalization import batch_norm_inference


def _check_momentum(momentum, owner):
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(
            f"{owner}: `momentum` must be a float in [0, 1] (the weight of the "
            f"old estimate; the update rate is 1 - momentum), received "
            f"momentum={momentum!r}."
        )


def _group_norm_reference(x, gamma, beta, axis, epsilon, groups):
    # Group norm is Batch-Group normalization's training op with one example
    # per group: the same (N, ..., G, C_g, ...) view, statistics per
    # (example, channel group), a per-channel affine. The view is made
    # directly (no example axis), so the batch size never matters.
    view, mean, variance = _stats.group_moments(x, axis, groups)
    return _common.normalize_grouped(view, mean, variance, gamma, beta, epsilon, axis, groups, ops.shape(x))


def group_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3, groups=32):
    """Group normalization: per example, over each group of channels.

    The $C$ channels are split into $G$ groups of $C_g=C/G$ consecutive
    channels; for example $n$ and group $g$ the statistics are taken over the
    group's channels and all spatial positions, $\\mathcal S_{n,g}$:

    $$\\mu_{n,g}=\\operatorname{mean}_{\\mathcal S_{n,g}}x,\\qquad
      \\sigma^2_{n,g}=\\operatorname{mean}_{\\mathcal S_{n,g}}(x-\\mu_{n,g})^2,\\qquad
      y=\\gamma_c\\,\\frac{x-\\mu_{n,g}}{\\sqrt{\\sigma^2_{n,g}+\\epsilon}}+\\beta_c .$$

    The reference is two-pass in float32 (or float64); it equals
    `batch_group_norm(..., examples_per_group=1)` and
    `keras.layers.GroupNormalization` with the same epsilon. Gradients flow
    through the statistics. Backend kernels (PyTorch `F.group_norm`; a
    one-pass, shifted formulation on TensorFlow and JAX) give the same
    outputs and gradients; see `docs/fast-paths.md`.

    Args:
        x: tensor of rank >= 2.
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        axis: int, the channel axis (not 0: the statistics are per example).
        epsilon: float added to the variance inside the square root.
        groups: positive int $G$ dividing the channel count, or -1 for one
            channel per group.

    Returns:
        The output, in float32 or wider.

    Raises:
        ValueError: for a bad `axis` or `groups`.
    """
    x, axis, groups = _stats.grouped_input(x, axis, groups, "keras_norms.ops.group_norm")
    gamma, beta = _stats.like(gamma, x), _stats.like(beta, x)
    # Kernels receive a non-negative axis and the resolved (positive) groups.
    return dispatch("group_norm", _group_norm_reference, x, gamma, beta, axis, epsilon, groups)


def _final_vector(v, channels, groups):
    """A final-affine vector as `(C,)`: a `(G,)` one repeats over each group."""
    if v is None or v.shape[0] == channels:
        return v
    if v.shape[0] != groups:
        raise ValueError(
            "keras_norms.ops.batch_channel_norm: the final affine must have "
            f"shape ({channels},) (per channel) or ({groups},) (per group), "
            f"received shape {tuple(v.shape)}."
        )
    return ops.repeat(v, channels // groups, axis=0)


def _channel_step(x_hat, gamma, beta, axis, epsilon, groups):
    channels = x_hat.shape[axis]
    gamma = _final_vector(_stats.like(gamma, x_hat), channels, groups)
    beta = _final_vector(_stats.like(beta, x_hat), channels, groups)
    return group_norm(x_hat, gamma, beta, axis, epsilon, groups)


def batch_channel_norm(
    x, batch_gamma=None, batch_beta=None, gamma=None, beta=None, axis=-1, epsilon=1e-5, groups=32, mask=None,
    synchronized=False
):
    """Large-batch BCN in training mode: batch norm, then group norm.

    $$\\hat x=\\gamma^b_c\\,\\frac{x-\\mu_c}{\\sqrt{\\sigma^2_c+\\epsilon}}+\\beta^b_c,\\qquad
      y=\\gamma_{c|g}\\,\\frac{\\hat x-\\mu_{n,g}(\\hat x)}{\\sqrt{\\sigma^2_{n,g}(\\hat x)+\\epsilon}}
        +\\beta_{c|g}$$

    with the batch mean $\\mu_c$ and biased variance $\\sigma^2_c$ over every
    axis except `axis` (`batch_norm`), then `group_norm` without inner affine
    and the final affine $\\gamma,\\beta$, per channel `(C,)` or per group
    `(G,)`. Gradients flow through every statistic.

    A `mask` leaves masked entries out of the batch step's statistics
    (`batch_norm`'s masked moments: they never reach the moving averages);
    every entry is still normalized. The group step is per example and, like
    `keras.layers.GroupNormalization`, takes no mask: its statistics cover
    all of the example's entries, masked ones included.

    Args:
        x: tensor of rank >= 2.
        batch_gamma: optional `(C,)` scale of the batch step (`None`: 1).
        batch_beta: optional `(C,)` shift of the batch step (`None`: 0).
        gamma: optional final scale, `(C,)` or `(G,)` (`None`: 1).
        beta: optional final shift, `(C,)` or `(G,)` (`None`: 0).
        axis: int, the channel axis (not 0).
        epsilon: float, used by both normalizations.
        groups: positive int $G$ dividing the channel count, or -1.
        mask: optional boolean tensor of rank `ndim - 1` (Keras BN's
            convention, see `batch_norm`), for the batch step.
        synchronized: bool, the batch step's statistics over the global
            batch across replicas (True) or this replica's batch (see
            `batch_norm`); the group step is per example either way.

    Returns:
        `(y, mean, variance)`: the output and the `(C,)` batch statistics
        (for the moving averages), in float32 or wider.
    """
    x, axis, groups = _stats.grouped_input(x, axis, groups, "keras_norms.ops.batch_channel_norm")
    x_hat, mean, variance = batch_norm(x, batch_gamma, batch_beta, axis, epsilon, mask, synchronized=synchronized)
    return _channel_step(x_hat, gamma, beta, axis, epsilon, groups), mean, variance


def estimated_moments(x, moving_mean, moving_variance, axis=-1, momentum=0.99, mask=None, synchronized=False):
    """EstBN's statistics update (as in the official code), behind a stop-gradient.

    With update rate $r = 1-\\rho$ ($\\rho$ = `momentum`, Keras convention)
    and the old estimates $\\hat\\mu^{old}_c,\\hat\\sigma^{2,old}_c$:

    $$m_c=\\operatorname{mean}_{\\neg c}x,\\qquad
      v_c=\\operatorname{mean}_{\\neg c}\\big(x-\\hat\\mu^{old}_c\\big)^2
         =\\sigma^2_{B,c}+\\big(m_c-\\hat\\mu^{old}_c\\big)^2,$$

    $$\\hat\\mu_c=\\rho\\,\\hat\\mu^{old}_c+r\\,m_c,\\qquad
      \\hat\\sigma^2_c=\\rho\\,\\hat\\sigma^{2,old}_c+r\\,v_c .$$

    The variance is taken about the **old** estimate of the mean, as in the
    official code; it is computed in the right-hand form (the two-pass batch
    variance $\\sigma^2_{B,c}$ plus a square), which cannot cancel. Both
    results are wrapped in `stop_gradient`: no gradient flows into the
    statistics. With a `mask`, $m_c$ and $\\sigma^2_{B,c}$ (so $v_c$) are
    taken over the unmasked entries only (`batch_norm`'s masked moments); a
    channel with no unmasked entry gets $m_c=\\sigma^2_{B,c}=0$.

    Args:
        x: tensor of rank >= 2.
        moving_mean: `(C,)` old estimate $\\hat\\mu^{old}$.
        moving_variance: `(C,)` old estimate $\\hat\\sigma^{2,old}$.
        axis: int, the channel axis.
        momentum: float $\\rho$ in [0, 1]; the update rate is $r=1-\\rho$.
        mask: optional boolean tensor of rank `ndim - 1` (Keras BN's
            convention, see `batch_norm`).
        synchronized: bool, $m_c$ and $\\sigma^2_{B,c}$ of the global batch
            across replicas (True) or of this replica's batch (see
            `batch_norm`; per-device estimates are averaged over the devices).

    Returns:
        `(mean, variance)`: the `(C,)` updated estimates, in float32 or wider.
    """
    owner = "keras_norms.ops.estimated_moments"
    _check_momentum(momentum, owner)
    x = ops.stop_gradient(_stats.upcast(x))
    ndim = len(x.shape)
    axis = _stats.canonical_axis(axis, ndim, owner)
    mask = _stats.as_mask(mask)
    shards = _replicas.device_slices(x)
    if not synchronized and shards > 1:
        return _replicas.per_device(
            lambda xs, ms: estimated_moments(xs, moving_mean, moving_variance, axis, momentum, ms),
            shards,
            x,
            mask,
            batch_outputs=0,
        )
    moments = _replicas.moments if _replicas.synchronizes(synchronized) else _stats.moments
    mask = _stats.broadcast_mask(mask, x)
    batch_mean, batch_variance = moments(x, _stats.reduction_axes(ndim, axis), mask=mask)
    old_mean = ops.stop_gradient(_stats.like(moving_mean, x))
    old_variance = ops.stop_gradient(_stats.like(moving_variance, x))
    about_old_mean = batch_variance + ops.square(batch_mean - old_mean)
    rate = 1.0 - momentum
    mean = momentum * old_mean + rate * batch_mean
    variance = momentum * old_variance + rate * about_old_mean
    return ops.stop_gradient(mean), ops.stop_gradient(variance)


def batch_channel_norm_inference(
    x, moving_mean, moving_variance, batch_gamma=None, batch_beta=None, gamma=None, beta=None, axis=-1,
    epsilon=1e-5, groups=32
):
    """BCN with given per-channel statistics (inference, both modes).

    $$\\hat x=\\gamma^b_c\\,\\frac{x-\\hat\\mu_c}{\\sqrt{\\hat\\sigma^2_c+\\epsilon}}+\\beta^b_c,\\qquad
      y=\\gamma_{c|g}\\,\\frac{\\hat x-\\mu_{n,g}(\\hat x)}{\\sqrt{\\sigma^2_{n,g}(\\hat x)+\\epsilon}}
        +\\beta_{c|g}$$

    with $\\hat\\mu,\\hat\\sigma^2$ = `moving_mean`, `moving_variance`
    (`batch_norm_inference`, then `group_norm` and the final affine). The
    group statistics are the example's own, so each example's output
    depends on no other example. Gradients flow to `x` and the affines, not
    to the given statistics.

    Args:
        x: tensor of rank >= 2.
        moving_mean: `(C,)` mean $\\hat\\mu$.
        moving_variance: `(C,)` variance $\\hat\\sigma^2$.
        batch_gamma: optional `(C,)` scale of the batch step.
        batch_beta: optional `(C,)` shift of the batch step.
        gamma: optional final scale, `(C,)` or `(G,)`.
        beta: optional final shift, `(C,)` or `(G,)`.
        axis: int, the channel axis (not 0).
        epsilon: float, used by both normalizations (the batch step and the
            group step).
        groups: positive int $G$ dividing the channel count, or -1.

    Returns:
        The output, in float32 or wider.
    """
    x, axis, groups = _stats.grouped_input(x, axis, groups, "keras_norms.ops.batch_channel_norm_inference")
    moving_mean = ops.stop_gradient(_stats.like(moving_mean, x))
    moving_variance = ops.stop_gradient(_stats.like(moving_variance, x))
    x_hat = batch_norm_inference(x, moving_mean, moving_variance, batch_gamma, batch_beta, axis, epsilon)
    return _channel_step(x_hat, gamma, beta, axis, epsilon, groups)


def batch_channel_norm_estimate(
    x, moving_mean, moving_variance, batch_gamma=None, batch_beta=None, gamma=None, beta=None, axis=-1,
    epsilon=1e-5, groups=32, momentum=0.99, mask=None, synchronized=False
):
    """Micro-batch BCN (EstBN) in training mode.

    First the estimates are updated (`estimated_moments`, update rate
    $r=1-\\rho$, variance about the old mean), then $x$ is normalized with the
    **just-updated** estimates under stop-gradient, exactly as
    `batch_channel_norm_inference` does:

    $$\\hat x=\\gamma^b_c\\,\\frac{x-\\operatorname{sg}[\\hat\\mu_c]}
      {\\sqrt{\\operatorname{sg}[\\hat\\sigma^2_c]+\\epsilon}}+\\beta^b_c,\\qquad
      y=\\gamma_{c|g}\\,\\frac{\\hat x-\\mu_{n,g}(\\hat x)}{\\sqrt{\\sigma^2_{n,g}(\\hat x)+\\epsilon}}
        +\\beta_{c|g}.$$

    So training and inference compute the same function of $x$ up to the
    statistics update; with `momentum=1` ($r=0$) they are identical and the
    estimates never move. A `mask` only restricts the update to the
    unmasked entries (`estimated_moments`); the normalization is the same
    for every entry, and the group step takes no mask (see
    `batch_channel_norm`).

    Args:
        x: tensor of rank >= 2.
        moving_mean: `(C,)` old estimate $\\hat\\mu^{old}$.
        moving_variance: `(C,)` old estimate $\\hat\\sigma^{2,old}$.
        batch_gamma: optional `(C,)` scale of the batch step.
        batch_beta: optional `(C,)` shift of the batch step.
        gamma: optional final scale, `(C,)` or `(G,)`.
        beta: optional final shift, `(C,)` or `(G,)`.
        axis: int, the channel axis (not 0).
        epsilon: float, used by both normalizations.
        groups: positive int $G$ dividing the channel count, or -1.
        momentum: float $\\rho$ in [0, 1].
        mask: optional boolean tensor of rank `ndim - 1` (Keras BN's
            convention, see `batch_norm`), for the estimates' update.
        synchronized: bool, the estimates updated from the global batch
            across replicas (True) or from this replica's batch, each
            replica (device) then normalizing with its own (see
            `estimated_moments`).

    Returns:
        `(y, mean, variance)`: the output and the `(C,)` updated estimates
        (stop-gradient), in float32 or wider.
    """
    x, axis, groups = _stats.grouped_input(x, axis, groups, "keras_norms.ops.batch_channel_norm_estimate")
    mask = _stats.as_mask(mask)
    shards = _replicas.device_slices(x)
    if not synchronized and shards > 1:
        return _replicas.per_device(
            lambda xs, ms: batch_channel_norm_estimate(
                xs, moving_mean, moving_variance, batch_gamma, batch_beta, gamma, beta, axis, epsilon, groups, momentum,
                ms
            ),
            shards,
            x,
            mask,
        )
    mean, variance = estimated_moments(x, moving_mean, moving_variance, axis, momentum, mask, synchronized)
    y = batch_channel_norm_inference(
        x, mean, variance, batch_gamma, batch_beta, gamma, beta, axis, epsilon, groups
    )
    return y, mean, variance

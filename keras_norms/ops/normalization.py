"""Batch normalization, ghost batches, example weighing and renorm as functions.

Every function here is written once in `keras.ops`; a backend may replace the
ones called through `dispatch` by a fused kernel (`keras_norms/_backends/`),
which must give the same outputs and gradients.

Shapes: `x` has any rank >= 2 with the batch on axis 0 and channels on `axis`;
per-channel vectors (`gamma`, `beta`, means, variances) have shape `(C,)`.
Statistics are computed in float32 or wider (see `_stats`); results come back
in that dtype and the caller casts them to its compute dtype.
"""

from keras import ops

from keras_norms.ops import _common
from keras_norms.ops import _replicas
from keras_norms.ops import _stats
from keras_norms.ops._dispatch import dispatch
from keras_norms.ops._dispatch import run_reference


def normalize(x, mean, variance, gamma=None, beta=None, axis=-1, epsilon=1e-3):
    """Normalizes `x` with given statistics and applies the affine.

    $$y = \\gamma\\,\\frac{x-\\mu}{\\sqrt{\\sigma^2+\\epsilon}}+\\beta
       = (x-\\mu)\\,s + \\beta,\\quad s=\\frac{\\gamma}{\\sqrt{\\sigma^2+\\epsilon}}$$

    computed in the form on the right (one per-channel scale).

    Args:
        x: tensor of rank >= 2.
        mean: `(C,)` per-channel mean along `axis`, or a tensor broadcastable
            to `x`.
        variance: like `mean`, the variance.
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        axis: int, the channel axis.
        epsilon: float added to the variance inside the square root.

    Returns:
        The normalized tensor, in `float32` or wider.
    """
    x = _stats.upcast(x)
    ndim = len(x.shape)
    axis = _stats.canonical_axis(axis, ndim, "keras_norms.ops.normalize")
    mean, variance, gamma, beta = (_common.channel_vector(_stats.like(v, x), ndim, axis) for v in
                                   (mean, variance, gamma, beta))
    return _common.normalize_folded(x, mean, variance, gamma, beta, epsilon)


def _batch_norm_reference(x, gamma, beta, axis=-1, epsilon=1e-3, mask=None, moments=_stats.moments):
    x = _stats.upcast(x)
    ndim = len(x.shape)
    axis = _stats.canonical_axis(axis, ndim, "keras_norms.ops.batch_norm")
    mean, variance = moments(
        x, _stats.reduction_axes(ndim, axis), mask=_stats.broadcast_mask(mask, x)
    )
    y = normalize(x, mean, variance, gamma, beta, axis, epsilon)
    return y, mean, variance


def batch_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3, mask=None, synchronized=False):
    """Batch normalization in training mode: normalizes with batch statistics.

    $$\\mu_c=\\operatorname{mean}_{\\neg c}x,\\quad
      \\sigma^2_c=\\operatorname{mean}_{\\neg c}(x-\\mu_c)^2,\\quad
      y=\\gamma_c\\frac{x-\\mu_c}{\\sqrt{\\sigma^2_c+\\epsilon}}+\\beta_c$$

    over every axis except the channel axis ($\\neg c$); the variance is the
    biased (population) one, as Keras stores it. Gradients flow through the
    statistics.

    Args:
        x: tensor of rank >= 2.
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        axis: int, the channel axis.
        epsilon: float.
        mask: optional boolean tensor of rank `ndim - 1` (Keras BN's
            convention: a trailing axis is added); masked-out entries are left
            out of the statistics but still normalized.
        synchronized: bool. False: the statistics of this replica's own
            batch (under a JAX `keras.distribution`, of each device's slice).
            True: of the global batch, all-reduced over the replicas
            (`_replicas.moments`; no backend fast path then). The same on
            one device. See `docs/guides/multi_device.md`.

    Returns:
        `(y, mean, variance)`: the output and the `(C,)` batch statistics, in
        float32 or wider.
    """
    x = _stats.upcast(x)
    axis = _stats.canonical_axis(axis, len(x.shape), "keras_norms.ops.batch_norm")
    gamma, beta = _stats.like(gamma, x), _stats.like(beta, x)
    mask = _stats.as_mask(mask)
    shards = _replicas.device_slices(x)
    if not synchronized and shards > 1:
        return _replicas.per_device(
            lambda xs, ms: batch_norm(xs, gamma, beta, axis, epsilon, ms), shards, x, mask
        )
    if _replicas.synchronizes(synchronized):
        # Not dispatched: a fused kernel would see this replica's batch only.
        return run_reference("batch_norm", "synchronized across replicas", _batch_norm_reference,
                             x, gamma, beta, axis, epsilon, mask, moments=_replicas.moments)
    return dispatch(
        "batch_norm", _batch_norm_reference, x, gamma, beta, axis, epsilon, mask
    )


def _ghost_axes(ndim, axis):
    """Reduction axes of the `(K, B', ...)` view: all but ghost and channel."""
    return [i for i in range(ndim + 1) if i not in (0, axis + 1)]


def ghost_moments(x, axis=-1, virtual_batch_size=1):
    """Per-ghost-batch means and biased variances.

    The batch is split into $K=\\lceil N/B'\\rceil$ ghost batches of
    **consecutive** examples; the last one holds the remaining
    $N-(K-1)B'$ examples when $B'$ does not divide $N$. For ghost $k$ and
    channel $c$ the statistics are taken over the ghost's examples and every
    axis except `axis`.

    Args:
        x: tensor of rank >= 2.
        axis: int, the channel axis (not 0).
        virtual_batch_size: positive int $B'$.

    Returns:
        `(mean, variance, counts)`: `(K, C)` statistics and the `(K,)` number
        of examples in each ghost, in float32 or wider.
    """
    owner = "keras_norms.ops.ghost_moments"
    _common.check_positive_int(virtual_batch_size, "virtual_batch_size", owner)
    x = _stats.upcast(x)
    ndim = len(x.shape)
    axis = _stats.canonical_axis(axis, ndim, owner)
    _, mean, variance, _, counts, _ = _ghost_statistics(x, axis, virtual_batch_size)
    channels = x.shape[axis]
    return (
        ops.reshape(mean, (-1, channels)),
        ops.reshape(variance, (-1, channels)),
        counts,
    )


def _ghost_statistics(x, axis, virtual_batch_size, mask=None):
    """Splits `x` into ghosts and takes each ghost's per-channel moments.

    With a `mask` the moments are weighted by it, and `counts` holds each
    ghost's number of unmasked entries per channel, shaped like `mean`; a
    ghost without one gets mean 0, variance 0 (`_stats.moments`) and count 0.

    Returns:
        `(ghosts, mean, variance, valid, counts, batch)`, with `mean` and
        `variance` shaped to broadcast over the `(K, B', ...)` ghosts.
    """
    ghosts, valid, counts, batch = _common.split_ghosts(x, virtual_batch_size)
    axes = _ghost_axes(len(x.shape), axis)
    weights = valid
    if mask is not None:
        # Split like `x`: the zero padding of an uneven batch is weight 0 too.
        weights = _common.split_ghosts(_stats.mask_weights(mask, x), virtual_batch_size)[0]
        counts = ops.sum(weights, axis=axes, keepdims=True)
    mean, variance = _stats.moments(ghosts, axes, keepdims=True, mask=weights)
    return ghosts, mean, variance, valid, counts, batch


def _merge_ghosts(y, x, valid, batch):
    """The `(K, B', ...)` output back in `x`'s shape, padding removed."""
    y = ops.reshape(y, [-1] + list(ops.shape(x)[1:]))
    return y[:batch] if valid is not None else y


def _pooled_ghost_statistics(mean, variance, counts, channels):
    """Ghost means and variances averaged with weights `n_k / N`, as `(C,)`.

    `counts` is `(K,)`, or per ghost and channel with a mask (then a ghost
    with no unmasked entry has weight 0, and a fully masked batch gives 0).
    """
    counts = ops.reshape(counts, (-1, 1 if len(counts.shape) == 1 else channels))
    weights = counts / ops.maximum(ops.sum(counts, axis=0), 1.0)
    pooled_mean = ops.sum(weights * ops.reshape(mean, (-1, channels)), axis=0)
    pooled_variance = ops.sum(weights * ops.reshape(variance, (-1, channels)), axis=0)
    return pooled_mean, pooled_variance


def ghost_batch_norm(
    x, gamma=None, beta=None, axis=-1, epsilon=1e-3, virtual_batch_size=1, mask=None, synchronized=False
):
    """Ghost batch normalization (training mode).

    Each ghost batch $k$ of consecutive examples is normalized with its own
    statistics (see `ghost_moments`):
    $y=\\gamma_c(x-\\mu_{k,c})/\\sqrt{\\sigma^2_{k,c}+\\epsilon}+\\beta_c$.
    The statistics returned for the moving averages are the ghost means and
    ghost variances averaged with weights $n_k/N$ (the tf-keras convention,
    one update per step; for equal ghosts the plain mean).

    With a `mask` $w$ (true for the entries that count), each ghost's
    statistics are the $w$-weighted mean and biased variance over its
    unmasked entries, and the pooling weights become $n_{k,c}/\\sum_j n_{j,c}$
    with $n_{k,c}$ the ghost's unmasked entries of channel $c$: masked
    entries never reach the moving statistics. Masked entries are still
    normalized with their ghost's statistics, as Keras BN does. A ghost with
    no unmasked entry has mean 0 and variance 0 (its outputs are
    $\\gamma_c x/\\sqrt\\epsilon+\\beta_c$, finite) and weight 0 in the
    pooling; a fully masked batch gives pooled statistics 0 and 0, as
    `batch_norm` does.

    Args:
        x: tensor of rank >= 2.
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        axis: int, the channel axis (not 0).
        epsilon: float.
        virtual_batch_size: positive int $B'$; $B' \\ge N$ is plain BN.
        mask: optional boolean tensor of rank `ndim - 1` (Keras BN's
            convention, see `batch_norm`). No backend fast path then.
        synchronized: bool. A ghost batch never spans replicas: each
            replica splits its own batch into ghosts. True: the pooled
            statistics are averaged over the replicas with weights $N_r/N$
            (with a mask, each channel's unmasked entries), the global
            pooled statistics. Under a JAX `keras.distribution` the ghosts
            are taken within each device's slice either way.

    Returns:
        `(y, mean, variance)` with `(C,)` statistics, in float32 or wider.
    """
    owner = "keras_norms.ops.ghost_batch_norm"
    _common.check_positive_int(virtual_batch_size, "virtual_batch_size", owner)
    x = _stats.upcast(x)
    ndim = len(x.shape)
    axis = _stats.canonical_axis(axis, ndim, owner)
    mask = _stats.as_mask(mask)
    shards = _replicas.device_slices(x)
    if shards > 1:  # ghosts within each device's slice; the averaged statistics are global
        return _replicas.per_device(
            lambda xs, ms: ghost_batch_norm(xs, gamma, beta, axis, epsilon, virtual_batch_size, ms), shards, x, mask
        )
    if _replicas.synchronizes(synchronized):
        y, mean, variance = ghost_batch_norm(x, gamma, beta, axis, epsilon, virtual_batch_size, mask)
        return (y,) + tuple(_replicas.pooled([mean, variance], _replica_count(x, mask, axis)))
    if x.shape[0] is not None and x.shape[0] <= virtual_batch_size:
        return batch_norm(x, gamma, beta, axis, epsilon, mask)
    gamma, beta = _stats.like(gamma, x), _stats.like(beta, x)
    return dispatch(
        "ghost_batch_norm", _ghost_batch_norm_reference, x, gamma, beta, axis, epsilon, virtual_batch_size, mask
    )


def _replica_count(x, mask, axis):
    """This replica's weight when pooling ghost statistics: its examples, or its unmasked entries per channel."""
    return ops.shape(x)[0] if mask is None else _stats.unmasked_count(x, mask, axis)


def _ghost_batch_norm_reference(x, gamma, beta, axis, epsilon, virtual_batch_size, mask=None):
    return _normalize_ghosts(x, axis, epsilon, virtual_batch_size, lambda mean, variance, vector: (
        vector(gamma), vector(beta)), mask)


def _normalize_ghosts(x, axis, epsilon, virtual_batch_size, affine, mask=None):
    """Each ghost normalized with its own moments; `(y, pooled mean, pooled variance)`.

    `affine(mean, variance, vector)` gives the `(scale, shift)` of the
    ghosts' statistics, `vector` shaping a `(C,)` one for the ghost view.
    """
    ndim = len(x.shape)
    ghosts, mean, variance, valid, counts, batch = _ghost_statistics(x, axis, virtual_batch_size, mask)
    scale, shift = affine(mean, variance, lambda v: _common.channel_vector(v, ndim + 1, axis + 1))
    y = _merge_ghosts(_common.normalize_folded(ghosts, mean, variance, scale, shift, epsilon), x, valid, batch)
    return (y,) + _pooled_ghost_statistics(mean, variance, counts, x.shape[axis])


def ghost_batch_renorm(
    x, gamma, beta, renorm_mean, renorm_stddev, axis=-1, epsilon=1e-3, renorm_clipping=None, virtual_batch_size=1,
    mask=None, synchronized=False
):
    """Batch Renormalization per ghost batch (training mode).

    Each ghost batch $k$ gets its own corrections against the shared renorm
    moving statistics (see `renorm_correction`),
    $r_k=\\operatorname{clip}(\\sigma_k/\\hat\\sigma)$,
    $d_k=\\operatorname{clip}((\\mu_k-\\hat\\mu)/\\hat\\sigma)$, and

    $$y=\\gamma_c\\Big(\\frac{x-\\mu_{k,c}}{\\sqrt{\\sigma^2_{k,c}+\\epsilon}}\\,r_{k,c}+d_{k,c}\\Big)+\\beta_c .$$

    The statistics returned for the moving averages are pooled as in
    `ghost_batch_norm` (weights $n_k/N$). A `mask` weights each ghost's
    statistics, and so its $r_k, d_k$, and the pooling, as in
    `ghost_batch_norm`; a ghost with no unmasked entry gets mean 0 and
    variance 0, hence finite (clipped) corrections, and weight 0.

    Args:
        x: tensor of rank >= 2, batch on axis 0 (split into ghosts).
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        renorm_mean: `(C,)` renorm moving mean.
        renorm_stddev: `(C,)` renorm moving standard deviation.
        axis: int, the channel axis (not 0).
        epsilon: float.
        renorm_clipping: optional dict with keys among `rmin`, `rmax`, `dmax`.
        virtual_batch_size: positive int $B'$; $B' \\ge N$ is plain renorm.
        mask: optional boolean mask of rank `ndim - 1` (see
            `ghost_batch_norm`).
        synchronized: bool, the pooled statistics averaged over the
            replicas (see `ghost_batch_norm`).

    Returns:
        `(y, mean, variance)` with the pooled `(C,)` statistics.
    """
    owner = "keras_norms.ops.ghost_batch_renorm"
    _common.check_positive_int(virtual_batch_size, "virtual_batch_size", owner)
    x = _stats.upcast(x)
    ndim = len(x.shape)
    axis = _stats.canonical_axis(axis, ndim, owner)
    mask = _stats.as_mask(mask)
    args = (gamma, beta, renorm_mean, renorm_stddev, axis, epsilon, renorm_clipping, virtual_batch_size)
    shards = _replicas.device_slices(x)
    if shards > 1:  # ghosts within each device's slice; the averaged statistics are global
        return _replicas.per_device(lambda xs, ms: ghost_batch_renorm(xs, *args, ms), shards, x, mask)
    if _replicas.synchronizes(synchronized):
        y, mean, variance = ghost_batch_renorm(x, *args, mask)
        return (y,) + tuple(_replicas.pooled([mean, variance], _replica_count(x, mask, axis)))
    if x.shape[0] is not None and x.shape[0] <= virtual_batch_size:
        return batch_renorm(x, gamma, beta, renorm_mean, renorm_stddev, axis, epsilon, renorm_clipping, mask)
    gamma, beta, renorm_mean, renorm_stddev = (_stats.like(v, x) for v in (gamma, beta, renorm_mean, renorm_stddev))

    def affine(mean, variance, vector):
        r, d = renorm_correction(mean, variance, vector(renorm_mean), vector(renorm_stddev), epsilon, renorm_clipping)
        return _renorm_affine(r, d, vector(gamma), vector(beta))

    return _normalize_ghosts(x, axis, epsilon, virtual_batch_size, affine, mask)


def _renorm_affine(r, d, gamma, beta):
    """Batch Renormalization's corrections composed into the affine: `(r * gamma, d * gamma + beta)`."""
    scale = r if gamma is None else r * gamma
    shift = d if gamma is None else d * gamma
    return scale, shift if beta is None else shift + beta


def _batch_norm_inference_reference(
    x, mean, variance, gamma, beta, axis=-1, epsilon=1e-3, example_weight=0.0
):
    x = _stats.upcast(x)
    ndim = len(x.shape)
    axis = _stats.canonical_axis(axis, ndim, "keras_norms.ops.batch_norm_inference")
    mean, variance, gamma, beta = (_common.channel_vector(v, ndim, axis) for v in (mean, variance, gamma, beta))
    if example_weight != 0:
        spatial = _common.spatial_axes(ndim, axis)
        if spatial:
            own_mean, own_variance = _stats.moments(x, spatial, keepdims=True)
        else:  # (N, C): the example's own moments are x and x**2.
            own_mean, own_variance = x, ops.zeros_like(x)
        mean, variance = _stats.mix_moments(own_mean, own_variance, mean, variance, example_weight)
    return _common.normalize_folded(x, mean, variance, gamma, beta, epsilon)


def batch_norm_inference(
    x, mean, variance, gamma=None, beta=None, axis=-1, epsilon=1e-3, example_weight=0.0
):
    """Batch normalization in inference mode, with optional example weighing.

    With $\\alpha$ = `example_weight`, example $i$ is normalized with a convex
    mix of its own first and second moments ($s^{(1)}_i, s^{(2)}_i$ over every
    axis except the batch and channel axes) and the population ones:

    $$\\tilde\\mu_i=\\alpha s^{(1)}_i+(1-\\alpha)\\mu,\\qquad
      \\tilde\\sigma^2_i=\\max\\big(\\alpha s^{(2)}_i+(1-\\alpha)(\\sigma^2+\\mu^2)
      -\\tilde\\mu_i^2,\\;0\\big)$$

    $$y_i=\\gamma\\frac{x_i-\\tilde\\mu_i}{\\sqrt{\\tilde\\sigma^2_i+\\epsilon}}+\\beta$$

    The mixed variance is computed in the equal, cancellation-free form
    $\\alpha v_i+(1-\\alpha)\\sigma^2+\\alpha(1-\\alpha)(s^{(1)}_i-\\mu)^2$
    ($v_i$ the example's own variance), clamped at 0. $\\alpha=0$ is plain BN
    inference. Each example's output depends on no other example.

    Args:
        x: tensor of rank >= 2.
        mean: `(C,)` population mean (the moving mean).
        variance: `(C,)` population variance (the moving variance).
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        axis: int, the channel axis.
        epsilon: float.
        example_weight: Python float $\\alpha$ in [0, 1].

    Returns:
        The output, in float32 or wider.
    """
    x = _stats.upcast(x)
    axis = _stats.canonical_axis(axis, len(x.shape), "keras_norms.ops.batch_norm_inference")
    mean, variance, gamma, beta = (_stats.like(v, x) for v in (mean, variance, gamma, beta))
    return dispatch(
        "batch_norm_inference",
        _batch_norm_inference_reference,
        x,
        mean,
        variance,
        gamma,
        beta,
        axis,
        epsilon,
        example_weight,
    )


def renorm_correction(mean, variance, renorm_mean, renorm_stddev, epsilon, renorm_clipping=None):
    """Batch Renormalization's corrections $r$ and $d$ (stop-gradient).

    $$\\sigma_B=\\sqrt{\\sigma^2_B+\\epsilon},\\quad
      r=\\operatorname{clip}_{[r_{min},r_{max}]}\\frac{\\sigma_B}{\\hat\\sigma},\\quad
      d=\\operatorname{clip}_{[-d_{max},d_{max}]}\\frac{\\mu_B-\\hat\\mu}{\\hat\\sigma}$$

    with $\\hat\\mu$ = `renorm_mean` and $\\hat\\sigma$ = `renorm_stddev`
    floored at $\\sqrt\\epsilon$, as in Keras >= 3.14. A missing clipping key
    means no bound on that side.

    Args:
        mean: batch mean, any shape broadcastable with the others.
        variance: batch variance.
        renorm_mean: the renorm moving mean.
        renorm_stddev: the renorm moving standard deviation.
        epsilon: float.
        renorm_clipping: optional dict with keys among `rmin`, `rmax`, `dmax`.

    Returns:
        `(r, d)`, both wrapped in `stop_gradient`.
    """
    clipping = renorm_clipping or {}
    stddev = ops.sqrt(variance + epsilon)
    floor = ops.sqrt(ops.cast(epsilon, stddev.dtype))
    renorm_stddev = ops.maximum(ops.cast(renorm_stddev, stddev.dtype), floor)
    renorm_mean = ops.cast(renorm_mean, stddev.dtype)
    r = stddev / renorm_stddev
    d = (mean - renorm_mean) / renorm_stddev
    if clipping.get("rmin") is not None:
        r = ops.maximum(r, clipping["rmin"])
    if clipping.get("rmax") is not None:
        r = ops.minimum(r, clipping["rmax"])
    if clipping.get("dmax") is not None:
        d = ops.clip(d, -clipping["dmax"], clipping["dmax"])
    return ops.stop_gradient(r), ops.stop_gradient(d)


def batch_renorm(
    x, gamma, beta, renorm_mean, renorm_stddev, axis=-1, epsilon=1e-3, renorm_clipping=None, mask=None,
    synchronized=False
):
    """Batch Renormalization in training mode (Ioffe, 2017).

    $$y=\\gamma\\Big(\\frac{x-\\mu_B}{\\sqrt{\\sigma^2_B+\\epsilon}}\\,r+d\\Big)+\\beta$$

    with $r, d$ from `renorm_correction`, composed into the affine as
    $\\gamma'=r\\gamma$, $\\beta'=d\\gamma+\\beta$ (Keras >= 3.14 semantics).

    Args:
        x: tensor of rank >= 2.
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        renorm_mean: `(C,)` renorm moving mean.
        renorm_stddev: `(C,)` renorm moving standard deviation.
        axis: int, the channel axis.
        epsilon: float.
        renorm_clipping: optional dict with keys among `rmin`, `rmax`, `dmax`.
        mask: optional boolean mask of rank `ndim - 1` (see `batch_norm`).
        synchronized: bool, statistics of the global batch across replicas
            (True) or of this replica's batch (see `batch_norm`).

    Returns:
        `(y, mean, variance)` with the `(C,)` batch statistics.
    """
    x = _stats.upcast(x)
    gamma, beta = _stats.like(gamma, x), _stats.like(beta, x)
    ndim = len(x.shape)
    axis = _stats.canonical_axis(axis, ndim, "keras_norms.ops.batch_renorm")
    shards = _replicas.device_slices(x)
    if not synchronized and shards > 1:
        return _replicas.per_device(
            lambda xs, ms: batch_renorm(
                xs, gamma, beta, renorm_mean, renorm_stddev, axis, epsilon, renorm_clipping, ms
            ),
            shards,
            x,
            mask,
        )
    moments = _replicas.moments if _replicas.synchronizes(synchronized) else _stats.moments
    mean, variance = moments(
        x, _stats.reduction_axes(ndim, axis), mask=_stats.broadcast_mask(mask, x)
    )
    r, d = renorm_correction(mean, variance, renorm_mean, renorm_stddev, epsilon, renorm_clipping)
    scale, shift = _renorm_affine(r, d, gamma, beta)
    return normalize(x, mean, variance, scale, shift, axis, epsilon), mean, variance

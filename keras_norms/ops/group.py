"""Batch-Group normalization (the Four Things BN/GN combination) as functions.

Summers & Dinneen, "Four Things Everyone Should Know to Improve Batch
Normalization", ICLR 2020 (item (d); official code:
github.com/ceciliaresearch/four_things_batch_norm, whose docstring calls it
"Batch/Group Normalization Generalization").

Each batch is split into example groups of $E$ **consecutive** examples and
the channels into $G$ groups of $C_g = C/G$ **consecutive** channels; every
(example group, channel group) cell is normalized with its own statistics
over its examples, its channels and all spatial positions. $E=1$ is group
normalization, $C_g=1$ with $E\\ge N$ batch normalization, $C_g=1$ with
$E<N$ ghost batch normalization.

Written once in `keras.ops`; a backend may replace the ops called through
`dispatch` by a fused kernel (`keras_norms/_backends/`), which must give the
same outputs and gradients. Statistics are computed in float32 or wider (see
`_stats`); results come back in that dtype and the caller casts them.

Shapes: `x` has any rank >= 2 with the batch on axis 0 and channels on `axis`
(rank 2: no spatial axes); per-channel vectors have shape `(C,)`. The channel
axis is reshaped in place into `(G, C_g)` and the batch axis into
`(K, E)`, so no transpose is ever made.
"""

from keras import ops

from keras_norms.ops import _common
from keras_norms.ops import _replicas
from keras_norms.ops import _stats
from keras_norms.ops._dispatch import dispatch


def _cells(x, axis, groups, examples_per_group, weights=None):
    """The `(K, E, ..., G, C_g, ...)` view of `x` and what comes with it.

    The batch axis becomes `(K, E)` (zero-padded with a validity mask when
    `E` does not divide the batch, or the batch size is unknown: see
    `_common.split_ghosts`) and the channel axis `(G, C_g)`. `E` is capped at the
    batch size when that is static. `weights` (a mask's 0/1 weights of `x`'s
    shape) replace the validity mask, split like `x` (the padding gets 0).

    Returns:
        `(view, valid, counts, batch, channel_axis, reduce_axes)`: `valid` is
        `None` or a mask broadcastable to `view`; `counts` the `(K,)` number
        of real examples per example group; `channel_axis` the position of
        `G` in `view`; `reduce_axes` all axes but `K` and `G`.
    """
    ndim = len(x.shape)
    if x.shape[0] is not None:
        examples_per_group = max(1, min(examples_per_group, x.shape[0]))
    ghosts, valid, counts, batch = _common.split_ghosts(x, examples_per_group)
    g_axis = axis + 1  # the channel axis in the (K, E, ...) view
    view = ops.reshape(ghosts, _common.split_channels(ops.shape(ghosts), g_axis, groups))
    if weights is not None:
        weights = _common.split_ghosts(weights, examples_per_group)[0]
        valid = ops.reshape(weights, ops.shape(view))
    elif valid is not None:
        valid = ops.expand_dims(valid, -1)  # rank ndim + 2, like `view`
    reduce_axes = [i for i in range(ndim + 2) if i not in (0, g_axis)]
    return view, valid, counts, batch, g_axis, reduce_axes


def _full_batch_moments(x, axis, weights=None):
    """Per-channel mean of `x` and of `x**2` over every axis but `axis` (with 0/1 `weights`: the unmasked entries)."""
    axes = _stats.reduction_axes(len(x.shape), axis)
    if weights is None:
        count = ops.cast(_common.count(x, axes), x.dtype)
    else:  # x * w and (x * w)**2 leave masked entries out of both sums (w is 0 or 1)
        x, count = x * weights, ops.maximum(ops.sum(weights, axis=axes), 1.0)
    mean = ops.sum(x, axis=axes) / count
    second_moment = ops.sum(ops.square(x), axis=axes) / count
    return mean, second_moment


def batch_group_moments(x, axis=-1, groups=32, examples_per_group=2):
    """Means and biased variances of each (example group x channel group) cell.

    The batch is split into $K=\\lceil N/E\\rceil$ groups of $E$ consecutive
    examples (the last one smaller when $E$ does not divide $N$; $E$ is
    capped at $N$) and the $C$ channels into $G$ groups of $C_g=C/G$
    consecutive channels. For example group $e$ and channel group $g$, with
    $\\mathcal S_{e,g}$ the examples of $e$, the channels of $g$ and all
    spatial positions:

    $$\\mu_{e,g}=\\operatorname{mean}_{\\mathcal S_{e,g}}x,\\qquad
      \\sigma^2_{e,g}=\\operatorname{mean}_{\\mathcal S_{e,g}}(x-\\mu_{e,g})^2$$

    two-pass, which equals the official code's
    $\\operatorname{mean}_{\\mathcal S_{e,g}}x^2-\\mu^2_{e,g}$ up to round-off.

    Args:
        x: tensor of rank >= 2.
        axis: int, the channel axis (not 0).
        groups: positive int $G$ dividing the channel count, or -1 for one
            channel per group.
        examples_per_group: positive int $E$.

    Returns:
        `(mean, variance, counts)`: `(K, G)` statistics and the `(K,)` number
        of examples in each example group, in float32 or wider.
    """
    owner = "keras_norms.ops.batch_group_moments"
    _common.check_positive_int(examples_per_group, "examples_per_group", owner)
    x, axis, groups = _stats.grouped_input(x, axis, groups, owner)
    view, valid, counts, _, _, reduce_axes = _cells(x, axis, groups, examples_per_group)
    mean, variance = _stats.moments(view, reduce_axes, mask=valid)
    return mean, variance, counts


def _batch_group_norm_reference(x, gamma, beta, axis, epsilon, groups, examples_per_group, mask=None):
    x = _stats.upcast(x)
    weights = None if mask is None else _stats.mask_weights(mask, x)
    view, valid, _, batch, g_axis, reduce_axes = _cells(x, axis, groups, examples_per_group, weights)
    mean, variance = _stats.moments(view, reduce_axes, keepdims=True, mask=valid)
    shape = [-1] + list(ops.shape(x)[1:])  # with the padding of a smaller last example group
    y = _common.normalize_grouped(view, mean, variance, gamma, beta, epsilon, g_axis, groups, shape)
    if valid is not None:  # the padding removed (a no-op for a mask alone)
        y = y[:batch]
    batch_mean, batch_second_moment = _full_batch_moments(x, axis, weights)
    return y, batch_mean, batch_second_moment


def batch_group_norm(
    x, gamma=None, beta=None, axis=-1, epsilon=1e-3, groups=32, examples_per_group=2, mask=None, synchronized=False
):
    """Batch-Group normalization in training mode.

    Each (example group $e$ x channel group $g$) cell is normalized with its
    own statistics (see `batch_group_moments`), with a per-channel affine:

    $$y=\\gamma_c\\,\\frac{x-\\mu_{e,g}}{\\sqrt{\\sigma^2_{e,g}+\\epsilon}}+\\beta_c
      \\quad (n\\in e,\\ c\\in g).$$

    Gradients flow through the statistics. For the moving state the op also
    returns the **full-batch** per-channel raw moments (the official code's
    state holds $E[x]$ and $E[x^2]$, not a variance), over every axis except
    the channel axis:

    $$\\bar m^{(1)}_c=\\operatorname{mean}_{\\neg c}x,\\qquad
      \\bar m^{(2)}_c=\\operatorname{mean}_{\\neg c}x^2 .$$

    $E\\ge N$ with `groups=-1` is batch normalization; $E=1$ is group
    normalization. The batch need not be a multiple of $E$ (the last example
    group is smaller) and may be unknown while tracing.

    With a `mask` $w$ (true for the entries that count), every cell's
    statistics and the full-batch moments are taken over the unmasked
    entries only ($w$-weighted sums over the number of unmasked entries), so
    masked entries never reach the moving state. Masked entries are still
    normalized with their cell's statistics, as Keras BN does. A cell with
    no unmasked entry gets mean 0 and variance 0 (outputs
    $\\gamma_c x/\\sqrt\\epsilon+\\beta_c$, finite); a channel with no
    unmasked entry in the batch gets moments 0 and 0.

    Args:
        x: tensor of rank >= 2.
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        axis: int, the channel axis (not 0).
        epsilon: float added to the variance inside the square root.
        groups: positive int $G$ dividing the channel count, or -1 for one
            channel per group.
        examples_per_group: positive int $E$, capped at the batch size.
        mask: optional boolean tensor of rank `ndim - 1` (Keras BN's
            convention: a trailing axis is added). No backend fast path then.
        synchronized: bool. An example group never spans replicas: each
            replica splits its own batch (and $E$ is capped at it). True:
            the full-batch moments are those of the global batch, the
            replicas' moments averaged with weights $N_r/N$ (with a mask,
            each channel's unmasked entries). Under a JAX
            `keras.distribution` the example groups are taken within each
            device's slice either way.

    Returns:
        `(y, mean, second_moment)`: the output and the `(C,)` full-batch
        moments, in float32 or wider.

    Raises:
        ValueError: for a bad `axis`, `groups` or `examples_per_group`.
    """
    owner = "keras_norms.ops.batch_group_norm"
    _common.check_positive_int(examples_per_group, "examples_per_group", owner)
    x, axis, groups = _stats.grouped_input(x, axis, groups, owner)
    gamma, beta = _stats.like(gamma, x), _stats.like(beta, x)
    mask = _stats.as_mask(mask)
    shards = _replicas.device_slices(x)
    if shards > 1:  # example groups within each device's slice; the averaged moments are global
        return _replicas.per_device(
            lambda xs, ms: batch_group_norm(xs, gamma, beta, axis, epsilon, groups, examples_per_group, ms),
            shards,
            x,
            mask,
        )
    # Kernels receive a non-negative axis and the resolved (positive) groups.
    y, mean, second_moment = dispatch(
        "batch_group_norm",
        _batch_group_norm_reference,
        x,
        gamma,
        beta,
        axis,
        epsilon,
        groups,
        examples_per_group,
        mask,
    )
    if _replicas.synchronizes(synchronized):
        # Only the moving-state moments are combined, so every kernel stays valid.
        if mask is None:
            count = _common.count(x, _stats.reduction_axes(len(x.shape), axis))
        else:
            count = _stats.unmasked_count(x, mask, axis)
        mean, second_moment = _replicas.pooled([mean, second_moment], count)
    return y, mean, second_moment


def _batch_group_norm_inference_reference(
    x, moving_mean, moving_second_moment, gamma, beta, axis, epsilon, groups, example_weight
):
    x = _stats.upcast(x)
    rank = len(x.shape) + 1  # the (N, ..., G, C_g, ...) view
    g, b = (_common.group_vector(v, rank, axis, groups) for v in (gamma, beta))
    # Population moments of each channel group, from the per-channel state.
    m1 = _common.group_vector(moving_mean, rank, axis, groups)
    m2 = _common.group_vector(moving_second_moment, rank, axis, groups)
    per_group = float(x.shape[axis] // groups)

    def group_mean(v):  # a sum over a count: Keras's torch mean runs float64 in float32
        return ops.sum(v, axis=axis + 1, keepdims=True) / per_group

    pop_mean = group_mean(m1)
    # mean_c(m2) - pop_mean**2 written as mean_c(m2 - m1**2) + mean_c((m1 -
    # pop_mean)**2) (law of total variance over the group's channels): the
    # spread of the channel means is a sum of squares, so the only difference
    # of raw moments left is each channel's m2 - m1**2. That one cannot be
    # avoided: the state holds raw moments, as in the official code.
    pop_variance = group_mean(m2 - ops.square(m1)) + group_mean(ops.square(m1 - pop_mean))
    if example_weight == 0:
        view = ops.reshape(x, _common.split_channels(ops.shape(x), axis, groups))
        mean, variance = pop_mean, ops.maximum(pop_variance, 0.0)
    else:
        # The example's own group moments, over its group's channels and all
        # spatial positions (two-pass; rank 2 with C_g = 1 gives x and 0),
        # mixed as alpha*S2 + (1-alpha)*M2 - mixed_mean**2 (the official
        # moment mix) in the form that cannot cancel below zero.
        view, own_mean, own_variance = _stats.group_moments(x, axis, groups)
        mean, variance = _stats.mix_moments(own_mean, own_variance, pop_mean, pop_variance, example_weight)
    y = _common.normalize_folded(view, mean, variance, g, b, epsilon)
    return ops.reshape(y, ops.shape(x))


def batch_group_norm_inference(
    x, moving_mean, moving_second_moment, gamma=None, beta=None, axis=-1, epsilon=1e-3, groups=32,
    example_weight=0.0
):
    """Batch-Group normalization in inference mode, with example weighing.

    The per-channel moving moments $\\bar m^{(1)}_c,\\bar m^{(2)}_c$ are
    averaged over each channel group, $\\bar M^{(k)}_g=\\operatorname{mean}_{c\\in g}
    \\bar m^{(k)}_c$, and mixed, with $\\alpha$ = `example_weight`, with the
    example's own group moments $S^{(k)}_{n,g}$ (the mean of $x^k$ over the
    group's channels and all spatial positions of example $n$):

    $$\\tilde\\mu_{n,g}=(1-\\alpha)\\bar M^{(1)}_g+\\alpha S^{(1)}_{n,g},\\qquad
      \\tilde\\sigma^2_{n,g}=\\max\\big((1-\\alpha)\\bar M^{(2)}_g+\\alpha S^{(2)}_{n,g}
      -\\tilde\\mu^2_{n,g},\\;0\\big),$$

    $$y=\\gamma_c\\,\\frac{x-\\tilde\\mu_{n,g}}{\\sqrt{\\tilde\\sigma^2_{n,g}+\\epsilon}}+\\beta_c .$$

    The mixed variance is computed in the equal form
    $(1-\\alpha)V_g+\\alpha v_{n,g}+\\alpha(1-\\alpha)(S^{(1)}_{n,g}-\\bar M^{(1)}_g)^2$,
    with $v_{n,g}$ the example's own two-pass group variance and
    $V_g=\\operatorname{mean}_{c\\in g}(\\bar m^{(2)}_c-(\\bar m^{(1)}_c)^2)
    +\\operatorname{mean}_{c\\in g}(\\bar m^{(1)}_c-\\bar M^{(1)}_g)^2$ the
    population group variance, then clamped at 0 (the official code does not
    clamp). $\\alpha=1$ is the example's own group statistics: with
    $E=1$ in training, exactly group normalization. Each example's output
    depends on no other example.

    Args:
        x: tensor of rank >= 2.
        moving_mean: `(C,)` population first moments $E[x]$.
        moving_second_moment: `(C,)` population second moments $E[x^2]$.
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        axis: int, the channel axis (not 0).
        epsilon: float.
        groups: positive int $G$ dividing the channel count, or -1.
        example_weight: Python float $\\alpha$ in [0, 1].

    Returns:
        The output, in float32 or wider.

    Raises:
        ValueError: for a bad `axis` or `groups`.
    """
    owner = "keras_norms.ops.batch_group_norm_inference"
    x, axis, groups = _stats.grouped_input(x, axis, groups, owner)
    moving_mean, moving_second_moment, gamma, beta = (
        _stats.like(v, x) for v in (moving_mean, moving_second_moment, gamma, beta)
    )
    return dispatch(
        "batch_group_norm_inference",
        _batch_group_norm_inference_reference,
        x,
        moving_mean,
        moving_second_moment,
        gamma,
        beta,
        axis,
        epsilon,
        groups,
        example_weight,
    )

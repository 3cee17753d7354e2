"""Helpers shared by the ops and the backend kernels: shapes, groups, ghost batches, the affine, constants.

Written in `keras.ops` and plain Python, importing nothing else from the
package: beside `_dispatch`, the only module of `keras_norms.ops` that a
kernel (`keras_norms/_backends/`) may import.
"""

import math

from keras import ops

# Mean and standard deviation of max(Z, 0) for Z ~ N(0, 1), from their closed forms (NormProp's ReLU).
RELU_MEAN = 1.0 / math.sqrt(2.0 * math.pi)
RELU_STD = math.sqrt(0.5 * (1.0 - 1.0 / math.pi))


# ------------------------------------------------------------------ shapes and axes
def broadcast_shape(ndim, axis, channels):
    """Shape that broadcasts a `(channels,)` vector along `axis` of a rank-`ndim` tensor."""
    shape = [1] * ndim
    shape[axis] = channels
    return shape


def per_example_shape(ndim, axis, channels):
    """Shape of per-(example, channel) values broadcast against a rank-`ndim` tensor: `(-1, 1, .., C, .., 1)`."""
    shape = broadcast_shape(ndim, axis, channels)
    shape[0] = -1
    return shape


def spatial_axes(ndim, axis):
    """All axes but the batch axis 0 and the (non-negative) channel `axis`."""
    return [i for i in range(1, ndim) if i != axis]


def count(x, axes):
    """Number of elements reduced over `axes` (an int, or a tensor when traced)."""
    shape = ops.shape(x)
    total = 1
    for axis in axes:
        total = total * shape[axis]
    return total


def channel_vector(v, ndim, axis):
    """A `(C,)` vector (or `None`) reshaped to broadcast along `axis`; a rank-`ndim` one is kept as it is."""
    if v is None or len(v.shape) == ndim:
        return v
    return ops.reshape(v, broadcast_shape(ndim, axis, -1))


# ------------------------------------------------------------------ groups of channels, ghost batches
def check_positive_int(value, name, owner):
    """Raises a ValueError naming `owner` unless `value` is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: `{name}` must be a positive int, received {name}={value!r}.")


def resolve_groups(groups, channels, owner):
    """The number of channel groups: `groups`, or `channels` for `groups=-1`.

    Raises:
        ValueError: if `groups` is not a positive int or -1, or does not
            divide `channels`.
    """
    if isinstance(groups, bool) or not isinstance(groups, int) or (groups < 1 and groups != -1):
        raise ValueError(
            f"{owner}: `groups` must be a positive int or -1 (one channel per "
            f"group), received groups={groups!r}."
        )
    if groups == -1:
        return channels
    if channels % groups:
        raise ValueError(
            f"{owner}: groups={groups} does not divide the {channels} "
            "channels. Pass a divisor of the channel count (or -1 for one "
            "channel per group)."
        )
    return groups


def split_channels(shape, axis, groups):
    """`shape` with the entry at `axis` replaced by `(groups, C // groups)`."""
    shape = list(shape)
    channels = shape[axis]
    return shape[:axis] + [groups, channels // groups] + shape[axis + 1 :]


def group_vector(v, ndim, axis, groups):
    """A `(C,)` vector shaped to broadcast along the `(G, C_g)` pair at `axis`.

    `ndim` is the rank of the view the result broadcasts against.
    """
    if v is None:
        return None
    shape = [1] * ndim
    shape[axis] = groups
    shape[axis + 1] = -1
    return ops.reshape(v, shape)


def split_ghosts(x, virtual_batch_size):
    """Views `x` as `(K, B', ...)` consecutive ghost batches.

    When the batch size is not a multiple of `B'` (or is unknown while
    tracing) the batch is zero-padded to `K * B'` and a validity mask marks
    the real examples.

    Returns:
        `(ghosts, valid, counts, batch_size)`: `valid` is `None` or a boolean
        tensor broadcastable to `ghosts`; `counts` holds the number of real
        examples per ghost, shape `(K,)`.
    """
    ndim = len(x.shape)
    shape = ops.shape(x)
    rest = list(shape[1:])
    static_batch = x.shape[0]
    if static_batch is not None and static_batch % virtual_batch_size == 0:
        num_ghosts = static_batch // virtual_batch_size
        ghosts = ops.reshape(x, [num_ghosts, virtual_batch_size] + rest)
        counts = ops.full((num_ghosts,), float(virtual_batch_size), x.dtype)
        return ghosts, None, counts, static_batch
    batch = shape[0]
    num_ghosts = (batch + virtual_batch_size - 1) // virtual_batch_size
    padding = num_ghosts * virtual_batch_size - batch
    padded = ops.pad(x, [[0, padding]] + [[0, 0]] * (ndim - 1))
    ghosts = ops.reshape(padded, [-1, virtual_batch_size] + rest)
    index = ops.reshape(ops.arange(num_ghosts * virtual_batch_size), [-1, virtual_batch_size])
    valid = ops.reshape(index < batch, [-1, virtual_batch_size] + [1] * (ndim - 1))
    first = ops.arange(num_ghosts) * virtual_batch_size
    counts = ops.cast(ops.minimum(virtual_batch_size, batch - first), x.dtype)
    return ghosts, valid, counts, batch


# ------------------------------------------------------------------ the affine
def normalize_folded(x, mean, variance, gamma, beta, epsilon):
    """`gamma * (x - mean) / sqrt(variance + epsilon) + beta`, scale folded.

    All arguments broadcast to `x`. `gamma / sqrt(variance + epsilon)` is
    folded into one per-channel scale, so the full-size tensor sees a
    subtract, a multiply and an add, one elementwise pass that XLA fuses.
    Centring before scaling (rather than `x * scale + (beta - mean * scale)`)
    avoids cancellation when |mean| >> std: the fully folded form loses
    about |mean|/std ulps, e.g. 4e-5 at batch size 1 with epsilon 1e-5.
    """
    scale = ops.rsqrt(variance + epsilon)
    if gamma is not None:
        scale = scale * gamma
    # The gradient to `mean` of `(x - mean) * scale` is `-scale * sum(dy)`, but
    # autodiff (and XLA) computes it as a full-size `sum(dy * scale)`. Centre
    # on a frozen mean and route the mean's gradient through the per-channel
    # shift instead: `mean - frozen` is exactly 0, so the values are unchanged,
    # and `sum(dy)` is shared with the gradient of `beta`.
    frozen = ops.stop_gradient(mean)
    shift = (frozen - mean) * scale
    if beta is not None:
        shift = shift + beta
    return (x - frozen) * scale + shift


def normalize_grouped(view, mean, variance, gamma, beta, epsilon, group_axis, groups, shape):
    """`normalize_folded` on a grouped view with `(C,)` `gamma` and `beta`, reshaped to the output `shape`.

    `group_axis` is the view's `G` axis (`C_g` follows it). For a dense `(N, C)` output (rank-2 `shape`: no spatial
    axes), a folded per-(cell, channel) scale would be as large as the input, and its backward adds full-size
    passes: the view is normalized first and the per-channel affine applied after the reshape (JAX CPU train step
    of group norm on (256, 1024), G=32, paired runs: 0.67 ms against 0.86 ms folded).
    """
    if len(shape) == 2:
        return scale_and_shift(ops.reshape((view - mean) * ops.rsqrt(variance + epsilon), shape), gamma, beta)
    gamma, beta = (group_vector(v, len(view.shape), group_axis, groups) for v in (gamma, beta))
    return ops.reshape(normalize_folded(view, mean, variance, gamma, beta, epsilon), shape)


def scale_and_shift(y, gamma, beta):
    """`y * gamma + beta`, either of them `None` (1, 0)."""
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


# ------------------------------------------------------------------ Memorized BN's slot bookkeeping
def slot_weights(newest, filled, size, memory_weights, dtype):
    """Normalized weights `(k,)` of the slots: 0 for the unfilled ones.

    `newest` is the slot of the newest batch, `filled` the number of used
    slots (slots `0 .. filled-1`). All zeros when `filled` is 0.
    """
    index = ops.arange(size, dtype=dtype)
    valid = ops.cast(ops.less(index, filled), dtype)
    if memory_weights is None:
        raw = valid
    else:
        age = ops.mod(newest - index + size, size)  # slot i holds the batch of this age
        by_age = ops.cast(ops.equal(ops.expand_dims(age, 1), ops.expand_dims(index, 0)), dtype)
        eta = ops.convert_to_tensor([float(w) for w in memory_weights], dtype=dtype)
        raw = ops.sum(by_age * ops.expand_dims(eta, 0), axis=1) * valid
    total = ops.sum(raw)
    return raw / ops.where(total > 0, total, ops.ones_like(total))


def memory_variances(means, second_moments):
    """Per-slot variances from raw moments, clamped at 0."""
    return ops.relu(second_moments - ops.square(means))


def memory_slots(memory_mean, memory_second_moment, count, memory_weights, dtype):
    """The memory as constants, the current batch's slot and the slot weights.

    Shared by the reference and the backend kernels of `memorized_batch_norm`.

    Returns:
        `(memory_mean, memory_second_moment, current, weights)`: the `(k, C)`
        buffers (stop-gradient, in `dtype`), a `(k, 1)` boolean one-hot of
        slot $n \\bmod k$, and the `(k,)` normalized weights of the
        $\\min(n+1, k)$ used slots.
    """
    size = memory_mean.shape[0]
    memory_mean = ops.stop_gradient(ops.cast(memory_mean, dtype))
    memory_second = ops.stop_gradient(ops.cast(memory_second_moment, dtype))
    count = ops.cast(count, dtype)
    slot = ops.mod(count, size)
    current = ops.expand_dims(ops.equal(ops.arange(size, dtype=dtype), slot), 1)
    weights = slot_weights(slot, ops.minimum(count + 1, size), size, memory_weights, dtype)
    return memory_mean, memory_second, current, weights

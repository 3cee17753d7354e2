"""Memorized Batch Normalization (MBN) as functions on `keras.ops`.

Guo, Wu, Deng, Chen & Tan, "Double Forward Propagation for Memorized Batch
Normalization", AAAI 2018 (arXiv:2010.04947). No public code exists: every
detail below beyond the abstract is this package's design, not confirmed
against the paper. See the Design notes page of the documentation, section
Memorized BN and Double Forward.

The memory of a layer holds, per channel, the raw moments $E[x]$ and
$E[x^2]$ of the last $k$ batches in two `(k, C)` buffers, and a counter $n$
of memorized batches. Slot $n \\bmod k$ receives the next batch; the
$\\min(n, k)$ slots with index below $n$ are filled. The counter is kept
exact in float32 by wrapping it into $[k, 2k)$ once the memory is full
(`advance_memory_count`): $n \\bmod k$ and $\\min(n, k)$, all that is ever
read, are unchanged by the wrap.

Statistics pooled over the used slots $j$ with normalized weights
$\\eta_j$ (uniform by default, or given per age: index 0 is the newest
batch):

$$\\mu=\\sum_j\\eta_j m^{(1)}_j,\\qquad
  \\sigma^2=\\sum_j\\eta_j\\big(v_j+(m^{(1)}_j-\\mu)^2\\big)
  =\\max\\Big(\\sum_j\\eta_j m^{(2)}_j-\\mu^2,0\\Big),$$

with $v_j=\\max(m^{(2)}_j-(m^{(1)}_j)^2,0)$ for a memorized slot and the
two-pass batch variance for the current batch (the centred left-hand form,
which cannot go negative and loses nothing to cancellation for the current
batch). Everything runs in float32 (float64 stays float64); outputs come
back in that dtype for the caller to cast.
"""

from keras import ops

from keras_norms.ops import _common
from keras_norms.ops import _replicas
from keras_norms.ops import _stats
from keras_norms.ops._dispatch import dispatch
from keras_norms.ops._dispatch import run_reference
from keras_norms.ops.normalization import batch_norm_inference
from keras_norms.ops.normalization import normalize


def _check_memory(memory_mean, memory_second_moment, memory_weights, owner):
    if len(memory_mean.shape) != 2 or tuple(memory_mean.shape) != tuple(memory_second_moment.shape):
        raise ValueError(
            f"{owner}: the memory buffers must both have shape (memory_size, channels); "
            f"received {tuple(memory_mean.shape)} and {tuple(memory_second_moment.shape)}."
        )
    size = memory_mean.shape[0]
    if memory_weights is not None and len(memory_weights) != size:
        raise ValueError(
            f"{owner}: `memory_weights` must have one weight per memory slot ({size}); "
            f"received {len(memory_weights)}: {list(memory_weights)!r}."
        )
    return size


def _pool(means, variances, weights):
    """Pooled mean and variance of per-slot `(k, C)` moments (centred form)."""
    weights = ops.expand_dims(weights, 1)
    mean = ops.sum(weights * means, axis=0)
    variance = ops.sum(weights * (variances + ops.square(means - mean)), axis=0)
    return mean, variance


def advance_memory_count(count, memory_size):
    """The counter after memorizing one more batch, wrapped into [k, 2k).

    $$n' = n+1 \\text{ if } n+1<k,\\quad\\text{else } k+((n+1)\\bmod k)$$

    so $n' \\bmod k = (n+1) \\bmod k$ and $\\min(n', k)=\\min(n+1, k)$, and a
    float32 counter never loses exactness however long training runs.

    Args:
        count: scalar tensor, the number of memorized batches (any
            non-negative integer value).
        memory_size: int, $k$.

    Returns:
        The new counter, in `count`'s dtype.
    """
    following = count + 1
    return ops.where(following < memory_size, following, memory_size + ops.mod(following, memory_size))


def memorized_moments(memory_mean, memory_second_moment, count, memory_weights=None):
    """Inference statistics: the mean and variance pooled from the memory.

    Pools the $\\min(n, k)$ filled slots as in the module docstring. An
    **empty memory** ($n=0$) gives mean 0 and variance 1, the initial moving
    statistics of Keras BatchNormalization.

    Args:
        memory_mean: `(k, C)` tensor, $E[x]$ per slot.
        memory_second_moment: `(k, C)` tensor, $E[x^2]$ per slot.
        count: scalar, the number of memorized batches $n$.
        memory_weights: optional sequence of $k$ positive floats, the weight
            of the batch of each age (0: newest); `None` is uniform.

    Returns:
        `(mean, variance)`, each `(C,)`, in float32 or wider.
    """
    size = _check_memory(memory_mean, memory_second_moment, memory_weights, "memorized_moments")
    means = _stats.upcast(memory_mean)
    dtype = means.dtype
    second = ops.cast(memory_second_moment, dtype)
    count = ops.cast(count, dtype)
    filled = ops.minimum(count, size)
    newest = ops.mod(count + (size - 1), size)
    weights = _common.slot_weights(newest, filled, size, memory_weights, dtype)
    mean, variance = _pool(means, _common.memory_variances(means, second), weights)
    variance = ops.where(filled > 0, variance, ops.ones_like(variance))
    return mean, variance


def memorized_batch_norm(
    x, memory_mean, memory_second_moment, count, gamma=None, beta=None, axis=-1, epsilon=1e-3, memory_weights=None,
    synchronized=False
):
    """Memorized batch normalization in training mode.

    The current batch's per-channel moments $m^{(1)}=E[x]$, $\\sigma^2_B$
    (two-pass, biased, over every axis except `axis`) take slot
    $s=n\\bmod k$; the other filled slots are memorized constants
    (stop-gradient). With the pooled statistics over the
    $\\min(n+1, k)$ used slots (module docstring),

    $$y=\\gamma\\,\\frac{x-\\mu}{\\sqrt{\\sigma^2+\\epsilon}}+\\beta .$$

    Gradients flow only through the current batch's moments. With $n=0$, or
    $k=1$, this is batch normalization in training.

    Args:
        x: tensor of rank >= 2, batch on axis 0.
        memory_mean: `(k, C)` tensor, $E[x]$ per slot.
        memory_second_moment: `(k, C)` tensor, $E[x^2]$ per slot.
        count: scalar, the number of memorized batches $n$ before this one.
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        axis: int, the channel axis.
        epsilon: float added to the variance inside the square root.
        memory_weights: optional sequence of $k$ positive floats, the weight
            of the batch of each age (0: the current batch); `None` is
            uniform.
        synchronized: bool. True: the current batch's moments are those of
            the global batch across replicas (`_replicas.moments`), so every
            replica memorizes the same moments. False: this replica's batch
            (see `batch_norm`; per-device memories are averaged over the
            devices on JAX).

    Returns:
        `(y, new_memory_mean, new_memory_second_moment)`: the output in
        float32 or wider, and the `(k, C)` buffers with slot $s$ replaced by
        the current batch's moments (stop-gradient). The counter is advanced
        by the caller (`advance_memory_count`).
    """
    owner = "keras_norms.ops.memorized_batch_norm"
    x = _stats.upcast(x)
    axis = _stats.canonical_axis(axis, len(x.shape), owner)
    _check_memory(memory_mean, memory_second_moment, memory_weights, owner)
    shards = _replicas.device_slices(x)
    if not synchronized and shards > 1:
        return _replicas.per_device(
            lambda xs: memorized_batch_norm(
                xs, memory_mean, memory_second_moment, count, gamma, beta, axis, epsilon, memory_weights
            ),
            shards,
            x,
        )
    gamma, beta = _stats.like(gamma, x), _stats.like(beta, x)
    args = (x, memory_mean, memory_second_moment, count, gamma, beta, axis, epsilon, memory_weights)
    if _replicas.synchronizes(synchronized):
        # Not dispatched: a kernel would see this replica's batch only.
        return run_reference("memorized_batch_norm", "synchronized across replicas", _memorized_batch_norm_reference,
                             *args, moments=_replicas.moments)
    return dispatch("memorized_batch_norm", _memorized_batch_norm_reference, *args)


def _memorized_batch_norm_reference(
    x, memory_mean, memory_second_moment, count, gamma, beta, axis, epsilon, memory_weights, moments=_stats.moments
):
    batch_mean, batch_variance = moments(x, _stats.reduction_axes(len(x.shape), axis))
    memory_mean, memory_second, current, weights = _common.memory_slots(
        memory_mean, memory_second_moment, count, memory_weights, x.dtype
    )
    means = ops.where(current, ops.expand_dims(batch_mean, 0), memory_mean)
    variances = ops.where(
        current, ops.expand_dims(batch_variance, 0), _common.memory_variances(memory_mean, memory_second)
    )
    mean, variance = _pool(means, variances, weights)
    y = normalize(x, mean, variance, gamma, beta, axis, epsilon)
    fresh_mean = ops.stop_gradient(batch_mean)
    fresh_second = ops.stop_gradient(batch_variance + ops.square(batch_mean))
    new_mean = ops.where(current, ops.expand_dims(fresh_mean, 0), memory_mean)
    new_second = ops.where(current, ops.expand_dims(fresh_second, 0), memory_second)
    return y, new_mean, new_second


def memorized_batch_norm_inference(
    x, memory_mean, memory_second_moment, count, gamma=None, beta=None, axis=-1, epsilon=1e-3, memory_weights=None
):
    """Memorized batch normalization at inference: the pooled memory.

    $$y=\\gamma\\,\\frac{x-\\mu}{\\sqrt{\\sigma^2+\\epsilon}}+\\beta$$

    with $\\mu,\\sigma^2$ from `memorized_moments` (mean 0 and variance 1
    while the memory is empty). No exponential moving average is involved.
    The normalization is `batch_norm_inference` with those statistics, so
    the backends' BN inference kernels apply (PyTorch's `F.batch_norm`).

    Args:
        x: tensor of rank >= 2, batch on axis 0.
        memory_mean: `(k, C)` tensor, $E[x]$ per slot.
        memory_second_moment: `(k, C)` tensor, $E[x^2]$ per slot.
        count: scalar, the number of memorized batches $n$.
        memory_weights: optional sequence of $k$ positive floats, the weight
            of the batch of each age (0: newest); `None` is uniform.
        gamma: optional `(C,)` scale (`None`: 1).
        beta: optional `(C,)` shift (`None`: 0).
        axis: int, the channel axis.
        epsilon: float added to the variance inside the square root.

    Returns:
        The normalized tensor, in float32 or wider.
    """
    x = _stats.upcast(x)
    _stats.canonical_axis(axis, len(x.shape), "keras_norms.ops.memorized_batch_norm_inference")
    mean, variance = memorized_moments(memory_mean, memory_second_moment, count, memory_weights)
    # Plain BN inference with the pooled statistics: the backends' BN inference kernels apply (PyTorch's
    # `F.batch_norm`), and the reference is `normalize`'s arithmetic.
    return batch_norm_inference(x, mean, variance, gamma, beta, axis, epsilon)

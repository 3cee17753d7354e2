"""Statistics across replicas: the cross-replica sum and what the ops build on it.

Data-parallel training splits the global batch of $N$ examples into replica
batches of $N_r$ examples, one per device (or process). A batch-dependent
op called with `synchronized=True` takes its batch statistics over the
global batch; with `synchronized=False` over the replica's own batch.

The only backend-specific piece is one primitive, `cross_replica_sum`, with
one implementation per backend in `keras_norms/_backends/<backend>/distributed.py`
(TensorFlow: the replica context's all-reduce; PyTorch: `torch.distributed`
all-reduce with an all-reducing backward; JAX: `psum` over a bound axis), the
identity where there is one replica. The math stays here, in `keras.ops`:

* `moments`: the two-pass mean and biased variance of the global batch, in
  two all-reduce rounds: $(\\sum x, n)$ first, then
  $\\sum (x-\\mu)^2$ about the global mean. Two rounds cost one more small
  all-reduce than a one-pass $(\\sum x,\\sum x^2, n)$ but keep the house's
  precision contract: no $E[x^2]-E[x]^2$ cancellation, so the variance is
  the single-device two-pass variance up to summation order, never
  negative. Unequal replica batches are weighted by their counts.
* `pooled`: count-weighted averages of per-replica statistics (ghost
  batches and example groups never span replicas; only the statistics for
  the moving averages are combined).
* `per_device`: on JAX under `keras.distribution` a layer sees the *global*
  batch (statistics are global for free), so per-device statistics map the
  op over the `device_slices` consecutive slices that the devices hold.
"""

from keras import ops

from keras_norms.ops import _common
from keras_norms.ops import _dispatch
from keras_norms.ops import _stats

_inside_device_map = [False]


def active():
    """Whether `cross_replica_sum` sums over more than one replica here (static)."""
    module = _dispatch.backend_part("distributed")
    return module is not None and module.replicas_active()


def synchronizes(synchronized):
    """Whether an op called with `synchronized` must all-reduce its statistics."""
    return bool(synchronized) and active()


def cross_replica_sum(tensors):
    """Each tensor of the list summed over the replicas; the identity on one."""
    module = _dispatch.backend_part("distributed")
    tensors = list(tensors)
    return tensors if module is None else module.cross_replica_sum(tensors)


def device_slices(x):
    """Number of per-device slices of `x`'s batch (JAX under `keras.distribution`), else 1.

    1 also when the static batch size is unknown or not a multiple of the
    device count (a sharded global array always is one), and inside
    `per_device` itself.
    """
    module = _dispatch.backend_part("distributed")
    if module is None or _inside_device_map[0]:
        return 1
    shards = module.device_shards()
    batch = x.shape[0]
    if shards <= 1 or batch is None or batch % shards:
        return 1
    return shards


def per_device(fn, shards, x, *batch_args, batch_outputs=1):
    """`fn` run on each of `shards` consecutive slices of the batch, as each device would.

    Args:
        fn: function of `(x_slice, *batch_arg_slices)` returning a tuple.
        shards: int, the number of slices (a divisor of the batch size).
        x: tensor, batch on axis 0.
        *batch_args: tensors (or `None`) with the batch on axis 0, sliced
            like `x`.
        batch_outputs: how many leading outputs of `fn` have a batch axis;
            they are put back together in order. The others (statistics)
            are averaged over the slices, which have equal sizes.

    Returns:
        `fn`'s outputs for the whole batch, as a tuple.
    """

    def split(t):
        return None if t is None else ops.reshape(t, [shards, -1] + list(ops.shape(t)[1:]))

    def run(args):
        return tuple(fn(*args))

    _inside_device_map[0] = True
    try:
        outputs = ops.vectorized_map(run, (split(x),) + tuple(split(t) for t in batch_args))
    finally:
        _inside_device_map[0] = False
    joined = [ops.reshape(o, [-1] + list(ops.shape(o)[2:])) for o in outputs[:batch_outputs]]
    averaged = [ops.sum(o, axis=0) / float(shards) for o in outputs[batch_outputs:]]
    return tuple(joined + averaged)


def moments(x, axes, keepdims=False, mask=None):
    """Mean and biased variance over `axes` of the global batch, two-pass.

    $$n=\\sum_r n_r,\\quad \\mu=\\frac1n\\sum_r\\sum_{i\\in r}x_i,\\quad
      \\sigma^2=\\frac1n\\sum_r\\sum_{i\\in r}(x_i-\\mu)^2$$

    `axes` must include the batch axis 0. The same contract as
    `_stats.moments` (float32 or wider, a `mask` leaves entries out of both
    sums, an all-masked channel gives 0 and 0), with every sum all-reduced;
    on one replica it equals `_stats.moments`. Gradients flow through both
    all-reduces; the variance's mean is frozen, whose gradient is exactly
    zero because the deviations from the global mean sum to 0 over the
    global batch.

    Args:
        x: this replica's tensor.
        axes: list of ints, the axes to reduce (the batch axis among them).
        keepdims: bool, keep the reduced axes with size 1.
        mask: optional boolean (or 0/1) tensor broadcastable to `x`.

    Returns:
        `(mean, variance)` in `_stats.statistics_dtype(x.dtype)`.
    """
    x = _stats.upcast(x)
    axes = list(axes)
    if mask is None:
        weights = None
        count = ops.cast(_common.count(x, axes), x.dtype)
        local_sum = ops.sum(x, axis=axes, keepdims=True)
    else:
        weights = ops.cast(ops.broadcast_to(mask, ops.shape(x)), x.dtype)
        count = ops.sum(weights, axis=axes, keepdims=True)
        local_sum = ops.sum(x * weights, axis=axes, keepdims=True)
    total, count = cross_replica_sum([local_sum, count])
    count = ops.maximum(count, 1.0)
    mean = total / count
    deviation = x - ops.stop_gradient(mean)
    if weights is not None:
        deviation = deviation * weights
    (squares,) = cross_replica_sum([ops.sum(ops.square(deviation), axis=axes, keepdims=True)])
    variance = squares / count
    if not keepdims:
        mean = ops.squeeze(mean, axis=axes)
        variance = ops.squeeze(variance, axis=axes)
    return mean, variance


def pooled(values, count):
    """Averages of per-replica `values` over the replicas, weighted by `count`.

    $$v=\\frac{\\sum_r n_r v_r}{\\sum_r n_r}$$

    For statistics already averaged within a replica (ghost-batch means,
    a replica's raw moments): weighting by the replica's count $n_r$ makes
    them the averages over the global batch.

    Args:
        values: list of tensors of one dtype, this replica's statistics.
        count: scalar, this replica's count (examples, or elements per
            channel).

    Returns:
        The list of pooled tensors.
    """
    count = ops.cast(count, values[0].dtype)
    sums = cross_replica_sum([v * count for v in values] + [count])
    return [s / sums[-1] for s in sums[:-1]]

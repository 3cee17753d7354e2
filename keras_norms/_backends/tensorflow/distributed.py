"""TensorFlow cross-replica sum: the replica context of a `tf.distribute` strategy.

Inside `strategy.run` (which `model.fit` uses under `MirroredStrategy`,
`MultiWorkerMirroredStrategy` or `TPUStrategy`) each replica holds its own
slice of the global batch, and `ReplicaContext.all_reduce` sums a tensor over
the replicas. It is differentiable: its gradient is the all-reduced gradient,
which Keras's own `BatchNormalization(synchronized=True)` relies on too.

Outside a replica context (no strategy, the default strategy, or the
cross-replica context, where a tensor already holds the whole batch) there is
one replica and the sum is the identity. The decision is made when the
function is traced, from the context alone.
"""

import numpy as np
import tensorflow as tf


def _replica_context():
    """The replica context when more than one replica runs in sync, else `None`."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def replicas_active():
    """Whether `cross_replica_sum` sums over more than one replica here."""
    return _replica_context() is not None


def cross_replica_sum(tensors):
    """Each tensor summed over the replicas in sync (one all-reduce for all)."""
    context = _replica_context()
    if context is None:
        return list(tensors)
    return list(context.all_reduce(tf.distribute.ReduceOp.SUM, list(tensors)))


def gather_from_processes(value):
    """`[value]`: a `tf.distribute` strategy drives all its local replicas from one process (multi-worker
    strategies are not supported here)."""
    return [value]


def average_over_replicas(variables):
    """Sets each mirrored variable to the mean of its replicas' values; the number of replicas.

    Called in the cross-replica context (a callback, or between steps): there a `MirroredVariable` whose
    replicas were updated apart (statistics not synchronized) still holds one component per device.
    """
    replicas = 1
    for variable in variables:
        components = getattr(variable.value, "values", None)
        if components is not None and len(components) > 1:
            replicas = len(components)
            mean = np.mean([c.numpy() for c in components], axis=0, dtype=np.float64)
            variable.assign(mean.astype(variable.dtype))
    return replicas


def device_shards():
    """Number of device slices a layer's batch stands for: always 1 on TensorFlow.

    A replica's tensor is that replica's own batch.
    """
    return 1

"""JAX replicas: global arrays under `keras.distribution`, named axes under `shard_map`.

Two ways to train on several devices, two meanings of "the batch a layer sees":

* **`keras.distribution.DataParallel`** (or `ModelParallel`): `fit` jit-compiles
  the step on *global* arrays whose batch axis is sharded across the mesh's
  batch axis. A reduction over the batch axis is therefore already a reduction
  over every device: statistics are global with no code at all (checked on two
  host devices, `tests/test_synchronized.py`). Here the cross-replica sum is the
  identity, and `device_shards` reports how many devices the batch is split
  into, so that `synchronized=False` can compute per-device statistics: each
  consecutive slice of `N / devices` examples, the slice that device holds.
* **`shard_map` / `pmap` over a named axis** (a hand-written step): each
  function body sees its device's slice, and `jax.lax.psum` over the axis sums
  across devices (differentiable). The axis is the distribution's
  `batch_dim_name`, or `"batch"` without a distribution, and is used only while
  it is bound.
"""

import jax
import keras

_DEFAULT_AXIS = "batch"


def _batch_axis_name():
    distribution = keras.distribution.distribution()
    name = getattr(distribution, "batch_dim_name", None)
    return name or _DEFAULT_AXIS


def _bound_axis():
    """The batch axis name when it is bound (inside `shard_map`/`pmap`), else `None`."""
    name = _batch_axis_name()
    try:
        jax.lax.axis_size(name)
    except NameError:
        return None
    return name


def replicas_active():
    """Whether `cross_replica_sum` sums over a bound device axis here."""
    return _bound_axis() is not None


def cross_replica_sum(tensors):
    """Each tensor summed over the bound batch axis; the identity on global arrays."""
    name = _bound_axis()
    tensors = list(tensors)
    if name is None:
        return tensors
    return list(jax.lax.psum(tensors, name))


def gather_from_processes(value):
    """`[value]`: under `keras.distribution` one process sees the global arrays (multi-host runs are not
    supported here)."""
    return [value]


def average_over_replicas(variables):
    """Nothing to do: under `keras.distribution` a variable is one global array, the same on every device.

    (`synchronized=False` already makes its update the average over the devices' slices.) Returns 1.
    """
    return 1


def device_shards():
    """How many devices the batch axis of a global array is split into (1 when not).

    The size of the distribution's batch mesh axis, unless that axis is bound
    (the array is then already one device's slice).
    """
    distribution = keras.distribution.distribution()
    if distribution is None or _bound_axis() is not None:
        return 1
    mesh = distribution.device_mesh
    name = distribution.batch_dim_name
    if name not in mesh.axis_names:
        return 1
    return int(mesh.shape[list(mesh.axis_names).index(name)])

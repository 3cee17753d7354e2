"""Synchronized statistics over two replicas vs one device, every batch-dependent layer.

Run by `tests/test_synchronized.py` in a fresh process per backend (device
set-up must precede the backend's initialization):

* TensorFlow: `MirroredStrategy` over two logical CPU devices;
* JAX: `keras.distribution.DataParallel` over two host devices
  (`XLA_FLAGS=--xla_force_host_platform_device_count=2`);
* PyTorch: two processes on the gloo backend (`RANK`, `WORLD_SIZE`,
  `MASTER_ADDR`, `MASTER_PORT` set by the caller, as `torchrun` does).

For each layer and each `synchronized` value, the replicated run is compared
with single-device runs of an identical layer (same weights) in the same
process (all layers of a configuration run in one step: one compilation):

* `synchronized=True`: outputs, input gradients, weight gradients (summed
  over replicas) and the new state on every replica equal those of one
  device on the full batch;
* `synchronized=False`: they equal the single-device results on each
  replica's own slice; the state of replica r is that of slice r
  (TensorFlow's per-replica components, PyTorch's per-process buffers); on
  JAX, whose distributed variables are one array, it is the average over
  the slices (checked for the states that are linear in the statistics).

Also: replica batches of unequal sizes (3 and 5 examples, TensorFlow and
PyTorch), and Keras's own `BatchNormalization(synchronized=True)` on
TensorFlow as a peer. Prints one `CHECKED ...` line per comparison and
`SYNC-CHECKS-PASSED` at the end; any mismatch raises. Then it runs
`examples/multi_device.py --smoke` on the same two replicas (one process
start-up per backend instead of two), whose output follows
`EXAMPLE-SMOKE-START`.
"""

import os
import sys
from pathlib import Path

BACKEND = os.environ["KERAS_BACKEND"]
REPLICAS = 2
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "multi_device.py"
sys.path.insert(0, str(ROOT))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if BACKEND == "jax":
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={REPLICAS} --xla_backend_optimization_level=0"
if BACKEND == "tensorflow":
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)
if BACKEND == "torch":
    import torch  # before keras, as in tests/conftest.py

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_norms  # noqa: E402
from tests.tolerances import GRADIENT  # noqa: E402
from tests.tolerances import TOLERANCES  # noqa: E402

TOL = TOLERANCES["float32"]  # the same float32 math, summed in another order
# Gradients: the same, through a graph (tf.function, jit) against eager code; a
# ghost of one example has 3 values, whose backprop cancels O(1) terms (1.5e-5
# seen on TensorFlow). A missing cross-replica gradient is off by O(0.1).
GRAD_TOL = GRADIENT
SHAPE = (8, 3, 4)  # (N, spatial, C): 4 examples per replica
UNEQUAL = (3, 5)


def _specs():
    """`name -> (factory(synchronized), linear_state, split)`.

    `linear_state`: the new state is linear in the batch statistics, so the
    JAX per-device state is the average of the slices' states (renorm's
    standard deviations are not). `split`: `"global"` for statistics of the
    whole batch (also checked on unequal replica batches); `"aligned"` for
    ghost batches or example groups that tile each replica's batch, so
    that they are the same on one device; `"local"` for ghosts that do not
    (3 of each replica's 4 examples, then 1): a ghost never spans replicas,
    so the outputs are the slices' and only the state is combined.
    """
    n = keras_norms
    return {
        "BatchNormalization": (lambda s: n.BatchNormalization(momentum=0.5, synchronized=s), True, "global"),
        "BatchNormalization-renorm": (
            lambda s: n.BatchNormalization(
                momentum=0.5, renorm=True, renorm_clipping={"rmax": 1.5, "dmax": 0.5}, synchronized=s
            ),
            False,
            "global",
        ),
        "GhostBatchNormalization": (
            lambda s: n.GhostBatchNormalization(virtual_batch_size=2, momentum=0.5, synchronized=s),
            True,
            "aligned",
        ),
        "GhostBatchNormalization-3-of-4": (
            lambda s: n.GhostBatchNormalization(virtual_batch_size=3, momentum=0.5, synchronized=s),
            True,
            "local",
        ),
        "BatchGroupNormalization": (
            lambda s: n.BatchGroupNormalization(groups=2, examples_per_group=2, momentum=0.5, synchronized=s),
            True,
            "aligned",
        ),
        "BatchChannelNormalization": (
            lambda s: n.BatchChannelNormalization(groups=2, momentum=0.5, synchronized=s),
            True,
            "global",
        ),
        "BatchChannelNormalization-estimate": (
            lambda s: n.BatchChannelNormalization(groups=2, mode="estimate", momentum=0.5, synchronized=s),
            True,
            "global",
        ),
        "MemorizedBatchNormalization": (
            lambda s: n.MemorizedBatchNormalization(memory_size=2, synchronized=s),
            True,
            "global",
        ),
        "EvoNormB0": (lambda s: n.EvoNormB0(momentum=0.5, synchronized=s), True, "global"),
    }


def _data():
    rng = np.random.default_rng(0)
    x = (3.0 + rng.standard_normal(SHAPE)).astype("float32")  # a mean offset: shifted sums matter
    upstream = rng.standard_normal(SHAPE).astype("float32")
    return x, upstream


def _initial_values(factory, seed=1):
    """Random trainable values (so every gradient is non-trivial), the initial state."""
    layer = factory(False)
    layer.build(SHAPE)
    rng = np.random.default_rng(seed)
    return [
        (0.5 + rng.random(v.shape)).astype(v.dtype) if v.trainable else keras.ops.convert_to_numpy(v.value).copy()
        for v in layer.weights
    ]


def _layers(specs, names, synchronized, values):
    """Fresh built layers `{name: layer}` with the given initial values."""
    layers = {}
    for name in names:
        layer = specs[name][0](synchronized)
        layer.build(SHAPE)
        for v, value in zip(layer.weights, values[name]):
            v.assign(value)
        layers[name] = layer
    return layers


def _state(layer):
    return {v.name: np.asarray(keras.ops.convert_to_numpy(v.value)) for v in layer.non_trainable_weights}


def _slices(sizes):
    bounds = np.cumsum((0,) + tuple(sizes))
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _expected(single, specs, names, x, upstream, synchronized, sizes):
    """`{name: (y, dx, dweights, [state per replica])}` computed on one device.

    `single(names, x, upstream)` returns `{name: (y, dx, dweights, state)}`
    of fresh single-device layers (`synchronized=False`, the initial values)
    on one batch.
    """
    whole = [n for n in names if synchronized and specs[n][2] != "local"]
    sliced = [n for n in names if n not in whole]
    expected = {}
    if whole:
        for name, (y, dx, dw, state) in single(whole, x, upstream).items():
            expected[name] = (y, dx, dw, [state] * len(sizes))
    if sliced:
        parts = [single(sliced, x[s], upstream[s]) for s in _slices(sizes)]
        for name in sliced:
            mine = [p[name] for p in parts]
            states = [m[3] for m in mine]
            if synchronized:  # local ghosts: the moving statistics see the replicas' pooled statistics
                weights = np.asarray(sizes, np.float64) / sum(sizes)
                pooled = {k: sum(w * st[k] for w, st in zip(weights, states)) for k in states[0]}
                states = [pooled] * len(sizes)
            expected[name] = (
                np.concatenate([m[0] for m in mine]),
                np.concatenate([m[1] for m in mine]),
                [sum(m[2][i] for m in mine) for i in range(len(mine[0][2]))],
                states,
            )
    return expected


def _compare(label, got, expected, linear_state=True, average_state=False):
    y, dx, dw, states = got
    ey, edx, edw, estates = expected
    np.testing.assert_allclose(y, ey, err_msg=f"{label}: outputs", **TOL)
    np.testing.assert_allclose(dx, edx, err_msg=f"{label}: input gradients", **GRAD_TOL)
    assert len(dw) == len(edw) > 0, label
    for i, (g, e) in enumerate(zip(dw, edw)):
        np.testing.assert_allclose(g, e, err_msg=f"{label}: weight gradient {i}", **GRAD_TOL)
    if average_state:  # JAX: one replicated array, the average of the devices' states
        estates = [{k: np.mean([s[k] for s in estates], axis=0) for k in estates[0]}]
        if not linear_state:
            estates = [{k: v for k, v in estates[0].items() if k in ("moving_mean", "renorm_mean")}]
    for replica, (state, expected_state) in enumerate(zip(states, estates)):
        for name, value in expected_state.items():
            np.testing.assert_allclose(
                state[name], value, err_msg=f"{label}: state {name} of replica {replica}", **TOL
            )
    print(f"CHECKED {label}", flush=True)


def _check_averaged(label, before, after):
    """After `average_moving_statistics`, every replica's state is the replicas' mean from before it."""
    assert any(not np.array_equal(before[0][k], before[1][k]) for k in before[0]), f"{label}: no drift to average"
    for replica, state in enumerate(after):
        for name in before[0]:
            mean = np.mean([b[name] for b in before], axis=0)
            np.testing.assert_allclose(state[name], mean, err_msg=f"{label}: {name} of replica {replica}", **TOL)
    print(f"CHECKED {label}", flush=True)


def _configurations(specs):
    """`(synchronized, sizes, names)`: every layer both ways, then unequal batches where meaningful."""
    even = (SHAPE[0] // REPLICAS,) * REPLICAS
    yield True, even, list(specs)
    yield False, even, list(specs)
    yield True, UNEQUAL, [n for n in specs if specs[n][2] == "global"]


def _eager_single(specs, values):
    """`single(names, x, upstream)` for `_expected`: fresh layers, eager calls."""
    from tests.backend_utils import layer_gradients

    def single(names, x, upstream):
        results = {}
        for name, layer in _layers(specs, names, False, values).items():
            y, dx, dw = layer_gradients(layer, x, upstream)
            results[name] = (y, dx, dw, _state(layer))
        return results

    return single


# --------------------------------------------------------------- TensorFlow
def _tf_run(strategy, layers, x, upstream, sizes):
    """`{name: (y, dx, dweights, [state per replica])}` of one replicated step of all layers."""
    parts = [x[s] for s in _slices(sizes)]
    ups = [upstream[s] for s in _slices(sizes)]
    xs = strategy.experimental_distribute_values_from_function(lambda c: parts[c.replica_id_in_sync_group])
    us = strategy.experimental_distribute_values_from_function(lambda c: ups[c.replica_id_in_sync_group])

    @tf.function
    def step(xs, us):
        def replica(xr, ur):
            inputs = {n: tf.identity(xr) for n in layers}  # one input per layer: its own gradient
            variables = {n: [v.value for v in layer.trainable_weights] for n, layer in layers.items()}
            with tf.GradientTape() as tape:
                tape.watch(list(inputs.values()))
                outputs = {n: layer(inputs[n], training=True) for n, layer in layers.items()}
                loss = tf.add_n([tf.reduce_sum(y * ur) for y in outputs.values()])
            dx, dw = tape.gradient(loss, (inputs, variables))
            return outputs, dx, dw

        return strategy.run(replica, args=(xs, us))

    outputs, dx, dw = step(xs, us)

    def local(t):
        return [v.numpy() for v in strategy.experimental_local_results(t)]

    return {
        n: (
            np.concatenate(local(outputs[n])),
            np.concatenate(local(dx[n])),
            [sum(local(g)) for g in dw[n]],  # what the optimizer's all-reduce sums
            [{v.name: v.value.values[r].numpy() for v in layer.non_trainable_weights} for r in range(len(sizes))],
        )
        for n, layer in layers.items()
    }


def run_tensorflow():
    # Reduction through one device, not collective ops: a second strategy in this process (the example's) restarts
    # the collective instance keys, which would collide with those used here.
    strategy = tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(REPLICAS)], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    assert strategy.num_replicas_in_sync == REPLICAS
    specs = _specs()
    values = {name: _initial_values(spec[0]) for name, spec in specs.items()}
    x, upstream = _data()
    for synchronized, sizes, names in _configurations(specs):
        with strategy.scope():
            layers = _layers(specs, names, synchronized, values)
        got = _tf_run(strategy, layers, x, upstream, sizes)
        expected = _expected(_eager_single(specs, values), specs, names, x, upstream, synchronized, sizes)
        for name in names:
            _compare(f"{name} synchronized={synchronized} batches={sizes}", got[name], expected[name])
    _tf_keras_peer(strategy, x, upstream)
    with strategy.scope():
        layers = _layers(specs, list(specs), False, values)
    got = _tf_run(strategy, layers, x, upstream, (SHAPE[0] // REPLICAS,) * REPLICAS)  # replicas drift apart
    for name, layer in layers.items():
        assert keras_norms.average_moving_statistics(layer) == REPLICAS
        after = [{v.name: v.value.values[r].numpy() for v in layer.non_trainable_weights} for r in range(REPLICAS)]
        _check_averaged(f"average_moving_statistics {name}", got[name][3], after)
    _check_recompute_tensorflow(strategy, x, upstream)


def _whole_moments(x):
    whole = x.astype(np.float64)
    return {"moving_mean": whole.mean((0, 1)), "moving_variance": whole.var((0, 1))}


def _check_recompute_tensorflow(strategy, x, upstream):
    """`recompute_batch_statistics` on a model built under the strategy: every replica's component is set."""
    with strategy.scope():
        layer = keras_norms.BatchNormalization()
        inputs = keras.Input(SHAPE[1:])
        model = keras.Model(inputs, layer(inputs))
    _tf_run(strategy, {"bn": layer}, x, upstream, (SHAPE[0] // REPLICAS,) * REPLICAS)  # replicas drift apart
    drifted = [v.value.values[0].numpy() - v.value.values[1].numpy() for v in layer.non_trainable_weights]
    assert any(np.abs(d).max() > 0 for d in drifted), "no drift: the check would pass without recompute"
    keras_norms.recompute_batch_statistics(model, x, batch_size=3, verbose=0)
    for variable in layer.non_trainable_weights:
        name = variable.name
        for r in range(REPLICAS):
            np.testing.assert_allclose(variable.value.values[r].numpy(), _whole_moments(x)[name],
                                       err_msg=f"replica {r}: {name}", **TOL)
    print("CHECKED recompute_batch_statistics under MirroredStrategy: every replica", flush=True)


def _tf_keras_peer(strategy, x, upstream):
    """Keras's `BatchNormalization(synchronized=True)` (one-pass sums) against ours, unequal batches."""
    peers = {"keras": keras.layers.BatchNormalization, "keras_norms": keras_norms.BatchNormalization}
    with strategy.scope():
        layers = {name: cls(momentum=0.5, synchronized=True) for name, cls in peers.items()}
        for layer in layers.values():
            layer.build(SHAPE)
            layer.gamma.assign(np.linspace(0.5, 1.5, SHAPE[-1]))
            layer.beta.assign(np.linspace(-1.0, 1.0, SHAPE[-1]))
    got = _tf_run(strategy, layers, x, upstream, UNEQUAL)
    _compare("keras.layers.BatchNormalization(synchronized=True) peer", got["keras_norms"], got["keras"])


# ---------------------------------------------------------------------- JAX
def _jax_step(layers):
    """One jitted step of all layers: outputs, new states, and gradients to inputs and weights."""
    import jax
    import jax.numpy as jnp

    def loss(xs, trainable, non_trainable, upstream):
        outputs, states = {}, {}
        for name, layer in layers.items():
            outputs[name], states[name] = layer.stateless_call(
                trainable[name], non_trainable[name], xs[name], training=True
            )
        return sum(jnp.sum(y * upstream) for y in outputs.values()), (outputs, states)

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))

    def run(x, upstream):
        trainable = {n: [v.value for v in layer.trainable_weights] for n, layer in layers.items()}
        non_trainable = {n: [v.value for v in layer.non_trainable_weights] for n, layer in layers.items()}
        (_, (outputs, states)), (dx, dw) = step({n: x for n in layers}, trainable, non_trainable, upstream)
        return {
            n: (
                np.asarray(outputs[n]),
                np.asarray(dx[n]),
                [np.asarray(g) for g in dw[n]],
                {v.name: np.asarray(s) for v, s in zip(layer.non_trainable_weights, states[n])},
            )
            for n, layer in layers.items()
        }

    return run


def run_jax():
    import jax

    devices = jax.devices()
    assert len(devices) == REPLICAS, devices
    distribution = keras.distribution.DataParallel(devices=devices)
    specs = _specs()
    values = {name: _initial_values(spec[0]) for name, spec in specs.items()}
    x, upstream = _data()
    steps = {}  # one compiled single-device step per set of layers (stateless: reused for each slice)

    def single(names, xb, ub):
        key = tuple(names)
        if key not in steps:
            steps[key] = _jax_step(_layers(specs, names, False, values))
        return steps[key](xb, ub)

    sharding = distribution.get_data_layout(x.shape).backend_layout
    xs, us = jax.device_put(x, sharding), jax.device_put(upstream, sharding)
    assert len(xs.addressable_shards) == REPLICAS
    for synchronized, sizes, names in _configurations(specs):
        if sizes == UNEQUAL:
            continue  # a sharded global array has equal shards
        expected = _expected(single, specs, names, x, upstream, synchronized, sizes)
        with distribution.scope():
            layers = _layers(specs, names, synchronized, values)
            got = _jax_step(layers)(xs, us)
        for name in names:
            _compare(
                f"{name} synchronized={synchronized} batches={sizes}",
                (*got[name][:3], [got[name][3]]),
                expected[name],
                specs[name][1],
                average_state=not synchronized,
            )
    _jax_shard_map(jax, x, upstream)
    with distribution.scope():
        layer = keras_norms.BatchNormalization()
        layer.build(SHAPE)
    # One global array per variable: nothing to average (its update already averages the devices' slices).
    assert keras_norms.average_moving_statistics(layer) == 1
    print("CHECKED average_moving_statistics: one global array per variable on JAX", flush=True)
    with distribution.scope():
        inputs = keras.Input(SHAPE[1:])
        model = keras.Model(inputs, keras_norms.BatchNormalization()(inputs))
    keras_norms.recompute_batch_statistics(model, x, batch_size=4, verbose=0)
    for name, value in _whole_moments(x).items():
        np.testing.assert_allclose(_state(model.layers[-1])[name], value, err_msg=name, **TOL)
    print("CHECKED recompute_batch_statistics under DataParallel", flush=True)


def _jax_shard_map(jax, x, upstream):
    """A hand-written `shard_map` over the "batch" axis: `synchronized=True` psums over it."""
    import jax.numpy as jnp
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    from keras_norms import ops as knops

    mesh = Mesh(np.array(jax.devices()), ("batch",))
    gamma = jnp.asarray(np.linspace(0.5, 1.5, x.shape[-1]), "float32")

    def plain(xl, synchronized=False):
        return knops.batch_norm(xl, gamma, synchronized=synchronized)[0]

    for synchronized in (True, False):
        mapped = jax.shard_map(
            lambda xl, s=synchronized: plain(xl, s), mesh=mesh, in_specs=P("batch"), out_specs=P("batch")
        )
        y = np.asarray(jax.jit(mapped)(jnp.asarray(x)))
        dx = np.asarray(jax.jit(jax.grad(lambda xt: jnp.sum(mapped(xt) * upstream)))(jnp.asarray(x)))
        pieces = [slice(None)] if synchronized else _slices((SHAPE[0] // REPLICAS,) * REPLICAS)
        reference = jax.jit(jax.value_and_grad(lambda xt, u: jnp.sum(plain(xt) * u)))
        ey = np.concatenate([np.asarray(jax.jit(plain)(x[s])) for s in pieces])
        edx = np.concatenate([np.asarray(reference(x[s], upstream[s])[1]) for s in pieces])
        np.testing.assert_allclose(y, ey, err_msg=f"shard_map synchronized={synchronized}: outputs", **TOL)
        np.testing.assert_allclose(
            dx, edx, err_msg=f"shard_map synchronized={synchronized}: input gradients", **GRAD_TOL
        )
        print(f"CHECKED shard_map batch_norm synchronized={synchronized}", flush=True)


def run_example():
    """`examples/multi_device.py --smoke` as `__main__`, on the replicas set up here."""
    import runpy

    print("EXAMPLE-SMOKE-START", flush=True)
    argv = sys.argv
    sys.argv = [str(EXAMPLE), "--smoke"]
    try:
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    except SystemExit as exit:
        assert not exit.code, f"the example exited with {exit.code}"
    finally:
        sys.argv = argv


# -------------------------------------------------------------------- torch
def run_torch():
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        assert world == REPLICAS, world
        specs = _specs()
        values = {name: _initial_values(spec[0]) for name, spec in specs.items()}
        x, upstream = _data()
        for synchronized, sizes, names in _configurations(specs):
            part = _slices(sizes)[rank]
            mine = {}
            for name, layer in _layers(specs, names, synchronized, values).items():
                xt = torch.tensor(x[part], requires_grad=True)
                y = layer(xt, training=True)
                (y * torch.as_tensor(upstream[part])).sum().backward()
                grads = [v.value.grad.numpy() for v in layer.trainable_weights]
                mine[name] = (y.detach().numpy(), xt.grad.numpy(), grads, _state(layer))
            gathered = [None] * world
            dist.all_gather_object(gathered, mine)
            if rank == 0:
                expected = _expected(_eager_single(specs, values), specs, names, x, upstream, synchronized, sizes)
                for name in names:
                    got = [g[name] for g in gathered]
                    got = (
                        np.concatenate([g[0] for g in got]),
                        np.concatenate([g[1] for g in got]),
                        [sum(g[2][i] for g in got) for i in range(len(got[0][2]))],
                        [g[3] for g in got],
                    )
                    _compare(f"{name} synchronized={synchronized} batches={sizes}", got, expected[name])
            dist.barrier()
        part = _slices((SHAPE[0] // REPLICAS,) * REPLICAS)[rank]
        for name, layer in _layers(specs, list(specs), False, values).items():
            layer(torch.tensor(x[part]), training=True)  # each process's state from its own slice
            before = _state(layer)
            assert keras_norms.average_moving_statistics(layer) == REPLICAS
            states = [None] * world
            dist.all_gather_object(states, (before, _state(layer)))
            if rank == 0:
                _check_averaged(f"average_moving_statistics {name}", [s[0] for s in states], [s[1] for s in states])
        # Each process reads its own part of the data (unequal parts, unequal batches): the statistics set on
        # every process are the moments of all of it.
        inputs = keras.Input(SHAPE[1:])
        model = keras.Model(inputs, keras_norms.BatchNormalization()(inputs))
        keras_norms.recompute_batch_statistics(model, x[_slices(UNEQUAL)[rank]], batch_size=2, verbose=0)
        for name, value in _whole_moments(x).items():
            np.testing.assert_allclose(_state(model.layers[-1])[name], value, err_msg=f"rank {rank}: {name}", **TOL)
        if rank == 0:
            print("CHECKED recompute_batch_statistics over two processes", flush=True)
        if rank == 0:
            print("SYNC-CHECKS-PASSED", flush=True)
        run_example()  # every rank: the example's DDP step runs in this gloo group
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    if BACKEND == "torch":
        run_torch()
    else:
        {"tensorflow": run_tensorflow, "jax": run_jax}[BACKEND]()
        print("SYNC-CHECKS-PASSED", flush=True)
        run_example()

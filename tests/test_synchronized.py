"""`synchronized=True` on every batch-dependent layer: statistics across replicas.

In this process (one device): the argument's validation and serialization,
and the all-reduced moments (`_replicas.moments`) against `_stats.moments`.
Across two replicas, in one subprocess per backend (the devices must be set
up before the backend initializes; PyTorch: two processes):
`tests/distributed/sync_checks.py` (TensorFlow `MirroredStrategy` on two
logical CPUs, JAX `DataParallel` on two host devices and a `shard_map`,
PyTorch two gloo processes), which then runs the `--smoke` mode of
`examples/multi_device.py` on the same replicas.
"""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms.ops import _replicas
from keras_norms.ops import _stats
from tests.backend_utils import to_numpy
from tests.tolerances import assert_close

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()

# Every batch-dependent layer, with arguments that fit a (4, 3, 4) input.
LAYERS = {
    "BatchNormalization": (keras_norms.BatchNormalization, {}),
    "GhostBatchNormalization": (keras_norms.GhostBatchNormalization, dict(virtual_batch_size=2)),
    "BatchGroupNormalization": (keras_norms.BatchGroupNormalization, dict(groups=2)),
    "BatchChannelNormalization": (keras_norms.BatchChannelNormalization, dict(groups=2)),
    "MemorizedBatchNormalization": (keras_norms.MemorizedBatchNormalization, {}),
    "EvoNormB0": (keras_norms.EvoNormB0, {}),
}
# The comparisons sync_checks.py makes on each backend (layer variants x synchronized x batch splits).
EXPECTED_CHECKS = {"tensorflow": 35, "jax": 22, "torch": 34}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_synchronized_in_config_and_round_trip(name):
    cls, kwargs = LAYERS[name]
    layer = cls(synchronized=True, **kwargs)
    config = layer.get_config()
    assert config["synchronized"] is True
    assert cls.from_config(config).synchronized is True
    assert cls(**kwargs).get_config()["synchronized"] is False


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_synchronized_must_be_a_bool(name):
    cls, kwargs = LAYERS[name]
    with pytest.raises(ValueError, match=rf"{cls.__name__}.*`synchronized`='yes'.*Pass True"):
        cls(synchronized="yes", **kwargs)


def _training_call(layer, x):
    """`[output, *new state]` of one training call (one jitted call on JAX: eager ops compile one by one)."""
    layer.build(x.shape)
    if BACKEND != "jax":
        return [to_numpy(layer(x, training=True))] + [to_numpy(v) for v in layer.non_trainable_weights]
    import jax

    trainable = [v.value for v in layer.trainable_weights]
    non_trainable = [v.value for v in layer.non_trainable_weights]
    step = jax.jit(lambda xt: layer.stateless_call(trainable, non_trainable, xt, training=True))
    y, state = step(x)
    return [to_numpy(y)] + [to_numpy(v) for v in state]


def test_synchronized_on_one_device_is_plain_training():
    """No replicas here: every layer gives the same outputs and state as with `synchronized=False`."""
    x = np.random.default_rng(0).normal(2.0, 1.0, (4, 3, 4)).astype("float32")
    for name, (cls, kwargs) in LAYERS.items():
        results = []
        for synchronized in (False, True):
            layer = cls(synchronized=synchronized, **kwargs)
            results.append(_training_call(layer, x))
        assert len(results[1]) == len(results[0]) > 1, name
        for synced, plain in zip(results[1], results[0]):
            assert_close(synced, plain, err_msg=name)


@pytest.mark.parametrize("masked", [False, True])
def test_all_reduced_moments_equal_two_pass_moments_on_one_replica(masked):
    rng = np.random.default_rng(1)
    x = (300.0 + rng.standard_normal((6, 5, 3))).astype("float32")  # |mean|/std = 300: no cancellation
    mask = rng.random((6, 5, 1)) > 0.3 if masked else None
    m = None if mask is None else keras.ops.convert_to_tensor(mask)
    expected = _stats.moments(x, [0, 1], mask=m)
    got = _replicas.moments(x, [0, 1], mask=m)
    for g, e in zip(got, expected):
        assert_close(to_numpy(g), to_numpy(e))
    kept = _replicas.moments(x, [0, 1], keepdims=True, mask=m)
    assert [tuple(t.shape) for t in kept] == [(1, 1, 3)] * 2


def test_pooled_on_one_replica_is_the_identity():
    mean, variance = np.array([1.0, 2.0], "float32"), np.array([3.0, 4.0], "float32")
    pooled = _replicas.pooled([keras.ops.convert_to_tensor(mean), keras.ops.convert_to_tensor(variance)], 5)
    assert_close(to_numpy(pooled[0]), mean)
    assert_close(to_numpy(pooled[1]), variance)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(command, timeout):
    """Runs `command` as two replicas: one process (TF, JAX) or two gloo ranks (torch)."""
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "PYTHONPATH": str(ROOT)}
    if BACKEND != "torch":
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        return [result]
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2")
    ranks = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    results = []
    for process in ranks:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in ranks:
                p.kill()
            raise
        results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return results


def _assert_ok(results):
    for result in results:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def test_two_replicas_match_one_device_and_the_example_trains():
    """One subprocess (pair) per backend: the layer checks, then `examples/multi_device.py --smoke`."""
    results = _launch([sys.executable, "tests/distributed/sync_checks.py"], timeout=600)
    _assert_ok(results)
    out = results[0].stdout  # rank 0 reports on PyTorch
    checks, _, example = out.partition("EXAMPLE-SMOKE-START")
    assert "SYNC-CHECKS-PASSED" in checks, out[-3000:]
    checked = re.findall(r"^CHECKED (.+)$", checks, re.MULTILINE)
    assert len(checked) == EXPECTED_CHECKS[BACKEND], checked
    for name in ("BatchNormalization", "GhostBatchNormalization", "BatchGroupNormalization",
                 "BatchChannelNormalization", "MemorizedBatchNormalization", "EvoNormB0"):
        for synchronized in (True, False):
            assert any(c.startswith(f"{name} synchronized={synchronized}") for c in checked), (name, checked)
    match = re.search(r"^replicas: 2 \| steps: (\d+) \| final loss: (\S+)$", example, re.MULTILINE)
    assert match, out[-3000:]
    assert int(match.group(1)) > 0 and np.isfinite(float(match.group(2)))
    assert re.search(r"^moving statistics identical on every replica: True$", example, re.MULTILINE), out[-3000:]


def test_convert_normalization_passes_synchronized_on():
    model = keras.Sequential([keras.Input((4, 4, 8)), keras_norms.BatchNormalization(synchronized=True, name="bn")])
    for target in ("batch_norm", "batch_group_norm", "batch_channel_norm", "memorized_batch_norm", "evonorm_b0"):
        converted = keras_norms.convert_normalization(model, target)
        assert converted.get_layer("bn").synchronized is True, target
    # A target without the argument is built without it.
    assert not hasattr(keras_norms.convert_normalization(model, "group_norm").get_layer("bn"), "synchronized")

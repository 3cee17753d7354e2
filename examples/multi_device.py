"""Training on several devices with synchronized batch statistics (TensorFlow, JAX, PyTorch).

A small CNN with `keras_norms.BatchNormalization(synchronized=True)` and
`keras_norms.EvoNormB0(synchronized=True)` trains data-parallel on every
local device, each replica normalizing with the statistics of the *global*
batch. The data is scikit-learn's bundled digits dataset (nothing is
downloaded). One script, the native data-parallel tool of each backend:

* TensorFlow: `tf.distribute.MirroredStrategy` and `model.fit`;
* JAX: `keras.distribution.DataParallel` and `model.fit`;
* PyTorch: `DistributedDataParallel`, one process per device, a short
  training loop (Keras `fit` does not drive DDP).

Launch:

    KERAS_BACKEND=tensorflow python examples/multi_device.py      # all local GPUs
    KERAS_BACKEND=jax python examples/multi_device.py             # all local devices
    KERAS_BACKEND=torch torchrun --nproc_per_node=NUM_GPUS examples/multi_device.py
    KERAS_BACKEND=<backend> python examples/multi_device.py --smoke   # CPU, 2 replicas, seconds

`--smoke` makes two replicas on the CPU: two logical CPU devices
(TensorFlow), two host devices (JAX, `XLA_FLAGS`), or two processes on the
gloo backend that the script starts itself (PyTorch). `--unsynchronized`
trains with `synchronized=False` (each replica's own statistics) instead.

It prints `replicas: R | steps: S | final loss: L` and whether the moving
statistics of the first normalization are identical on every replica
(they are with synchronized statistics; on TensorFlow and PyTorch each
replica keeps its own copy, which drifts apart without them).
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = {"examples": 256, "batch_size": 32, "epochs": 1, "width": 8}
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size (all replicas)")
    parser.add_argument("--width", type=int, default=32, help="channels of the first convolution")
    parser.add_argument("--unsynchronized", action="store_true", help="synchronized=False: per-replica statistics")
    parser.add_argument("--smoke", action="store_true", help="CPU, 2 replicas, a few steps")
    return parser.parse_args(argv)


# --- Device set-up: before the backend initializes (hence the late imports below).
def setup_devices(args):
    if not args.smoke:
        return
    if BACKEND == "jax":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        if len(tf.config.get_logical_device_configuration(cpu) or []) < 2:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def launch_torch_smoke(argv):
    """Starts this script twice as ranks 0 and 1 of a gloo group, as `torchrun` would."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    ranks = [
        subprocess.Popen([sys.executable, __file__, *argv], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)})
        for r in range(2)
    ]
    return max(p.wait() for p in ranks)


# --- Data and model, the same on every backend.
def load_data(args):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[..., None] / 16.0).astype("float32")  # (1797, 8, 8, 1)
    y = digits.target.astype("int32")
    n = SMOKE["examples"] if args.smoke else len(x)
    usable = n - n % args.batch_size  # whole global batches: every replica gets an equal share
    return x[:usable], y[:usable]


def build_model(args):
    import keras

    try:
        import keras_norms
    except ImportError:  # a source checkout without `pip install -e .`
        sys.path.insert(0, str(ROOT))
        import keras_norms

    synchronized = not args.unsynchronized
    width = SMOKE["width"] if args.smoke else args.width
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(width, 3, padding="same", use_bias=False),
            keras_norms.BatchNormalization(synchronized=synchronized, name="bn"),
            keras.layers.ReLU(),
            keras.layers.Conv2D(2 * width, 3, padding="same", use_bias=False),
            keras_norms.EvoNormB0(synchronized=synchronized),  # normalization + activation
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )


def compile_model(model):
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def report(replicas, steps, loss, copies):
    import numpy as np

    print(f"replicas: {replicas} | steps: {steps} | final loss: {loss:.4f}")
    identical = all(np.array_equal(copies[0], c) for c in copies[1:])
    print(f"moving statistics identical on every replica: {identical}")


# --- TensorFlow: MirroredStrategy + fit.
def train_tensorflow(args):
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2] if args.smoke else None
    strategy = tf.distribute.MirroredStrategy(devices)
    x, y = load_data(args)
    with strategy.scope():  # variables (and their per-replica copies) are made here
        model = build_model(args)
        compile_model(model)
    epochs = SMOKE["epochs"] if args.smoke else args.epochs
    history = model.fit(x, y, batch_size=args.batch_size, epochs=epochs, verbose=0 if args.smoke else 2)
    steps = epochs * (len(x) // args.batch_size)
    copies = [v.numpy() for v in model.get_layer("bn").moving_mean.value.values]
    report(strategy.num_replicas_in_sync, steps, history.history["loss"][-1], copies)


# --- JAX: keras.distribution.DataParallel + fit.
def train_jax(args):
    import jax
    import keras
    import numpy as np

    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    x, y = load_data(args)
    model = build_model(args)
    compile_model(model)
    epochs = SMOKE["epochs"] if args.smoke else args.epochs
    history = model.fit(x, y, batch_size=args.batch_size, epochs=epochs, verbose=0 if args.smoke else 2)
    steps = epochs * (len(x) // args.batch_size)
    moving_mean = model.get_layer("bn").moving_mean.value  # one array, replicated on every device
    copies = [np.asarray(shard.data) for shard in moving_mean.addressable_shards]
    report(len(jax.devices()), steps, history.history["loss"][-1], copies)


# --- PyTorch: DistributedDataParallel, one process per device (torchrun sets RANK, WORLD_SIZE, ...).
def train_torch(args):
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    distributed = "RANK" in os.environ
    owns_group = distributed and not dist.is_initialized()  # a caller may have set up the group already
    if owns_group:
        dist.init_process_group("nccl" if torch.cuda.is_available() and not args.smoke else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if torch.cuda.is_available() and not args.smoke:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    import keras

    keras.utils.set_random_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    x, y = load_data(args)
    model = build_model(args)
    device = next(model.parameters()).device
    ddp = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    local = args.batch_size // world  # each process takes its slice of every global batch
    epochs = SMOKE["epochs"] if args.smoke else args.epochs
    steps, loss = 0, torch.zeros(())
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(steps))
        for start in range(0, len(x), args.batch_size):
            index = order[start + rank * local : start + (rank + 1) * local]
            xb = torch.as_tensor(x[index], device=device)
            yb = torch.as_tensor(y[index], device=device).long()
            loss = F.cross_entropy(ddp(xb, training=True), yb)
            optimizer.zero_grad()
            loss.backward()  # DDP averages the gradients; the statistics' all-reduce has its own backward
            optimizer.step()
            steps += 1
    loss = loss.detach()
    copies = [model.get_layer("bn").moving_mean.value.detach().cpu()]
    if distributed:
        dist.all_reduce(loss)
        loss /= world
        gathered = [torch.zeros_like(copies[0]) for _ in range(world)]
        dist.all_gather(gathered, copies[0].to(device))
        copies = [g.cpu() for g in gathered]
    if rank == 0:
        report(world, steps, float(loss), [c.numpy() for c in copies])
    if owns_group:
        dist.destroy_process_group()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if BACKEND == "torch" and args.smoke and "RANK" not in os.environ:
        return launch_torch_smoke(argv)
    if args.smoke:
        args.batch_size = SMOKE["batch_size"]
    setup_devices(args)
    {"tensorflow": train_tensorflow, "jax": train_jax, "torch": train_torch}[BACKEND](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

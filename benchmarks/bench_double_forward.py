"""Cost of Double Forward: train step time of a small CNN with BN, MBN and MBN + Double Forward.

    python benchmarks/bench_double_forward.py --backend torch [--batch-size 8] [--steps 40]

The CNN is the one of `examples/memorized_bn.py` (two 3x3 convolutions of 16 and 32 channels, each followed by
the normalization, ReLU and max pooling, then global pooling and a 10-way softmax) on 28x28x1 inputs. Each
variant is compiled and warmed up (tracing, compilation), then `model.fit` runs `--steps` steps on random data;
a repeat times one such `fit` per variant, the variants interleaved, and the per-step time of each variant is
the minimum over the repeats (the least disturbed run; the median is printed too), with `--threads` intra-op
threads (default 1). Ratios are against BN and, for Double Forward, against MBN without it. CPU only: the
figures are recorded in docs/layers/memorized_batch_normalization.md.
"""

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--backend", required=True, choices=["tensorflow", "jax", "torch"])
p.add_argument("--batch-size", type=int, default=8)
p.add_argument("--steps", type=int, default=40, help="timed steps per fit (default 40)")
p.add_argument("--repeats", type=int, default=5)
p.add_argument("--memory-size", type=int, default=4)
p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1: steadier on a shared CPU)")
p.add_argument("--output", help="also write the results as JSON to this path")
args = p.parse_args()

os.environ["KERAS_BACKEND"] = args.backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
if args.backend == "jax":
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + (
        f" --xla_cpu_multi_thread_eigen={str(args.threads > 1).lower()} intra_op_parallelism_threads={args.threads}"
    )
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_norms  # noqa: E402
from memorized_bn import cnn  # noqa: E402  (the example's model)
from memorized_bn import variants  # noqa: E402

assert keras.backend.backend() == args.backend
if args.backend == "torch":
    import torch

    torch.set_num_threads(args.threads)
elif args.backend == "tensorflow":
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

rng = np.random.default_rng(0)
n = args.steps * args.batch_size
x = rng.integers(0, 256, size=(n, 28, 28, 1)).astype("float32")
y = rng.integers(0, 10, size=(n,))

models = {}
for name, (norm, double_forward) in variants(args.memory_size).items():
    keras.utils.set_random_seed(0)
    model = cnn(norm, 16)
    if double_forward:
        model = keras_norms.with_double_forward(model)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="sparse_categorical_crossentropy")
    model.fit(x[: 3 * args.batch_size], y[: 3 * args.batch_size], batch_size=args.batch_size, verbose=0)  # warm-up
    models[name] = model

times = {name: [] for name in models}
for _ in range(args.repeats):
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
        times[name].append(1e3 * (time.perf_counter() - start) / args.steps)

best = {name: min(t) for name, t in times.items()}
print(f"backend {args.backend}, batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats, "
      f"{args.threads} thread(s), {os.cpu_count()} CPUs visible")
print(f"{'variant':<9} | step (min) | step (median) | vs BN | vs MBN")
for name, t in times.items():
    print(f"{name:<9} | {best[name]:7.2f} ms | {statistics.median(t):10.2f} ms | {best[name] / best['BN']:5.2f}x | "
          f"{best[name] / best['MBN']:5.2f}x")
if args.output:
    with open(args.output, "w") as f:
        json.dump({"backend": args.backend, "batch_size": args.batch_size, "steps": args.steps,
                   "repeats": args.repeats, "ms_per_step": times}, f, indent=1)

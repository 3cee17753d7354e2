"""Benchmark the weight-standardized convolutions against keras.layers.Conv2D.

    python benchmarks/bench_ws.py --backend torch [--shape 32,32,32,64] [--filters 64] [--quick] [--output r.json]

Times a training step (forward, loss = sum(y * w) for a fixed random w, gradients with respect to the input
and every trainable weight: kernel and bias, plus the gain for Scaled WS) and an inference forward of a 3x3
'same' convolution on one channels-last float32 input, for keras.layers.Conv2D, keras_norms.WSConv2D and
keras_norms.ScaledWSConv2D with the same arguments. Timing as in bench_layers.py: tf.function(jit_compile=True)
on TensorFlow, jax.jit on JAX, eager on PyTorch; rounds in shuffled order, median over the repeats.
Target: the WSConv2D training step <= 1.05x the Conv2D one (ratio of medians). The ratio of the minima is printed
too: on shared cores the medians of the eager PyTorch rows swing by several percent from run to run, the minima
much less.
"""

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--backend", required=True, choices=["tensorflow", "jax", "torch"])
p.add_argument("--shape", default="32,32,32,64", help="NHWC input shape, float32 (default 32,32,32,64)")
p.add_argument("--filters", type=int, default=64)
p.add_argument("--kernel-size", type=int, default=3)
p.add_argument("--repeats", type=int, default=30)
p.add_argument("--warmup", type=int, default=5)
p.add_argument("--threads", type=int, help="torch intra-op threads (default: the usable cores)")
p.add_argument("--quick", action="store_true", help="at most 5 repeats and 2 warmups")
p.add_argument("--output", help="also write the results as JSON to this path")
args = p.parse_args()
if args.quick:
    args.repeats, args.warmup = min(args.repeats, 5), min(args.warmup, 2)
SHAPE = tuple(int(s) for s in args.shape.split(","))
TARGET = 1.05

# The backend is fixed when keras is first imported, so set it before any import that pulls keras in.
os.environ["KERAS_BACKEND"] = args.backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import keras  # noqa: E402
from keras_norms.layers import weight_standardization as wsl  # noqa: E402

B = args.backend
assert keras.backend.backend() == B, keras.backend.backend()
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
LAYER_KWARGS = dict(filters=args.filters, kernel_size=args.kernel_size, padding="same")
LAYERS = [
    ("keras.layers.Conv2D", keras.layers.Conv2D),
    ("keras_norms.WSConv2D", wsl.WSConv2D),
    ("keras_norms.ScaledWSConv2D", wsl.ScaledWSConv2D),
]
BASELINE, SUBJECT = LAYERS[0][0], LAYERS[1][0]

rng = np.random.default_rng(0)
X_NP = rng.normal(0.5, 2.0, SHAPE).astype("float32")


def new_layer(cls):
    layer = cls(**LAYER_KWARGS)
    layer.build(SHAPE)
    kernel = layer.kernel  # the same raw weights for every layer
    kernel.assign(np.random.default_rng(1).normal(0.0, 0.05, kernel.shape).astype("float32"))
    return layer


def output_weights(layer):
    shape = tuple(layer.compute_output_shape(SHAPE))
    return np.random.default_rng(2).normal(0.0, 1.0, shape).astype("float32")  # loss = sum(y * W)


# ------------------------------------------------ per backend: (train_step, inference) callables that
# run one synchronous step each. Tracing/compilation happens in the warmup calls.
def tf_steps(cls):
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    layer = new_layer(cls)
    x, w = tf.constant(X_NP), tf.constant(output_weights(layer))

    @tf.function(jit_compile=True)
    def train(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * w)
        return tape.gradient(loss, [x] + list(layer.trainable_variables))

    infer = tf.function(lambda x: layer(x, training=False), jit_compile=True)
    sync = tf.test.experimental.sync_devices
    return (lambda: (train(x), sync())), (lambda: (infer(x), sync()))


def jax_steps(cls):
    import jax
    import jax.numpy as jnp

    layer = new_layer(cls)
    x, w = jnp.asarray(X_NP), jnp.asarray(output_weights(layer))
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]

    # No `training` argument: keras.layers.Conv2D.call takes none, and stateless_call passes it through.
    def loss_fn(tv, x):
        y, _ = layer.stateless_call(tv, ntv, x)
        return jnp.sum(y * w)

    train = jax.jit(jax.grad(loss_fn, argnums=(0, 1)))
    infer = jax.jit(lambda tv, x: layer.stateless_call(tv, ntv, x)[0])
    return (lambda: jax.block_until_ready(train(tv, x))), (lambda: jax.block_until_ready(infer(tv, x)))


def torch_steps(cls):
    import torch

    layer = new_layer(cls)
    x, w = torch.tensor(X_NP, requires_grad=True), torch.tensor(output_weights(layer))
    params = [v.value for v in layer.trainable_variables]

    def train():
        (layer(x, training=True) * w).sum().backward()
        for t in [x] + params:
            t.grad = None

    def infer():
        with torch.no_grad():
            return layer(x, training=False)

    return train, infer


def run_interleaved(variants):
    """variants: {key: fn}. Warms each up, then times them in rounds (one call of each, in a shuffled order)
    so that background load hits every variant alike. Returns {key: (median ms, min ms)}."""
    for fn in variants.values():
        for _ in range(args.warmup):
            fn()
    samples = {key: [] for key in variants}
    keys, shuffle = list(variants), random.Random(0).shuffle
    gc.collect()
    gc.disable()
    try:
        for _ in range(args.repeats):
            shuffle(keys)
            for key in keys:
                t0 = time.perf_counter()
                variants[key]()
                samples[key].append((time.perf_counter() - t0) * 1e3)
    finally:
        gc.enable()
    return {key: (statistics.median(v), min(v)) for key, v in samples.items()}


def main():
    threads = args.threads or CORES
    if B == "torch":
        import torch

        torch.set_num_threads(threads)
    steps = {"tensorflow": tf_steps, "jax": jax_steps, "torch": torch_steps}[B]
    variants = {}
    for name, cls in LAYERS:
        train, infer = steps(cls)
        variants[(name, "train")], variants[(name, "infer")] = train, infer
    stats = run_interleaved(variants)

    compile_mode = {"tensorflow": "xla", "jax": "jit", "torch": "eager"}[B]
    results = []
    for name, _ in LAYERS:
        for mode in ("train", "infer"):
            ms, best = stats[(name, mode)]
            base = stats[(BASELINE, mode)][0]
            base_min = stats[(BASELINE, mode)][1]
            results.append({"layer": name, "compile": compile_mode, "mode": mode, "ms": ms, "min_ms": best,
                            "vs_conv2d": ms / base, "vs_conv2d_min": best / base_min})
    ratio = stats[(SUBJECT, "train")][0] / stats[(BASELINE, "train")][0]
    target = {"target": f"WSConv2D train step <= {TARGET}x Conv2D", "ratio": ratio, "limit": TARGET,
              "result": "PASS" if ratio <= TARGET else "MISS"}

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    meta = {"backend": B, "shape": SHAPE, "filters": args.filters, "kernel_size": args.kernel_size,
            "repeats": args.repeats, "warmup": args.warmup, "cores": CORES,
            "torch_threads": threads if B == "torch" else None, "load1": round(load, 2), "keras": keras.__version__}
    print("\n" + " ".join(f"{k}={v}" for k, v in meta.items() if v is not None))
    head = (f"{'layer':<28} | {'compile':<7} | {'mode':<5} | {'median ms':>9} | {'min ms':>8} | {'vs Conv2D':>9} | "
            f"{'(of mins)':>9}")
    print(head + "\n" + "-" * len(head))
    for r in results:
        print(f"{r['layer']:<28} | {r['compile']:<7} | {r['mode']:<5} | {r['ms']:>9.2f} | {r['min_ms']:>8.2f} | "
              f"{r['vs_conv2d']:>8.3f}x | {r['vs_conv2d_min']:>8.3f}x")
    print(f"\ntarget: [{target['result']}] {target['target']}: {ratio:.3f}x")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"meta": meta, "results": results, "target": target}, f, indent=2)
    return 0  # a measurement, not a test: exit 0 whether or not the target is met


if __name__ == "__main__":
    sys.exit(main())

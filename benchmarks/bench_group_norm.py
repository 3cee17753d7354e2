"""Benchmark the group-norm step of BatchChannelNormalization (the `group_norm` op and its fast paths).

    python benchmarks/bench_group_norm.py --backend jax [--shape 32,32,32,64] [--groups 32] [--quick] [--output r.json]

Times a training step, forward and backward (loss = sum(y * w) for a fixed random w; gradients to the input and
the per-channel gamma, beta), on one channels-last float32 input, of:

* `keras_norms.ops.group_norm` with a per-channel affine (fast path on, and off: the keras.ops reference);
* `keras_norms.BatchChannelNormalization` in both modes (batch step + group norm + final affine);
* `keras_norms.BatchGroupNormalization(groups, examples_per_group=2)`, fast paths on and off;
* `keras.layers.GroupNormalization(groups)`;
* TensorFlow and JAX: `keras_norms.BatchNormalization()` on the same input (the target's baseline);
* PyTorch: `F.group_norm` on the same NHWC data viewed as NCHW in channels_last memory format (the target's
  baseline), and on a contiguous NCHW copy (another memory layout, for information).

Timing as in bench_layers.py: TF in tf.function(jit_compile=True) (XLA), JAX in jax.jit of stateless_call under
value_and_grad, torch eager; warm-up, then round-robin rounds in a shuffled order with the GC off; medians.
Targets: torch group_norm op <= 1.2x F.group_norm; TF/JAX group_norm op <= 2x keras_norms.BatchNormalization.
"""

import argparse
import contextlib
import gc
import inspect
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
p.add_argument("--groups", type=int, default=32)
p.add_argument("--repeats", type=int, default=30)
p.add_argument("--warmup", type=int, default=5)
p.add_argument("--threads", type=int, help="torch intra-op threads (default: the usable cores)")
p.add_argument("--quick", action="store_true", help="at most 5 repeats and 2 warmups")
p.add_argument("--output", help="also write the results as JSON to this path")
args = p.parse_args()
if args.quick:
    args.repeats, args.warmup = min(args.repeats, 5), min(args.warmup, 2)
SHAPE = tuple(int(s) for s in args.shape.split(","))
G = args.groups

os.environ["KERAS_BACKEND"] = args.backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import keras  # noqa: E402
import keras_norms  # noqa: E402
from keras_norms.layers.batch_channel_normalization import BatchChannelNormalization  # noqa: E402
from keras_norms.ops.batch_channel import group_norm  # noqa: E402

B = args.backend
assert keras.backend.backend() == B, keras.backend.backend()
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
OP = "keras_norms.ops.group_norm"
OP_REF = "group_norm (fast paths off)"
NATIVE = "F.group_norm NCHW channels_last"
KN_BN = "keras_norms.BatchNormalization()"

rng = np.random.default_rng(0)
X_NP = rng.normal(0.5, 2.0, SHAPE).astype("float32")
W_NP = rng.normal(0.0, 1.0, SHAPE).astype("float32")


class GroupNormOp(keras.layers.Layer):
    """The bare op with a per-channel gamma, beta (what BCN's steps 2-3 compute), as a layer for the harness."""

    def build(self, input_shape):
        c = input_shape[-1]
        self.gamma = self.add_weight(shape=(c,), initializer="ones", autocast=False)
        self.beta = self.add_weight(shape=(c,), initializer="zeros", autocast=False)

    def call(self, x, training=None):
        return group_norm(x, self.gamma, self.beta, axis=-1, epsilon=1e-5, groups=G)


def new_layer(cls, kwargs):
    layer = cls(**kwargs)
    layer.build(SHAPE)
    return layer


def tf_step(cls, kwargs):
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    layer, x, w = new_layer(cls, kwargs), tf.constant(X_NP), tf.constant(W_NP)

    @tf.function(jit_compile=True)
    def train(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * w)
        return tape.gradient(loss, [x] + list(layer.trainable_variables))

    return lambda: (train(x), tf.test.experimental.sync_devices())


def jax_step(cls, kwargs):
    import jax
    import jax.numpy as jnp

    layer, x, w = new_layer(cls, kwargs), jnp.asarray(X_NP), jnp.asarray(W_NP)
    tv = [v.value for v in layer.trainable_variables]
    state = {"ntv": [v.value for v in layer.non_trainable_variables]}

    call_kwargs = {"training": True} if "training" in inspect.signature(layer.call).parameters else {}

    def loss_fn(tv, ntv, x):
        y, new_ntv = layer.stateless_call(tv, ntv, x, **call_kwargs)
        return jnp.sum(y * w), new_ntv

    @jax.jit
    def train(tv, ntv, x):
        (_, new_ntv), grads = jax.value_and_grad(loss_fn, argnums=(0, 2), has_aux=True)(tv, ntv, x)
        return grads, new_ntv

    def step():
        _, state["ntv"] = jax.block_until_ready(train(tv, state["ntv"], x))

    return step


def torch_step(cls, kwargs):
    import torch

    layer = new_layer(cls, kwargs)
    x, w = torch.tensor(X_NP, requires_grad=True), torch.tensor(W_NP)
    params = [v.value for v in layer.trainable_variables]

    def step():
        (layer(x, training=True) * w).sum().backward()
        for t in [x] + params:
            t.grad = None

    return step


def torch_native_step(contiguous):
    import torch
    import torch.nn.functional as F

    c = SHAPE[-1]
    nchw = torch.tensor(X_NP).permute(0, 3, 1, 2)  # channels_last memory format, no copy
    wv = torch.tensor(W_NP).permute(0, 3, 1, 2)
    if contiguous:
        nchw, wv = nchw.contiguous(), wv.contiguous()
    x = nchw.detach().requires_grad_(True)
    gamma, beta = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)

    def step():
        (F.group_norm(x, G, gamma, beta, 1e-5) * wv).sum().backward()
        x.grad = gamma.grad = beta.grad = None

    return step


def run_interleaved(variants):
    for fn, ctx in variants.values():
        with ctx():
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
                fn, ctx = variants[key]
                with ctx():
                    t0 = time.perf_counter()
                    fn()
                    samples[key].append((time.perf_counter() - t0) * 1e3)
    finally:
        gc.enable()
    return {key: (statistics.median(v), min(v)) for key, v in samples.items()}


def main():
    threads = args.threads or CORES
    if B == "torch":
        import torch

        torch.set_num_threads(threads)
    plain, no_fast = contextlib.nullcontext, lambda: keras_norms.config.fast_paths(False)
    rows = [
        (OP, GroupNormOp, {}, plain),
        (OP_REF, GroupNormOp, {}, no_fast),
        ("BCN(mode='batch')", BatchChannelNormalization, {"groups": G}, plain),
        ("BCN(mode='estimate')", BatchChannelNormalization, {"groups": G, "mode": "estimate"}, plain),
        ("BGN(examples_per_group=2)", keras_norms.BatchGroupNormalization, {"groups": G}, plain),
        ("BGN(examples_per_group=2), fast off", keras_norms.BatchGroupNormalization, {"groups": G}, no_fast),
        ("keras.layers.GroupNormalization", keras.layers.GroupNormalization, {"groups": G, "epsilon": 1e-5}, plain),
        (KN_BN, keras_norms.BatchNormalization, {}, plain),
    ]
    make = {"tensorflow": tf_step, "jax": jax_step, "torch": torch_step}[B]
    variants = {}
    for name, cls, kwargs, ctx in rows:
        with ctx():
            step = make(cls, kwargs)
            step()  # trace (under the row's fast-path setting) and fail early
        variants[name] = (step, ctx)
    if B == "torch":
        variants[NATIVE] = (torch_native_step(False), plain)
        variants["F.group_norm NCHW contiguous"] = (torch_native_step(True), plain)
    stats = run_interleaved(variants)

    base = NATIVE if B == "torch" else KN_BN
    limit = 1.2 if B == "torch" else 2.0
    results = [{"row": k, "ms": ms, "min_ms": best, "vs_base": ms / stats[base][0]} for k, (ms, best) in stats.items()]
    ratio = stats[OP][0] / stats[base][0]
    target = {"target": f"group_norm op train step <= {limit}x {base}", "ratio": ratio, "limit": limit,
              "result": "PASS" if ratio <= limit else "MISS"}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    meta = {"backend": B, "shape": SHAPE, "groups": G, "repeats": args.repeats, "warmup": args.warmup,
            "cores": CORES, "torch_threads": threads if B == "torch" else None, "load1": round(load, 2),
            "compile": {"tensorflow": "xla", "jax": "jit", "torch": "eager"}[B], "keras": keras.__version__}
    print("\n" + " ".join(f"{k}={v}" for k, v in meta.items() if v is not None))
    print(f"{'row (train step: forward + backward)':<38} | {'median ms':>9} | {'min ms':>7} | vs {base}")
    print("-" * 90)
    for r in results:
        print(f"{r['row'][:38]:<38} | {r['ms']:>9.2f} | {r['min_ms']:>7.2f} | {r['vs_base']:.2f}x")
    print(f"\n[{target['result']}] {target['target']}: {ratio:.2f}x")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"meta": meta, "results": results, "target": target}, f, indent=2)
    return 0  # a measurement, not a test


if __name__ == "__main__":
    sys.exit(main())

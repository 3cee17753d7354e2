"""Benchmark keras_norms layers against keras.layers.BatchNormalization (and torch's F.batch_norm).

    python benchmarks/bench_layers.py --backend torch [--shape 32,32,32,64] [--quick] [--output r.json]

Times a training step (forward with training=True, moving statistics updated, backward to the input and
the trainable weights with loss = sum(y * w) for a fixed random w) and an inference forward, on one
channels-last float32 input. Reports medians in ms and ratios; see benchmarks/README.md.
"""

import argparse
import contextlib
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
p.add_argument("--repeats", type=int, default=30)
p.add_argument("--warmup", type=int, default=5)
p.add_argument("--threads", type=int, help="torch intra-op threads (default: the usable cores)")
p.add_argument("--quick", action="store_true", help="at most 5 repeats and 2 warmups; TF: XLA rows only")
p.add_argument("--output", help="also write the results as JSON to this path")
args = p.parse_args()
if args.quick:
    args.repeats, args.warmup = min(args.repeats, 5), min(args.warmup, 2)
SHAPE = tuple(int(s) for s in args.shape.split(","))

# The backend is fixed when keras is first imported, so set it before any import that pulls keras in.
os.environ["KERAS_BACKEND"] = args.backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import keras  # noqa: E402
import keras_norms  # noqa: E402

B = args.backend
assert keras.backend.backend() == B, keras.backend.backend()
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
KERAS_BN = "keras.layers.BatchNormalization"
NATIVE = "F.batch_norm NCHW channels_last"

rng = np.random.default_rng(0)
X_NP = rng.normal(0.5, 2.0, SHAPE).astype("float32")
W_NP = rng.normal(0.0, 1.0, SHAPE).astype("float32")  # loss = sum(y * W)


def load_cases():
    """[(name, class, kwargs)] from the conformance registry tests/cases.py, else a built-in list."""
    try:
        from tests.cases import CASES
        return [(c.name, c.layer, dict(c.kwargs)) for c in CASES], "tests/cases.py"
    except ImportError:
        return [
            ("BatchNormalization()", keras_norms.BatchNormalization, {}),
            ("GhostBatchNormalization(vbs=8)", keras_norms.GhostBatchNormalization,
             {"virtual_batch_size": 8}),
            ("BatchNormalization(iew=0.125)", keras_norms.BatchNormalization,
             {"inference_example_weight": 0.125}),
        ], "built-in fallback"


def new_layer(cls, kwargs):
    layer = cls(**kwargs)
    layer.build(SHAPE)
    return layer


# ------------------------------------------------ per backend: (train_step, inference) callables that
# run one synchronous step each. Tracing/compilation happens in the warmup calls.
def tf_steps(cls, kwargs, jit=True):
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one tf.function per layer is intended: no retracing warnings
    layer, x, w = new_layer(cls, kwargs), tf.constant(X_NP), tf.constant(W_NP)

    @tf.function(jit_compile=jit)
    def train(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * w)  # moving-statistics assigns included
        return tape.gradient(loss, [x] + list(layer.trainable_variables))

    infer = tf.function(lambda x: layer(x, training=False), jit_compile=jit)
    sync = tf.test.experimental.sync_devices
    return (lambda: (train(x), sync())), (lambda: (infer(x), sync()))


def jax_steps(cls, kwargs):
    import jax
    import jax.numpy as jnp

    layer, x, w = new_layer(cls, kwargs), jnp.asarray(X_NP), jnp.asarray(W_NP)
    tv = [v.value for v in layer.trainable_variables]
    state = {"ntv": [v.value for v in layer.non_trainable_variables]}

    def loss_fn(tv, ntv, x):
        y, new_ntv = layer.stateless_call(tv, ntv, x, training=True)
        return jnp.sum(y * w), new_ntv

    @jax.jit
    def train(tv, ntv, x):
        (_, new_ntv), grads = jax.value_and_grad(loss_fn, argnums=(0, 2), has_aux=True)(tv, ntv, x)
        return grads, new_ntv

    infer = jax.jit(lambda tv, ntv, x: layer.stateless_call(tv, ntv, x, training=False)[0])

    def train_step():  # the new moving statistics feed the next step, as in a training loop
        grads, state["ntv"] = jax.block_until_ready(train(tv, state["ntv"], x))

    return train_step, lambda: jax.block_until_ready(infer(tv, state["ntv"], x))


def torch_steps(cls, kwargs):
    import torch

    layer = new_layer(cls, kwargs)
    x, w = torch.tensor(X_NP, requires_grad=True), torch.tensor(W_NP)
    params = [v.value for v in layer.trainable_variables]

    def train():
        (layer(x, training=True) * w).sum().backward()
        for t in [x] + params:
            t.grad = None

    def infer():
        with torch.no_grad():
            return layer(x, training=False)

    return train, infer


def torch_native_steps(view):
    """F.batch_norm with running buffers on the same NHWC data, viewed without a copy either as
    NCHW in channels_last memory format ("nchw") or as (N*H*W, C) ("mc", the keras_norms kernel's view)."""
    import torch
    import torch.nn.functional as F

    c = SHAPE[-1]
    x, w = torch.tensor(X_NP, requires_grad=True), torch.tensor(W_NP)
    gamma, beta = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
    rmean, rvar = torch.zeros(c), torch.ones(c)
    as_view = (lambda t: t.permute(0, 3, 1, 2)) if view == "nchw" else (lambda t: t.reshape(-1, c))
    wv = as_view(w)

    def train():
        y = F.batch_norm(as_view(x), rmean, rvar, gamma, beta, True, 0.01, 1e-3)
        (y * wv).sum().backward()
        x.grad = gamma.grad = beta.grad = None

    def infer():
        with torch.no_grad():
            return F.batch_norm(as_view(x), rmean, rvar, gamma, beta, False, 0.01, 1e-3)

    return train, infer


def steps(cls, kwargs, **kw):
    return {"tensorflow": tf_steps, "jax": jax_steps, "torch": torch_steps}[B](cls, kwargs, **kw)


# ------------------------------------------------------------------------------------------- timing
def run_interleaved(variants):
    """variants: {key: (fn, context factory)}. Warms each up, then times them in rounds (one call of
    each, in a shuffled order) so that background load hits every variant alike.
    Returns {key: (median ms, min ms)}."""
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
            shuffle(keys)  # a new order each round: no row always follows the same neighbour
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
    cases, source = load_cases()
    subject = next((n for n, c, k in cases if c is keras_norms.BatchNormalization and not k), None)
    if subject is None:  # the targets need keras_norms.BatchNormalization() with default arguments
        subject = "keras_norms.BatchNormalization()"
        cases.append((subject, keras_norms.BatchNormalization, {}))
    # TF: XLA is the compared setting; plain tf.function graphs are extra rows (not with --quick).
    compiles = {"tensorflow": [("xla", {"jit": True})] + ([] if args.quick else [("graph", {"jit": False})]),
                "jax": [("jit", {})], "torch": [("eager", {})]}[B]
    plain, no_fast = contextlib.nullcontext, lambda: keras_norms.config.fast_paths(False)
    variants, order = {}, []
    for comp, kw in compiles:
        rows = [(KERAS_BN, keras.layers.BatchNormalization, {}, plain)]
        rows += [(name, cls, kwargs, plain) for name, cls, kwargs in cases]
        rows += [("keras_norms BN (fast paths off)", keras_norms.BatchNormalization, {}, no_fast)]
        for name, cls, kwargs, ctx in rows:
            try:
                with ctx():
                    train, infer = steps(cls, kwargs, **kw)
                    train(), infer()  # fail early (and trace) for a case that cannot run on SHAPE
            except Exception as e:
                print(f"skipped {name}: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            variants[(name, comp, "train")] = (train, ctx)
            variants[(name, comp, "infer")] = (infer, ctx)
            order.append((name, comp))
    if B == "torch":
        for name, view in ((NATIVE, "nchw"), ("F.batch_norm (M,C) view", "mc")):
            train, infer = torch_native_steps(view)
            variants[(name, "native", "train")] = (train, plain)
            variants[(name, "native", "infer")] = (infer, plain)
            order.append((name, "native"))
    stats = run_interleaved(variants)

    results = []
    for name, comp in order:
        for mode in ("train", "infer"):
            ms, best = stats[(name, comp, mode)]
            kbn = stats.get((KERAS_BN, comp if comp != "native" else "eager", mode), (None,))[0]
            nat = stats.get((NATIVE, "native", mode), (None,))[0]
            results.append({"layer": name, "compile": comp, "mode": mode, "ms": ms, "min_ms": best,
                            "vs_keras_bn": ms / kbn if kbn else None, "vs_native": ms / nat if nat else None})

    # Targets concern keras_norms.BatchNormalization() with default arguments (`subject`).
    key = (subject, compiles[0][0], "train")
    row = next((r for r in results if (r["layer"], r["compile"], r["mode"]) == key), None)
    if B == "torch":
        specs = [("train step <= 1.3x F.batch_norm", "vs_native", 1.3, False),
                 ("train step faster than keras BN", "vs_keras_bn", 1.0, True)]
    else:
        specs = [(f"train step ({compiles[0][0]}) <= 1.1x keras BN", "vs_keras_bn", 1.1, False)]
    targets = []
    for text, key, limit, strict in specs:
        ratio = row[key] if row else None
        ok = ratio is not None and (ratio < limit if strict else ratio <= limit)
        targets.append({"target": text, "ratio": ratio, "limit": limit, "result": "PASS" if ok else "MISS"})

    def fmt(v):
        return "-" if v is None else f"{v:.2f}x"

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    meta = {"backend": B, "shape": SHAPE, "repeats": args.repeats, "warmup": args.warmup, "cores": CORES,
            "torch_threads": threads if B == "torch" else None, "load1": round(load, 2),
            "keras": keras.__version__, "cases": source}
    print("\n" + " ".join(f"{k}={v}" for k, v in meta.items() if v is not None))
    columns = ["layer", "compile", "mode", "median ms", "min ms", "vs keras BN", "vs native"]
    columns = columns if B == "torch" else columns[:-1]

    def table_row(cells):  # text columns left-aligned, numbers right-aligned
        widths = [38, 7, 5, 9, 7, 11, 9]
        return " | ".join(f"{c:<{w}}" if i < 3 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths)))

    head = table_row(columns)
    print(head + "\n" + "-" * len(head))
    for r in results:
        print(table_row([r["layer"][:38], r["compile"], r["mode"], f"{r['ms']:.2f}", f"{r['min_ms']:.2f}",
                         fmt(r["vs_keras_bn"]), fmt(r["vs_native"])][: len(columns)]))
    print(f"\ntargets (keras_norms.BatchNormalization(), case '{subject}'"
          + (f"; native = {NATIVE}):" if B == "torch" else "):"))
    for t in targets:
        print(f"  [{t['result']}] {t['target']}: {fmt(t['ratio'])}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"meta": meta, "results": results, "targets": targets}, f, indent=2)
    return 0  # a measurement, not a test: exit 0 whether or not targets are met


if __name__ == "__main__":
    sys.exit(main())

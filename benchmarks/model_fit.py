"""Model-level figure: a ResNet-20 (CIFAR) `fit` step with each normalization, against the same model with Keras BN.

    python benchmarks/model_fit.py --backend jax [--batch-size 32] [--steps 8] [--repeats 5] [--output-dir DIR]

The model is the CIFAR ResNet-20 of He et al. (2016): a 3x3 convolution of 16 channels, three stages of three
basic blocks (16, 32, 64 channels; projection shortcuts where the shape changes), global average pooling and a
10-way softmax, on 32x32x3 inputs; every convolution but the last dense layer is followed by
`keras.layers.BatchNormalization`. Each variant is that model converted with `keras_norms.convert_normalization`
(the same weights where they carry over), compiled with SGD (momentum 0.9) and the cross-entropy loss, as `fit`
compiles it on each backend (TensorFlow: XLA; JAX: jit; PyTorch: eager), and warmed up with one short `fit`.
A repeat then runs one `fit` of `--steps` steps per variant, the variants in a new order each repeat; the step
time of a variant is the median over the repeats of (CPU or wall) time / steps. Ratios are against the Keras-BN
model measured in the same run. One intra-op thread by default, as in `suite.py`.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

# name -> (convert_normalization target or None for Keras BN, options)
VARIANTS = {
    "keras BatchNormalization": (None, {}),
    "BatchNormalization": ("batch_norm", {}),
    "GhostBatchNormalization": ("ghost_batch_norm", {"virtual_batch_size": "batch/4"}),
    "MemorizedBatchNormalization": ("memorized_batch_norm", {}),
    "BatchGroupNormalization": ("batch_group_norm", {}),
    "BatchChannelNormalization + WS": ("batch_channel_norm", {"convolutions": "ws"}),
    "GroupNormalization + WS": ("group_norm", {"convolutions": "ws"}),
    "FilterResponseNormalization": ("filter_response_norm", {}),
    "EvoNormB0": ("evonorm_b0", {}),
    "EvoNormS0": ("evonorm_s0", {}),
}
BASELINE = "keras BatchNormalization"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", required=True, choices=["tensorflow", "jax", "torch"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=8, help="steps per timed fit (default 8)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1; 0: the usable cores)")
    p.add_argument("--clock", default="cpu", choices=["cpu", "wall"])
    p.add_argument("--variants", help="comma-separated subset of the variants (the baseline is always run)")
    p.add_argument("--output-dir", help="write model_fit_<backend>.json there")
    return p.parse_args(argv)


def resnet20(keras):
    """The CIFAR ResNet-20 with Keras BatchNormalization after every convolution."""
    layers = keras.layers

    def conv_bn(x, filters, strides=1, kernel=3):
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
        return layers.BatchNormalization()(x)

    inputs = keras.Input((32, 32, 3))
    x = layers.ReLU()(conv_bn(inputs, 16))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            strides = 2 if stage > 0 and block == 0 else 1
            y = layers.ReLU()(conv_bn(x, filters, strides))
            y = conv_bn(y, filters)
            if strides != 1:
                x = conv_bn(x, filters, strides, kernel=1)  # projection shortcut
            x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x), name="resnet20")


def build(name, batch_size):
    import keras
    import keras_norms

    keras.utils.set_random_seed(0)
    model = resnet20(keras)
    target, options = VARIANTS[name]
    if target is not None:
        options = {k: (max(1, batch_size // 4) if v == "batch/4" else v) for k, v in options.items()}
        model = keras_norms.convert_normalization(model, target, **options)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy")
    return model


def main(argv=None):
    args = parse_args(argv)
    threads = harness.select_backend(args.backend, args.threads)
    import numpy as np

    names = list(VARIANTS) if not args.variants else [BASELINE] + [
        n for n in args.variants.split(",") if n != BASELINE]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; known: {list(VARIANTS)}")
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.uniform(0, 1, (n, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, n)
    meta = harness.environment(batch_size=args.batch_size, steps=args.steps, repeats=args.repeats,
                               threads=threads, clock=args.clock, model="ResNet-20 (CIFAR), 272k parameters",
                               command=" ".join(["python benchmarks/model_fit.py"] + (argv or sys.argv[1:])))
    print(f"machine: {harness.machine_line(meta)}", flush=True)
    models, compile_s = {}, {}
    for name in names:
        t0 = time.perf_counter()
        model = build(name, args.batch_size)
        model.fit(x[: 2 * args.batch_size], y[: 2 * args.batch_size], batch_size=args.batch_size, verbose=0)
        compile_s[name] = round(time.perf_counter() - t0, 1)
        models[name] = model
        print(f"  built and warmed up {name} ({compile_s[name]} s)", file=sys.stderr, flush=True)
    times = {name: {"wall": [], "cpu": []} for name in names}
    order = list(names)
    for _ in range(args.repeats):
        random.Random(len(times[BASELINE]["wall"])).shuffle(order)
        for name in order:
            t0, c0 = time.perf_counter(), time.process_time()
            models[name].fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
            c1, t1 = time.process_time(), time.perf_counter()
            times[name]["wall"].append((t1 - t0) * 1e3 / args.steps)
            times[name]["cpu"].append((c1 - c0) * 1e3 / args.steps)
    base = statistics.median(times[BASELINE][args.clock])
    rows = []
    for name in names:
        ms = statistics.median(times[name][args.clock])
        rows.append({"name": name, "ms": ms, "min_ms": min(times[name][args.clock]),
                     "wall_ms": statistics.median(times[name]["wall"]),
                     "cpu_ms": statistics.median(times[name]["cpu"]), "vs_keras_bn": ms / base,
                     "compile_s": compile_s[name]})
    meta["load_at_end"] = harness.load_average()
    print(f"\n{args.backend}: ResNet-20 fit step, batch {args.batch_size}, {args.steps} steps x {args.repeats} "
          f"repeats, {threads} thread(s), {args.clock} time; load {meta['load_at_start'][0]} -> "
          f"{meta['load_at_end'][0]}")
    print(f"{'normalization':<32} {'step ms':>9} {'min ms':>8} {'vs Keras BN':>11}")
    for r in rows:
        print(f"{r['name']:<32} {r['ms']:>9.1f} {r['min_ms']:>8.1f} {r['vs_keras_bn']:>10.2f}x")
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        path = os.path.join(args.output_dir, f"model_fit_{args.backend}.json")
        with open(path, "w") as f:
            json.dump({"meta": meta, "rows": rows, "samples": times}, f, indent=1)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

The rows the suite lacks (the bare op, BCN's estimate mode, the contiguous layout) on the suite's machinery
(`harness.py`: XLA / jit / eager steps, shuffled rounds, medians of CPU time with one thread by default).
Targets: torch group_norm op <= 1.2x F.group_norm; TF/JAX group_norm op <= 2x keras_norms.BatchNormalization.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--backend", required=True, choices=["tensorflow", "jax", "torch"])
p.add_argument("--shape", default="32,32,32,64", help="NHWC input shape, float32 (default 32,32,32,64)")
p.add_argument("--groups", type=int, default=32)
p.add_argument("--repeats", type=int, default=30)
p.add_argument("--warmup", type=int, default=5)
p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1; 0: the usable cores)")
p.add_argument("--clock", default="cpu", choices=["cpu", "wall"])
p.add_argument("--quick", action="store_true", help="at most 5 repeats and 2 warmups")
p.add_argument("--output", help="also write the results as JSON to this path")
args = p.parse_args()
if args.quick:
    args.repeats, args.warmup = min(args.repeats, 5), min(args.warmup, 2)
SHAPE = tuple(int(s) for s in args.shape.split(","))
G = args.groups
threads = harness.select_backend(args.backend, args.threads)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_norms  # noqa: E402
from keras_norms.layers.batch_channel_normalization import BatchChannelNormalization  # noqa: E402
from keras_norms.ops.batch_channel import group_norm  # noqa: E402

B = args.backend
OP = "keras_norms.ops.group_norm"
NATIVE = "F.group_norm NCHW channels_last"
KN_BN = "keras_norms.BatchNormalization()"


class GroupNormOp(keras.layers.Layer):
    """The bare op with a per-channel gamma, beta (what BCN's steps 2-3 compute), as a layer for the harness."""

    def build(self, input_shape):
        c = input_shape[-1]
        self.gamma = self.add_weight(shape=(c,), initializer="ones", autocast=False)
        self.beta = self.add_weight(shape=(c,), initializer="zeros", autocast=False)

    def call(self, x, training=None):
        return group_norm(x, self.gamma, self.beta, axis=-1, epsilon=1e-5, groups=G)


def torch_group_norm(contiguous):
    def build(x):
        import torch
        import torch.nn.functional as F

        gamma, beta = torch.ones(SHAPE[-1], requires_grad=True), torch.zeros(SHAPE[-1], requires_grad=True)

        def forward(x, training):  # the output in x's layout
            if contiguous:
                return F.group_norm(x, G, gamma, beta, 1e-5)
            return F.group_norm(x.movedim(-1, 1), G, gamma, beta, 1e-5).movedim(1, -1)

        return forward, [gamma, beta]

    return build


def main():
    rng = np.random.default_rng(0)
    x_np = rng.normal(0.5, 2.0, SHAPE).astype("float32")
    w_np = rng.normal(0.0, 1.0, SHAPE).astype("float32")
    x, w = harness.make_inputs(x_np, w_np)
    plain, no_fast = harness.plain, harness.fast_paths_off
    rows = [
        (OP, GroupNormOp, {}, plain),
        ("group_norm (fast paths off)", GroupNormOp, {}, no_fast),
        ("BCN(mode='batch')", BatchChannelNormalization, {"groups": G}, plain),
        ("BCN(mode='estimate')", BatchChannelNormalization, {"groups": G, "mode": "estimate"}, plain),
        ("BGN(examples_per_group=2)", keras_norms.BatchGroupNormalization, {"groups": G}, plain),
        ("BGN(examples_per_group=2), fast off", keras_norms.BatchGroupNormalization, {"groups": G}, no_fast),
        ("keras.layers.GroupNormalization", keras.layers.GroupNormalization, {"groups": G, "epsilon": 1e-5}, plain),
        (KN_BN, keras_norms.BatchNormalization, {}, plain),
    ]
    variants = {}
    for name, cls, kwargs, ctx in rows:
        layer = cls(**kwargs)
        layer.build(SHAPE)
        with ctx():
            train, _, _ = harness.layer_steps([layer], x, w)
            train()  # trace under the row's fast-path setting
        variants[name] = (train, ctx)
    if B == "torch":
        variants[NATIVE] = (harness.native_steps(torch_group_norm(False), x, w)[0], plain)
        nchw = harness.make_inputs(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2)),
                                   np.ascontiguousarray(w_np.transpose(0, 3, 1, 2)))
        variants["F.group_norm NCHW contiguous"] = (harness.native_steps(torch_group_norm(True), *nchw)[0], plain)
    stats = harness.run_interleaved(variants, args.repeats, args.warmup)

    base = NATIVE if B == "torch" else KN_BN
    limit = 1.2 if B == "torch" else 2.0
    ms = {k: v[args.clock][0] for k, v in stats.items()}
    results = [{"row": k, "ms": ms[k], "min_ms": stats[k][args.clock][1], "vs_base": ms[k] / ms[base]} for k in stats]
    ratio = ms[OP] / ms[base]
    target = {"target": f"group_norm op train step <= {limit}x {base}", "ratio": ratio, "limit": limit,
              "result": "PASS" if ratio <= limit else "MISS"}
    meta = harness.environment(shape=SHAPE, groups=G, repeats=args.repeats, warmup=args.warmup, threads=threads,
                               clock=args.clock)
    print(f"\n{B}: {SHAPE}, G={G}, {args.repeats} rounds, {threads} thread(s), {args.clock} time, "
          f"load {meta['load_at_start'][0]}")
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

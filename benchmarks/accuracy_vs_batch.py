"""Accuracy vs batch size: the normalizations of keras_norms on scikit-learn's digits.

    python benchmarks/accuracy_vs_batch.py                  # full: 5 batch sizes, 3 seeds, 20 epochs: ~50 min
    python benchmarks/accuracy_vs_batch.py --quick          # batch sizes 2 and 32, 2 seeds, 6 epochs: < 15 min
    python benchmarks/accuracy_vs_batch.py --smoke          # a few steps each: checks that it runs
    python benchmarks/accuracy_vs_batch.py --render docs/assets/evidence/accuracy_vs_batch.json   # redraw only

Trains one small CNN (four 3x3 convolutions of 16, 16, 32, 32 channels, each followed by a normalization and its
activation, two max-pools, global average pooling, a softmax dense) with each normalization at batch sizes
2, 4, 8, 32 and 128, several seeds, and reports the test accuracy (mean and standard deviation over seeds).
The results and what they say about the papers' claims: docs/evidence.md.

Data: `sklearn.datasets.load_digits` (1797 8x8 grey images shipped inside scikit-learn, nothing downloaded),
scaled to [0, 1], each placed at a random position (fixed, data seed 0) on a blank 16x16 canvas (upsampled in
place, BN, GN+WS and FRN+TLU reached 99.4-99.8% in a trial and could not be told apart). One fixed stratified
split for every run: 1024 training images (a multiple of every batch size, so no partial last batch), 273
validation images (used only to choose the inference example weight alpha) and 500 test images.

Methods (`GROUPS` = 4 channel groups wherever a layer groups channels):

* BN: Conv2D -> `keras_norms.BatchNormalization` -> ReLU; "BN + alpha": the same trained model with the
  inference example weight chosen on the validation split (`keras_norms.tune_inference_example_weight`, default
  grid around 1/B, lowest validation loss).
* Ghost BN: `virtual_batch_size=GHOST` (8); at batch sizes <= 8 it is BN itself (one ghost), so it is trained
  only at larger batches. "Ghost BN + alpha" as above, grid around 1/8.
* BGN: `keras_norms.BatchGroupNormalization(groups=4, examples_per_group=2)` (Four Things item (d)), alpha = 0
  and alpha chosen on the validation split (grid around 1/2). The quick profile searches alpha in
  {0, 0.5/B', 1/B'} only: each candidate costs a compile.
* GN + WS: `keras_norms.WSConv2D` -> `keras_norms.GroupNormalization(groups=4)` -> ReLU (the Evidence page's figures
  were run with `keras.layers.GroupNormalization`: the same function, on the package's fast paths).
* BCN + WS: `keras_norms.WSConv2D` -> `keras_norms.BatchChannelNormalization(groups=4)` -> ReLU, in
  `mode="estimate"` (EstBN, the paper's micro-batch mode) at batch sizes <= 8 and `mode="batch"` above.
* FRN + TLU: `keras_norms.FilterResponseNormalization` -> `keras_norms.TLU`.
* EvoNorm-S0: `keras_norms.EvoNormS0(groups=4)` (the activation is part of the layer).
* MBN: `keras_norms.MemorizedBatchNormalization(memory_size=4)` -> ReLU; MBN + DF: the same trained with
  `keras_norms.with_double_forward`.

Training, the same for every method at a given batch size B: a fixed budget of examples seen (`--epochs` passes
over the 1024 training images, so 1024 * epochs / B steps), SGD with Nesterov momentum 0.9, the learning rate
linearly scaled with the batch size, lr(B) = 0.05 * B / 32 (0.003125 at B=2, 0.2 at B=128), reached by a
linear warm-up over the first epoch and decayed to 0 by a cosine over the rest. Moving averages (BN, Ghost BN,
BGN, BCN) use momentum min(1 - B/1024, 0.99): a horizon of 1024 examples at large batches, 100 steps at B <= 8
(Keras's 0.99 at every size leaves BN at chance after the 160 steps of batch 128). Seeds: `numpy.random.seed`
and `keras.utils.set_random_seed` (initial weights, shuffling) per run; the data split is the same for all
runs. Test accuracy in inference mode (`model.evaluate` on the whole test split in one batch: no batch
statistics are used, so the number does not depend on the evaluation batch).

Backend: JAX by default, the fastest for these overhead-bound small-batch steps on CPU (measured on the 2-core
development machine, BN model, batch 2: JAX jit about 1.5 ms per step, TensorFlow XLA about 4 ms, PyTorch
eager hundreds of ms under load). `--backend` picks another; the backend is printed.

Output (in `--output-dir`; by default `docs/assets/evidence/` for the full profile and `--render`, and
`benchmarks/results/accuracy_vs_batch_{quick,smoke}/` otherwise): `accuracy_vs_batch.md` (the tables: accuracy,
chosen alphas, training loss, the differences behind the claims), `accuracy_vs_batch.png` (the plot, needs
matplotlib) and `accuracy_vs_batch.json` (every run's numbers and the run's metadata). `--smoke` trains each
method for a few steps and its accuracies mean nothing. `--render JSON` re-draws the tables and the
plot of a finished run from its JSON, without training.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Only the full profile writes into the docs by default: a quick or smoke run must not replace the published run.
DEFAULT_OUTPUT = {"full": ROOT / "docs" / "assets" / "evidence",
                  "quick": ROOT / "benchmarks" / "results" / "accuracy_vs_batch_quick",
                  "smoke": ROOT / "benchmarks" / "results" / "accuracy_vs_batch_smoke"}
STEM = "accuracy_vs_batch"
GROUPS = 4  # channel groups of GN, BCN, BGN and EvoNorm-S0 (the convolutions have 16 and 32 channels)
GHOST = 8  # Ghost BN's virtual_batch_size
BGN_EXAMPLES = 2  # BatchGroupNormalization's examples_per_group (the official code's example)
MBN_MEMORY = 4  # MemorizedBatchNormalization's memory_size
ESTIMATE_UP_TO = 8  # BCN uses EstBN (mode="estimate") at batch sizes up to this, batch statistics above
NUM_TRAIN, NUM_VAL, NUM_TEST = 1024, 273, 500  # 1797 digits in all

PROFILES = {
    "full": {"batch_sizes": (2, 4, 8, 32, 128), "seeds": 3, "epochs": 20, "width": 16, "train": NUM_TRAIN,
             "alpha_grid": "default"},
    # Every model costs about 15 s of compiling on a loaded 2-core machine, so the quick profile trains fewer.
    "quick": {"batch_sizes": (2, 32), "seeds": 2, "epochs": 6, "width": 16, "train": NUM_TRAIN,
              "alpha_grid": "short"},
    # Ghost BN is trained only above GHOST, BCN switches mode above ESTIMATE_UP_TO: 4 and 16 reach every branch;
    # at 16 the smoke trains only those two. A few steps each: TensorFlow and PyTorch run them eagerly (tracing
    # costs more than it saves); JAX compiles every eager op too, so there a jitted step (XLA at -O0) is cheaper.
    # The held-out subsets have the smaller batch size (one shape less to compile).
    "smoke": {"batch_sizes": (4, 16), "seeds": 1, "epochs": 1, "width": 8, "train": 16, "held_out": 4,
              "eager_backends": ("tensorflow", "torch"), "alpha_grid": "one",
              "larger_batch_only": ("Ghost BN", "BCN+WS")},
}


LR_RULE = "SGD, Nesterov momentum 0.9, peak lr 0.05 * B / 32, linear warm-up over 1 epoch, cosine decay to 0"
MOMENTUM_RULE = "moving averages: momentum min(1 - B / 1024, 0.99)"


def momentum_for(batch_size):
    """Moving-average momentum 1 - B/1024, at most 0.99: a horizon of 1024 examples, or 100 steps for B <= 8.

    Keras's default 0.99 at batch 128 leaves 0.99**160 = 20% of the initial statistics after the
    160 steps of the full profile, and BN then tests at chance.
    """
    return min(1 - batch_size / 1024, 0.99)


def lr_for(batch_size):
    """The peak learning rate: linear in the batch size, 0.05 at 32 (Goyal et al.'s rule, with warm-up)."""
    return 0.05 * batch_size / 32


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="jax", choices=["jax", "tensorflow", "torch"],
                        help="Keras backend (default jax: the fastest here for small batches on CPU)")
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--quick", action="store_true",
                         help="batch sizes 2 and 32, 2 seeds, 6 epochs: under 15 minutes on 2 cores")
    profile.add_argument("--smoke", action="store_true", help="1 seed, batch sizes 4 and 16, a few steps")
    parser.add_argument("--seeds", type=int, help="number of seeds, 0..n-1 (overrides the profile)")
    parser.add_argument("--epochs", type=int, help="passes over the training split (overrides the profile)")
    parser.add_argument("--batch-sizes", help="comma-separated (overrides the profile), e.g. 2,128")
    parser.add_argument("--methods", help="comma-separated subset of the trained methods, e.g. BN,FRN+TLU")
    parser.add_argument("--output-dir", type=Path,
                        help="default: docs/assets/evidence/ (full profile, --render), benchmarks/results/ (others)")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="no training: write the table and the plot of a finished run from its JSON")
    args = parser.parse_args(argv)
    args.profile = "smoke" if args.smoke else "quick" if args.quick else "full"
    args.output_dir = args.output_dir or DEFAULT_OUTPUT[args.profile]
    settings = dict(PROFILES[args.profile])
    if args.seeds is not None:
        settings["seeds"] = args.seeds
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    if args.batch_sizes:
        settings["batch_sizes"] = tuple(int(b) for b in args.batch_sizes.split(","))
    bad = [b for b in settings["batch_sizes"] if b < 1 or settings["train"] % b]
    if bad:
        parser.error(f"--batch-sizes {bad}: each must divide the {settings['train']} training images")
    args.settings = settings
    return args


# The backend is fixed when keras is first imported: parse --backend, then import.
ARGS = parse_args(sys.argv[1:]) if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["KERAS_BACKEND"] = ARGS.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if ARGS.smoke:  # unoptimized XLA code compiles faster, and a few steps of it run fast enough
        os.environ.setdefault(
            "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_norms  # noqa: E402


# --- Data: digits, upsampled to 16x16, one fixed stratified split.
def place_on_canvas(images, size=16, seed=0):
    """Each 8x8 image at a random position (fixed by `seed`) on a blank `size` x `size` canvas.

    The translations make the task hard enough that accuracies stay below 100% (the 8x8 digits
    upsampled in place gave 99.4-99.8% in a trial), so differences between methods can show.
    """
    rng = np.random.default_rng(seed)
    n, h, w = images.shape
    canvas = np.zeros((n, size, size, 1), "float32")
    rows, cols = rng.integers(0, size - h + 1, n), rng.integers(0, size - w + 1, n)
    for i, (r, c) in enumerate(zip(rows, cols)):
        canvas[i, r:r + h, c:c + w, 0] = images[i]
    return canvas


def load_data(num_train, held_out=None):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = place_on_canvas(digits.images.astype("float32") / 16.0)  # (1797, 16, 16, 1)
    y = digits.target.astype("int32")
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=NUM_TEST, stratify=y, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, train_size=NUM_TRAIN, stratify=y_rest, random_state=0
    )
    return ((x_train[:num_train], y_train[:num_train]), (x_val[:held_out], y_val[:held_out]),
            (x_test[:held_out], y_test[:held_out]))


# --- Methods: a convolution class and a "norm + activation" factory for each block.
def relu_after(norm):
    return lambda: [norm(), keras.layers.ReLU()]


def methods(batch_size):
    """name -> (conv class, norm+activation factory, double forward?); only those that train at this size."""
    bcn_mode = "estimate" if batch_size <= ESTIMATE_UP_TO else "batch"
    m = momentum_for(batch_size)
    table = {
        "BN": (keras.layers.Conv2D, relu_after(lambda: keras_norms.BatchNormalization(momentum=m)), False),
        "Ghost BN": (keras.layers.Conv2D, relu_after(
            lambda: keras_norms.GhostBatchNormalization(virtual_batch_size=GHOST, momentum=m)), False),
        "BGN": (keras.layers.Conv2D, relu_after(lambda: keras_norms.BatchGroupNormalization(
            groups=GROUPS, examples_per_group=BGN_EXAMPLES, momentum=m)), False),
        "GN+WS": (keras_norms.WSConv2D, relu_after(lambda: keras_norms.GroupNormalization(groups=GROUPS)), False),
        "BCN+WS": (keras_norms.WSConv2D, relu_after(
            lambda: keras_norms.BatchChannelNormalization(groups=GROUPS, mode=bcn_mode, momentum=m)), False),
        "FRN+TLU": (keras.layers.Conv2D,
                    lambda: [keras_norms.FilterResponseNormalization(), keras_norms.TLU()], False),
        "EvoNorm-S0": (keras.layers.Conv2D, lambda: [keras_norms.EvoNormS0(groups=GROUPS)], False),
        "MBN": (keras.layers.Conv2D, relu_after(
            lambda: keras_norms.MemorizedBatchNormalization(memory_size=MBN_MEMORY)), False),
        "MBN+DF": (keras.layers.Conv2D, relu_after(
            lambda: keras_norms.MemorizedBatchNormalization(memory_size=MBN_MEMORY)), True),
    }
    if batch_size <= GHOST:  # one ghost batch: Ghost BN is BN, nothing new to train
        del table["Ghost BN"]
    return table


# The rows of the report: a trained method, or a trained method with alpha chosen on the validation split.
ROWS = ("BN", "BN + α", "BN + Precise BN", "Ghost BN", "Ghost BN + α", "BGN", "BGN + α",
        "GN+WS", "BCN+WS", "FRN+TLU", "EvoNorm-S0", "MBN", "MBN + Precise BN", "MBN+DF", "MBN+DF + Precise BN")
TUNED = {"BN": "BN + α", "Ghost BN": "Ghost BN + α", "BGN": "BGN + α"}
# The same weights with the statistics recomputed on the whole training split after training
# (`recompute_batch_statistics`): separates what the inference statistics cost from what training did.
PRECISE = {"BN": "BN + Precise BN", "MBN": "MBN + Precise BN", "MBN+DF": "MBN+DF + Precise BN"}
PRECISE_BATCH = 256  # the recompute's batch size (4 batches of the 1024 training images; no effect on the result)


def cnn(conv_cls, norm_act, width):
    inputs = keras.Input((16, 16, 1))
    x = inputs
    for filters in (width, 2 * width):
        for _ in range(2):
            x = conv_cls(filters, 3, padding="same", use_bias=False)(x)
            for layer in norm_act():
                x = layer(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def alpha_grid(settings, model, batch_size):
    """The alpha candidates: None (the default grid, {0} and c/B' for 7 values of c) in the full profile.

    Every candidate re-traces the test function, so the quick profile tries {0, 0.5/B', 1/B'} and the smoke
    only 0.5 (the search's code path, not a choice).
    """
    if settings["alpha_grid"] == "default":
        return None
    if settings["alpha_grid"] == "one":
        return (0.5,)
    ghost = min(getattr(layer, "virtual_batch_size", None) or getattr(layer, "examples_per_group", None)
                or batch_size for layer in keras_norms.inference_weight.supporting_layers(model))
    return (0.0, min(1.0, 0.5 / ghost), min(1.0, 1.0 / ghost))


def train_one(name, spec, batch_size, seed, settings, data):
    (x, y), (x_val, y_val), (x_test, y_test) = data
    conv_cls, norm_act, double_forward = spec
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    model = cnn(conv_cls, norm_act, settings["width"])
    if double_forward:
        model = keras_norms.with_double_forward(model)
    steps = settings["epochs"] * len(x) // batch_size
    warmup = min(len(x) // batch_size, steps // 2)  # one epoch (or half the run) of linear warm-up from 0
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps - warmup, warmup_target=lr_for(batch_size), warmup_steps=warmup)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  run_eagerly=keras.backend.backend() in settings.get("eager_backends", ()))
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=batch_size, epochs=settings["epochs"], shuffle=True, verbose=0)
    seconds = time.perf_counter() - start

    def test_accuracy():
        logs = model.evaluate(x_test, y_test, batch_size=len(x_test), verbose=0, return_dict=True)
        return float(logs["accuracy"])

    base = {"batch_size": batch_size, "seed": seed, "train_seconds": round(seconds, 2),
            "train_loss": float(history.history["loss"][-1])}
    results = [dict(base, method=name, test_accuracy=test_accuracy(), alpha=0.0)]
    if name in TUNED:  # the same weights, only inference changes
        search = keras_norms.tune_inference_example_weight(
            model, x_val, y_val, training_batch_size=batch_size, batch_size=len(x_val), verbose=0,
            candidates=alpha_grid(settings, model, batch_size),
        )
        results.append(dict(base, method=TUNED[name], test_accuracy=test_accuracy(), alpha=search.best))
    if name in PRECISE:
        if name in TUNED:  # the α search left its best α set: Precise BN is measured with α = 0
            keras_norms.set_inference_example_weight(model, 0.0)
        keras_norms.recompute_batch_statistics(model, x, batch_size=min(PRECISE_BATCH, len(x)), verbose=0)
        results.append(dict(base, method=PRECISE[name], test_accuracy=test_accuracy(), alpha=0.0))
    return results


# --- Report: a Markdown table (mean +- std over seeds, in %), claim checks, a plot, the raw JSON.
def summarize(runs):
    cells = {}
    for run in runs:
        cells.setdefault((run["method"], run["batch_size"]), []).append(run["test_accuracy"] * 100)
    return {key: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
            for key, v in cells.items()}


def cell_text(summary, method, batch_size):
    if (method, batch_size) not in summary:
        return "= BN" if method.startswith("Ghost BN") and batch_size <= GHOST else "n/a"
    mean, std, n = summary[(method, batch_size)]
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"


def difference(summary, a, b, batch_size):
    """Mean of a minus mean of b (percentage points), and the larger of their std, or None."""
    if (a, batch_size) not in summary or (b, batch_size) not in summary:
        return None
    (ma, sa, _), (mb, sb, _) = summary[(a, batch_size)], summary[(b, batch_size)]
    return ma - mb, max(sa, sb)


def claim_lines(summary, batch_sizes):
    """Differences behind the papers' qualitative claims, as computed from this run (no verdict)."""
    small, large = min(batch_sizes), max(batch_sizes)
    lines = []

    def add(label, d):
        if d is not None:
            lines.append(f"| {label} | {d[0]:+.1f} | {d[1]:.1f} |")

    for b in batch_sizes:
        add(f"Ghost BN − BN at B={b}", difference(summary, "Ghost BN", "BN", b))
    for b in batch_sizes:
        add(f"BN + α − BN at B={b}", difference(summary, "BN + α", "BN", b))
    for b in batch_sizes:
        add(f"BGN + α − BGN at B={b}", difference(summary, "BGN + α", "BGN", b))
    if small == large:
        return lines
    for method in ("GN+WS", "FRN+TLU", "EvoNorm-S0", "BCN+WS"):
        add(f"{method}: B={small} − B={large}", _across(summary, method, small, large))
    add(f"BN: B={small} − B={large}", _across(summary, "BN", small, large))
    for b in batch_sizes:
        if b <= ESTIMATE_UP_TO:
            for method in ("BCN+WS", "GN+WS"):
                d = _versus(summary, (method, b), ("BN", large))
                add(f"{method} at B={b} − BN at B={large}", d)
    return lines


def _across(summary, method, b1, b2):
    return _versus(summary, (method, b1), (method, b2))


def _versus(summary, key_a, key_b):
    if key_a not in summary or key_b not in summary:
        return None
    (ma, sa, _), (mb, sb, _) = summary[key_a], summary[key_b]
    return ma - mb, max(sa, sb)


def alpha_text(runs, method, batch_size):
    alphas = [r["alpha"] for r in runs if r["method"] == method and r["batch_size"] == batch_size]
    return "/".join(f"{a:.3g}" for a in alphas) if alphas else "n/a"


def loss_text(runs, method, batch_size):
    losses = [r["train_loss"] for r in runs if r["method"] == method and r["batch_size"] == batch_size]
    return f"{statistics.mean(losses):.4f}" if losses else "n/a"


def markdown(runs, meta):
    batch_sizes = meta["batch_sizes"]
    summary = summarize(runs)
    seeds = meta["seeds"]
    out = [f"Test accuracy (%), mean ± std over {seeds} seed{'s' if seeds > 1 else ''} "
           f"(profile `{meta['profile']}`, backend {meta['backend']}, {meta['epochs']} epochs of "
           f"{meta['num_train']} images at every batch size; {meta['total_minutes']:.0f} min on "
           f"{meta['cores']} cores).", "",
           "| method | " + " | ".join(f"B={b}" for b in batch_sizes) + " |",
           "|---|" + "---:|" * len(batch_sizes)]
    for method in ROWS:
        if not any(r["method"] == method for r in runs):
            continue
        out.append(f"| {method} | " + " | ".join(cell_text(summary, method, b) for b in batch_sizes) + " |")
    out += ["", "α chosen on the validation split (one per seed):", "",
            "| method | " + " | ".join(f"B={b}" for b in batch_sizes) + " |",
            "|---|" + "---:|" * len(batch_sizes)]
    for method in TUNED.values():
        if any(r["method"] == method for r in runs):
            out.append(f"| {method} | " + " | ".join(alpha_text(runs, method, b) for b in batch_sizes) + " |")
    out += ["", "Training loss of the last epoch (mean over seeds; high where a method has not converged in the "
            "budget):",
            "", "| method | " + " | ".join(f"B={b}" for b in batch_sizes) + " |",
            "|---|" + "---:|" * len(batch_sizes)]
    for method in ROWS:
        if method not in TUNED.values() and any(r["method"] == method for r in runs):
            out.append(f"| {method} | " + " | ".join(loss_text(runs, method, b) for b in batch_sizes) + " |")
    claims = claim_lines(summary, batch_sizes)
    if claims:
        out += ["", "Differences behind the claims (percentage points; std: the larger of the two cells' std):",
                "", "| comparison | difference | std |", "|---|---:|---:|", *claims]
    return "\n".join(out) + "\n"


# Three panels with BN (dashed) on each: the BN family, the batch-independent layers (and BCN), Memorized BN.
# The first two zoom on the top of the scale, where the methods differ; points below it sit on the lower edge
# as a triangle labelled with their value.
PANELS = (("BN family", ("BN", "BN + α", "Ghost BN", "Ghost BN + α", "BGN", "BGN + α"), 95.0),
          ("batch-independent (and BCN)", ("BN", "GN+WS", "BCN+WS", "FRN+TLU", "EvoNorm-S0"), 95.0),
          ("Memorized BN", ("BN", "MBN", "MBN+DF"), None))


def plot(runs, meta, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return None
    summary = summarize(runs)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.4))
    for ax, (title, names, floor) in zip(axes, PANELS):
        below = {}  # batch size -> labels already placed there
        for name in names:
            points = [(b, *summary[(name, b)][:2]) for b in meta["batch_sizes"] if (name, b) in summary]
            if not points:
                continue
            b, mean, std = zip(*points)
            style = {"color": "black", "linestyle": "--", "zorder": 5} if name == "BN" else {}
            line = ax.errorbar(b, mean, yerr=std, marker="o", capsize=3, label=name, **style)
            for x, m in zip(b, mean):
                if floor is not None and m < floor:
                    color = line[0].get_color()
                    ax.plot(x, floor + 0.15, marker="v", color=color, markersize=9, clip_on=False)
                    k = below[x] = below.get(x, -1) + 1
                    ax.annotate(f"{name} {m:.1f}", (x, floor + 0.15), textcoords="offset points",
                                xytext=(-8, 6 + 11 * k), ha="right", color=color, fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(meta["batch_sizes"], [str(b) for b in meta["batch_sizes"]])
        if floor is not None:
            ax.set_ylim(floor, 100)
        ax.set(title=title, xlabel="batch size")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    axes[0].set_ylabel(f"test accuracy (%), mean ± std over {meta['seeds']} seed(s)")
    axes[-1].set_ylabel("test accuracy (%), full scale")
    fig.suptitle(f"scikit-learn digits on a 16x16 canvas, one CNN, {meta['epochs']} epochs at every batch size, "
                 f"backend {meta['backend']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(runs, meta, output_dir, write_json=True):
    output_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(runs, meta)
    (output_dir / f"{STEM}.md").write_text(table)
    if write_json:
        (output_dir / f"{STEM}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
    png = plot(runs, meta, output_dir / f"{STEM}.png")
    print("\n" + table)
    print(f"wrote {output_dir / STEM}.md" + (", .json" if write_json else "") + (", .png" if png else ""))


def main():
    args = ARGS
    if args.render:  # no training: the table and the plot again, from a finished run's numbers
        report = json.loads(args.render.read_text())
        write_report(report["runs"], report["meta"], args.output_dir, write_json=False)
        return
    settings = args.settings
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"backend: {keras.backend.backend()} (keras {keras.__version__}), profile {args.profile}, "
          f"batch sizes {list(settings['batch_sizes'])}, seeds {settings['seeds']}, epochs {settings['epochs']}"
          + (" (smoke: the accuracies mean nothing)" if args.smoke else ""), flush=True)
    data = load_data(settings["train"], settings.get("held_out"))
    print(f"digits: train/val/test {len(data[0][0])}/{len(data[1][0])}/{len(data[2][0])}", flush=True)
    wanted = set(args.methods.split(",")) if args.methods else None
    start, runs = time.perf_counter(), []
    for batch_size in settings["batch_sizes"]:
        for seed in range(settings["seeds"]):
            for name, spec in methods(batch_size).items():
                only = settings.get("larger_batch_only")
                if (wanted and name not in wanted) or (only and batch_size > min(settings["batch_sizes"])
                                                       and name not in only):
                    continue
                for run in train_one(name, spec, batch_size, seed, settings, data):
                    runs.append(run)
                    print(f"B={batch_size:<4} seed={seed} {run['method']:<13} test accuracy "
                          f"{run['test_accuracy']:.4f}  alpha {run['alpha']:.3g}  train loss {run['train_loss']:.4f}"
                          f"  {run['train_seconds']:6.1f} s", flush=True)
    meta = {"profile": args.profile, "backend": keras.backend.backend(), "keras": keras.__version__,
            "batch_sizes": list(settings["batch_sizes"]), "seeds": settings["seeds"],
            "epochs": settings["epochs"], "width": settings["width"], "num_train": len(data[0][0]),
            "lr_rule": LR_RULE, "momentum_rule": MOMENTUM_RULE,
            "cores": cores, "machine": platform.machine(), "python": platform.python_version(),
            "total_minutes": (time.perf_counter() - start) / 60}
    write_report(runs, meta, args.output_dir)


if __name__ == "__main__":
    main()

"""Accuracy vs batch size: the normalizations of keras_norms on scikit-learn's digits, in three settings.

    python benchmarks/accuracy_vs_batch.py                  # full: correlated + hard settings, 3 seeds: ~65 min
    python benchmarks/accuracy_vs_batch.py --easy           # the easy setting's published run: ~50 min
    python benchmarks/accuracy_vs_batch.py --quick          # correlated, batch sizes 2 and 32, 2 seeds: < 15 min
    python benchmarks/accuracy_vs_batch.py --smoke          # a few steps each: checks that it runs
    python benchmarks/accuracy_vs_batch.py --render docs/assets/evidence/accuracy_vs_batch_hard.json   # redraw only

Trains one small CNN (four 3x3 convolutions of 16, 16, 32, 32 channels, each followed by a normalization and its
activation, two max-pools, global average pooling, a softmax dense) with each normalization at several batch
sizes and seeds, and reports the test accuracy (mean and standard deviation over seeds). The results and what
they say about the papers' claims: docs/evidence.md.

Data: `sklearn.datasets.load_digits` (1797 8x8 grey images shipped inside scikit-learn, nothing downloaded),
scaled to [0, 1], each placed at a random position (fixed, data seed 0) on a canvas. One fixed stratified split
for every run: 1024 training images (a multiple of every batch size, so no partial last batch), 273 validation
images (used only to choose the inference example weight alpha) and 500 test images. Settings (`--setting`):

* easy: a blank 16x16 canvas, shuffled batches. BN does not degrade at small batch sizes here.
* correlated: the same images, each batch made of same-class groups of 4 (a batch of 2 or 4 holds one class, a
  batch of 8 two, of 32 eight), a new grouping every pass; tested on the ordinary test split.
* hard: a 24x24 canvas, 4 fragments (4x4 pieces of other random digits) and Gaussian pixel noise (std 0.25, then
  clipped to [0, 1]) around each digit; shuffled batches.

Methods (`GROUPS` = 4 channel groups wherever a layer groups channels):

* BN: Conv2D -> `keras_norms.BatchNormalization` -> ReLU; "BN + alpha": the same trained model with the
  inference example weight chosen on the validation split (`keras_norms.tune_inference_example_weight`, default
  grid around 1/B, lowest validation loss); "BN + Precise BN": the same weights after
  `keras_norms.recompute_batch_statistics` over the training split.
* Ghost BN: `virtual_batch_size=GHOST` (8); at batch sizes <= 8 it is BN itself (one ghost), so it is trained
  only at larger batches. "Ghost BN + alpha" as above, grid around 1/8.
* BGN: `keras_norms.BatchGroupNormalization(groups=4, examples_per_group=2)` (Four Things item (d)), alpha = 0
  and alpha chosen on the validation split (grid around 1/2). The quick profile searches alpha in
  {0, 0.5/B', 1/B'} only: each candidate costs a compile.
* Batch Renorm: `keras_norms.BatchNormalization(renorm=True)` with `keras_norms.BatchRenormSchedule`: plain BN
  for the first epoch, then r_max -> 3 and d_max -> 5 by mid-training (the paper's shape, scaled to the run).
* GN+WS: `keras_norms.WSConv2D` -> `keras_norms.GroupNormalization(groups=4)` -> ReLU.
* BCN+WS: `keras_norms.WSConv2D` -> `keras_norms.BatchChannelNormalization(groups=4)` -> ReLU, in
  `mode="estimate"` (EstBN, the paper's micro-batch mode) at batch sizes <= 8 and `mode="batch"` above.
* FRN+TLU: `keras_norms.FilterResponseNormalization` -> `keras_norms.TLU`.
* EvoNorm-S0: `keras_norms.EvoNormS0(groups=4)`; EvoNorm-B0: `keras_norms.EvoNormB0()` (the activation is part
  of the layer).
* GN+PN: `keras_norms.GroupNormalization(groups=4, center=False, scale=False)` -> `keras_norms.ProxyNormalization`
  (the affine and the ReLU are part of PN).
* MBN: `keras_norms.MemorizedBatchNormalization(memory_size=4)` -> ReLU; MBN + DF: the same trained with
  `keras_norms.with_double_forward`; each also "+ Precise BN" as BN.

Training, the same for every method at a given batch size B: a fixed budget of examples seen (`--epochs` passes
over the 1024 training images, so 1024 * epochs / B steps), SGD with Nesterov momentum 0.9, the learning rate
linearly scaled with the batch size, lr(B) = 0.05 * B / 32 (0.003125 at B=2, 0.2 at B=128), reached by a
linear warm-up over the first epoch and decayed to 0 by a cosine over the rest. Moving averages (BN, Ghost BN,
BGN, BCN, EvoNorm-B0, Batch Renorm) use momentum min(1 - B/1024, 0.99): a horizon of 1024 examples at large
batches, 100 steps at B <= 8 (Keras's 0.99 at every size leaves BN at chance after the 160 steps of batch 128).
The fixed-step view (`--budget steps`, in the full profile for every method) trains every batch size for the steps
batch size 8 takes in the example budget, with the same rules. Seeds: `numpy.random.seed` and
`keras.utils.set_random_seed` (initial weights, shuffling) per run; the data split is the same for all runs.
Test accuracy in inference mode (`model.evaluate` on the whole test split in one batch: no batch statistics are
used, so the number does not depend on the evaluation batch).

Backend: JAX by default, the fastest for these overhead-bound small-batch steps on CPU (measured on the 2-core
development machine, BN model, batch 2: JAX jit about 1.5 ms per step, TensorFlow XLA about 4 ms, PyTorch
eager hundreds of ms under load), with a persistent compilation cache in the temporary directory (every seed
trains the same function). `--backend` picks another; the backend is printed.

Output (in `--output-dir`; by default `docs/assets/evidence/` for the full and easy profiles and `--render`, and
`benchmarks/results/accuracy_vs_batch_{quick,smoke}/` otherwise), per setting: `accuracy_vs_batch_<setting>.md`
(the tables: accuracy, chosen alphas, training loss, the differences behind the claims, the fixed-step view),
`.png` (the plot, needs matplotlib) and `.json` (one record per run: method, setting, budget, steps, batch size,
seed, test accuracy, alpha, training loss and seconds; and the run's metadata); the easy setting's files have no
suffix. `--smoke` trains each method for a few steps and its accuracies mean nothing. `--render JSON` re-draws
the tables and the plot of a finished run from its JSON, without training.
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
DEFAULT_OUTPUT = {"full": ROOT / "docs" / "assets" / "evidence", "easy": ROOT / "docs" / "assets" / "evidence",
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
    # The two settings where batch size matters, every method under both budgets.
    "full": {"batch_sizes": (2, 4, 8, 32), "seeds": 3, "epochs": 10, "width": 16, "train": NUM_TRAIN,
             "alpha_grid": "default", "settings": ("correlated", "hard"), "budgets": ("examples", "steps")},
    # The published easy run (docs/evidence.md, 2026-11-23): `--easy`.
    "easy": {"batch_sizes": (2, 4, 8, 32, 128), "seeds": 3, "epochs": 20, "width": 16, "train": NUM_TRAIN,
             "alpha_grid": "default", "settings": ("easy",), "budgets": ("examples",)},
    # Every model costs about 15 s of compiling on a loaded 2-core machine, so the quick profile trains fewer.
    "quick": {"batch_sizes": (2, 32), "seeds": 2, "epochs": 6, "width": 16, "train": NUM_TRAIN,
              "alpha_grid": "short", "settings": ("correlated",), "budgets": ("examples",)},
    # Ghost BN is trained only above GHOST, BCN switches mode above ESTIMATE_UP_TO: 4 and 16 reach every branch;
    # at 16 the smoke trains only those two. A few steps each: TensorFlow and PyTorch run them eagerly (tracing
    # costs more than it saves); JAX compiles every eager op too, so there a jitted step (XLA at -O0) is cheaper.
    # The held-out subsets have the smaller batch size (one shape less to compile).
    "smoke": {"batch_sizes": (4, 16), "seeds": 1, "epochs": 1, "width": 8, "train": 16, "held_out": 4,
              "eager_backends": ("tensorflow", "torch"), "alpha_grid": "one",
              "larger_batch_only": ("Ghost BN", "BCN+WS"), "settings": ("easy",), "budgets": ("examples", "steps"),
              "step_methods": ("BN",)},
}

SETTINGS = {
    # Today's task: every digit on a blank 16x16 canvas, shuffled batches. BN does not degrade at small batches.
    "easy": {"canvas": 16, "distractors": 0, "noise": 0.0, "order": "iid", "group": 1},
    # The same images, batched in groups of 4 examples of one class (a batch of 2 or 4 holds one class, of 8 two):
    # the correlated batches of detection (several boxes of one image) and video (consecutive frames). Chosen
    # by a pilot of BN and GN+WS (docs/evidence.md): GN+WS trains at every batch size, BN does not.
    "correlated": {"canvas": 16, "distractors": 0, "noise": 0.0, "order": "class_groups", "group": 4},
    # A harder iid task: a 24x24 canvas with 4 fragments of other digits and pixel noise around each digit.
    "hard": {"canvas": 24, "distractors": 4, "noise": 0.25, "order": "iid", "group": 1},
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
    profile.add_argument("--easy", action="store_true",
                         help="the easy setting's published run: 5 batch sizes, 3 seeds, 20 epochs, ~50 minutes")
    parser.add_argument("--seeds", type=int, help="number of seeds, 0..n-1 (overrides the profile)")
    parser.add_argument("--epochs", type=int, help="passes over the training split (overrides the profile)")
    parser.add_argument("--batch-sizes", help="comma-separated (overrides the profile), e.g. 2,128")
    parser.add_argument("--methods", help="comma-separated subset of the trained methods, e.g. BN,FRN+TLU")
    parser.add_argument("--setting", help="comma-separated settings (overrides the profile): "
                        + ", ".join(SETTINGS))
    parser.add_argument("--budget", choices=("examples", "steps", "both"),
                        help="fixed example budget, fixed step count, or both (overrides the profile)")
    parser.add_argument("--output-dir", type=Path,
                        help="default: docs/assets/evidence/ (full profile, --render), benchmarks/results/ (others)")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="no training: write the table and the plot of a finished run from its JSON")
    args = parser.parse_args(argv)
    args.profile = "smoke" if args.smoke else "quick" if args.quick else "easy" if args.easy else "full"
    args.output_dir = args.output_dir or DEFAULT_OUTPUT[args.profile]
    settings = dict(PROFILES[args.profile])
    if args.seeds is not None:
        settings["seeds"] = args.seeds
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    if args.setting:
        settings["settings"] = tuple(args.setting.split(","))
        unknown = [name for name in settings["settings"] if name not in SETTINGS]
        if unknown:
            parser.error(f"--setting {unknown}: choose from {', '.join(SETTINGS)}")
    if args.budget:
        settings["budgets"] = ("examples", "steps") if args.budget == "both" else (args.budget,)
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

if ARGS is not None and keras.backend.backend() == "jax":
    # Every seed trains the same function: a persistent compilation cache compiles it once per run.
    import tempfile

    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "keras_norms_evidence_jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


# --- Data: digits on a canvas, one fixed stratified split; a setting says how they are placed and batched.
FRAGMENT = 4  # side of a distractor fragment, cut from another digit


def place_on_canvas(images, size=16, seed=0, distractors=0, noise=0.0):
    """Each 8x8 image at a random position (fixed by `seed`) on a `size` x `size` canvas.

    The translations make the task hard enough that accuracies stay below 100% (the 8x8 digits
    upsampled in place gave 99.4-99.8% in a trial), so differences between methods can show.
    With `distractors`, that many FRAGMENT x FRAGMENT pieces of other random digits are drawn
    (pixel-wise maximum) at random positions, then Gaussian pixel noise of std `noise` is added
    and the canvas clipped to [0, 1].
    """
    rng = np.random.default_rng(seed)
    n, h, w = images.shape
    canvas = np.zeros((n, size, size, 1), "float32")
    rows, cols = rng.integers(0, size - h + 1, n), rng.integers(0, size - w + 1, n)
    for i, (r, c) in enumerate(zip(rows, cols)):
        canvas[i, r:r + h, c:c + w, 0] = images[i]
    for i in range(n):
        for _ in range(distractors):
            src, (fr, fc) = rng.integers(n), rng.integers(0, h - FRAGMENT + 1, 2)
            r, c = rng.integers(0, size - FRAGMENT + 1, 2)
            piece = images[src, fr:fr + FRAGMENT, fc:fc + FRAGMENT]
            canvas[i, r:r + FRAGMENT, c:c + FRAGMENT, 0] = np.maximum(
                canvas[i, r:r + FRAGMENT, c:c + FRAGMENT, 0], piece)
    if noise:
        canvas = np.clip(canvas + rng.normal(0.0, noise, canvas.shape).astype("float32"), 0.0, 1.0)
    return canvas


def load_data(setting, num_train, held_out=None):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    spec = SETTINGS[setting]
    digits = load_digits()
    x = place_on_canvas(digits.images.astype("float32") / 16.0, spec["canvas"],
                        distractors=spec["distractors"], noise=spec["noise"])  # (1797, size, size, 1)
    y = digits.target.astype("int32")
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=NUM_TEST, stratify=y, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, train_size=NUM_TRAIN, stratify=y_rest, random_state=0
    )
    return ((x_train[:num_train], y_train[:num_train]), (x_val[:held_out], y_val[:held_out]),
            (x_test[:held_out], y_test[:held_out]))


def class_group_order(y, group, rng):
    """A permutation of the training indices in which every `group` consecutive examples share a class.

    Each class's examples are shuffled and cut into groups of `group`; the groups are shuffled. A class whose
    count `group` does not divide leaves a remainder; the remainders are pooled into mixed groups at random
    positions, so every example is seen once per epoch.
    """
    if len(y) % group:
        raise ValueError(f"class_group_order: {len(y)} examples do not split into groups of {group}")
    groups, rest = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        cut = len(idx) - len(idx) % group
        groups += list(idx[:cut].reshape(-1, group))
        rest += list(idx[cut:])
    rest = rng.permutation(np.asarray(rest, "int64"))
    groups += list(rest.reshape(-1, group))
    return np.concatenate([groups[i] for i in rng.permutation(len(groups))])


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
        "EvoNorm-B0": (keras.layers.Conv2D, lambda: [keras_norms.EvoNormB0(momentum=m)], False),
        # Proxy Norm after GN: GN without its affine, then PN owns the affine and the activation.
        "GN+PN": (keras.layers.Conv2D, lambda: [
            keras_norms.GroupNormalization(groups=GROUPS, center=False, scale=False),
            keras_norms.ProxyNormalization(activation="relu")], False),
        "Batch Renorm": (keras.layers.Conv2D, relu_after(lambda: keras_norms.BatchNormalization(
            momentum=m, renorm=True, renorm_momentum=m)), False),
    }
    if batch_size <= GHOST:  # one ghost batch: Ghost BN is BN, nothing new to train
        del table["Ghost BN"]
    return table


# The rows of the report: a trained method, or a trained method with alpha chosen on the validation split.
ROWS = ("BN", "BN + α", "BN + Precise BN", "Ghost BN", "Ghost BN + α", "BGN", "BGN + α", "Batch Renorm",
        "GN+WS", "BCN+WS", "FRN+TLU", "EvoNorm-S0", "EvoNorm-B0", "GN+PN",
        "MBN", "MBN + Precise BN", "MBN+DF", "MBN+DF + Precise BN")
TUNED = {"BN": "BN + α", "Ghost BN": "Ghost BN + α", "BGN": "BGN + α"}
# The same weights with the statistics recomputed on the whole training split after training
# (`recompute_batch_statistics`): separates what the inference statistics cost from what training did.
PRECISE = {"BN": "BN + Precise BN", "MBN": "MBN + Precise BN", "MBN+DF": "MBN+DF + Precise BN"}
PRECISE_BATCH = 256  # the recompute's batch size (4 batches of the 1024 training images; no effect on the result)
STEP_BUDGET_BATCH = 8  # the fixed-step view: every batch size takes the steps batch size 8 takes in the budget


def cnn(conv_cls, norm_act, width, size):
    inputs = keras.Input((size, size, 1))
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


class Batches(keras.utils.PyDataset):
    """`epochs` x `steps_per_epoch` batches drawn from a stream of permutations of the training split.

    Each permutation is shuffled ("iid") or made of same-class groups ("class_groups", `class_group_order`);
    an epoch of `fit` need not be a pass over the data, so a fixed step count works at every batch size.
    """

    def __init__(self, x, y, batch_size, steps_per_epoch, epochs, order, group, seed):
        super().__init__()
        self.x, self.y, self.batch_size, self.steps_per_epoch = x, y, batch_size, steps_per_epoch
        rng, needed = np.random.default_rng(seed), batch_size * steps_per_epoch * epochs
        passes = -(-needed // len(y))  # whole permutations that cover the examples needed
        parts = [class_group_order(y, group, rng) if order == "class_groups" else rng.permutation(len(y))
                 for _ in range(passes)]
        self.order, self.epoch = np.concatenate(parts)[:needed], 0

    def __len__(self):
        return self.steps_per_epoch

    def __getitem__(self, i):
        # Modulo: Keras may end an epoch more often than it trains one (a peek before training); the stream wraps.
        start = (self.epoch * self.steps_per_epoch + i) * self.batch_size % len(self.order)
        idx = self.order[start:start + self.batch_size]
        return self.x[idx], self.y[idx]

    def on_epoch_end(self):
        self.epoch += 1


def renorm_schedule(steps, epoch_steps):
    """Batch Renorm's bounds: plain BN for the first epoch, then r_max -> 3 and d_max -> 5 by mid-training.

    The paper's shape (a BN warm-up, then linear ramps; its step counts scaled to this run), applied in four
    pieces because every change of the bounds re-compiles the train step.
    """
    warmup = min(epoch_steps, steps // 4)
    return keras_norms.BatchRenormSchedule(rmax=3.0, dmax=5.0, warmup_steps=warmup, rmax_steps=steps // 2,
                                           dmax_steps=steps // 2, update_every=max(1, steps // 4))


def train_one(name, spec, batch_size, seed, settings, data, setting="easy", budget="examples"):
    """Trains one model; returns its records (the trained method, and the α and Precise BN rows of its weights).

    `budget` "examples": `epochs` passes over the training split (1024 * epochs / B steps); "steps": the steps
    that batch size STEP_BUDGET_BATCH takes in that budget, at every batch size.
    """
    (x, y), (x_val, y_val), (x_test, y_test) = data
    conv_cls, norm_act, double_forward = spec
    order, group = SETTINGS[setting]["order"], SETTINGS[setting]["group"]
    keras.backend.clear_session()  # the same layer names for every seed: JAX's compilation cache hits
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    model = cnn(conv_cls, norm_act, settings["width"], x.shape[1])
    if double_forward:
        model = keras_norms.with_double_forward(model)
    epochs = settings["epochs"]
    if budget == "steps":
        steps = epochs * len(x) // min(STEP_BUDGET_BATCH, len(x))
    else:
        steps = epochs * len(x) // batch_size
    epoch_steps = steps // epochs
    warmup = min(epoch_steps, steps // 2)  # one epoch (or half the run) of linear warm-up from 0
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps - warmup, warmup_target=lr_for(batch_size), warmup_steps=warmup)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  run_eagerly=keras.backend.backend() in settings.get("eager_backends", ()))
    callbacks = [renorm_schedule(steps, epoch_steps)] if name == "Batch Renorm" else []
    start = time.perf_counter()
    if order == "iid" and budget == "examples":  # Keras's own shuffling, as the published easy run
        history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
                            callbacks=callbacks)
    else:
        stream = Batches(x, y, batch_size, epoch_steps, epochs, order, group, seed)
        history = model.fit(stream, epochs=epochs, verbose=0, callbacks=callbacks)
    seconds = time.perf_counter() - start

    def test_accuracy():
        logs = model.evaluate(x_test, y_test, batch_size=len(x_test), verbose=0, return_dict=True)
        return float(logs["accuracy"])

    base = {"setting": setting, "budget": budget, "steps": steps, "batch_size": batch_size, "seed": seed,
            "train_seconds": round(seconds, 2), "train_loss": float(history.history["loss"][-1])}
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


SETTING_TITLES = {"easy": "scikit-learn digits on a 16x16 canvas, shuffled batches",
                  "correlated": "digits on a 16x16 canvas, batches of same-class groups of 4",
                  "hard": "digits on a 24x24 canvas with 4 distractor fragments and noise, shuffled batches"}


def budget_runs(runs, budget):
    """The runs of one budget; the published easy run predates the field and is all "examples"."""
    return [run for run in runs if run.get("budget", "examples") == budget]


def versus_bn(summary, batch_sizes, caption="Mean test accuracy minus BN's at the same batch size (percentage points):"):
    """Each row's mean accuracy minus BN's at the same batch size (points), the comparison the verdicts use."""
    out = ["", caption, "",
           "| method | " + " | ".join(f"B={b}" for b in batch_sizes) + " |", "|---|" + "---:|" * len(batch_sizes)]
    for method in ROWS[1:]:
        cells = [difference(summary, method, "BN", b) for b in batch_sizes]
        if any(cells):
            out.append(f"| {method} | " + " | ".join("n/a" if d is None else f"{d[0]:+.1f}" for d in cells) + " |")
    return out


def step_view(runs, meta):
    """The fixed-step view's accuracy table, or no lines when the run has none."""
    steps = budget_runs(runs, "steps")
    if not steps:
        return []
    summary, batch_sizes = summarize(steps), meta["batch_sizes"]
    out = ["", f"Fixed step count: {steps[0]['steps']} steps at every batch size (the steps of batch size "
           f"{meta['step_budget_batch']} in the example budget), test accuracy (%):", "",
           "| method | " + " | ".join(f"B={b}" for b in batch_sizes) + " |", "|---|" + "---:|" * len(batch_sizes)]
    for method in ROWS:
        if any(r["method"] == method for r in steps):
            out.append(f"| {method} | " + " | ".join(cell_text(summary, method, b) for b in batch_sizes) + " |")
    if len({r["method"] for r in steps}) > 1:
        out += versus_bn(summary, batch_sizes, "Fixed step count, mean test accuracy minus BN's at the same batch size "
                         "(percentage points):")
    return out


def markdown(all_runs, meta):
    batch_sizes = meta["batch_sizes"]
    runs = budget_runs(all_runs, "examples")
    summary = summarize(runs)
    seeds = meta["seeds"]
    out = [f"Test accuracy (%), mean ± std over {seeds} seed{'s' if seeds > 1 else ''} "
           f"(setting `{meta.get('setting', 'easy')}`, profile `{meta['profile']}`, backend {meta['backend']}, {meta['epochs']} epochs of "
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
    out += versus_bn(summary, batch_sizes)
    out += step_view(all_runs, meta)
    return "\n".join(out) + "\n"


# Three panels with BN (dashed) on each: the BN family, the batch-independent layers (and BCN), Memorized BN.
# The first two zoom on the top of the scale, where the methods differ; points below it sit on the lower edge
# as a triangle labelled with their value.
PANELS = (("BN family", ("BN", "BN + α", "BN + Precise BN", "Ghost BN", "Ghost BN + α", "BGN", "BGN + α",
                         "Batch Renorm"), 95.0),
          ("batch-independent (and BCN)", ("BN", "GN+WS", "BCN+WS", "FRN+TLU", "EvoNorm-S0", "EvoNorm-B0",
                                           "GN+PN"), 95.0),
          ("Memorized BN", ("BN", "MBN", "MBN + Precise BN", "MBN+DF", "MBN+DF + Precise BN"), None))


def plot(runs, meta, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return None
    summary = summarize(budget_runs(runs, "examples"))
    setting = meta.get("setting", "easy")
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.4))
    for ax, (title, names, floor) in zip(axes, PANELS):
        floor = floor if setting == "easy" else None  # elsewhere the methods spread over the whole scale
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
        else:  # error bars of a spread-out cell would reach past 100%
            ax.set_ylim(max(0.0, ax.get_ylim()[0]), 101)
        ax.set(title=title, xlabel="batch size")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7 if setting != "easy" else 8, loc="lower left" if setting == "easy" else "best")
    axes[0].set_ylabel(f"test accuracy (%), mean ± std over {meta['seeds']} seed(s)")
    axes[-1].set_ylabel("test accuracy (%), full scale")
    fig.suptitle(f"{SETTING_TITLES[setting]}: one CNN, {meta['epochs']} epochs at every batch size, "
                 f"backend {meta['backend']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(runs, meta, output_dir, write_json=True):
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = output_stem(meta.get("setting", "easy"))  # the published easy run's JSON predates settings
    table = markdown(runs, meta)
    (output_dir / f"{stem}.md").write_text(table)
    if write_json:
        (output_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
    png = plot(runs, meta, output_dir / f"{stem}.png")
    print("\n" + table)
    print(f"wrote {output_dir / stem}.md" + (", .json" if write_json else "") + (", .png" if png else ""))


def output_stem(setting):
    """The easy setting keeps the published run's file names; the others get their setting's name."""
    return STEM if setting == "easy" else f"{STEM}_{setting}"


def selected(name, batch_size, budget, settings, wanted):
    """Whether the run trains method `name` at `batch_size` under `budget`: `--methods`, and the profile's limits."""
    if wanted and name not in wanted:
        return False
    only = settings.get("larger_batch_only")  # above the smallest batch size, only these methods
    if only and batch_size > min(settings["batch_sizes"]) and name not in only:
        return False
    step_methods = settings.get("step_methods")  # the fixed-step view's methods, when limited
    return not (budget == "steps" and step_methods and name not in step_methods)


def main():
    args = ARGS
    if args.render:  # no training: the table and the plot again, from a finished run's numbers
        report = json.loads(args.render.read_text())
        write_report(report["runs"], report["meta"], args.output_dir, write_json=False)
        return
    settings = args.settings
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"backend: {keras.backend.backend()} (keras {keras.__version__}), profile {args.profile}, "
          f"settings {list(settings['settings'])}, budgets {list(settings['budgets'])}, "
          f"batch sizes {list(settings['batch_sizes'])}, seeds {settings['seeds']}, epochs {settings['epochs']}"
          + (" (smoke: the accuracies mean nothing)" if args.smoke else ""), flush=True)
    wanted = set(args.methods.split(",")) if args.methods else None
    for setting in settings["settings"]:
        data = load_data(setting, settings["train"], settings.get("held_out"))
        print(f"setting {setting}: train/val/test {len(data[0][0])}/{len(data[1][0])}/{len(data[2][0])}, "
              f"images {data[0][0].shape[1]}x{data[0][0].shape[2]}", flush=True)
        start, runs = time.perf_counter(), []
        for budget in settings["budgets"]:
            for batch_size in settings["batch_sizes"]:
                for seed in range(settings["seeds"]):
                    for name, spec in methods(batch_size).items():
                        if not selected(name, batch_size, budget, settings, wanted):
                            continue
                        for run in train_one(name, spec, batch_size, seed, settings, data, setting, budget):
                            runs.append(run)
                            print(f"{setting} {budget} B={batch_size:<4} seed={seed} {run['method']:<13} "
                                  f"test accuracy {run['test_accuracy']:.4f}  alpha {run['alpha']:.3g}  "
                                  f"train loss {run['train_loss']:.4f}  {run['train_seconds']:6.1f} s", flush=True)
        meta = {"profile": args.profile, "setting": setting, "setting_spec": SETTINGS[setting],
                "budgets": list(settings["budgets"]), "step_budget_batch": STEP_BUDGET_BATCH,
                "backend": keras.backend.backend(), "keras": keras.__version__,
                "batch_sizes": list(settings["batch_sizes"]), "seeds": settings["seeds"],
                "epochs": settings["epochs"], "width": settings["width"], "num_train": len(data[0][0]),
                "lr_rule": LR_RULE, "momentum_rule": MOMENTUM_RULE,
                "cores": cores, "machine": platform.machine(), "python": platform.python_version(),
                "total_minutes": (time.perf_counter() - start) / 60}
        write_report(runs, meta, args.output_dir)


if __name__ == "__main__":
    main()

"""CIFAR-100: Ghost BN, inference example weighing and gamma/beta decay, in turn.

Summers & Dinneen (ICLR 2020) list four things that improve batch norm. This
script trains the same small ResNet with the same seed and budget and adds
three of them one at a time (the fourth, a BN/GN hybrid for tiny batches,
does not apply at batch size 128):

1. BN: `keras_norms.BatchNormalization()` (equal to Keras's BN).
2. Ghost BN: `virtual_batch_size=16` at batch size 128, so every training
   batch is normalized as 8 ghost batches of 16 examples.
3. Ghost BN + inference example weighing: the model of (2), unchanged, with
   one weight alpha for the whole network chosen after training by
   `keras_norms.tune_inference_example_weight` on a held-out split of the
   training set (the last 5000 images; the test set is never used to tune).
4. (3) + weight decay of gamma toward 1 and beta toward 0 with
   `keras_norms.add_gamma_beta_decay`, then its own alpha search.

It prints a table (variant | test accuracy | alpha | train time) and saves a
plot of the validation loss against alpha (if matplotlib is installed).

    KERAS_BACKEND=jax python examples/cifar100_four_things.py      # downloads CIFAR-100
    KERAS_BACKEND=torch python examples/cifar100_four_things.py --smoke  # mock data, seconds

`--smoke` runs on random images from `tfds.testing.mock_data`: it checks
that everything runs, and its accuracies mean nothing.
"""

import argparse
import functools
import math
import sys
import time
from pathlib import Path

import keras
import tensorflow_datasets as tfds

try:
    import keras_norms
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import keras_norms

import example_data  # noqa: E402  (examples/example_data.py, beside this script)
import example_plots  # noqa: E402  (examples/example_plots.py, beside this script)

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "output"
NUM_VAL = 5000  # the last 5000 training images tune alpha
GHOST = 16  # virtual_batch_size of variants 2-4
GAMMA_BETA_DECAY = 1e-4  # our choice for this budget, not a value from the paper
KERNEL_L2 = 2.5e-4  # on every conv/dense kernel, in all four variants
# --smoke: examples per split, model size, batch size and a shorter alpha grid.
SMOKE = {"train": 128, "val": 64, "test": 64, "width": 8, "blocks": 1, "batch_size": 64}
SMOKE_ALPHAS = (0.0, 1 / 32, 1 / 16, 1 / 8)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="default 15 (--smoke: 1)")
    parser.add_argument("--batch-size", type=int, help="default 128 (--smoke: 64)")
    parser.add_argument("--width", type=int, default=16, help="channels of stage 1 (default 16)")
    parser.add_argument("--blocks", type=int, default=2, help="blocks per stage; 2 = ResNet-14")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help="examples/output/")
    parser.add_argument("--smoke", action="store_true", help="mock data, tiny model, 1 epoch")
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (1 if args.smoke else 15)
    args.batch_size = args.batch_size or (SMOKE["batch_size"] if args.smoke else 128)
    if args.smoke:
        args.width, args.blocks = SMOKE["width"], SMOKE["blocks"]
    return args


# --- Data: uint8 images (N, 32, 32, 3) and int labels 0..99, as NumPy arrays.
def load_data(smoke):
    def load():
        splits = tfds.load("cifar100", split=["train", "test"], as_supervised=True)
        return [next(iter(tfds.as_numpy(split.batch(60000)))) for split in splits]  # whole splits

    if smoke:  # random images with CIFAR-100's feature spec, nothing downloaded
        n = SMOKE["train"] + SMOKE["val"]
        with example_data.mock_data(n):  # every split yields n examples; the test split is cut below
            (x, y), (x_test, y_test) = load()
        num_val, num_test = SMOKE["val"], SMOKE["test"]
    else:
        (x, y), (x_test, y_test) = load()
        num_val, num_test = NUM_VAL, len(x_test)
    train, val = (x[:-num_val], y[:-num_val]), (x[-num_val:], y[-num_val:])
    return train, val, (x_test[:num_test], y_test[:num_test])


# --- Model: a ResNet-(6n+2) for 32x32 images; `norm()` makes each norm layer.
def conv(filters, kernel_size, strides=1):
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False,
        kernel_initializer="he_normal", kernel_regularizer=keras.regularizers.L2(KERNEL_L2),
    )


def residual_block(x, filters, strides, norm):
    y = keras.layers.ReLU()(norm()(conv(filters, 3, strides)(x)))
    y = norm()(conv(filters, 3)(y))
    if strides != 1 or x.shape[-1] != filters:
        x = norm()(conv(filters, 1, strides)(x))  # projection shortcut
    return keras.layers.ReLU()(keras.layers.Add()([x, y]))


def resnet(norm, width, blocks):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.RandomFlip("horizontal")(x)  # active in training only
    x = keras.layers.ReLU()(norm()(conv(width, 3)(x)))
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1  # 32 -> 16 -> 8
            x = residual_block(x, filters, strides, norm)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(
        100, activation="softmax", kernel_regularizer=keras.regularizers.L2(KERNEL_L2)
    )(x)
    return keras.Model(inputs, outputs, name=f"resnet{6 * blocks + 2}")


# --- Train: same seed (initial weights, shuffling, flips) and budget for all.
def train(norm, args, data, gamma_beta_decay=None):
    keras.utils.set_random_seed(args.seed)
    model = resnet(norm, args.width, args.blocks)
    if gamma_beta_decay is not None:  # on the built model, before compile()
        keras_norms.add_gamma_beta_decay(model, gamma_beta_decay)
    (x, y), _, _ = data
    steps = args.epochs * math.ceil(len(x) / args.batch_size)
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(0.1, steps), momentum=0.9, nesterov=True
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=2 if args.smoke else 1)
    return model, time.perf_counter() - start


def accuracy_on_test(model, data):
    logs = model.evaluate(*data[2], batch_size=256, verbose=0, return_dict=True)
    return float(logs["accuracy"])


# --- The alpha search: held-out validation loss for each alpha, best one kept.
def search_alpha(model, data, smoke, label):
    x_val, y_val = data[1]
    start = time.perf_counter()
    search = keras_norms.tune_inference_example_weight(
        model, x_val, y_val, candidates=SMOKE_ALPHAS if smoke else None,  # None: around 1/B'
        batch_size=256, verbose=0 if smoke else 1,
    )
    print(f"validation loss by alpha, {label}:\n{search.table()}")
    return search, time.perf_counter() - start


def plot_searches(searches, path):
    curves = {label: (list(search.scores), list(search.scores.values())) for label, search in searches.items()}
    example_plots.line_chart(path, curves, xlabel="inference example weight alpha", ylabel="validation loss",
                             vertical=(1 / GHOST, f"1/B' = 1/{GHOST}"))


def main(argv=None):
    args = parse_args(argv)
    print(f"backend: {keras.backend.backend()}")
    data = load_data(args.smoke)
    print(f"train/val/test images: {len(data[0][0])}/{len(data[1][0])}/{len(data[2][0])}")

    bn = keras_norms.BatchNormalization  # a norm factory: called once per norm layer
    ghost_bn = functools.partial(keras_norms.GhostBatchNormalization, virtual_batch_size=GHOST)
    rows, searches = [], {}

    def add_row(variant, model, train_s, search=None, search_s=None):
        alpha = 0.0 if search is None else search.best
        rows.append({"variant": variant, "test_accuracy": accuracy_on_test(model, data),
                     "alpha": alpha, "train_seconds": train_s, "search_seconds": search_s})

    # (1) plain BN, and (2) Ghost BN with plain inference (alpha = 0).
    model, seconds = train(bn, args, data)
    add_row("(1) BN", model, seconds)
    model, seconds = train(ghost_bn, args, data)
    add_row(f"(2) Ghost BN (B'={GHOST})", model, seconds)

    # (3) The same trained weights as (2): only inference changes.
    searches["Ghost BN"], search_s = search_alpha(model, data, args.smoke, "(3)")
    add_row("(3) Ghost BN + alpha search", model, seconds, searches["Ghost BN"], search_s)

    # (4) Retrained with gamma -> 1 and beta -> 0 decay, then its own search.
    model, seconds = train(ghost_bn, args, data, gamma_beta_decay=GAMMA_BETA_DECAY)
    searches["+ gamma/beta decay"], search_s = search_alpha(model, data, args.smoke, "(4)")
    add_row("(4) Ghost BN + alpha + gamma/beta decay", model, seconds,
            searches["+ gamma/beta decay"], search_s)

    # --- Report: the plot of both searches, then the table.
    args.output_dir.mkdir(parents=True, exist_ok=True)
    plot_searches(searches, args.output_dir / "cifar100_alpha_search.png")
    if args.smoke:
        print("(smoke run on random mock images: these accuracies mean nothing)")
    print("| variant | test accuracy | alpha | train time |")
    print("|---|---|---|---|")
    for row in rows:
        text = "= (2)" if row["variant"].startswith("(3)") else f"{row['train_seconds']:.1f} s"
        if row["search_seconds"] is not None:
            text += f" + {row['search_seconds']:.1f} s alpha search"
        print(f"| {row['variant']} | {row['test_accuracy']:.4f} | {row['alpha']:.4g} | {text} |")
    return rows


if __name__ == "__main__":
    main()

"""Batch-independent normalization: FRN+TLU vs EvoNorm-S0 vs BatchNorm at batch sizes 2 and 32.

BatchNormalization normalizes with statistics of the current batch, so at
batch size 2 its training signal is noisy and its inference statistics
(moving averages) disagree with what training saw. Filter Response
Normalization + TLU (Singh & Krishnan, 2020) and EvoNorm-S0 (Liu et al.,
2020) normalize each example on its own: training at batch size 2 computes
the same function as at batch size 32, and inference is the training function.

This script trains the same small CNN with each normalization at batch sizes
2 and 32 for the same number of epochs and prints a table
(norm | batch size | test accuracy | train time) and saves a bar chart of the
accuracies (`--plot PATH`, default `examples/output/batch_independent.png`). Data: tfds CIFAR-10 (downloaded when
you run it), a subset so the run fits a CPU.

    KERAS_BACKEND=jax python examples/batch_independent.py               # downloads CIFAR-10
    KERAS_BACKEND=torch python examples/batch_independent.py --smoke     # mock data, seconds

`--smoke` uses random images from `tfds.testing.mock_data`: it checks that
everything runs; its accuracies mean nothing.
"""

import argparse
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

SMOKE = {"train": 32, "test": 16, "width": 8, "steps": 4}
BATCH_SIZES = (2, 32)
DEFAULT_PLOT = Path(__file__).resolve().parent / "output" / "batch_independent.png"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-examples", type=int, default=5000, help="subset of the training split")
    parser.add_argument("--width", type=int, default=32, help="channels of the first stage (a multiple of 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="the bar chart (PNG) goes here")
    parser.add_argument("--smoke", action="store_true", help="mock data, tiny model: seconds")
    return parser.parse_args(argv)


# --- Data: CIFAR-10 from tfds, as NumPy arrays.
def load_data(args):
    def load(n_train, n_test):
        train, test = tfds.load("cifar10", split=[f"train[:{n_train}]", f"test[:{n_test}]"], as_supervised=True)
        # take(n): the mock ignores the slices above and yields every mock example in each split.
        return [next(iter(tfds.as_numpy(split.take(n).batch(n)))) for split, n in ((train, n_train), (test, n_test))]

    if args.smoke:  # random images with CIFAR-10's feature spec, nothing downloaded
        with example_data.mock_data(SMOKE["train"] + SMOKE["test"]):
            return load(SMOKE["train"], SMOKE["test"])
    return load(args.train_examples, 2000)


# --- Model: each variant is a "norm + activation" block factory.
def bn_relu():
    return [keras_norms.BatchNormalization(), keras.layers.ReLU()]


def frn_tlu():
    # learned_epsilon matters only for 1x1 maps; the maps here are 32x32 down to 8x8.
    return [keras_norms.FilterResponseNormalization(), keras_norms.TLU()]


def evonorm_s0():
    return [keras_norms.EvoNormS0(groups=8)]  # the activation is part of the layer


VARIANTS = {"BN+ReLU": bn_relu, "FRN+TLU": frn_tlu, "EvoNorm-S0": evonorm_s0}


def cnn(norm_act, width):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for _ in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            for layer in norm_act():
                x = layer(x)
        if stage < 2:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


# --- Train and evaluate each (variant, batch size) with the same seed and number of epochs.
def run(name, batch_size, args, data):
    (x, y), (x_test, y_test) = data
    keras.utils.set_random_seed(args.seed)
    model = cnn(VARIANTS[name], SMOKE["width"] if args.smoke else args.width)
    # The learning rate scales with the batch size (linear rule, base 0.05 at 32), so both sizes see comparable steps.
    model.compile(optimizer=keras.optimizers.SGD(0.05 * batch_size / 32, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    # Smoke: at most SMOKE["steps"], as many as the data holds (32 examples are one batch of 32).
    steps = example_data.steps_per_epoch(SMOKE["steps"], len(x), batch_size) if args.smoke else None
    model.fit(x, y, batch_size=batch_size, epochs=1 if args.smoke else args.epochs,
              steps_per_epoch=steps, verbose=0 if args.smoke else 1)
    seconds = time.perf_counter() - start
    accuracy = model.evaluate(x_test, y_test, batch_size=64, verbose=0, return_dict=True)["accuracy"]
    return {"norm": name, "batch_size": batch_size, "test_accuracy": float(accuracy), "train_seconds": seconds}


def plot(rows, path):
    example_plots.bar_chart(
        path, list(VARIANTS),
        {f"batch size {b}": [r["test_accuracy"] for r in rows if r["batch_size"] == b] for b in BATCH_SIZES},
        ylabel="test accuracy",
    )


def main(argv=None):
    args = parse_args(argv)
    print(f"backend: {keras.backend.backend()}" + (" (smoke: mock data)" if args.smoke else ""))
    data = load_data(args)
    rows = [run(name, batch_size, args, data) for name in VARIANTS for batch_size in BATCH_SIZES]
    print(f"\n| {'norm':<10} | batch size | test accuracy | train time |")
    print(f"|{'-' * 12}|{'-' * 12}|{'-' * 15}|{'-' * 12}|")
    for row in rows:
        print(f"| {row['norm']:<10} | {row['batch_size']:>10} | {row['test_accuracy']:13.4f} "
              f"| {row['train_seconds']:8.1f} s |")
    plot(rows, args.plot)
    return rows


if __name__ == "__main__":
    main()

"""Micro-batch training: BN vs GroupNorm + WS vs Batch-Channel Norm + WS.

Detection and segmentation often train with 1-2 images per device, where
batch statistics are too noisy for BatchNormalization. Qiao et al. (2019)
pair Weight Standardization (WS) with GroupNorm, or with Batch-Channel
Normalization (BCN) whose batch statistics are estimated over many steps.
This script trains the same small ResNet at batch size 2 three ways:

1. BN:      Conv2D -> keras_norms.BatchNormalization
2. GN+WS:   keras_norms.WSConv2D -> keras_norms.GroupNormalization
3. BCN+WS:  keras_norms.WSConv2D -> keras_norms.BatchChannelNormalization(mode="estimate")

and prints a table (variant | test accuracy | train time) and saves the test
accuracy after each epoch as a PNG (`--plot`, default
`examples/output/microbatch_ws_bcn.png`). Data: tfds
CIFAR-10 (downloaded when you run it), a subset so the run fits a CPU.

    KERAS_BACKEND=jax python examples/microbatch_ws_bcn.py              # downloads CIFAR-10
    KERAS_BACKEND=torch python examples/microbatch_ws_bcn.py --smoke    # mock data, seconds

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

SMOKE = {"train": 32, "test": 16, "width": 8, "steps": 8}
DEFAULT_PLOT = Path(__file__).resolve().parent / "output" / "microbatch_ws_bcn.png"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2, help="the micro-batch (default 2)")
    parser.add_argument("--train-examples", type=int, default=5000, help="subset of the training split")
    parser.add_argument("--width", type=int, default=32, help="channels of stage 1 (GN/BCN: a multiple of 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="accuracy curves (PNG) go here")
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


# --- Model: conv + norm factories, so each variant swaps both.
VARIANTS = {
    "BN": (keras.layers.Conv2D, lambda: keras_norms.BatchNormalization()),
    "GN+WS": (keras_norms.WSConv2D, lambda: keras_norms.GroupNormalization(groups=8)),
    "BCN+WS": (keras_norms.WSConv2D, lambda: keras_norms.BatchChannelNormalization(groups=8, mode="estimate")),
}


def resnet(conv_cls, norm, width):
    def conv(filters, strides=1):
        return conv_cls(filters, 3, strides=strides, padding="same", use_bias=False)

    def block(x, filters, strides):
        y = keras.layers.ReLU()(norm()(conv(filters, strides)(x)))
        y = norm()(conv(filters)(y))
        if strides != 1 or x.shape[-1] != filters:
            x = norm()(conv_cls(filters, 1, strides=strides, use_bias=False)(x))
        return keras.layers.ReLU()(keras.layers.Add()([x, y]))

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.ReLU()(norm()(conv(width)(x)))
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        x = block(x, filters, 2 if stage else 1)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


# --- Train and evaluate each variant with the same seed and budget.
def run_variant(name, args, data):
    (x, y), (x_test, y_test) = data
    conv_cls, norm = VARIANTS[name]
    keras.utils.set_random_seed(args.seed)
    model = resnet(conv_cls, norm, SMOKE["width"] if args.smoke else args.width)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    # The test split is evaluated after each epoch (inference mode), for the curves.
    steps = example_data.steps_per_epoch(SMOKE["steps"], len(x), args.batch_size) if args.smoke else None
    history = model.fit(x, y, batch_size=args.batch_size, epochs=1 if args.smoke else args.epochs,
                        steps_per_epoch=steps, verbose=0 if args.smoke else 1,
                        validation_data=(x_test, y_test), validation_batch_size=64)
    seconds = time.perf_counter() - start
    curve = [float(a) for a in history.history["val_accuracy"]]
    return {"variant": name, "test_accuracy": curve[-1], "train_seconds": seconds, "curve": curve}


def main(argv=None):
    args = parse_args(argv)
    print(f"backend: {keras.backend.backend()}, batch size {args.batch_size}"
          + (" (smoke: mock data)" if args.smoke else ""))
    data = load_data(args)
    rows = [run_variant(name, args, data) for name in VARIANTS]
    print(f"\n{'variant':<8} | test accuracy | train time")
    for row in rows:
        print(f"{row['variant']:<8} | {row['test_accuracy']:13.4f} | {row['train_seconds']:8.1f} s")
    curves = {row["variant"]: (range(1, len(row["curve"]) + 1), row["curve"]) for row in rows}
    example_plots.line_chart(args.plot, curves, xlabel="epoch", ylabel="test accuracy")
    return rows


if __name__ == "__main__":
    main()

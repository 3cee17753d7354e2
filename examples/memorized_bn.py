"""Small batches: BN vs Memorized BN vs Memorized BN + Double Forward.

Memorized Batch Normalization (Guo et al., AAAI 2018) pools its statistics
over the last k batches and uses that same memory at inference; Double
Forward re-memorizes each batch under the updated weights after the
optimizer step. This script trains one small CNN on MNIST with small
batches three ways, same seed and budget:

1. BN:        keras_norms.BatchNormalization()
2. MBN:       keras_norms.MemorizedBatchNormalization(memory_size=4)
3. MBN + DF:  the same, the model wrapped by keras_norms.with_double_forward

and prints a table (variant | test accuracy | step time) and saves a bar chart
of the accuracies (`--plot`, default `examples/output/memorized_bn.png`). Data: tfds MNIST
(downloaded when you run it), a subset so the run fits a CPU.

    KERAS_BACKEND=jax python examples/memorized_bn.py                # downloads MNIST
    KERAS_BACKEND=torch python examples/memorized_bn.py --smoke      # mock data, seconds
    KERAS_BACKEND=tensorflow python examples/memorized_bn.py --mock --steps 100   # timings only

`--smoke` uses random images from `tfds.testing.mock_data` and a tiny model:
it checks that everything runs; its accuracies mean nothing. `--mock` keeps
the full model on mock data (for step times, nothing downloaded).
"""

import argparse
import statistics
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

SMOKE = {"train": 40, "test": 16, "width": 4, "steps": 5}
DEFAULT_PLOT = Path(__file__).resolve().parent / "output" / "memorized_bn.png"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8, help="small batches (default 8)")
    parser.add_argument("--memory-size", type=int, default=4, help="k, batches memorized (default 4)")
    parser.add_argument("--train-examples", type=int, default=10000, help="subset of the training split")
    parser.add_argument("--width", type=int, default=16, help="channels of the first convolution")
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (default: the whole subset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="the bar chart (PNG) goes here")
    parser.add_argument("--smoke", action="store_true", help="mock data, tiny model: seconds")
    parser.add_argument("--mock", action="store_true", help="mock data, full model (step times)")
    return parser.parse_args(argv)


# --- Data: MNIST from tfds, as NumPy arrays (uint8 images, int labels).
def load_data(args):
    def load(n_train, n_test):
        train, test = tfds.load("mnist", split=[f"train[:{n_train}]", f"test[:{n_test}]"], as_supervised=True)
        # take(n): the mock ignores the slices above and yields every mock example in each split.
        return [next(iter(tfds.as_numpy(split.take(n).batch(n)))) for split, n in ((train, n_train), (test, n_test))]

    if args.smoke or args.mock:  # random images with MNIST's feature spec, nothing downloaded
        n_train = SMOKE["train"] if args.smoke else (args.steps or 50) * args.batch_size
        n_test = SMOKE["test"] if args.smoke else 64
        with example_data.mock_data(n_train + n_test):
            return load(n_train, n_test)
    return load(args.train_examples, 2000)


# --- Model: the same CNN, only the normalization layer changes.
def cnn(norm, width):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    for filters in (width, 2 * width):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.ReLU()(norm()(x))
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def variants(memory_size):
    mbn = lambda: keras_norms.MemorizedBatchNormalization(memory_size=memory_size)  # noqa: E731
    return {
        "BN": (lambda: keras_norms.BatchNormalization(), False),
        "MBN": (mbn, False),
        "MBN + DF": (mbn, True),
    }


class StepTimer(keras.callbacks.Callback):
    """Wall time between consecutive steps; the first two (tracing, compilation) are left out."""

    def on_train_begin(self, logs=None):
        self.times, self._last = [], None

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now

    def median_ms(self):
        times = self.times[1:] or self.times
        return 1e3 * statistics.median(times) if times else float("nan")


# --- Train and evaluate each variant with the same seed and budget.
def run_variant(name, args, data):
    (x, y), (x_test, y_test) = data
    norm, double_forward = variants(args.memory_size)[name]
    keras.utils.set_random_seed(args.seed)
    model = cnn(norm, SMOKE["width"] if args.smoke else args.width)
    if double_forward:
        model = keras_norms.with_double_forward(model)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = StepTimer()
    steps = example_data.steps_per_epoch(SMOKE["steps"], len(x), args.batch_size) if args.smoke else args.steps
    model.fit(x, y, batch_size=args.batch_size, epochs=1 if args.smoke else args.epochs,
              steps_per_epoch=steps, callbacks=[timer], verbose=0 if (args.smoke or args.mock) else 1)
    accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)["accuracy"]
    return {"variant": name, "test_accuracy": float(accuracy), "step_ms": timer.median_ms()}


def main(argv=None):
    args = parse_args(argv)
    print(f"backend: {keras.backend.backend()}, batch size {args.batch_size}, memory size {args.memory_size}"
          + (" (smoke: mock data)" if args.smoke else " (mock data)" if args.mock else ""))
    data = load_data(args)
    rows = [run_variant(name, args, data) for name in variants(args.memory_size)]
    base = rows[0]["step_ms"]
    print(f"\n{'variant':<9} | test accuracy | step time | vs BN")
    for row in rows:
        print(f"{row['variant']:<9} | {row['test_accuracy']:13.4f} | {row['step_ms']:6.2f} ms | "
              f"{row['step_ms'] / base:5.2f}x")
    example_plots.bar_chart(args.plot, [row["variant"] for row in rows],
                            {"test accuracy": [row["test_accuracy"] for row in rows]}, ylabel="test accuracy")
    return rows


if __name__ == "__main__":
    main()

"""Quickstart: Ghost Batch Normalization and inference example weighing.

What it shows:

* `keras_norms.GhostBatchNormalization(virtual_batch_size=16)`: in training,
  each group of 16 consecutive examples is normalized with its own
  statistics (Hoffer et al., 2017), whatever the batch size.
* `keras_norms.BatchNormalization(inference_example_weight=...)`: at
  inference, the moving statistics are mixed with each example's own
  moments (Summers & Dinneen, 2020).
* Both are ordinary Keras layers: the model trains with `fit`, saves to a
  `.keras` file and reloads with `keras.saving.load_model`; importing
  `keras_norms` is all the loader needs.

The data is scikit-learn's bundled digits dataset (8x8 grayscale, 10
classes), so nothing is downloaded. Run it on any backend:

    KERAS_BACKEND=jax python examples/quickstart.py             # 5 epochs
    KERAS_BACKEND=torch python examples/quickstart.py --smoke   # seconds

It prints the backend, the path of the saved model and a line
`test accuracy: 0.xxxx` measured with the reloaded model.
"""

import argparse
import sys
from pathlib import Path

import keras
import numpy as np
from sklearn.datasets import load_digits

try:
    import keras_norms
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import keras_norms

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "output" / "quickstart.keras"
NUM_TEST = 360  # the last 360 digits are the test set


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="default 5 (--smoke: 1)")
    parser.add_argument("--batch-size", type=int, default=64, help="default 64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="the .keras file (default examples/output/quickstart.keras)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="1 epoch on 256 training digits (a quick check)"
    )
    return parser.parse_args(argv)


# --- Data: 1797 digits, pixels 0..16 scaled to [0, 1], shape (N, 8, 8, 1).
def load_data(smoke):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    y = y.astype("int32")
    x_train, y_train = x[:-NUM_TEST], y[:-NUM_TEST]
    x_test, y_test = x[-NUM_TEST:], y[-NUM_TEST:]
    if smoke:
        x_train, y_train = x_train[:256], y_train[:256]
    return (x_train, y_train), (x_test, y_test)


# --- Model: a small CNN with one Ghost BN and one example-weighing BN.
def build_model():
    # momentum=0.9: 5 epochs are ~115 steps, too few for the default 0.99 to
    # forget the initial moving statistics (mean 0, variance 1).
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", use_bias=False),
            # Training: a batch of 64 is normalized as 4 ghost batches of 16.
            keras_norms.GhostBatchNormalization(virtual_batch_size=16, momentum=0.9),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),  # 8x8 -> 4x4
            keras.layers.Conv2D(64, 3, padding="same", use_bias=False),
            # Inference: 1/16 of each example's own moments, 15/16 moving
            # statistics. Tune the weight on held-out data (0 = plain BN).
            keras_norms.BatchNormalization(inference_example_weight=0.0625, momentum=0.9),
            keras.layers.ReLU(),
            keras.layers.Flatten(),  # keeps the stroke layout (GAP averages it away)
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="quickstart_cnn",
    )


def main(argv=None):
    args = parse_args(argv)
    print(f"backend: {keras.backend.backend()}")
    keras.utils.set_random_seed(args.seed)
    epochs = 1 if args.smoke else args.epochs
    (x_train, y_train), (x_test, y_test) = load_data(args.smoke)

    # --- Train: nothing keras_norms-specific here.
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=epochs, verbose=2 if args.smoke else 1)

    # --- Save and reload: the layers are registered serializable.
    args.output.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.output)
    reloaded = keras.saving.load_model(args.output)

    # The reloaded model computes the same function as the original.
    expected = model.predict(x_test, verbose=0)
    probs = reloaded.predict(x_test, verbose=0)
    np.testing.assert_allclose(probs, expected, atol=1e-5)

    accuracy = float(np.mean(np.argmax(probs, axis=-1) == y_test))
    print(f"saved model: {args.output}")
    print(f"test accuracy: {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()

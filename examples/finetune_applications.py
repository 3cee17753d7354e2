"""Fine-tuning a pretrained Keras Applications ResNet50 at a small batch size: BN frozen vs GN+WS vs BCN+WS vs FRN+TLU.

At a batch size of a few images, BatchNormalization's batch statistics are
noise. The usual fix is to freeze BN (inference mode, moving statistics from
pretraining); the alternative is a batch-independent normalization. This
script fine-tunes Keras Applications' ImageNet ResNet50 with a new classifier
head on tfds `oxford_flowers102` (1020 training images, 102 classes) four
ways, with the same seed, batch size and number of epochs:

1. BN frozen: `keras_norms.freeze_normalization(model)`
2. GN+WS:     `keras_norms.convert_normalization(model, "group_norm", convolutions="ws")`
3. BCN+WS:    `keras_norms.convert_normalization(model, "batch_channel_norm",
               convolutions="ws", mode="estimate")`
4. FRN+TLU:   `keras_norms.convert_normalization(model, "filter_response_norm",
               activations="fuse")` (each ReLU after an FRN becomes a TLU)

It prints a table (variant | test accuracy | best validation accuracy | train
time) and saves the training and validation accuracy per epoch as a PNG in
`--output-dir`. The conversions keep every convolution kernel and BN's
gamma/beta (BCN also the moving statistics); GN, FRN and WS change what the
pretrained layers compute, so they need more fine-tuning than frozen BN to
recover.

    KERAS_BACKEND=jax python examples/finetune_applications.py            # downloads the dataset and the weights
    KERAS_BACKEND=jax python examples/finetune_applications.py --weights resnet50_notop.weights.h5
    KERAS_BACKEND=jax python examples/finetune_applications.py --variants "GN+WS,FRN+TLU" --epochs 10
    KERAS_BACKEND=torch python examples/finetune_applications.py --smoke  # mock data, random weights

`--weights PATH` loads a local weights file of ResNet50 without its top
(`include_top=False`), e.g. one saved with `base.save_weights(...)`, instead
of downloading the ImageNet weights. `--smoke` uses random images from
`tfds.testing.mock_data` and random weights (`weights=None`, unless
`--weights` is given): it checks that everything runs; its accuracies mean
nothing.
"""

import argparse
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf  # tf.data resizing only; the model runs on KERAS_BACKEND
import tensorflow_datasets as tfds

try:
    import keras_norms
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import keras_norms

import example_data  # noqa: E402  (examples/example_data.py, beside this script)
import example_plots  # noqa: E402  (examples/example_plots.py, beside this script)

SMOKE = {"train": 8, "validation": 4, "test": 4, "image_size": 32, "steps": 1}
# dataset -> (classes, (train, validation, test) splits)
DATASETS = {
    "oxford_flowers102": (102, ("train", "validation", "test")),
    "tf_flowers": (5, ("train[:70%]", "train[70%:85%]", "train[85%:]")),  # a single split: hold out 30%
    "cifar10": (10, ("train[:90%]", "train[90%:]", "test")),
}
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "output"


def frozen_copy(model):
    """An independent copy of `model` with its weights and every BN frozen (`model` itself stays trainable)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    keras_norms.freeze_normalization(copy)
    return copy


# variant -> a function of the pretrained model returning a new model to fine-tune.
VARIANTS = {
    "BN frozen": frozen_copy,
    "GN+WS": lambda model: keras_norms.convert_normalization(model, "group_norm", convolutions="ws"),
    "BCN+WS": lambda model: keras_norms.convert_normalization(
        model, "batch_channel_norm", convolutions="ws", mode="estimate"
    ),
    "FRN+TLU": lambda model: keras_norms.convert_normalization(model, "filter_response_norm", activations="fuse"),
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="oxford_flowers102")
    parser.add_argument("--weights", type=Path, default=None,
                        help="local ResNet50 (include_top=False) weights file; default: Keras's ImageNet weights "
                             "(downloaded), or random weights with --smoke")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {list(VARIANTS)} (default: all)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--train-examples", type=int, default=None, help="subset of the training split (default: all)")
    parser.add_argument("--test-examples", type=int, default=1000, help="subset of the test split")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help="the PNG goes here")
    parser.add_argument("--smoke", action="store_true", help="mock data, random weights, tiny images: seconds")
    args = parser.parse_args(argv)
    args.variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown or not args.variants:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if args.smoke:
        args.image_size = SMOKE["image_size"]
    return args


# --- Data: a tfds image dataset, resized, as NumPy arrays in ResNet50's input convention.
def load_data(args):
    size = args.image_size
    if args.smoke:
        counts = (SMOKE["train"], SMOKE["validation"], SMOKE["test"])
    else:
        counts = (args.train_examples, None, args.test_examples)

    def load():
        result = []
        for split, n in zip(DATASETS[args.dataset][1], counts):
            ds = tfds.load(args.dataset, split=split, as_supervised=True)
            ds = ds.take(n) if n else ds
            ds = ds.map(lambda image, label: (tf.image.resize(image, (size, size)), label))
            x, y = next(iter(tfds.as_numpy(ds.batch(1_000_000))))
            result.append((keras.applications.resnet50.preprocess_input(x), y))
        return result

    if args.smoke:  # random images with the dataset's feature spec, nothing downloaded
        with example_data.mock_data(sum(counts)):
            return load()
    return load()


# --- Model: ResNet50 (a nested Functional model) + a new classifier head.
def build_model(args):
    size = args.image_size
    if args.weights is not None:
        weights = str(args.weights)
    else:
        weights = None if args.smoke else "imagenet"
    try:
        base = keras.applications.ResNet50(
            weights=weights, include_top=False, pooling="avg", input_shape=(size, size, 3)
        )
    except Exception as error:  # offline, or a file of another architecture
        raise SystemExit(
            f"Could not load the ResNet50 weights {weights!r}: {error}\n"
            "Offline? Pass --weights PATH, a weights file of ResNet50(include_top=False) saved with "
            "save_weights() (or Keras's resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5)."
        ) from error
    print(f"weights: {weights or 'random (weights=None)'}")
    inputs = keras.Input((size, size, 3), name="image")
    outputs = keras.layers.Dense(DATASETS[args.dataset][0], name="head")(base(inputs))
    return keras.Model(inputs, outputs, name="finetune")


def train(name, model, args, data):
    (x, y), validation, (x_test, y_test) = data
    keras.utils.set_random_seed(args.seed)
    model = VARIANTS[name](model)
    # Smoke on TensorFlow: eager steps (tracing and compiling ResNet50 on a CPU takes over a minute, for one
    # step); JAX keeps its jitted step, which is faster than its eager one even counting compilation.
    eager = args.smoke and keras.backend.backend() == "tensorflow"
    model.compile(optimizer=keras.optimizers.SGD(args.learning_rate, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                  run_eagerly=eager)
    print(f"\n--- {name}")
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=args.batch_size, epochs=1 if args.smoke else args.epochs,
                        steps_per_epoch=SMOKE["steps"] if args.smoke else None, validation_data=validation,
                        validation_batch_size=32, verbose=0 if args.smoke else 1)
    seconds = time.perf_counter() - start
    accuracy = model.evaluate(x_test, y_test, batch_size=32, verbose=0, return_dict=True)["accuracy"]
    return {"variant": name, "test_accuracy": float(accuracy), "train_seconds": seconds,
            "accuracy": history.history["accuracy"], "val_accuracy": history.history["val_accuracy"]}


def plot(rows, path):
    curves = {}
    for row in rows:
        epochs = range(1, len(row["accuracy"]) + 1)
        curves[f"{row['variant']} validation"] = (epochs, row["val_accuracy"])
        curves[f"{row['variant']} train"] = (epochs, row["accuracy"])
    example_plots.line_chart(path, curves, xlabel="epoch", ylabel="accuracy")


def main(argv=None):
    args = parse_args(argv)
    print(f"backend: {keras.backend.backend()}, {args.dataset}, batch size {args.batch_size}"
          + (" (smoke: mock data)" if args.smoke else ""))
    keras.utils.set_random_seed(args.seed)
    model = build_model(args)  # first: a missing weights file fails before any download
    data = load_data(args)
    rows = [train(name, model, args, data) for name in args.variants]
    print(f"\n| {'variant':<9} | test accuracy | best val accuracy | train time |")
    print(f"|{'-' * 11}|{'-' * 15}|{'-' * 19}|{'-' * 12}|")
    for row in rows:
        print(f"| {row['variant']:<9} | {row['test_accuracy']:13.4f} | {max(row['val_accuracy']):17.4f} "
              f"| {row['train_seconds']:8.1f} s |")
    plot(rows, args.output_dir / "finetune_applications.png")
    return rows


if __name__ == "__main__":
    main()

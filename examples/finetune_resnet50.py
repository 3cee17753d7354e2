"""Fine-tuning a pretrained ResNet50 at batch size 4: BN frozen vs GN+WS vs BCN+WS.

At a batch size of a few images, BatchNormalization's batch statistics are
noise. The usual fix is to freeze BN (inference mode, moving statistics from
pretraining); the alternative is a batch-independent normalization. This
script fine-tunes Keras Applications' ImageNet ResNet50 on a small tfds
dataset three ways, with the same seed and budget:

1. BN frozen: `keras_norms.freeze_normalization(model)`
2. GN+WS:     `keras_norms.convert_normalization(model, "group_norm", convolutions="ws")`
3. BCN+WS:    `keras_norms.convert_normalization(model, "batch_channel_norm",
               convolutions="ws", mode="estimate")`

and prints a table (variant | test accuracy | train time). The conversions
keep every convolution kernel and BN's gamma/beta (BCN also the moving
statistics); GN and WS change what the pretrained layers compute, so they
need more fine-tuning than frozen BN to recover.

    KERAS_BACKEND=jax python examples/finetune_resnet50.py                 # downloads tf_flowers + weights
    KERAS_BACKEND=jax python examples/finetune_resnet50.py --dataset cifar10
    KERAS_BACKEND=torch python examples/finetune_resnet50.py --smoke       # mock data, random weights

`--smoke` uses random images from `tfds.testing.mock_data` and random
weights (`weights=None`): it checks that everything runs; its accuracies
mean nothing.
"""

import argparse
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf  # tf.data resizing only; the model runs on KERAS_BACKEND
import tensorflow_datasets as tfds

try:
    import keras_norms
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import keras_norms

SMOKE = {"train": 8, "test": 4, "image_size": 32, "steps": 1}
CLASSES = {"tf_flowers": 5, "cifar10": 10}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(CLASSES), default="tf_flowers")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--train-examples", type=int, default=2000, help="subset used for training")
    parser.add_argument("--test-examples", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="mock data, random weights, tiny images: seconds")
    return parser.parse_args(argv)


# --- Data: a tfds image dataset, resized, as NumPy arrays in ResNet50's input convention.
def load_data(args):
    size = SMOKE["image_size"] if args.smoke else args.image_size
    n_train, n_test = (SMOKE["train"], SMOKE["test"]) if args.smoke else (args.train_examples, args.test_examples)
    # tf_flowers has a single split: hold out its last 20%.
    splits = ["train[:80%]", "train[80%:]"] if args.dataset == "tf_flowers" else ["train", "test"]

    def load():
        result = []
        for split, n in zip(splits, (n_train, n_test)):
            ds = tfds.load(args.dataset, split=split, as_supervised=True).take(n)
            ds = ds.map(lambda image, label: (tf.image.resize(image, (size, size)), label))
            x, y = next(iter(tfds.as_numpy(ds.batch(n))))
            result.append((keras.applications.resnet50.preprocess_input(x), y))
        return result

    if args.smoke:  # random images with the dataset's feature spec, nothing downloaded
        with tfds.testing.mock_data(num_examples=n_train + n_test, policy=tfds.testing.MockPolicy.USE_CODE):
            return load()
    return load()


# --- Model: ImageNet ResNet50 (a nested Functional model) + a new classifier head.
def build_model(args):
    size = SMOKE["image_size"] if args.smoke else args.image_size
    base = keras.applications.ResNet50(
        weights=None if args.smoke else "imagenet", include_top=False, pooling="avg", input_shape=(size, size, 3)
    )
    inputs = keras.Input((size, size, 3), name="image")
    outputs = keras.layers.Dense(CLASSES[args.dataset], name="head")(base(inputs))
    return keras.Model(inputs, outputs, name="finetune")


# --- The three variants: each returns a new model (or the model frozen in place).
def variants(model):
    return {
        "GN+WS": lambda: keras_norms.convert_normalization(model, "group_norm", convolutions="ws"),
        "BCN+WS": lambda: keras_norms.convert_normalization(
            model, "batch_channel_norm", convolutions="ws", mode="estimate"
        ),
        # Last, since it changes `model` itself.
        "BN frozen": lambda: (keras_norms.freeze_normalization(model), model)[1],
    }


def train(name, make, args, data):
    (x, y), (x_test, y_test) = data
    keras.utils.set_random_seed(args.seed)
    model = make()
    # Smoke on TensorFlow: eager steps (tracing and compiling ResNet50 on a CPU takes over a minute, for one
    # step); JAX keeps its jitted step, which is faster than its eager one even counting compilation.
    eager = args.smoke and keras.backend.backend() == "tensorflow"
    model.compile(optimizer=keras.optimizers.SGD(args.learning_rate, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                  run_eagerly=eager)
    start = time.perf_counter()
    model.fit(x, y, batch_size=args.batch_size, epochs=1 if args.smoke else args.epochs,
              steps_per_epoch=SMOKE["steps"] if args.smoke else None, verbose=0 if args.smoke else 2)
    seconds = time.perf_counter() - start
    accuracy = model.evaluate(x_test, y_test, batch_size=32, verbose=0, return_dict=True)["accuracy"]
    return {"variant": name, "test_accuracy": float(accuracy), "train_seconds": seconds}


def main(argv=None):
    args = parse_args(argv)
    print(f"backend: {keras.backend.backend()}, {args.dataset}, batch size {args.batch_size}"
          + (" (smoke: mock data, random weights)" if args.smoke else ""))
    data = load_data(args)
    keras.utils.set_random_seed(args.seed)
    model = build_model(args)
    rows = [train(name, make, args, data) for name, make in variants(model).items()]
    print(f"\n{'variant':<9} | test accuracy | train time")
    for row in rows:
        print(f"{row['variant']:<9} | {row['test_accuracy']:13.4f} | {row['train_seconds']:8.1f} s")
    return rows


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()

"""Prints the `fast_path_report` of a converted Keras Applications ResNet50, as shown on docs/fast-paths.md.

The page shows this script's output on PyTorch; on TensorFlow and JAX the BN rows say "no kernel on this backend".

Usage: KERAS_BACKEND=torch python docs/scripts/fast_path_report_resnet50.py
"""

import keras
import numpy as np

import keras_norms


def main():
    resnet = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    x = np.random.default_rng(0).normal(size=(8, 64, 64, 3)).astype("float32")

    bn = keras_norms.convert_normalization(resnet, "batch_norm")
    report = keras_norms.fast_path_report(bn, x)
    print(f'# keras_norms.fast_path_report(convert_normalization(resnet, "batch_norm"), x), x: {x.shape}')
    print("\n".join(str(report).splitlines()[:4] + ["..."]))
    print()
    print(report.summary())
    print()

    ghost = keras_norms.convert_normalization(resnet, "ghost_batch_norm", virtual_batch_size=3)
    report = keras_norms.fast_path_report(ghost, x)
    print(f'# convert_normalization(resnet, "ghost_batch_norm", virtual_batch_size=3), x: {x.shape}: .summary()')
    print(report.summary())
    print(f"\n# backend: {keras.backend.backend()}, keras_norms {keras_norms.__version__}, keras {keras.__version__}")


if __name__ == "__main__":
    main()

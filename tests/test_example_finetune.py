"""examples/finetune_applications.py runs end to end in `--smoke` mode (mock data, ResNet50 at 32x32), in a subprocess.

Each variant costs a ResNet50 conversion, one training step and an
evaluation: 3-10 s on TensorFlow (eager steps), 15-40 s on torch, 25-55 s on
JAX (two compilations) on 2 shared cores. So TensorFlow runs all four
variants and loads the weights from a local file (`--weights`); torch and JAX
run a share. The converted ResNet50 itself trains on JAX in
tests/test_applications.py, and every target trains on every backend in
tests/test_convert.py.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import keras

from tests.test_examples import assert_quiet

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ALL = ("BN frozen", "GN+WS", "BCN+WS", "FRN+TLU")
VARIANTS = {"tensorflow": ALL, "torch": ("BN frozen", "FRN+TLU"), "jax": ("BN frozen",)}


def test_finetune_applications_smoke(tmp_path):
    variants = VARIANTS.get(keras.backend.backend(), ALL)
    command = [sys.executable, str(EXAMPLES / "finetune_applications.py"), "--smoke",
               "--variants", ",".join(variants), "--output-dir", str(tmp_path)]
    if keras.backend.backend() == "tensorflow":  # building ResNet50 here is cheap on TensorFlow only
        weights = tmp_path / "resnet50_notop.weights.h5"
        keras.applications.ResNet50(
            weights=None, include_top=False, pooling="avg", input_shape=(32, 32, 3)
        ).save_weights(weights)
        command += ["--weights", str(weights)]
    result = subprocess.run(
        command,
        cwd=EXAMPLES.parent,
        env=os.environ.copy(),  # the same KERAS_BACKEND as this run
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert_quiet(result)  # no "ran out of data", tfds mock or deprecation noise (issue 17)
    if "--weights" in command:
        assert f"weights: {command[-1]}" in result.stdout, result.stdout[-2000:]
    # The table: `| variant | test accuracy | best val accuracy | train time |`, one row per variant, in order.
    rows = re.findall(r"^\| ([^|]+?)\s+\|\s+(\d+\.\d+) \|\s+(\d+\.\d+) \|", result.stdout, re.MULTILINE)
    assert [name for name, _, _ in rows] == list(variants), result.stdout[-2000:]
    for _, test_accuracy, val_accuracy in rows:
        assert 0.0 <= float(test_accuracy) <= 1.0 and 0.0 <= float(val_accuracy) <= 1.0
    png = tmp_path / "finetune_applications.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

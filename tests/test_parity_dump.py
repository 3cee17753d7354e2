"""Writes each registered case's outputs on this backend for `tests/parity/`.

Inputs come from NumPy with fixed seeds and weights are set explicitly, so the
three backend runs compute the same function on the same numbers; the final
step of the test command compares them pairwise. Each case also saves a
`.keras` model that the other backends load.
"""

import keras
import numpy as np
import pytest

from tests.backend_utils import layer_gradients
from tests.backend_utils import to_numpy
from tests.cases import CASES
from tests.parity_io import case_files
from tests.test_conformance import build
from tests.test_conformance import make_input


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_dump_outputs_for_cross_backend_parity(case):
    npz, model_path = case_files(keras.backend.backend(), case.name)
    npz.parent.mkdir(parents=True, exist_ok=True)
    x = make_input(case.input_shape, seed=2024)
    upstream = np.random.default_rng(11).normal(size=case.input_shape).astype("float32")
    layer, _ = build(case)
    model = keras.Sequential([keras.Input(case.input_shape[1:]), layer])
    model.save(model_path)
    inference = to_numpy(model(x, training=False))
    y, dx, dweights = layer_gradients(layer, x, upstream, training=True)
    outputs = {"input": x, "inference": inference, "training": y, "d_input": dx}
    outputs.update({f"d_{w.name}": g for w, g in zip(layer.trainable_weights, dweights)})
    outputs.update({f"state_{w.name}": to_numpy(w) for w in layer.non_trainable_weights})
    outputs["inference_after_step"] = to_numpy(layer(x, training=False))
    assert all(np.isfinite(v).all() for v in outputs.values())
    np.savez(npz, **outputs)

"""`.keras` files saved by earlier keras_norms versions load and compute the same outputs, on every backend.

`tests/fixtures/<version>/` holds, per registered layer class, a one-layer model saved by that version and an
`.npz` with its input, its inference and training outputs, and its state after the training call, all checked
against the float64 oracle when written (`scripts/make_fixtures.py`). Each is loaded here (without the registry:
the file alone defines the layer) and must give the same numbers within the cross-backend tolerance.
"""

import json
import pathlib

import keras
import numpy as np
import pytest
from packaging.version import Version

import keras_norms  # registers the layers, which the files name
from tests.backend_utils import call_both_modes
from tests.backend_utils import to_numpy
from tests.tolerances import CROSS_BACKEND
from tests.tolerances import assert_close

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def fixtures():
    found = []
    for manifest in sorted(FIXTURES.glob("*/MANIFEST.json")):
        for name in json.loads(manifest.read_text())["fixtures"]:
            found.append(pytest.param(manifest.parent / name, id=f"{manifest.parent.name}-{name}"))
    return found


def outputs(model, x):
    """`(y_inference, y_training, state after training)` from the model's initial state, as one step per mode."""
    y_inference, y_training = call_both_modes(model, x)
    return y_inference, y_training, {w.name: to_numpy(w) for w in model.layers[-1].non_trainable_weights}


def test_every_registered_layer_class_has_a_fixture():
    from tests.cases import CASES

    manifests = [json.loads(m.read_text()) for m in FIXTURES.glob("*/MANIFEST.json")]
    assert manifests, "no fixtures: run scripts/make_fixtures.py"
    latest = max(manifests, key=lambda m: Version(m["keras_norms"]))
    assert Version(latest["keras_norms"]) <= Version(keras_norms.__version__), "fixtures from a newer keras_norms"
    saved = {entry["layer"] for entry in latest["fixtures"].values()}
    missing = sorted({case.layer.__name__ for case in CASES} - saved)
    assert not missing, (f"layers without a fixture in {latest['keras_norms']}: {missing}: run "
                         "KERAS_BACKEND=tensorflow python scripts/make_fixtures.py --add-missing")


@pytest.mark.parametrize("path", fixtures())
def test_fixture_loads_and_gives_the_saved_outputs(path):
    model = keras.saving.load_model(path.with_suffix(".keras"))
    saved = np.load(path.with_suffix(".npz"))
    y_inference, y_training, state = outputs(model, saved["x"])
    assert_close(y_inference, saved["y_inference"], err_msg="inference output", **CROSS_BACKEND)
    assert_close(y_training, saved["y_training"], err_msg="training output", **CROSS_BACKEND)
    saved_state = {key.split("/", 1)[1]: saved[key] for key in saved.files if key.startswith("state/")}
    assert state.keys() == saved_state.keys()
    for name, value in saved_state.items():
        assert_close(state[name], value, err_msg=f"state {name} after the training call", **CROSS_BACKEND)

"""A `.keras` file saved under one backend loads under this one with equal outputs."""

import keras
import numpy as np
import pytest

from tests.backend_utils import to_numpy
from tests.cases import CASES
from tests.parity_io import BACKENDS
from tests.parity_io import case_files
from tests.parity_io import load_outputs
from tests.tolerances import CROSS_BACKEND

OTHERS = [b for b in BACKENDS if b != keras.backend.backend()]


@pytest.mark.parametrize("saved_on", OTHERS)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_model_saved_on_another_backend_loads_with_equal_outputs(case, saved_on):
    _, model_path = case_files(saved_on, case.name)
    assert model_path.exists(), f"run the {saved_on} tests first: {model_path} is missing"
    saved = load_outputs(saved_on, case.name)
    model = keras.saving.load_model(model_path)
    np.testing.assert_allclose(to_numpy(model(saved["input"], training=False)), saved["inference"], **CROSS_BACKEND)

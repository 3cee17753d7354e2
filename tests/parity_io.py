"""Where the backend runs leave their outputs for the cross-backend comparison."""

import os
import pathlib

import numpy as np

ENV_VAR = "KERAS_NORMS_PARITY_DIR"
BACKENDS = ("tensorflow", "jax", "torch")


def parity_dir():
    default = pathlib.Path(__file__).resolve().parent.parent / ".parity"
    return pathlib.Path(os.environ.get(ENV_VAR, default))


def case_files(backend, case_name):
    folder = parity_dir() / backend
    return folder / f"{case_name}.npz", folder / f"{case_name}.keras"


def load_outputs(backend, case_name):
    path, _ = case_files(backend, case_name)
    with np.load(path) as data:
        return dict(data)

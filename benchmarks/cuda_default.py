"""pytest plugin of `gpu_check.sh`: on torch with CUDA, tensors the tests create go to the GPU.

The op-level tests build their inputs with `torch.tensor(...)`, which would otherwise stay on the CPU and run the
kernels there. JAX and TensorFlow place new arrays on the GPU already.
"""

import os


def pytest_configure(config):
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch

        if torch.cuda.is_available():
            torch.set_default_device("cuda")

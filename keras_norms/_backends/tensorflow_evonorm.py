"""TensorFlow fast paths for the EvoNorm ops: the shared one-pass kernels of `xla_evonorm.py`.

All three differentiate by autodiff: under `tf.function(jit_compile=True)`
the hand-written gradient that JAX's `evonorm_b0` uses was no faster (CPU,
(4, 28, 28, 512): 42 ms both, reference 42 ms; autodiff of the one-pass
kernel 30 ms) and took more temporary memory.
"""

__all__ = ["evonorm_b0", "evonorm_s0"]

from keras_norms._backends.xla_evonorm import evonorm_b0  # noqa: F401
from keras_norms._backends.xla_evonorm import evonorm_s0  # noqa: F401

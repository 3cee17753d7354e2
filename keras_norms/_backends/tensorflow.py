"""TensorFlow fast paths.

`group_norm` and `batch_group_norm`: a one-pass formulation on shifted data with a folded scale and
shift (`keras_norms/ops/_group_norm_one_pass.py`), which XLA fuses; the EvoNorm ops: one-pass
shifted moments (`xla_evonorm.py`, via `tensorflow_evonorm.py`). Every other
op runs its `keras.ops` reference, already written in the fused form
(per-channel scale, one elementwise pass); `tests/test_compile.py` checks
that models using the layers compile. Kernels follow the contract in
`keras_norms/_backends/__init__.py`.
"""

from keras_norms._backends.tensorflow_evonorm import evonorm_b0  # noqa: F401  (re-exported kernels)
from keras_norms._backends.tensorflow_evonorm import evonorm_s0  # noqa: F401
from keras_norms._backends.tensorflow_group_norm import batch_group_norm  # noqa: F401  (re-exported kernels)
from keras_norms._backends.tensorflow_group_norm import group_norm  # noqa: F401

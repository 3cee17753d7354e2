"""TensorFlow fast paths for `keras_norms.ops.group_norm` and `batch_group_norm`: one pass, folded affine.

The kernels are `group_norm_one_pass` and `batch_group_norm_one_pass` of
`keras_norms.ops._group_norm_one_pass`, written in `keras.ops` and shared
with JAX: the per-cell sums of the shifted data and of its square
in one fused pass, clamped variance, then one multiply-add with a folded
per-channel scale and shift, which XLA fuses under `tf.function(jit_compile=True)`. They are
taken for float32 and float64 inputs (the public ops upcast 16-bit inputs
first), any rank >= 2, any channel axis but 0, and (batch-group norm) any
batch size, a smaller trailing example group included; they decline nothing
else.
"""

from keras_norms.ops._group_norm_one_pass import batch_group_norm_one_pass as batch_group_norm  # noqa: F401
from keras_norms.ops._group_norm_one_pass import group_norm_one_pass as group_norm  # noqa: F401

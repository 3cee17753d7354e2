"""JAX fast path for `keras_norms.ops.group_norm`: one pass, folded affine.

The kernel is `keras_norms.ops._group_norm_one_pass.group_norm_one_pass`,
written in `keras.ops` and shared with TensorFlow: the per-group sums of the
shifted data and of its square in one fused pass, clamped variance, then one
multiply-add with a folded per-channel scale and shift, which XLA fuses under
`jax.jit`. It is taken for float32 and float64 inputs (the public op upcasts
16-bit inputs first), any rank >= 2 and any channel axis but 0; it declines
nothing else.
"""

from keras_norms.ops._group_norm_one_pass import group_norm_one_pass as group_norm  # noqa: F401

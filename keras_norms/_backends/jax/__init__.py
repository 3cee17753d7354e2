"""JAX fast paths.

The kernels of `group_norm`, `batch_group_norm`, `evonorm_b0` and
`evonorm_s0` are written in `keras.ops` and shared with TensorFlow
(`keras_norms/_backends/xla/`); every other op runs its `keras.ops`
reference, already written in the fused form (per-channel scale, one
elementwise pass), and `tests/test_compile.py` checks that models using the
layers compile. Here: the cross-replica sum over a bound axis or global
arrays (`distributed.py`) and the Double Forward step (`trainer.py`).
"""

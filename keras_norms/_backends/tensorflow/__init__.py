"""TensorFlow fast paths.

The kernels of `group_norm`, `batch_group_norm`, `evonorm_b0` and
`evonorm_s0` are written in `keras.ops` and shared with JAX
(`keras_norms/_backends/xla/`); every other op runs its `keras.ops`
reference, already written in the fused form (per-channel scale, one
elementwise pass), and `tests/test_compile.py` checks that models using the
layers compile. Here: the replica context's cross-replica sum
(`distributed.py`) and the Double Forward step (`trainer.py`).
"""

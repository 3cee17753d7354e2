"""Kernels TensorFlow and JAX share: written in `keras.ops`, in the forms XLA fuses.

`group_norm.py`: one-pass group and batch-group normalization with a folded
scale and shift; `evonorm.py`: the EvoNorm ops from one-pass shifted
moments. Each kernel names the backends it serves in its `@kernel`.
"""

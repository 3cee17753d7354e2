"""PyTorch fast paths: fused native kernels and hand-written backward passes behind `keras_norms.ops`.

One module per family; `_common.py` holds what they share. Each kernel has
the signature of the op it serves (`@kernel("op", backends=("torch",))`) and
declines with `decline(reason)`, deciding from static facts only (rank,
axis, dtype, layout).
"""

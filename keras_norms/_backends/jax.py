"""JAX fast paths.

None yet: the `keras.ops` reference of every op is already written in the
folded form (per-channel scale and shift, one multiply-add over the tensor)
that XLA fuses under `jax.jit`; `tests/test_compile.py` checks that models
using the layers compile. Kernels added here follow the contract in
`keras_norms/_backends/__init__.py`.
"""

"""Backend fast paths: one package per backend, and `xla/` for what TensorFlow and JAX share.

Each package registers its kernels with `keras_norms.ops._dispatch.kernel`
and holds the backend's cross-replica sum (`distributed.py`) and Double
Forward step (`trainer.py`); `keras_norms.ops._dispatch` imports the active
backend's packages on first use. Nothing is exported from here.
"""

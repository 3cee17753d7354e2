"""Runtime dispatch to backend fast paths.

Each backend module (`torch.py`, `tensorflow.py`, `jax.py`) may define a kernel
with the *name and signature* of a public op in `keras_norms.ops`. A kernel
returns `None` to decline, deciding only from static facts (rank, axis, dtype,
layout, device), never from values, so tracing stays valid. `dispatch` runs the
kernel when fast paths are enabled and the inputs are concrete, and otherwise,
or when the kernel declines, the `keras.ops` reference.

Imports of torch, tensorflow and jax live only in this package, and a backend
module is imported only when that backend is active.
"""

import contextlib
import importlib

import keras

from keras_norms import config

_MODULES = {
    "tensorflow": "keras_norms._backends.tensorflow",
    "jax": "keras_norms._backends.jax",
    "torch": "keras_norms._backends.torch",
}
_loaded = {}
_recorders = []


def backend_module():
    """Returns the fast-path module of the active Keras backend, or `None`."""
    name = keras.backend.backend()
    if name not in _loaded:
        path = _MODULES.get(name)
        _loaded[name] = importlib.import_module(path) if path else None
    return _loaded[name]


def distributed_module():
    """The active backend's cross-replica module (`<backend>_distributed.py`), or `None`.

    It defines `replicas_active()`, `cross_replica_sum(tensors)` and
    `device_shards()`; `keras_norms/ops/_replicas.py` builds on them.
    """
    name = keras.backend.backend()
    key = name + "_distributed"
    if key not in _loaded:
        path = _MODULES.get(name)
        _loaded[key] = importlib.import_module(path + "_distributed") if path else None
    return _loaded[key]


def _kernel(name):
    module = backend_module()
    return getattr(module, name, None) if module is not None else None


def _is_symbolic(value):
    if isinstance(value, (list, tuple)):
        return any(_is_symbolic(v) for v in value)
    return isinstance(value, keras.KerasTensor)


def dispatch(name, reference, *args, **kwargs):
    """Calls the backend kernel `name` if it accepts, else `reference`.

    Args:
        name: str, the op's name; also the kernel's name in the backend module.
        reference: the `keras.ops` implementation, called with the same
            arguments when no kernel runs.
        *args, **kwargs: the op's arguments.

    Returns:
        The op's result, from the kernel or from the reference.
    """
    result = None
    kernel = _kernel(name) if config.fast_paths_enabled() else None
    if kernel is not None and not _is_symbolic(args):
        result = kernel(*args, **kwargs)
    path = "reference" if result is None else "fast"
    for record in _recorders:
        record.append((name, path))
    return reference(*args, **kwargs) if result is None else result


def has_kernel(name):
    """Whether the active backend defines a fast path called `name`."""
    return _kernel(name) is not None


@contextlib.contextmanager
def record_dispatch():
    """Records `(op name, "fast" | "reference")` for each dispatched call.

    For tests and debugging: tells which implementation ran. Under tracing the
    record is made at trace time.

    Yields:
        A list that fills up while the block runs.
    """
    calls = []
    _recorders.append(calls)
    try:
        yield calls
    finally:
        _recorders.remove(calls)

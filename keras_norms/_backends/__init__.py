"""Runtime dispatch to backend fast paths.

Each backend module (`torch.py`, `tensorflow.py`, `jax.py`) may define a kernel
with the *name and signature* of a public op in `keras_norms.ops`. A kernel
declines by returning `decline("reason in plain words")`, deciding only from
static facts (rank, axis, dtype, layout, device), never from values, so tracing
stays valid. `dispatch` runs the kernel when fast paths are enabled and the
inputs are concrete, and otherwise, or when the kernel declines, the
`keras.ops` reference; it records which path ran and why (see
`keras_norms.config.record_dispatch`).

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


class Declined:
    """A kernel's refusal, with the reason in plain words; falsy, never a result.

    Kernels return one through `decline`; `dispatch` then runs the reference
    and records the reason.
    """

    __slots__ = ("reason",)

    def __init__(self, reason):
        self.reason = reason

    def __bool__(self):
        return False

    def __repr__(self):
        return f"Declined({self.reason!r})"


def decline(reason):
    """What a kernel returns to decline: `reason` says why, for a user to read."""
    return Declined(reason)


def decline_input(x, accepted="float32/float64"):
    """`decline` for an input `x` the kernel does not take: its dtype, or not a tensor of the backend."""
    if not keras.ops.is_tensor(x):
        return Declined(f"input is a {type(x).__name__}, not a {keras.backend.backend()} tensor")
    return Declined(f"{keras.backend.standardize_dtype(x.dtype)} input (kernel takes {accepted})")


def _run_kernel(name, args, kwargs):
    """`(result, None)` from the kernel, or `(None, reason)` when none runs."""
    if not config.fast_paths_enabled():
        return None, "fast paths switched off"
    kernel = _kernel(name)
    if kernel is None:
        return None, "no kernel on this backend"
    if _is_symbolic(args) or _is_symbolic(list(kwargs.values())):
        return None, "symbolic input"
    result = kernel(*args, **kwargs)
    if isinstance(result, Declined) or result is None:
        # A kernel must say why (tests/test_dispatch_report.py checks every kernel).
        return None, getattr(result, "reason", None) or "declined (no reason given)"
    return result, None


def _record(name, path, reason):
    for calls in _recorders:
        calls.append(config.DispatchRecord(name, path, reason))


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
    result, reason = _run_kernel(name, args, kwargs)
    _record(name, "fast" if reason is None else "reference", reason)
    return result if reason is None else reference(*args, **kwargs)


def run_reference(name, reason, reference, *args, **kwargs):
    """Runs `reference` for the op `name` without trying a kernel, recording `reason` (why not).

    For ops that decide before dispatching, e.g. a synchronized call whose
    kernel would see one replica's batch only.
    """
    _record(name, "reference", reason)
    return reference(*args, **kwargs)


def has_kernel(name):
    """Whether the active backend defines a fast path called `name`."""
    return _kernel(name) is not None


@contextlib.contextmanager
def record_dispatch():
    """The implementation of `keras_norms.config.record_dispatch` (see there).

    Yields:
        A list of `keras_norms.config.DispatchRecord` that fills up while the
        block runs.
    """
    calls = []
    _recorders.append(calls)
    try:
        yield calls
    finally:
        _recorders.remove(calls)

"""The kernel registry and runtime dispatch to backend fast paths.

A kernel is a function with the *signature* of a public op in
`keras_norms.ops`, registered for that op and the backends it serves:

```python
@kernel("group_norm", backends=("torch",))
def group_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3, groups=32): ...
```

It declines by returning `decline("reason in plain words")`, deciding only
from static facts (rank, axis, dtype, layout, device), never from values, so
tracing stays valid. `dispatch` runs the kernel when fast paths are enabled
and the inputs are concrete, and otherwise, or when the kernel declines, the
`keras.ops` reference; it records which path ran and why (see
`keras_norms.config.record_dispatch`).

Kernels live in one package per backend, `keras_norms/_backends/<backend>/`,
and those TensorFlow and JAX share in `keras_norms/_backends/xla/`. `_load`
imports the active backend's packages on the first dispatch (never when
`keras_norms.ops` is imported), which registers their kernels; the same
packages hold the backend's cross-replica sum (`distributed.py`) and Double
Forward step (`trainer.py`), found by `backend_part`. Imports of torch,
tensorflow and jax live only in those packages.
"""

import contextlib
import contextvars
import importlib
import importlib.util
import pkgutil

import keras

from keras_norms import config

BACKENDS = ("tensorflow", "jax", "torch")
# Kernels written in `keras.ops` that XLA fuses, shared by the backends named.
_SHARED_PACKAGES = {"tensorflow": ("xla",), "jax": ("xla",)}
_PACKAGE = "keras_norms._backends"

_kernels = {}  # (op, backend) -> kernel
# True while a layer called with training=False runs its ops (set by `inference_call`).
_INFERENCE = contextvars.ContextVar("keras_norms_inference_call", default=False)
_parts = {}  # (backend, module name) -> module of the backend's own package
_loaded = set()
_recorders = []


def kernel(op, backends):
    """Registers the decorated function as the fast path of the op `op` on `backends`.

    Args:
        op: str, the name of the public op in `keras_norms.ops` whose
            signature the kernel has.
        backends: tuple of backend names among "tensorflow", "jax" and
            "torch". One kernel per op and backend
            (`tests/test_dispatch_report.py` checks both).

    Returns:
        A decorator that registers its function and returns it unchanged.
    """

    def register(function):
        for backend in backends:
            _kernels[(op, backend)] = function
        return function

    return register


def _load(backend):
    """Imports every module of the `backend` packages once, registering their kernels."""
    if backend in _loaded:
        return
    for package_name in (backend,) + _SHARED_PACKAGES.get(backend, ()):
        name = f"{_PACKAGE}.{package_name}"
        if importlib.util.find_spec(name) is None:  # a backend without fast paths
            continue
        package = importlib.import_module(name)
        for info in pkgutil.iter_modules(package.__path__, name + "."):
            module = importlib.import_module(info.name)
            if package_name == backend:
                _parts[(backend, info.name.rsplit(".", 1)[1])] = module
    _loaded.add(backend)


def registered_kernels(backend=None):
    """`{(op, backend): kernel}` of `backend` (default: the active one), its packages loaded."""
    backend = backend or keras.backend.backend()
    _load(backend)
    return {key: fn for key, fn in _kernels.items() if key[1] == backend}


def backend_part(part):
    """The module `keras_norms._backends.<active backend>.<part>` (e.g. "distributed", "trainer"), or `None`."""
    backend = keras.backend.backend()
    _load(backend)
    return _parts.get((backend, part))


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
    backend = keras.backend.backend()
    _load(backend)
    fast = _kernels.get((name, backend))
    if fast is None:
        return None, "no kernel on this backend"
    if _is_symbolic(args) or _is_symbolic(list(kwargs.values())):
        return None, "symbolic input"
    result = fast(*args, **kwargs)
    if isinstance(result, Declined) or result is None:
        # A kernel must say why (tests/test_dispatch_report.py checks every kernel).
        return None, getattr(result, "reason", None) or "declined (no reason given)"
    return result, None


def _record(name, path, reason):
    for calls in _recorders:
        calls.append(config.DispatchRecord(name, path, reason))


def dispatch(name, reference, *args, **kwargs):
    """Calls the kernel registered for the op `name` if it accepts, else `reference`.

    Args:
        name: str, the op's name, under which its kernels are registered.
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


@contextlib.contextmanager
def inference_call(active=True):
    """Marks the ops called in the block as an inference forward pass, when `active`.

    A layer called with `training=False` (`predict`, `evaluate`) wraps its ops
    in it, so that a kernel that is faster only together with its backward
    pass can decline a forward pass alone (`is_inference_call`). A static fact
    of the call, like the others kernels decide from: it holds while the call
    is traced. `training=None` (a layer called directly) is not marked.
    """
    token = _INFERENCE.set(bool(active))
    try:
        yield
    finally:
        _INFERENCE.reset(token)


def is_inference_call():
    """Whether the current op runs inside `inference_call` (a layer's inference forward pass)."""
    return _INFERENCE.get()


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

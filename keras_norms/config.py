"""Package configuration: the switch for backend fast paths, and which path ran.

Every backend fast path (for example `torch.nn.functional.batch_norm` behind
`keras_norms.ops.batch_norm`) can be switched off, which makes every op run its
reference implementation written in `keras.ops`. Three ways, in order of scope:

* the environment variable `KERAS_NORMS_FAST_PATHS=0` (read once, at import);
* `keras_norms.config.set_fast_paths(False)`, or `fast_paths(False)` called
  without `with`, for the rest of the process;
* `with keras_norms.config.fast_paths(False): ...` for a block (the previous
  setting comes back on exit).

The switch is read when an op is called, so under `tf.function` or `jax.jit`
it takes effect at trace time: re-trace (for a Keras model,
`model.make_train_function(force=True)` or recompile) after changing it.

`with keras_norms.config.record_dispatch() as calls: ...` lists, op by op,
which path ran and why a kernel declined; `keras_norms.fast_path_report` does
the same per layer of a model.
"""

import os
from typing import NamedTuple

ENV_VAR = "KERAS_NORMS_FAST_PATHS"
_FALSE_WORDS = ("0", "false", "no", "off")


def _enabled_from_env():
    return os.environ.get(ENV_VAR, "1").strip().lower() not in _FALSE_WORDS


_fast_paths_enabled = _enabled_from_env()


def fast_paths_enabled():
    """Returns whether backend fast paths may be used.

    Returns:
        `True` unless they were switched off by `set_fast_paths(False)`,
        `fast_paths(False)` or `KERAS_NORMS_FAST_PATHS=0`.
    """
    return _fast_paths_enabled


def set_fast_paths(enabled):
    """Switches every backend fast path on or off for this process.

    Args:
        enabled: bool. `False` makes every op use its `keras.ops` reference.

    Raises:
        TypeError: if `enabled` is not a bool.
    """
    global _fast_paths_enabled
    if not isinstance(enabled, bool):
        raise TypeError(
            "keras_norms.config.set_fast_paths: `enabled` must be a bool, "
            f"received {enabled!r}. Pass True or False."
        )
    _fast_paths_enabled = enabled


class fast_paths:  # noqa: N801  (a function to its users, as `torch.set_grad_enabled`)
    """Switches fast paths on or off now; used with `with`, only inside the block.

    Like `torch.set_grad_enabled`: the call applies `enabled` at once (so
    `fast_paths(False)` alone switches fast paths off for the rest of the
    process, as `set_fast_paths(False)` does), and a `with` block restores the
    previous setting on exit, also when the block raises.

    Args:
        enabled: bool, the new setting.

    Raises:
        TypeError: if `enabled` is not a bool.

    Example:

    ```python
    with keras_norms.config.fast_paths(False):
        y = layer(x, training=True)  # keras.ops reference path
    # the previous setting again here
    ```
    """

    def __init__(self, enabled):
        self._previous = _fast_paths_enabled
        set_fast_paths(enabled)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        set_fast_paths(self._previous)
        return False


class DispatchRecord(NamedTuple):
    """One dispatched op call: `op`, `path` (`"fast"` or `"reference"`) and `reason`.

    `reason` says in words why the reference ran ("fast paths switched off",
    "symbolic input", "no kernel on this backend", "synchronized across
    replicas", or the kernel's own, e.g. "channel axis in the middle (only
    last or 1)"); `None` when the fast path ran.
    """

    op: str
    path: str
    reason: str | None = None


def record_dispatch():
    """Records a `DispatchRecord(op, path, reason)` for each op call in a block.

    Tells which implementation ran, op by op (`keras_norms.fast_path_report`
    gives the same per layer of a model). Under `tf.function` or `jax.jit` the
    record is made when the function is traced, not at every call.

    Returns:
        A context manager whose `with ... as calls` list fills up while the
        block runs.

    Example:

    ```python
    with keras_norms.config.record_dispatch() as calls:
        keras_norms.ops.batch_norm(x)
    print(calls)  # e.g. [DispatchRecord(op='batch_norm', path='fast', reason=None)]
    ```
    """
    from keras_norms.ops import _dispatch  # it imports this module: imported when used

    return _dispatch.record_dispatch()

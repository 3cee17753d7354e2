"""Package configuration: the switch for backend fast paths.

Every backend fast path (for example `torch.nn.functional.batch_norm` behind
`keras_norms.ops.batch_norm`) can be switched off, which makes every op run its
reference implementation written in `keras.ops`. Three ways, in order of scope:

* the environment variable `KERAS_NORMS_FAST_PATHS=0` (read once, at import);
* `keras_norms.config.set_fast_paths(False)` for the rest of the process;
* `with keras_norms.config.fast_paths(False): ...` for a block.

The switch is read when an op is called, so under `tf.function` or `jax.jit`
it takes effect at trace time: re-trace (for a Keras model,
`model.make_train_function(force=True)` or recompile) after changing it.
"""

import contextlib
import os

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


@contextlib.contextmanager
def fast_paths(enabled):
    """Context manager that switches fast paths on or off inside a block.

    Args:
        enabled: bool, the setting inside the block; the previous setting is
            restored on exit, also when the block raises.

    Example:

    ```python
    with keras_norms.config.fast_paths(False):
        y = layer(x, training=True)  # keras.ops reference path
    ```
    """
    previous = _fast_paths_enabled
    set_fast_paths(enabled)
    try:
        yield
    finally:
        set_fast_paths(previous)

"""Which implementation each layer of a model ran: `fast_path_report`.

`keras_norms.config.record_dispatch` lists op calls; this module runs one
call of a model under it and attributes every op call to the layer whose
`call` made it (the innermost one, nested layers and models included), by
wrapping each sublayer's `call` for the duration of the report.
"""

from typing import NamedTuple

import keras

from keras_norms import config

_COLUMNS = ("layer", "class", "op", "path", "reason")


class FastPathRecord(NamedTuple):
    """One op call of one layer: which implementation ran, and why not the fast one.

    `path` is `"fast"` (a backend kernel) or `"reference"` (the `keras.ops`
    implementation); `reason` says why the reference ran, `None` for `"fast"`.
    """

    layer: str
    layer_class: str
    op: str
    path: str
    reason: str | None = None


def _table(header, rows):
    rows = [tuple("-" if cell is None else str(cell) for cell in row) for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = [header] + rows
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


class FastPathReport:
    """The result of `fast_path_report`: its `records`, printed as an aligned table.

    `str(report)` has one row per op call; `report.summary()` groups the rows
    that differ only by the layer's name and counts them. Iterating a report
    iterates its records.

    Args:
        records: the `FastPathRecord`s, in call order.
    """

    def __init__(self, records):
        self.records = list(records)

    def __iter__(self):
        return iter(self.records)

    def __len__(self):
        return len(self.records)

    def __str__(self):
        if not self.records:
            return "no keras_norms op was dispatched (no keras_norms layer ran)"
        return _table(_COLUMNS, self.records)

    __repr__ = __str__

    def summary(self):
        """Returns the table with identical (class, op, path, reason) rows grouped, with their count."""
        counts = {}
        for record in self.records:
            key = (record.layer_class, record.op, record.path, record.reason)
            counts[key] = counts.get(key, 0) + 1
        if not counts:
            return str(self)
        return _table(("count",) + _COLUMNS[1:], [(n,) + key for key, n in counts.items()])


class _Attribution:
    """Assigns each dispatch record to the layer whose `call` was innermost when it was made."""

    def __init__(self, calls, default):
        self.calls, self.owners, self.stack = calls, [], [default]

    def flush(self):
        self.owners.extend([self.stack[-1]] * (len(self.calls) - len(self.owners)))

    def wrap(self, layer, call):
        def attributed_call(*args, **kwargs):
            self.flush()
            self.stack.append(layer)
            try:
                return call(*args, **kwargs)
            finally:
                self.flush()
                self.stack.pop()

        return attributed_call


def _describe(value):
    text = repr(value)
    return f"{text[:60]}... ({type(value).__name__})" if len(text) > 60 else f"{text} ({type(value).__name__})"


def fast_path_report(model, inputs, training=True):
    """Runs one call of `model` and reports, per layer, which implementation each op took.

    Every op of `keras_norms.ops` that a layer calls either runs a backend
    fast path (a native kernel) or its `keras.ops` reference; this tells which,
    and for the reference why: the kernel's own reason (e.g. "channel axis in
    the middle (only last or 1)", "batch size 6 not divisible by
    virtual_batch_size 4"), "no kernel on this backend", "fast paths
    switched off" or "synchronized across replicas". The call is eager (the
    answer for a compiled function is the same: kernels decide from static
    facts only). Keras's own layers call no `keras_norms` op and do not appear.

    The model's state is left as it was: the non-trainable variables (moving
    statistics, counters, seeds) are saved before the call and restored after
    it, also when it raises. An unbuilt model is built first by one inference
    call.

    Args:
        model: a `keras.Model` or `keras.layers.Layer`.
        inputs: what `model` is called on, e.g. a batch of training data.
        training: bool, the mode of the call. Defaults to `True` (most fast
            paths are training kernels).

    Returns:
        A `FastPathReport`: `report.records` is a list of
        `FastPathRecord(layer, layer_class, op, path, reason)`, one per op
        call in call order; `print(report)` shows them as a table and
        `print(report.summary())` groups identical rows with a count.

    Raises:
        ValueError: if `model` is not a Keras model or layer.

    Example:

    ```python
    inputs = keras.Input((8, 8, 16))
    outputs = keras_norms.GhostBatchNormalization(virtual_batch_size=4)(inputs)
    model = keras.Model(inputs, outputs)
    report = keras_norms.fast_path_report(model, np.ones((8, 8, 8, 16), "float32"))
    print(report)
    ```

    Reference:
        - The Fast paths page of these docs (`docs/fast-paths.md`): each
          kernel, when it runs and when it declines.
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            f"fast_path_report: `model` must be a keras.Model or keras.layers.Layer, received {_describe(model)}. "
            "Pass the model (or layer) to run, e.g. keras_norms.fast_path_report(model, x)."
        )
    if not model.built:
        model(inputs, training=False)
    state = [(v, keras.ops.convert_to_numpy(v.value)) for v in model.non_trainable_variables]
    # Keras 3: the model and all its sublayers, nested ones included, each once.
    layers = model._flatten_layers(include_self=True, recursive=True)
    wrapped = []  # (layer, the instance's own `call` attribute or None) to put back
    with config.record_dispatch() as calls:
        attribution = _Attribution(calls, model)
        try:
            for layer in layers:
                own = vars(layer).get("call")
                # object.__setattr__: no Keras or torch attribute tracking of a temporary attribute
                object.__setattr__(layer, "call", attribution.wrap(layer, layer.call))
                wrapped.append((layer, own))
            model(inputs, training=training)
        finally:
            for layer, own in reversed(wrapped):
                if own is None:
                    object.__delattr__(layer, "call")
                else:
                    object.__setattr__(layer, "call", own)
            for variable, value in state:
                variable.assign(value)
        attribution.flush()
    return FastPathReport(
        FastPathRecord(owner.name, type(owner).__name__, record.op, record.path, record.reason)
        for owner, record in zip(attribution.owners, calls)
    )

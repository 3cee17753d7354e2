"""Recomputing the population statistics of a trained model ("Precise BN").

`recompute_batch_statistics` replaces the moving averages of every
batch-dependent normalization layer of a model by the exact statistics of
that layer's inputs over a dataset. Peers: fvcore/detectron2 `update_bn_stats`
and timm's `PreciseBN` hook (PyTorch only), torch's
`torch.optim.swa_utils.update_bn` (an average of per-batch variances, not the
pooled variance).
"""

import keras
import numpy as np
from keras.src.trainers.data_adapters import get_data_adapter

from keras_norms.layers._base import assign_population_state
from keras_norms.ops import _dispatch

# Keras's own BatchNormalization: the state it normalizes with at inference.
_KERAS_BN_STATISTICS = {"moving_mean": "mean", "moving_variance": "variance"}


_OWNER = "recompute_batch_statistics"  # the name error messages start with


def _statistics_of(layer):
    """`{variable: statistic}` of a batch-dependent layer, or None for any other layer."""
    own = getattr(layer, "population_statistics", None)
    if own is not None:
        return own
    if isinstance(layer, keras.layers.BatchNormalization):
        return _KERAS_BN_STATISTICS
    return None


def _channel_axis(layer, rank):
    axis = getattr(layer, "_channel_axis", None)
    if axis is None:  # Keras's BatchNormalization
        axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
    return axis % rank


class _Moments:
    """Per-channel exact mean and variance of everything a layer is called on, accumulated in float64.

    Sums are taken about a shift (the first batch's mean), so that a large mean does not cancel the variance.
    """

    def __init__(self, layer):
        self.layer = layer
        self.shift = None
        self.count = self.total = self.total_square = 0.0

    def add(self, inputs, mask):
        x = np.asarray(keras.ops.convert_to_numpy(inputs), np.float64)
        axis = _channel_axis(self.layer, x.ndim)
        weight = np.ones(x.shape)
        if mask is not None:  # Keras's convention: the mask covers the leading axes, broadcast over the rest
            mask = np.asarray(keras.ops.convert_to_numpy(mask), np.float64)
            weight = np.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape)
        x, weight = (np.moveaxis(a, axis, -1).reshape(-1, x.shape[axis]) for a in (x, weight))
        if self.shift is None:
            self.shift = (weight * x).sum(axis=0) / np.maximum(weight.sum(axis=0), 1.0)
        centred = x - self.shift
        self.count = self.count + weight.sum(axis=0)
        self.total = self.total + (weight * centred).sum(axis=0)
        self.total_square = self.total_square + (weight * centred**2).sum(axis=0)

    def local(self):
        """`(count, mean, sum of squared deviations from the mean)` per channel, of this process's inputs."""
        if self.shift is None:  # never called on this process
            return 0.0, 0.0, 0.0
        count = np.maximum(self.count, 1e-300)  # a channel masked everywhere: mean = shift, variance 0
        offset = self.total / count
        return self.count, self.shift + offset, self.total_square - self.total * offset


def _pooled(parts):
    """Mean and variance of the union of `(count, mean, squared deviations)` parts (Chan et al.'s update)."""
    count, mean, deviations = parts[0]
    for other_count, other_mean, other_deviations in parts[1:]:
        total = count + other_count
        delta = other_mean - mean
        weight = np.divide(other_count, total, out=np.zeros_like(delta), where=total > 0)
        deviations = deviations + other_deviations + delta**2 * count * weight
        mean = mean + delta * weight
        count = total
    return mean, np.divide(deviations, count, out=np.zeros_like(deviations), where=count > 0)


def _batches(data, batch_size, steps):
    """The inputs `x` of each batch of `data`, as `model.predict` reads it."""
    # Keras's own adapter: arrays, tf.data, PyDataset, generators and DataLoaders, as predict() reads them.
    adapter = get_data_adapter(data, batch_size=batch_size or 32, steps_per_epoch=steps, shuffle=False)
    for step, batch in enumerate(adapter.get_numpy_iterator()):
        if steps is not None and step >= steps:
            return
        yield keras.utils.unpack_x_y_sample_weight(batch)[0]


def _recording(moments, call):
    def recording_call(inputs, *args, **kwargs):
        moments.add(inputs, kwargs.get("mask"))
        return call(inputs, *args, **kwargs)

    return recording_call


def _check_arguments(model, batch_size, steps):
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(
            f"{_OWNER}: `model` must be a built keras.Model, received {model!r}. Build it first (call it on a "
            "batch, or fit it)."
        )
    for name, value in (("batch_size", batch_size), ("steps", steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{_OWNER}: invalid `{name}`={value!r}. Pass a positive int, or None.")
    layers = [layer for layer in model._flatten_layers(include_self=False) if _statistics_of(layer) is not None]
    if not layers:
        raise ValueError(
            f"{_OWNER}: model '{model.name}' has no layer with population statistics (a Keras or keras_norms "
            "BatchNormalization, GhostBatchNormalization, BatchGroupNormalization, BatchChannelNormalization, "
            "MemorizedBatchNormalization or EvoNormB0); there is nothing to recompute."
        )
    return [layer for layer in layers if layer.built]  # a layer never called has no statistics to set


def recompute_batch_statistics(model, data, batch_size=None, steps=None, verbose="auto"):
    """Sets the population statistics of every batch-dependent layer to the exact moments of its inputs.

    An exponential moving average of batch statistics is a poor estimate of
    the population statistics of the final weights: after an average of
    weights (SWA, an optimizer's `use_ema`), after fine-tuning, after a
    domain shift, or simply because the average lags the weights. This
    function ("Precise BN", Wu & Johnson 2021) runs the model on `data` in
    training mode, as `fit` computes the features, without changing any
    trainable weight, and sets each layer's statistics to the pooled moments
    of its inputs over all of `data`: for a channel $c$ and the $M$ input
    values $x_{m,c}$ the layer saw (every example and spatial position of
    every batch),

    $$\\mu_c=\\frac1M\\sum_m x_{m,c},\\qquad
      \\sigma^2_c=\\frac1M\\sum_m(x_{m,c}-\\mu_c)^2,$$

    independent of the batch size and the order of the batches. What each
    layer keeps:

    | layer | state set |
    |---|---|
    | `keras.layers.BatchNormalization`, `keras_norms.BatchNormalization` (Ghost batches included: the statistics over all ghost batches pooled) | moving mean and variance; with `renorm`, also `renorm_mean` ($\\mu$), `moving_stddev` and `renorm_stddev` ($\\sqrt{\\sigma^2+\\epsilon}$) |
    | `BatchGroupNormalization` | moving mean and moving second moment $\\sigma^2+\\mu^2$ |
    | `BatchChannelNormalization` | moving mean and variance of its batch step |
    | `EvoNormB0` | moving variance |
    | `MemorizedBatchNormalization` | the memory: one batch holding $(\\mu, \\sigma^2+\\mu^2)$, count 1 |

    Every batch-dependent layer is recomputed, frozen ones (`trainable=False`)
    included: in this pass they too use batch statistics, so each layer's
    input is the feature `fit` would give with every such layer training.
    The model's other state (dropout seeds, every other non-trainable weight)
    is restored afterwards; the trainable weights are never written.

    Args:
        model: a built `keras.Model`.
        data: the inputs, as `model.predict` takes them: a NumPy array (or a
            list or dict of arrays for several inputs), a `tf.data.Dataset`,
            a `keras.utils.PyDataset`, a generator or a PyTorch `DataLoader`.
            Targets and sample weights in its batches are ignored.
        batch_size: int, the batch size for array inputs (default 32, as
            `predict`); the statistics do not depend on it, but masks and the
            memory use do.
        steps: int, how many batches to read at most (default: all).
        verbose: `"auto"`, 0 (silent) or 1 (progress bar).

    Returns:
        The names of the layers whose statistics were set, in traversal order.

    Raises:
        ValueError: if `model` is not a built Keras model or has no
            batch-dependent layer, for an invalid `batch_size` or `steps`, or
            if `data` yields no batch. An error raised by the model on the
            data propagates; in every case the model is left unchanged.

    Example:

    ```python
    model.fit(x_train, y_train, epochs=10)
    keras_norms.recompute_batch_statistics(model, x_train[:4096])
    model.evaluate(x_test, y_test)
    ```

    Reference:
        - [Wu & Johnson, 2021](https://arxiv.org/abs/2105.07576),
          "Rethinking 'Batch' in BatchNorm" (Precise BN)
    """
    layers = _check_arguments(model, batch_size, steps)
    if verbose not in ("auto", 0, 1):
        raise ValueError(f"{_OWNER}: invalid `verbose`={verbose!r}. Pass 'auto', 0 or 1.")
    moments = [_Moments(layer) for layer in layers]
    saved = [(v, keras.ops.convert_to_numpy(v)) for v in model.non_trainable_variables]
    trainable = [layer.trainable for layer in layers]
    progress = keras.utils.Progbar(steps, verbose=0 if verbose == 0 else 1, unit_name="batch")
    try:
        for layer, moment in zip(layers, moments):
            layer.call = _recording(moment, layer.call)
            layer.trainable = True
        seen = 0
        for x in _batches(data, batch_size, steps):
            model(x, training=True)
            seen += 1
            progress.update(seen)
        if seen == 0:
            raise ValueError(f"{_OWNER}: `data` yielded no batch. Pass a non-empty dataset.")
    finally:
        for layer, was_trainable in zip(layers, trainable):
            del layer.call  # the instance attribute: the class's `call` again
            layer.trainable = was_trainable
        for variable, value in saved:
            variable.assign(value)
    part = _dispatch.backend_part("distributed")
    gather = part.gather_from_processes if part is not None else (lambda value: [value])
    # Every process must gather the same layers in the same order: those of `layers`, reached here or not.
    everywhere = gather([moment.local() for moment in moments])
    updated = []
    for i, layer in enumerate(layers):
        parts = [p[i] for p in everywhere]
        if not any(np.any(part[0] > 0) for part in parts):
            continue  # called on no process: nothing to set
        mean, variance = _pooled(parts)
        if hasattr(layer, "_set_population_moments"):
            layer._set_population_moments(mean, variance)
        else:
            assign_population_state(layer, _KERAS_BN_STATISTICS, mean, variance, layer.epsilon)
        updated.append(layer.name)
    return updated


def average_moving_statistics(model):
    """Averages the population statistics of every batch-dependent layer over the replicas.

    With `synchronized=False` (the default) each replica of a data-parallel
    run updates its moving statistics from its own batch only, so the
    replicas' copies drift apart; which one is saved or evaluated is then an
    accident. This sets each of them, on every replica, to their mean over the
    replicas (what timm's `distribute_bn` and flax's `cross_replica_mean` do):

    * TensorFlow (`tf.distribute` strategies): every component of each
      mirrored statistic is set to the components' mean; call it in the
      cross-replica context (a callback, or outside `strategy.run`);
    * PyTorch DDP: one all-reduce per statistic; every process must call it;
    * JAX (`keras.distribution`): nothing to do, a variable is one global
      array, and its update is already the mean over the devices' slices.

    On one replica it changes nothing. The layers and their statistics are
    those of `recompute_batch_statistics` (Keras's own BatchNormalization
    included).

    Args:
        model: a built Keras model (or layer).

    Returns:
        The number of replicas averaged over (1: nothing changed).

    Example:

    ```python
    model.fit(dataset, epochs=10, callbacks=[keras_norms.AverageMovingStatistics()])
    ```

    Reference:
        - timm `distribute_bn` (`timm/utils/distributed.py`), the same
          average for PyTorch models
    """
    layers = [layer for layer in model._flatten_layers(include_self=True) if _statistics_of(layer) is not None]
    variables = [
        variable
        for layer in layers
        for name in _statistics_of(layer)
        if (variable := getattr(layer, name, None)) is not None
    ]
    part = _dispatch.backend_part("distributed")
    return 1 if part is None or not variables else part.average_over_replicas(variables)


class AverageMovingStatistics(keras.callbacks.Callback):
    """Averages the moving statistics over the replicas during `fit` (see `average_moving_statistics`).

    At the end of every epoch (before a checkpoint callback listed after it
    saves), before each evaluation and at the end of training, so that every
    replica evaluates and saves the same statistics. Use it when the
    batch-dependent layers have `synchronized=False`; with
    `synchronized=True` the replicas never drift apart.

    Example:

    ```python
    model.fit(
        dataset,
        epochs=10,
        callbacks=[keras_norms.AverageMovingStatistics(), keras.callbacks.ModelCheckpoint("model.keras")],
    )
    ```
    """

    def on_epoch_end(self, epoch, logs=None):
        average_moving_statistics(self.model)

    def on_test_begin(self, logs=None):
        average_moving_statistics(self.model)

    def on_train_end(self, logs=None):
        average_moving_statistics(self.model)

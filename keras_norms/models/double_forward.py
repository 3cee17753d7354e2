"""Double Forward training for Memorized Batch Normalization.

Guo et al., "Double Forward Propagation for Memorized Batch Normalization",
AAAI 2018 (arXiv:2010.04947). After each optimizer step the batch just
trained on is run through the network a second time, without gradient, so
that every `MemorizedBatchNormalization` layer re-memorizes it under the
updated weights. The paper's exact procedure is not confirmed (there is no
public code); see the Design notes page of the documentation, section
Memorized BN and Double Forward.

Each training step on batch $B_t$:

1. **Forward 1** (`training=True`): the usual loss, gradients and optimizer
   update $\\theta_t\\to\\theta_{t+1}$. MBN layers memorize $B_t$ in slot
   $n \\bmod k$ but leave their counter $n$.
2. **Forward 2** (no gradient): the model is called on the same $B_t$ with
   `training=False`, so Dropout, augmentation layers and Keras
   BatchNormalization run in inference mode (and are not updated twice),
   while every MBN layer computes $B_t$'s moments under $\\theta_{t+1}$,
   overwrites the same slot, and advances its counter.

The trainers of the three backends differ (a TensorFlow gradient tape, a
stateless JAX step threading `non_trainable_variables`, PyTorch's autograd),
so the step itself lives in one small module per backend,
`keras_norms/_backends/<backend>/trainer.py`, chosen at runtime.
"""

import contextlib
import functools

import keras

from keras_norms.layers.memorized_batch_normalization import MemorizedBatchNormalization
from keras_norms.ops import _dispatch


def memorized_layers(model):
    """The `MemorizedBatchNormalization` layers inside `model`, recursively."""
    layers = model._flatten_layers(include_self=False)
    return [layer for layer in layers if isinstance(layer, MemorizedBatchNormalization)]


@contextlib.contextmanager
def double_forward_phase(layers, phase):
    """Sets what the MBN `layers` do when called: "hold" (Forward 1) or "refresh" (Forward 2).

    A Python attribute read when a layer is called, hence when a train step
    is traced: the phase is part of the traced step.
    """
    previous = [layer._double_forward_phase for layer in layers]
    for layer in layers:
        layer._double_forward_phase = phase
    try:
        yield
    finally:
        for layer, old in zip(layers, previous):
            layer._double_forward_phase = old


def forward_kwargs(model):
    """Keyword arguments of the Forward 2 call: inference mode for every other layer."""
    return {"training": False} if getattr(model, "_call_has_training_arg", True) else {}


def _backend_train_step():
    step = _dispatch.backend_part("trainer").double_forward_train_step
    return functools.partial(step, phase=double_forward_phase, forward_kwargs=forward_kwargs)


class DoubleForwardMixin:
    """Adds Double Forward training to a `keras.Model` subclass.

    Put it before `keras.Model` in the bases of a subclassed model; for a
    functional or Sequential model use `keras_norms.with_double_forward`.
    `fit` then runs, for each batch, the usual training step (Forward 1 and
    the optimizer update) followed by a no-gradient Forward 2 of the same
    batch, in which the model is called with `training=False` and every
    `MemorizedBatchNormalization` layer re-memorizes the batch's moments
    under the updated weights and advances its counter (once per step).
    Models without MBN layers train as usual. `evaluate` and `predict` are
    unchanged.

    The batch seen by Forward 2 is the one given to the step: augmentation
    inside the model is the identity in Forward 2, so augment in the input
    pipeline. Each replica of a distributed run keeps its own memory: the
    memories differ unless the layers have `synchronized=True`, which makes
    every replica memorize the global batch's moments.

    Example:

    ```python
    import keras, keras_norms

    class Net(keras_norms.DoubleForwardMixin, keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(8)
            self.norm = keras_norms.MemorizedBatchNormalization()
            self.head = keras.layers.Dense(1)

        def call(self, x, training=False):
            return self.head(self.norm(self.dense(x), training=training))
    ```

    Reference:
        - [Guo et al., 2018](https://arxiv.org/abs/2010.04947), "Double
          Forward Propagation for Memorized Batch Normalization", AAAI 2018
    """

    def train_step(self, *args):
        layers = memorized_layers(self)
        if not layers:
            return super().train_step(*args)
        return _backend_train_step()(self, super().train_step, layers, *args)


@keras.saving.register_keras_serializable(package="keras_norms")
class DoubleForwardModel(DoubleForwardMixin, keras.Model):
    """A functional `keras.Model` trained with Double Forward.

    A functional model whose `fit` runs, after each optimizer step, a
    no-gradient second forward pass of the same batch (`training=False`),
    in which every `MemorizedBatchNormalization` layer re-memorizes the
    batch's moments under the updated weights and advances its counter (see
    `DoubleForwardMixin`). `evaluate`, `predict` and calling the model are
    those of a functional model; without MBN layers `fit` is unchanged too.

    `keras_norms.with_double_forward(model)` returns one built on an existing
    functional or Sequential model (sharing its layers and weights); it can
    also be built directly from symbolic inputs and outputs. It saves and
    loads like any functional model: `.keras` files record this class,
    registered as `keras_norms>DoubleForwardModel`. Subclassed models use
    `keras_norms.DoubleForwardMixin` instead.

    Args:
        inputs: the model's symbolic inputs (`keras.Input`), as for
            `keras.Model(inputs, outputs)`.
        outputs: the symbolic outputs computed from `inputs`.
        name: optional name of the model.
        **kwargs: other `keras.Model` arguments (`trainable`, ...).

    Example:

    ```python
    import keras, keras_norms
    inputs = keras.Input((8,))
    x = keras.layers.Dense(16)(inputs)
    x = keras_norms.MemorizedBatchNormalization(memory_size=2)(x)
    model = keras_norms.DoubleForwardModel(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer="sgd", loss="mse")
    model.fit(keras.random.normal((32, 8)), keras.random.normal((32, 1)), batch_size=8, verbose=0)
    ```

    Reference:
        - [Guo et al., 2018](https://arxiv.org/abs/2010.04947), "Double
          Forward Propagation for Memorized Batch Normalization", AAAI 2018
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        # Spelled out so that the signature documents the arguments; Keras's Model builds the functional graph.
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)


def with_double_forward(model, name=None):
    """Returns `model` set up for Double Forward training.

    The result is a functional `DoubleForwardModel` on `model`'s inputs and
    outputs: it shares `model`'s layers and weights (training one trains the
    other), and its `fit` runs a no-gradient second forward pass after each
    optimizer step that refreshes the memory of every
    `MemorizedBatchNormalization` layer (see `DoubleForwardMixin`). Compile
    the returned model.

    Args:
        model: a built functional or Sequential `keras.Model` (one whose
            `inputs` and `outputs` are defined). Subclassed models: add
            `keras_norms.DoubleForwardMixin` to their bases instead.
        name: optional name of the new model. Defaults to `model.name`.

    Returns:
        A `DoubleForwardModel`; `model` itself if it already trains with
        Double Forward.

    Raises:
        ValueError: if `model` has no symbolic inputs and outputs.

    Example:

    ```python
    import keras, keras_norms
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16),
        keras_norms.MemorizedBatchNormalization(),
        keras.layers.Dense(1),
    ])
    model = keras_norms.with_double_forward(model)
    model.compile(optimizer="sgd", loss="mse")
    ```

    Reference:
        - [Guo et al., 2018](https://arxiv.org/abs/2010.04947), "Double
          Forward Propagation for Memorized Batch Normalization", AAAI 2018
    """
    if isinstance(model, DoubleForwardMixin):
        return model
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            f"with_double_forward: model '{getattr(model, 'name', model)}' has no symbolic inputs and "
            "outputs. Pass a functional model, or a Sequential model that starts with keras.Input(...); "
            "for a subclassed model, add keras_norms.DoubleForwardMixin before keras.Model in its bases."
        )
    # One input or output: pass it bare, unless the model was built with a list of one.
    if len(inputs) == 1 and not isinstance(getattr(model, "_inputs_struct", None), list):
        inputs = inputs[0]
    if len(outputs) == 1 and not isinstance(getattr(model, "_outputs_struct", None), list):
        outputs = outputs[0]
    return DoubleForwardModel(inputs=inputs, outputs=outputs, name=name or model.name)

"""Memorized Batch Normalization (MBN).

References:
    Guo, Wu, Deng, Chen & Tan, "Double Forward Propagation for Memorized
    Batch Normalization", AAAI 2018 (arXiv:2010.04947). No public code
    exists; everything beyond the abstract is this package's design, not
    confirmed against the paper (see the Design notes page of the
    documentation, section Memorized BN and Double Forward).
"""

import keras
import numpy as np
from keras import ops

from keras_norms.layers._base import NormalizationLayer
from keras_norms.layers._base import as_float
from keras_norms.layers._base import bn_moments
from keras_norms.ops import _stats
from keras_norms.ops import memorized as mbn_ops

# What a call does, set by Double Forward training (`keras_norms.DoubleForwardMixin`)
# around its two passes: None (a plain call), "hold" (Forward 1: memorize, but leave
# the counter for Forward 2), "refresh" (Forward 2: memorize under the updated weights
# and advance the counter, although the model is called with training=False).
_PHASES = (None, "hold", "refresh")


@keras.saving.register_keras_serializable(package="keras_norms")
class MemorizedBatchNormalization(NormalizationLayer):
    """Memorized Batch Normalization: statistics pooled over recent batches.

    Batch normalization whose statistics come from a **memory of the last
    `memory_size` batches** ($k$) instead of the current batch alone, and
    which uses that same memory at inference (no moving average), so
    training and inference use one estimator. The memory holds, per
    channel, the raw moments $m^{(1)}=E[x]$ and $m^{(2)}=E[x^2]$ of each
    batch (over every axis except `axis`) in non-trainable `(k, C)` weights,
    with a counter $n$ of memorized batches; they are saved with the model.

    **Training** (`training=True` and `layer.trainable`): the current
    batch's moments go into slot $s=n\\bmod k$ (a one-hot ring-buffer
    write, safe under compilation), and the statistics are pooled over the
    used slots $j$ (the current batch and the filled memory, at most $k$)
    with normalized weights $\\eta_j$:

    $$\\mu=\\sum_j\\eta_j m^{(1)}_j,\\qquad
      \\sigma^2=\\max\\Big(\\sum_j\\eta_j m^{(2)}_j-\\mu^2,\\,0\\Big),\\qquad
      y=\\gamma\\,\\frac{x-\\mu}{\\sqrt{\\sigma^2+\\epsilon}}+\\beta .$$

    Gradients flow only through the current batch's moments; memorized
    moments are constants (stop-gradient). While the memory fills, only the
    filled slots are used: the first batch is normalized with its own
    statistics, exactly as batch normalization (so is every batch with
    `memory_size=1`). The counter advances once per call, or, under Double
    Forward training (`keras_norms.with_double_forward`), once per step
    after the second forward pass, which re-memorizes the batch under the
    updated weights.

    **Inference**: the same pooled statistics over the filled slots. Before
    any batch has been memorized the layer uses mean 0 and variance 1, the
    initial moving statistics of `keras.layers.BatchNormalization`, so a
    fresh layer computes $\\gamma x/\\sqrt{1+\\epsilon}+\\beta$.

    There is no public code, so the following are this package's choices,
    not confirmed against the paper: the slot weights (uniform here), the
    pooling (pooled raw moments here, which also count the spread of the
    batch means; the paper may average per-batch variances), the inference
    estimator and the value of $k$. See the Design notes page of the
    documentation, section Memorized BN and Double Forward. Statistics
    are computed in float32 (float64 stays float64); the output is cast to
    the layer's compute dtype.

    Args:
        memory_size: int $k\\ge 1$, the number of batches memorized.
            Defaults to 4 (this package's choice; the paper's values are
            not confirmed).
        memory_weights: optional sequence of `memory_size` positive floats,
            the weight of the batch of each age, index 0 being the newest
            (the current batch in training); renormalized over the slots in
            use. `None` weighs the slots uniformly. Defaults to None.
        axis: int, the channel axis (negative or positive, not 0). Defaults
            to -1.
        epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-3.
        center: bool, whether to add the offset `beta`. Defaults to True.
        scale: bool, whether to multiply by `gamma`. Defaults to True.
        beta_initializer: initializer of `beta`. Defaults to `"zeros"`.
        gamma_initializer: initializer of `gamma`. Defaults to `"ones"`.
        beta_regularizer: optional regularizer of `beta`. Defaults to None.
        gamma_regularizer: optional regularizer of `gamma`. Defaults to
            None.
        beta_constraint: optional constraint on `beta`. Defaults to None.
        gamma_constraint: optional constraint on `gamma`. Defaults to None.
        synchronized: bool, take the current batch's moments over the
            global batch across replicas in data-parallel training, so that
            every replica normalizes with them and memorizes the same
            moments (the memory stays identical on all replicas). False:
            each replica (device) uses and memorizes its own batch's moments
            (per-replica memories drift apart on TensorFlow and PyTorch; on
            JAX the devices' moments are averaged into the one memory).
            Identical on one device. See the guide "Training on several
            devices" (`docs/guides/multi_device.md`). Defaults to False.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`).

    Weights, in creation order: `gamma`, `beta` (trainable, `(C,)`),
    `memory_mean`, `memory_second_moment` (non-trainable, `(k, C)`, zeros)
    and `memory_count` (non-trainable float32 scalar, 0; wrapped into
    $[k, 2k)$ once the memory is full, which keeps it exact and changes
    neither the slot nor the fill). All are float32 under mixed precision.

    Call arguments:
        inputs: tensor of rank >= 2, batch on axis 0.
        training: bool, training mode (memory statistics including the
            current batch; the memory is updated). A layer with
            `trainable=False` always runs in inference mode, as in Keras.
            Call the layer once per training step: each training call
            memorizes a batch.

    Returns:
        A tensor of the input's shape in the layer's compute dtype.

    Raises:
        ValueError: for an invalid argument (named in the message) or an
            input whose channel axis is out of range, 0 or of unknown size.

    Example:

    ```python
    import keras, keras_norms
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, use_bias=False),
        keras_norms.MemorizedBatchNormalization(memory_size=4),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    model = keras_norms.with_double_forward(model)  # optional
    ```

    Reference:
        - [Guo et al., 2018](https://arxiv.org/abs/2010.04947), "Double
          Forward Propagation for Memorized Batch Normalization", AAAI 2018
    """

    conversion_target = "memorized_batch_norm"
    conversion_adds = "memory slot 0 = moving mean and variance + mean², count 1 (other slots empty)"
    # recompute_batch_statistics: slot 0 holds the population moments, count 1 (`_set_population_moments`).
    population_statistics = {"memory_mean": "mean", "memory_second_moment": "second_moment"}

    def __init__(
        self,
        memory_size=4,
        memory_weights=None,
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._store_arguments(locals())
        self.memory_mean = None
        self.memory_second_moment = None
        self.memory_count = None
        self._double_forward_phase = None

    # ------------------------------------------------------------ validation
    def _check_memory_size(self, value):
        fix = "Pass a positive int, the number of batches memorized (e.g. 4)."
        return self._check_positive_int("memory_size", value, fix)

    def _check_memory_weights(self, value):
        if value is None:
            return None
        fix = (
            f"Pass None (uniform) or a sequence of memory_size={self.memory_size} positive floats, "
            "the weight of the batch of each age (index 0: the newest)."
        )
        if isinstance(value, str) or not hasattr(value, "__len__"):
            raise self._error("memory_weights", value, fix)
        numbers = [as_float(w) for w in value]
        if len(numbers) != self.memory_size or any(w is None or not 0.0 < w < float("inf") for w in numbers):
            raise self._error("memory_weights", value, fix)
        return numbers

    # ----------------------------------------------------------------- state
    def build(self, input_shape):
        channels = self._build_channels(input_shape)
        self._add_gamma_beta((channels,))
        memory_shape = (self.memory_size, channels)
        self.memory_mean = self._state("memory_mean", memory_shape, "zeros")
        self.memory_second_moment = self._state("memory_second_moment", memory_shape, "zeros")
        self.memory_count = self._state("memory_count", (), "zeros")

    def _carry_from_batch_normalization(self, bn):
        # The memory starts with one batch: slot 0 holds the BN's moving mean and variance + mean**2.
        super()._carry_from_batch_normalization(bn)
        self._memorize_one(*bn_moments(bn))

    def _set_population_moments(self, mean, variance):
        # One memorized batch holding the population moments: inference then uses exactly them.
        self._memorize_one(mean, np.maximum(variance, 0.0) + mean**2)

    def _memorize_one(self, mean, second_moment):
        """Empties the memory, then puts one batch's float64 `(mean, second_moment)` in slot 0."""
        for variable, value in zip((self.memory_mean, self.memory_second_moment), (mean, second_moment)):
            memory = np.zeros(variable.shape, np.float64)
            memory[0] = value
            variable.assign(memory.astype(variable.dtype))
        self.memory_count.assign(np.ones(self.memory_count.shape, self.memory_count.dtype))

    # ------------------------------------------------------------------ call
    def call(self, inputs, training=None):
        x = _stats.upcast(inputs)
        dtype = x.dtype
        gamma, beta = self._cast_all(dtype, self.gamma, self.beta)
        common = dict(axis=self._channel_axis, epsilon=self.epsilon, memory_weights=self.memory_weights)
        memory = (self.memory_mean, self.memory_second_moment, self.memory_count)
        phase = self._double_forward_phase
        if self.trainable and (phase == "refresh" or (training and phase in (None, "hold"))):
            y, new_mean, new_second = mbn_ops.memorized_batch_norm(
                x, *memory, gamma, beta, synchronized=self.synchronized, **common
            )
            self.memory_mean.assign(ops.cast(new_mean, self.memory_mean.dtype))
            self.memory_second_moment.assign(ops.cast(new_second, self.memory_second_moment.dtype))
            if phase != "hold":
                self.memory_count.assign(mbn_ops.advance_memory_count(self.memory_count, self.memory_size))
        else:
            y = mbn_ops.memorized_batch_norm_inference(x, *memory, gamma, beta, **common)
        return ops.cast(y, self.compute_dtype)

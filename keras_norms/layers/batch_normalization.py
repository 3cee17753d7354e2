"""BatchNormalization superset: Ghost batches and inference example weighing.

References:
    Ioffe & Szegedy, "Batch Normalization", ICML 2015.
    Hoffer, Hubara & Soudry, "Train longer, generalize better", NeurIPS 2017.
    Summers & Dinneen, "Four Things Everyone Should Know to Improve Batch
    Normalization", ICLR 2020 (official code:
    github.com/ceciliaresearch/four_things_batch_norm).
    Ioffe, "Batch Renormalization", NeurIPS 2017.
"""


import keras
from keras import initializers
from keras import ops

from keras_norms import ops as knops
from keras_norms.layers._base import NormalizationLayer
from keras_norms.ops import _stats

_RENORM_KEYS = ("rmax", "rmin", "dmax")


def _sqrt_of(initializer):
    """An initializer returning the square root of `initializer`'s values."""

    def init(shape, dtype=None):
        fresh = initializers.get(initializers.serialize(initializer))
        return ops.sqrt(fresh(shape, dtype=dtype))

    return init


@keras.saving.register_keras_serializable(package="keras_norms")
class BatchNormalization(NormalizationLayer):
    """Batch normalization with Ghost batches and inference example weighing.

    A drop-in superset of `keras.layers.BatchNormalization`: the same
    constructor arguments, defaults and weights (`gamma`, `beta`,
    `moving_mean`, `moving_variance`, and the renorm weights), so weights
    move between the two with `set_weights`. It adds two arguments and no
    variable.

    **Training** (`training=True` and `layer.trainable`): with
    `virtual_batch_size=None`,

    $$y=\\gamma_c\\frac{x-\\mu_{B,c}}{\\sqrt{\\sigma^2_{B,c}+\\epsilon}}+\\beta_c$$

    with the batch mean and biased variance over every axis except `axis`.
    With `virtual_batch_size` $B'$ (Ghost BN), the batch is split into
    ghost batches of $B'$ **consecutive** examples, each normalized with its
    own statistics; when $B'$ does not divide the batch size the trailing
    examples form a smaller last ghost. Moving statistics are updated once
    per step, $m\\leftarrow\\rho m+(1-\\rho)b$, where $b$ is the batch
    statistic, or with ghosts the ghost means and ghost variances averaged
    with weights $n_k/N$.

    **Inference**: population statistics $\\mu,\\sigma^2$ (the moving
    averages), mixed with the example's own moments when
    `inference_example_weight` $\\alpha>0$:

    $$\\tilde\\mu_i=\\alpha s^{(1)}_i+(1-\\alpha)\\mu,\\quad
      \\tilde\\sigma^2_i=\\max\\big(\\alpha s^{(2)}_i+(1-\\alpha)(\\sigma^2+\\mu^2)
      -\\tilde\\mu_i^2,0\\big),\\quad
      y_i=\\gamma\\frac{x_i-\\tilde\\mu_i}{\\sqrt{\\tilde\\sigma^2_i+\\epsilon}}+\\beta$$

    where $s^{(1)}_i, s^{(2)}_i$ are example $i$'s first and second moments
    over every axis except the batch and channel axes. A natural choice is
    $\\alpha\\approx 1/B'$ (the weight the example had in its own training
    statistics); choose it on held-out data.

    Statistics are computed in float32 (float64 stays float64) with a
    two-pass variance; the output is cast to the layer's compute dtype.

    Args:
        axis: int, the channel axis (negative or positive). Defaults to -1.
        momentum: float in [0, 1], weight of the old value in the moving
            averages (PyTorch's `momentum=0.1` is Keras's 0.9). Defaults to
            0.99.
        epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-3.
        center: bool, whether to add the offset `beta`. Defaults to True.
        scale: bool, whether to multiply by `gamma`. Defaults to True.
        beta_initializer: initializer of `beta`. Defaults to `"zeros"`.
        gamma_initializer: initializer of `gamma`. Defaults to `"ones"`.
        moving_mean_initializer: Defaults to `"zeros"`.
        moving_variance_initializer: Defaults to `"ones"`.
        beta_regularizer: optional regularizer of `beta`.
        gamma_regularizer: optional regularizer of `gamma`.
        beta_constraint: optional constraint on `beta`.
        gamma_constraint: optional constraint on `gamma`.
        renorm: bool, Batch Renormalization with Keras >= 3.14 semantics
            (extra weights `moving_stddev`, `renorm_mean`, `renorm_stddev`).
            With `virtual_batch_size`, $r$ and $d$ are computed per ghost
            batch against the shared renorm statistics, and the moving
            statistics see the pooled ghost statistics. Relax the clipping
            during training with `keras_norms.BatchRenormSchedule`.
            Defaults to False.
        renorm_clipping: optional dict with keys among `"rmax"`, `"rmin"`,
            `"dmax"`; a missing key means no bound. Captured when a train
            function is traced.
        renorm_momentum: float, momentum of the renorm statistics. Defaults
            to 0.99.
        synchronized: bool, all-reduce the batch statistics across
            replicas in data-parallel training (TensorFlow `tf.distribute`
            strategies, JAX `keras.distribution`, PyTorch DDP), so that
            every replica normalizes with the statistics of the global
            batch; False: each replica (device) uses its own batch's.
            With `virtual_batch_size`, a ghost batch never spans replicas:
            each replica splits its own batch into ghosts and only the
            moving-statistics update is combined over the replicas.
            Identical on one device. See the guide "Training on several
            devices" (`docs/guides/multi_device.md`). Defaults to False.
        virtual_batch_size: optional positive int, the ghost batch size
            $B'$; training only; any batch size works. Rank-2 inputs need
            $B'\\ge 2$ (a ghost of one dense example has zero variance, so its
            output is `beta`; a trailing ghost of size 1 does the same).
            Defaults to None (no ghost batches).
        inference_example_weight: float $\\alpha$ in [0, 1]. Defaults to 0
            (plain population statistics). A Python float captured when a
            test or predict function is traced: after changing it, call
            `model.make_test_function(force=True)` and
            `model.make_predict_function(force=True)`. On rank-2 inputs
            $\\alpha=1$ outputs `beta`.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: tensor of rank >= 2, batch on axis 0.
        training: bool, training mode (batch statistics, moving averages
            updated). A layer with `trainable=False` always runs in
            inference mode, as in Keras.
        mask: optional boolean tensor of rank `ndim - 1` (Keras BN's
            convention: it covers every axis but the last and is broadcast
            over it); in training, masked-out entries are left out of the
            batch statistics and so of the moving statistics, but are
            normalized like the others. With `virtual_batch_size`, each
            ghost's statistics are over its unmasked entries and the ghosts
            are pooled with weights their unmasked counts; a ghost with no
            unmasked entry is left out of the pooling and normalized with
            mean 0 and variance 0 (finite outputs). At inference the mask is
            not used. The output mask is the input mask.

    Returns:
        A tensor of the input's shape in the layer's compute dtype.

    Raises:
        ValueError: for an invalid argument (named in the message) or an
            input whose channel axis is out of range or unknown.

    Example:

    ```python
    import keras, keras_norms
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(16, 3, use_bias=False),
        keras_norms.BatchNormalization(
            virtual_batch_size=8, inference_example_weight=0.125
        ),
        keras.layers.ReLU(),
    ])
    ```

    Reference:
        - [Ioffe & Szegedy, 2015](https://arxiv.org/abs/1502.03167)
        - [Hoffer et al., 2017](https://arxiv.org/abs/1705.08741) (Ghost BN)
        - [Summers & Dinneen, 2020](https://arxiv.org/abs/1906.03548)
          (example weighing)
        - [Ioffe, 2017](https://arxiv.org/abs/1702.03275) (Batch Renorm)
    """

    conversion_target = "batch_norm"
    conversion_carries = "everything (the identity: same outputs)"
    # keras_norms BN takes every argument of both BNs, and has every weight of Keras's.
    _carried_weights = "all"
    _converted_arguments = None
    # Renorm's stddev state is sqrt(variance + epsilon), as its updates keep it.
    population_statistics = {
        "moving_mean": "mean",
        "moving_variance": "variance",
        "moving_stddev": "stddev",
        "renorm_mean": "mean",
        "renorm_stddev": "stddev",
    }

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        renorm=False,
        renorm_clipping=None,
        renorm_momentum=0.99,
        synchronized=False,
        virtual_batch_size=None,
        inference_example_weight=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._store_arguments(locals())
        self.supports_masking = True
        self.moving_mean = None
        self.moving_variance = None

    # ------------------------------------------------------------ validation
    def _check_renorm(self, renorm):
        return bool(renorm)

    def _check_renorm_momentum(self, momentum):
        return self._check_unit_float("renorm_momentum", momentum)

    def _check_virtual_batch_size(self, value):
        if value is None:
            return None
        fix = "Pass a positive int (the ghost batch size), or None for no ghost batches."
        return self._check_positive_int("virtual_batch_size", value, fix)

    def _check_renorm_clipping(self, clipping):
        if not self.renorm:
            return clipping
        clipping = dict(clipping or {})
        unknown = set(clipping) - set(_RENORM_KEYS)
        if unknown:
            raise self._error(
                "renorm_clipping",
                clipping,
                f"Supported keys are {list(_RENORM_KEYS)}; remove {sorted(unknown)}.",
            )
        rmax, rmin, dmax = (clipping.get(k) for k in _RENORM_KEYS)
        if rmax is not None and rmin is not None and rmax < rmin:
            raise self._error("renorm_clipping", clipping, "rmax must be >= rmin.")
        if dmax is not None and dmax < 0:
            raise self._error("renorm_clipping", clipping, "dmax must be non-negative.")
        return clipping

    # ----------------------------------------------------------------- state
    def build(self, input_shape):
        channels = self._build_channels(input_shape)
        if len(input_shape) == 2 and self.virtual_batch_size == 1:
            raise self._error(
                "virtual_batch_size",
                1,
                "On rank-2 inputs a ghost batch of one example has zero "
                "variance, so the output would be `beta` for every input. "
                "Use virtual_batch_size >= 2.",
            )
        shape = (channels,)
        self._add_gamma_beta(shape)
        self.moving_mean = self._state("moving_mean", shape, self.moving_mean_initializer)
        self.moving_variance = self._state(
            "moving_variance", shape, self.moving_variance_initializer
        )
        if self.renorm:
            stddev_init = _sqrt_of(self.moving_variance_initializer)
            self.moving_stddev = self._state("moving_stddev", shape, stddev_init)
            self.renorm_mean = self._state("renorm_mean", shape, self.moving_mean_initializer)
            self.renorm_stddev = self._state("renorm_stddev", shape, stddev_init)

    # ------------------------------------------------------------------ call
    def call(self, inputs, training=None, mask=None):
        x = _stats.upcast(inputs)
        dtype = x.dtype
        gamma, beta = self._cast_all(dtype, self.gamma, self.beta)
        axis = self._channel_axis
        if training and self.trainable:
            sync = self.synchronized
            if self.renorm:
                renorm_args = (gamma, beta, self.renorm_mean, self.renorm_stddev, axis, self.epsilon)
                if self.virtual_batch_size is not None:
                    y, mean, variance = knops.ghost_batch_renorm(
                        x, *renorm_args, self.renorm_clipping, self.virtual_batch_size, mask, synchronized=sync
                    )
                else:
                    y, mean, variance = knops.batch_renorm(
                        x, *renorm_args, self.renorm_clipping, mask, synchronized=sync
                    )
                self._update_renorm_statistics(mean, variance)
            else:
                if self.virtual_batch_size is not None:
                    y, mean, variance = knops.ghost_batch_norm(
                        x, gamma, beta, axis, self.epsilon, self.virtual_batch_size, mask, synchronized=sync
                    )
                else:
                    y, mean, variance = knops.batch_norm(
                        x, gamma, beta, axis, self.epsilon, mask, synchronized=sync
                    )
                self._update_moving(self.moving_mean, mean)
                self._update_moving(self.moving_variance, variance)
        else:
            y = knops.batch_norm_inference(
                x,
                ops.cast(self.moving_mean, dtype),
                ops.cast(self.moving_variance, dtype),
                gamma,
                beta,
                axis,
                self.epsilon,
                self.inference_example_weight,
            )
        return ops.cast(y, self.compute_dtype)

    def _update_renorm_statistics(self, mean, variance):
        stddev = ops.sqrt(variance + self.epsilon)
        self._update_moving(self.renorm_mean, mean, self.renorm_momentum)
        self._update_moving(self.renorm_stddev, stddev, self.renorm_momentum)
        self._update_moving(self.moving_mean, mean)
        new_stddev = self._moving_average(self.moving_stddev, stddev)
        self.moving_stddev.assign(ops.cast(new_stddev, self.moving_stddev.dtype))
        # Keras >= 3.14 derives the inference variance from the stddev.
        moving_variance = ops.relu(new_stddev * new_stddev - self.epsilon)
        self.moving_variance.assign(ops.cast(moving_variance, self.moving_variance.dtype))


@keras.saving.register_keras_serializable(package="keras_norms")
class GhostBatchNormalization(BatchNormalization):
    """Ghost Batch Normalization: `BatchNormalization` with ghost batches.

    The same layer as `keras_norms.BatchNormalization` with
    `virtual_batch_size` required: in training, each ghost batch of
    `virtual_batch_size` consecutive examples is normalized with its own
    statistics,

    $$y=\\gamma_c\\frac{x-\\mu_{k,c}}{\\sqrt{\\sigma^2_{k,c}+\\epsilon}}+\\beta_c
      \\quad\\text{for } x \\text{ in ghost } k,$$

    and the last ghost is smaller when `virtual_batch_size` does not divide
    the batch size. Inference uses the moving statistics (optionally mixed
    with the example's own moments by `inference_example_weight`).

    Args:
        virtual_batch_size: positive int, the ghost batch size $B'$
            (>= 2 on rank-2 inputs).
        **kwargs: every other argument of `keras_norms.BatchNormalization`.

    Call arguments:
        inputs: tensor of rank >= 2, batch on axis 0.
        training: bool, training mode.
        mask: optional boolean tensor of rank `ndim - 1`, left out of each
            ghost's statistics in training (see
            `keras_norms.BatchNormalization`).

    Returns:
        A tensor of the input's shape in the layer's compute dtype.

    Raises:
        ValueError: if `virtual_batch_size` is missing or not a positive int.

    Example:

    ```python
    layer = keras_norms.GhostBatchNormalization(virtual_batch_size=16)
    y = layer(keras.random.normal((50, 8, 8, 32)), training=True)  # 4 ghosts
    ```

    Reference:
        - [Hoffer et al., 2017](https://arxiv.org/abs/1705.08741)
        - [Summers & Dinneen, 2020](https://arxiv.org/abs/1906.03548)
    """

    conversion_target = "ghost_batch_norm"
    conversion_carries = "everything"
    conversion_adds = "none (pass `virtual_batch_size`)"

    def __init__(self, virtual_batch_size=None, **kwargs):
        if virtual_batch_size is None:
            raise ValueError(
                "GhostBatchNormalization: `virtual_batch_size` is required, "
                "received virtual_batch_size=None. Pass the ghost batch size, "
                "e.g. GhostBatchNormalization(virtual_batch_size=16), or use "
                "keras_norms.BatchNormalization for plain batch norm."
            )
        super().__init__(virtual_batch_size=virtual_batch_size, **kwargs)

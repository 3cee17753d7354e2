"""EvoNormB0 and EvoNormS0: normalization and activation in one layer.

References:
    Liu, Brock, Simonyan & Le, "Evolving Normalization-Activation Layers",
    NeurIPS 2020, arXiv:2004.02967 (official code: github.com/tensorflow/tpu,
    the official ResNet model). Equations and defaults follow that code
    (see the Design notes page of the documentation, section EvoNorm-B0 and
    EvoNorm-S0); timm's `EvoNorm2dB0`/`EvoNorm2dS0` differ as documented in
    `docs/layers/evonorm.md`.
"""

import keras
from keras import initializers
from keras import ops

from keras_norms.layers._base import NormalizationLayer
from keras_norms.ops import _stats
from keras_norms.ops import evonorm as evonorm_ops
from keras_norms.ops._dispatch import inference_call


class _EvoNorm(NormalizationLayer):
    """What EvoNormB0 and EvoNormS0 share: checks, rank and weights."""

    conversion_adds = "`v` = 1"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.v = None

    def _check_init_zero(self, init_zero):
        return self._check_bool("init_zero", init_zero, "Pass True (gamma starts at 0) or False.")

    def _check_gamma_initializer(self, gamma_initializer):
        initializer = initializers.get(gamma_initializer)
        if self.init_zero and not isinstance(initializer, initializers.Ones):
            raise self._error(
                "gamma_initializer",
                gamma_initializer,
                "init_zero=True already sets gamma to 0: pass either init_zero=True "
                "or a gamma_initializer, not both.",
            )
        return initializer

    def _check_rank(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(
                f"{self._owner()}: EvoNorm needs an input of rank >= 3 (batch, "
                f"spatial axes, channels), received shape {tuple(input_shape)}. "
                "B0's instance variance is taken over the spatial axes. For "
                "(N, C) features, add a length-1 spatial axis, e.g. "
                "keras.layers.Reshape((1, C)) (B0's instance variance is then 0)."
            )

    def _add_weights(self, shape):
        """`gamma`, `beta`, `v` (trainable, float32 under mixed precision)."""
        self._add_gamma_beta(shape, gamma_initializer="zeros" if self.init_zero else None)
        self.v = self.add_weight(shape=shape, name="v", initializer="ones", trainable=True, autocast=False)

    def _weights_as(self, dtype):
        return self._cast_all(dtype, self.v, self.gamma, self.beta)


@keras.saving.register_keras_serializable(package="keras_norms")
class EvoNormB0(_EvoNorm):
    """EvoNorm-B0: batch-dependent normalization and activation in one layer.

    Replaces a BatchNormalization + ReLU pair. The nonlinearity comes from an
    elementwise max in the denominator, between a batch standard deviation
    and $v_c x$ plus the example's own (instance) standard deviation:

    $$y=\\frac{x}{\\max\\!\\Big(\\sqrt{s^2_{b,c}+\\epsilon},\\;
      v_c\\,x+\\sqrt{s^2_{n,c}+\\epsilon}\\Big)}\\,\\gamma_c+\\beta_c .$$

    $s^2_{b,c}$ is the biased variance of channel $c$ over the batch and the
    spatial axes; in training it is the batch statistic **with gradient**, at
    inference the moving variance $\\hat s^2_c$. $s^2_{n,c}$ is the biased
    variance of example $n$, channel $c$ over the spatial axes. Each training
    step updates $\\hat s^2\\leftarrow\\rho\\,\\hat s^2+(1-\\rho)\\,s^2_b$ with
    the **biased** batch variance (Keras convention, $\\rho$ = `momentum`;
    the official code's decay 0.9 is `momentum=0.9`; timm multiplies by a
    Bessel factor $n/(n-1)$ here). At batch size 1 the batch variance equals
    the instance variance. $\\gamma,\\beta,v$ start at 1, 0, 1 ($\\gamma=0$
    with `init_zero=True`, for the last normalization of a residual branch);
    $\\hat s^2$ at 1. Statistics are computed in float32 (float64 stays
    float64); the output is cast to the layer's compute dtype.

    Inputs must have rank >= 3 (batch, spatial axes, channels): a rank-2
    input raises a `ValueError` at build, because the instance variance needs
    spatial axes.

    Args:
        axis: int, the channel axis (negative or positive, not 0). Defaults
            to -1.
        momentum: float $\\rho$ in [0, 1], the weight of the old moving
            variance (PyTorch's and timm's `momentum=0.1` is $\\rho=0.9$).
            Defaults to 0.9 (the official decay).
        epsilon: float > 0 added to both variances inside the square roots.
            Defaults to 1e-5 (the official value; timm's B0 uses 1e-3).
        init_zero: bool, start $\\gamma$ at 0, so that the layer outputs
            $\\beta$ at initialization (for the end of a residual branch).
            Defaults to False.
        beta_initializer: Defaults to `"zeros"`.
        gamma_initializer: used unless `init_zero=True` (passing both
            raises). Defaults to `"ones"`.
        moving_variance_initializer: Defaults to `"ones"`.
        beta_regularizer: optional regularizer of $\\beta$. Defaults to None.
        gamma_regularizer: optional regularizer of $\\gamma$. Defaults to
            None.
        beta_constraint: optional constraint on $\\beta$. Defaults to None.
        gamma_constraint: optional constraint on $\\gamma$. Defaults to None.
        synchronized: bool, take the batch variance $s^2_b$ over the global
            batch across replicas in data-parallel training (with gradient),
            so that every replica uses the same one; False: each replica
            (device) uses its own batch's. The instance variance is per
            example either way.
            Identical on one device. See the guide "Training on several
            devices" (`docs/guides/multi_device.md`). Defaults to False.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: tensor of rank >= 3, batch on axis 0.
        training: bool, training mode (batch variance, moving variance
            updated). A layer with `trainable=False` always runs in
            inference mode, as Keras's BatchNormalization does.

    Returns:
        A tensor of the input's shape in the layer's compute dtype.

    Raises:
        ValueError: for an invalid argument (named in the message), an input
            of rank < 3, or a channel axis that is out of range, 0 or of
            unknown size (at build).

    Example:

    ```python
    import keras, keras_norms
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(64, 3, use_bias=False),
        keras_norms.EvoNormB0(),  # replaces BatchNormalization + ReLU
    ])
    ```

    Reference:
        - [Liu et al., 2020](https://arxiv.org/abs/2004.02967), "Evolving
          Normalization-Activation Layers", NeurIPS 2020 (official code in
          `tensorflow/tpu`)
    """

    _momentum_fix = (
        "Pass a float in [0, 1], the weight of the old moving variance "
        "(PyTorch's and timm's momentum=0.1 is 0.9)."
    )
    conversion_target = "evonorm_b0"
    conversion_carries = "γ, β, moving variance"
    _carried_weights = {"gamma": "gamma", "beta": "beta", "moving_variance": "moving_variance"}
    population_statistics = {"moving_variance": "variance"}

    def __init__(
        self,
        axis=-1,
        momentum=0.9,
        epsilon=1e-5,
        init_zero=False,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._store_arguments(locals())
        self.moving_variance = None

    def build(self, input_shape):
        channels = self._build_channels(input_shape)
        self._add_weights((channels,))
        self.moving_variance = self._state("moving_variance", (channels,), self.moving_variance_initializer)

    def call(self, inputs, training=None):
        x = _stats.upcast(inputs)
        weights = self._weights_as(x.dtype)
        moving_variance = ops.cast(self.moving_variance, x.dtype)
        if training and self.trainable:
            y, variance = evonorm_ops.evonorm_b0(
                x, *weights, axis=self._channel_axis, epsilon=self.epsilon, synchronized=self.synchronized
            )
            self._update_moving(self.moving_variance, variance)
        else:
            y = evonorm_ops.evonorm_b0_inference(
                x, moving_variance, *weights, axis=self._channel_axis, epsilon=self.epsilon
            )
        return ops.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_norms")
class EvoNormS0(_EvoNorm):
    """EvoNorm-S0: batch-independent normalization and activation in one layer.

    Replaces a GroupNormalization + Swish pair. A sigmoid gate (a Swish-like
    numerator) divided by the example's group standard deviation:

    $$y=\\frac{x\\,\\sigma(v_c\\,x)}{\\sqrt{s^2_{n,g}+\\epsilon}}\\,\\gamma_c+\\beta_c ,$$

    with $\\sigma$ the logistic sigmoid and $s^2_{n,g}$ the biased, centred
    variance of example $n$ over the $C_g=C/G$ consecutive channels of the
    group $g$ of channel $c$ and all spatial positions (the group-norm
    variance; the numerator is not centred). There is no state: training and
    inference compute the same function, and each example's output depends
    on that example alone. $\\gamma,\\beta,v$ start at 1, 0, 1 ($\\gamma=0$
    with `init_zero=True`). Statistics are computed in float32 (float64 stays
    float64); the output is cast to the layer's compute dtype.

    `groups` must divide the channel count: a `ValueError` at build names a
    divisor to use (the official code instead silently reduces the number of
    groups until it divides $C$). With group size 1 on 1x1 maps the variance
    is 0 and the denominator is $\\sqrt\\epsilon$, a x316 gain at
    $\\epsilon=10^{-5}$: the output stays finite. Inputs must have rank >= 3;
    rank 2 raises a `ValueError` at build.

    Args:
        groups: int, the number of channel groups $G$; must divide the
            channel count. -1 means one channel per group. Defaults to 32
            (the official value).
        axis: int, the channel axis (negative or positive, not 0). Defaults
            to -1.
        epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-5 (the official value, also timm's).
        init_zero: bool, start $\\gamma$ at 0, so that the layer outputs
            $\\beta$ at initialization (for the end of a residual branch).
            Defaults to False.
        beta_initializer: Defaults to `"zeros"`.
        gamma_initializer: used unless `init_zero=True` (passing both
            raises). Defaults to `"ones"`.
        beta_regularizer: optional regularizer of $\\beta$. Defaults to None.
        gamma_regularizer: optional regularizer of $\\gamma$. Defaults to
            None.
        beta_constraint: optional constraint on $\\beta$. Defaults to None.
        gamma_constraint: optional constraint on $\\gamma$. Defaults to None.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: tensor of rank >= 3, batch on axis 0.
        training: ignored (the layer computes the same function in both
            modes); accepted for a uniform interface.

    Returns:
        A tensor of the input's shape in the layer's compute dtype.

    Raises:
        ValueError: for an invalid argument (named in the message), an input
            of rank < 3, a channel axis that is out of range, 0 or of unknown
            size, or a channel count that `groups` does not divide (at build).

    Example:

    ```python
    import keras, keras_norms
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(64, 3, use_bias=False),
        keras_norms.EvoNormS0(groups=32),  # replaces GroupNorm + Swish
    ])
    ```

    Reference:
        - [Liu et al., 2020](https://arxiv.org/abs/2004.02967), "Evolving
          Normalization-Activation Layers", NeurIPS 2020 (official code in
          `tensorflow/tpu`)
    """

    _groups_note = " (The official code silently reduces the number of groups instead.)"
    conversion_target = "evonorm_s0"

    def __init__(
        self,
        groups=32,
        axis=-1,
        epsilon=1e-5,
        init_zero=False,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._store_arguments(locals())

    def build(self, input_shape):
        channels = self._build_channels(input_shape)
        self._num_groups = self._groups_of(channels, input_shape)
        self._add_weights((channels,))

    def call(self, inputs, training=None):
        x = _stats.upcast(inputs)
        with inference_call(training is False):  # a kernel may decline a forward pass alone
            y = evonorm_ops.evonorm_s0(
                x,
                *self._weights_as(x.dtype),
                axis=self._channel_axis,
                epsilon=self.epsilon,
                groups=self._num_groups,
            )
        return ops.cast(y, self.compute_dtype)

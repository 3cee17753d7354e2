"""FilterResponseNormalization, TLU and the two fused: FilterResponseNormalizationTLU.

References:
    Singh & Krishnan, "Filter Response Normalization Layer: Eliminating Batch
    Dependence in the Training of Deep Neural Networks", CVPR 2020,
    arXiv:1911.09737. Peers: tensorflow-addons `FilterResponseNormalization`
    and `TLU`; timm `FilterResponseNormTlu2d`.
"""

import keras
from keras import initializers
from keras import ops

from keras_norms.layers._base import NormalizationLayer
from keras_norms.ops import _stats
from keras_norms.ops import filter_response as frn_ops

_RANKS = (3, 4, 5)
_LEARNED_EPSILON_INIT = 1e-4


class _ChannelwiseLayer(NormalizationLayer):
    """Axis and rank checks shared by the three layers (not public)."""

    _dense_hint = "."  # the end of the rank-2 error message

    def _check_axis(self, axis):
        if isinstance(axis, (list, tuple)):
            raise self._error(
                "axis",
                axis,
                "Pass one int, the channel axis (e.g. -1 or 1). The statistics "
                "are taken over all other non-batch axes: tensorflow-addons' "
                "axis=[1, 2] (the spatial axes of NHWC) is axis=-1 here.",
            )
        return super()._check_axis(axis)

    def _check_rank(self, input_shape):
        ndim = len(input_shape)
        if ndim not in _RANKS:
            if ndim == 2:
                hint = "Reshape dense (batch, features) inputs to (batch, 1, features)" + self._dense_hint
            elif ndim > 5:
                hint = "Merge spatial axes to get a rank of 3 to 5."
            else:
                hint = ""
            raise ValueError(
                f"{self._owner()}: expected an input of rank 3, 4 or 5 (batch, 1 to 3 "
                f"spatial axes, channels), received input shape "
                f"{tuple(input_shape)} of rank {ndim}. {hint}".rstrip()
            )


@keras.saving.register_keras_serializable(package="keras_norms")
class FilterResponseNormalization(_ChannelwiseLayer):
    """Filter Response Normalization (FRN): per example and channel, no centring.

    Each channel of each example is divided by its root mean square over the
    spatial positions; nothing is shared between examples, and the mean is
    never subtracted. For an input $x$ with $S$ spatial positions $s$ (all
    axes but the batch axis and `axis`):

    $$\\nu^2_{n,c}=\\frac1S\\sum_{s}x^2_{n,s,c},\\qquad
      y=\\gamma_c\\,\\frac{x}{\\sqrt{\\nu^2_{n,c}+\\epsilon+|\\epsilon_l|}}+\\beta_c ,$$

    where $\\epsilon_l$ is the trainable `learned_epsilon` weight when
    `learned_epsilon=True` and 0 otherwise (the tensorflow-addons form). The
    mean square is computed in float32 (float64 stays float64) and the output
    is cast to the layer's compute dtype: in float16, $x^2$ overflows for
    $|x|>256$.

    The layer is **batch-independent**: training and inference compute the
    same function, there is no state, and an example's output does not
    depend on the rest of the batch (batch size 1 behaves like batch size
    256). The missing centring leaves an arbitrary offset that the paper
    pairs with a thresholded activation: follow it with `keras_norms.TLU`,
    or use `keras_norms.FilterResponseNormalizationTLU`, which does both.

    **1x1 maps.** With one position ($S=1$: the output of a global pooling, a
    1x1 spatial map), $\\nu^2=x^2$ and $x/\\sqrt{x^2+\\epsilon}\\approx
    \\operatorname{sign}(x)$: at $\\epsilon=10^{-6}$, inputs $\\pm0.01$ map to
    $\\pm0.995$ and the gradient vanishes away from 0. Use
    `learned_epsilon=True` there: the total $\\epsilon+|\\epsilon_l|$ starts
    at about $10^{-4}$ and is trained, which keeps the curve smooth.

    Args:
        axis: int, the channel axis (negative or positive, not 0): -1 for
            channels-last, 1 for channels-first. Defaults to -1.
        epsilon: float > 0, the fixed constant added to $\\nu^2$ inside the
            square root. Defaults to 1e-6 (the tensorflow-addons default;
            timm uses 1e-5).
        center: bool, whether to add the per-channel shift `beta`. Defaults
            to True.
        scale: bool, whether to multiply by the per-channel scale `gamma`.
            Defaults to True.
        learned_epsilon: bool, whether to add a trainable scalar
            $\\epsilon_l$ (weight `learned_epsilon`, shape `(1,)`, initialized
            to 1e-4, no regularizer) whose absolute value is added to
            `epsilon`. Recommended where the spatial size is 1. Defaults to
            False.
        beta_initializer: Defaults to `"zeros"`.
        gamma_initializer: Defaults to `"ones"`.
        beta_regularizer: optional regularizer of `beta`. Defaults to None.
        gamma_regularizer: optional regularizer of `gamma`. Defaults to None.
        beta_constraint: optional constraint on `beta`. Defaults to None.
        gamma_constraint: optional constraint on `gamma`. Defaults to None.
        learned_epsilon_constraint: optional constraint on the learned
            epsilon (as in tensorflow-addons). Defaults to None.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: tensor of rank 3, 4 or 5: batch on axis 0, channels on
            `axis`, 1 to 3 spatial axes (their sizes may be unknown).
        training: ignored (accepted for a uniform call signature): training
            and inference compute the same function.

    Returns:
        A tensor of the input's shape in the layer's compute dtype.

    Raises:
        ValueError: for an invalid argument (named in the message), or at
            build for an input of another rank, or whose channel axis is out
            of range, 0 or of unknown size.

    Example:

    ```python
    import keras, keras_norms
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(64, 3, use_bias=False),
        keras_norms.FilterResponseNormalization(),
        keras_norms.TLU(),
    ])
    ```

    Reference:
        - [Singh & Krishnan, 2020](https://arxiv.org/abs/1911.09737),
          "Filter Response Normalization Layer: Eliminating Batch Dependence
          in the Training of Deep Neural Networks"
    """

    _dense_hint = (
        " and use learned_epsilon=True: with one position the normalization is close to sign(x)."
    )
    conversion_target = "filter_response_norm"
    conversion_adds = 'none; with `activations="fuse"`, the TLU in place of the ReLU after it (`tau` = 0)'

    def __init__(
        self,
        axis=-1,
        epsilon=1e-6,
        center=True,
        scale=True,
        learned_epsilon=False,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        learned_epsilon_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._store_arguments(locals())
        self.eps_learned = None

    def _check_learned_epsilon(self, learned_epsilon):
        return self._check_bool("learned_epsilon", learned_epsilon)

    def build(self, input_shape):
        channels = self._build_channels(input_shape)
        self._add_gamma_beta((channels,))
        self._add_extra_weights(channels)
        if self.learned_epsilon:
            self.eps_learned = self._add_affine(
                "learned_epsilon", (1,), initializer=initializers.Constant(_LEARNED_EPSILON_INIT)
            )

    def _add_extra_weights(self, channels):
        """Weights created between `beta` and `learned_epsilon` (subclasses)."""

    def _activation(self, y):
        """Applied to the float32 normalized output (subclasses)."""
        return y

    def call(self, inputs, training=None):  # training and inference are the same function
        x = _stats.upcast(inputs)
        gamma, beta, learned_epsilon = self._cast_all(x.dtype, self.gamma, self.beta, self.eps_learned)
        y = frn_ops.filter_response_norm(
            x, gamma, beta, epsilon=self.epsilon, axis=self._channel_axis, learned_epsilon=learned_epsilon
        )
        return ops.cast(self._activation(y), self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_norms")
class TLU(_ChannelwiseLayer):
    """Thresholded Linear Unit: a ReLU with a learned per-channel threshold.

    $$z=\\max(x,\\tau_c)=\\max(x-\\tau_c,\\,0)+\\tau_c$$

    with one threshold per channel, $\\tau\\in\\mathbb R^C$ (weight `tau`,
    shape `(C,)`, initialized to 0: a ReLU at the start). The activation
    that Filter Response Normalization is paired with: FRN does not centre
    its input, and the learned threshold absorbs the offset. Unlike
    tensorflow-addons' `TLU`, whose threshold has one entry per position
    and channel (the shape of the whole non-batch input), the threshold here
    is per channel, as in the paper and timm, so the layer works for any
    spatial size. The maximum is taken in float32 (so the gradient of
    $\\tau$ is summed in float32) and cast to the compute dtype.

    Args:
        axis: int, the channel axis (negative or positive, not 0): -1 for
            channels-last, 1 for channels-first. Defaults to -1.
        tau_initializer: Defaults to `"zeros"`.
        tau_regularizer: optional regularizer of `tau`. Defaults to None.
        tau_constraint: optional constraint on `tau`. Defaults to None.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: tensor of rank 3, 4 or 5: batch on axis 0, channels on
            `axis`, 1 to 3 spatial axes.
        training: ignored: training and inference compute the same
            function.

    Returns:
        A tensor of the input's shape in the layer's compute dtype.

    Raises:
        ValueError: for an invalid `axis`, or at build for an input of
            another rank, or whose channel axis is out of range, 0 or of
            unknown size.

    Example:

    ```python
    import keras, keras_norms
    x = keras.ops.ones((2, 8, 8, 16))
    y = keras_norms.TLU()(keras_norms.FilterResponseNormalization()(x))
    ```

    Reference:
        - [Singh & Krishnan, 2020](https://arxiv.org/abs/1911.09737),
          "Filter Response Normalization Layer: Eliminating Batch Dependence
          in the Training of Deep Neural Networks"
    """

    def __init__(
        self,
        axis=-1,
        tau_initializer="zeros",
        tau_regularizer=None,
        tau_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._store_arguments(locals())
        self.tau = None

    def build(self, input_shape):
        self.tau = self._add_affine("tau", (self._build_channels(input_shape),))

    def call(self, inputs, training=None):  # training and inference are the same function
        x = _stats.upcast(inputs)
        z = frn_ops.tlu(x, ops.cast(self.tau, x.dtype), axis=self._channel_axis)
        return ops.cast(z, self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_norms")
class FilterResponseNormalizationTLU(FilterResponseNormalization):
    """Filter Response Normalization followed by a TLU, in one layer.

    The paper's block (timm's `FilterResponseNormTlu2d`): with $\\nu^2$ the
    per-example, per-channel mean square over the $S$ spatial positions,

    $$\\nu^2_{n,c}=\\frac1S\\sum_{s}x^2_{n,s,c},\\qquad
      y=\\gamma_c\\,\\frac{x}{\\sqrt{\\nu^2_{n,c}+\\epsilon+|\\epsilon_l|}}+\\beta_c,
      \\qquad z=\\max(y,\\tau_c).$$

    It computes exactly `TLU()(FilterResponseNormalization()(x))` with the
    same weights, except that $y$ stays in float32 between the two steps
    (one cast to the compute dtype, at the end). Weights, in order: `gamma`,
    `beta`, `tau` (each `(C,)`; the order of timm's `weight`, `bias`, `tau`),
    then `learned_epsilon` (`(1,)`) when enabled. See
    `FilterResponseNormalization` for the normalization, its
    batch-independence and the 1x1-map (sign) regime, and `TLU` for the
    threshold.

    Args:
        axis: int, the channel axis (negative or positive, not 0). Defaults
            to -1.
        epsilon: float > 0 added to $\\nu^2$ inside the square root.
            Defaults to 1e-6.
        center: bool, whether to add `beta`. Defaults to True.
        scale: bool, whether to multiply by `gamma`. Defaults to True.
        learned_epsilon: bool, whether to add a trainable scalar
            $\\epsilon_l$ (initialized to 1e-4) whose absolute value is added
            to `epsilon`; recommended for 1x1 maps. Defaults to False.
        beta_initializer: Defaults to `"zeros"`.
        gamma_initializer: Defaults to `"ones"`.
        tau_initializer: Defaults to `"zeros"`.
        beta_regularizer: Defaults to None.
        gamma_regularizer: Defaults to None.
        tau_regularizer: Defaults to None.
        beta_constraint: Defaults to None.
        gamma_constraint: Defaults to None.
        tau_constraint: Defaults to None.
        learned_epsilon_constraint: Defaults to None.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: tensor of rank 3, 4 or 5: batch on axis 0, channels on
            `axis`, 1 to 3 spatial axes.
        training: ignored: training and inference compute the same
            function.

    Returns:
        A tensor of the input's shape in the layer's compute dtype.

    Raises:
        ValueError: for an invalid argument, or at build for an input of
            another rank, or whose channel axis is out of range, 0 or of
            unknown size.

    Example:

    ```python
    import keras, keras_norms
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(64, 3, use_bias=False),
        keras_norms.FilterResponseNormalizationTLU(),
    ])
    ```

    Reference:
        - [Singh & Krishnan, 2020](https://arxiv.org/abs/1911.09737),
          "Filter Response Normalization Layer: Eliminating Batch Dependence
          in the Training of Deep Neural Networks"
    """

    def __init__(
        self,
        axis=-1,
        epsilon=1e-6,
        center=True,
        scale=True,
        learned_epsilon=False,
        beta_initializer="zeros",
        gamma_initializer="ones",
        tau_initializer="zeros",
        beta_regularizer=None,
        gamma_regularizer=None,
        tau_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        tau_constraint=None,
        learned_epsilon_constraint=None,
        **kwargs,
    ):
        # FilterResponseNormalization's constructor stores its defaults; this one stores every argument again.
        super().__init__(**kwargs)
        self._store_arguments(locals())
        self.tau = None

    def _add_extra_weights(self, channels):
        self.tau = self._add_affine("tau", (channels,))

    def _activation(self, y):
        return frn_ops.tlu(y, ops.cast(self.tau, y.dtype), axis=self._channel_axis)

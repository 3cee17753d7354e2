"""LayerNormalization and RMSNormalization: drop-ins for Keras's layers on the package's layer-norm ops.

References:
    Ba, Kiros & Hinton, "Layer Normalization", 2016, arXiv:1607.06450;
    Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019,
    arXiv:1910.07467. Peers: `keras.layers.LayerNormalization` and
    `keras.layers.RMSNormalization` (same arguments, weights and config),
    PyTorch `torch.nn.LayerNorm`, `torch.nn.RMSNorm`.
"""

import keras
from keras import ops

from keras_norms.layers._base import NormalizationLayer
from keras_norms.ops import _stats
from keras_norms.ops import layer_normalization as ln_ops


class _FeatureAxesLayer(NormalizationLayer):
    """A layer normalizing each example over the axes `axis` (an int or a list of ints), weights spanning them.

    The `axis` check, the weights' shape, the input spec and the output shape
    of both layers of this module. (Could move to `layers/_base.py` when
    another layer takes a list of axes.)
    """

    def _check_axis(self, axis):
        axes = axis if isinstance(axis, (list, tuple)) else [axis]
        if not axes or any(isinstance(a, bool) or not isinstance(a, int) for a in axes):
            raise self._error(
                "axis", axis, "Pass an int or a non-empty list of ints, the axes to normalize over (e.g. -1)."
            )
        return list(axis) if isinstance(axis, (list, tuple)) else axis

    def _build_axes(self, input_shape):
        """Checks `axis` against `input_shape`, records the normalized axes and the input spec; the weights' shape.

        The weights' shape is Keras's: the sizes of the axes sorted as passed
        (`[-1, 1]` gives `(C, H)`; the ops reshape it, as Keras's do).

        Raises:
            ValueError: for an axis out of range, the batch axis 0 or an axis
                named twice, or a normalized axis of unknown size.
        """
        ndim = len(input_shape)
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        resolved = [_stats.canonical_axis(a, ndim, self._owner()) for a in axes]
        if 0 in resolved or len(set(resolved)) < len(resolved):
            raise self._error(
                "axis",
                self.axis,
                f"For an input of rank {ndim} it names the axes {resolved}: pass distinct axes other than 0, "
                "the batch axis (normalize each example over its feature axes).",
            )
        shape = tuple(input_shape[a] for a in sorted(axes))
        if None in shape:
            raise ValueError(
                f"{self._owner()}: the normalized axes {self.axis} of input shape {tuple(input_shape)} have "
                f"sizes {shape}. Give the input static sizes on the normalized axes (the weights span them)."
            )
        self._axes = tuple(sorted(resolved))
        self.input_spec = keras.InputSpec(ndim=ndim, axes={a: input_shape[a] for a in self._axes})
        return shape

    def compute_output_shape(self, input_shape):
        for axis in self.axis if isinstance(self.axis, list) else [self.axis]:
            _stats.canonical_axis(axis, len(input_shape), self._owner())
        return input_shape


@keras.saving.register_keras_serializable(package="keras_norms")
class LayerNormalization(_FeatureAxesLayer):
    """Layer normalization, a drop-in for `keras.layers.LayerNormalization`.

    Each example is normalized over the axes $\\mathcal A$ = `axis` (the
    features), then scaled and shifted elementwise by $\\gamma,\\beta$ spanning
    those axes:

    $$\\mu=\\operatorname{mean}_{\\mathcal A}x,\\qquad
      \\sigma^2=\\operatorname{mean}_{\\mathcal A}(x-\\mu)^2,\\qquad
      y=\\gamma\\,\\frac{x-\\mu}{\\sqrt{\\sigma^2+\\epsilon}}+\\beta .$$

    The layer is batch-independent and has no state: training and inference
    compute the same function. Normalizing a feature map over its channel
    axis only (`axis=-1` on `(N, H, W, C)`) makes it a replacement for a
    batch normalization that carries its `gamma` and `beta`
    (`keras_norms.convert_normalization(model, "layer_norm")`).

    Same constructor arguments and defaults, weight names, shapes and order
    (`gamma`, then `beta`) and config keys as the Keras layer, so
    `set_weights`/`get_weights` and `.weights.h5` files move between the two
    and a Keras config rebuilds this layer (its deprecated `rms_scaling` is
    accepted as `False` only). The statistics are computed in float32 (float64
    stays float64), two-pass, and the output is cast to the layer's compute
    dtype; as in Keras, a float32 input is not cast down to a 16-bit compute
    dtype before normalizing (`autocast` is off). Contrary to Keras's layer,
    building does not rewrite `axis` (the config is the same before and
    after). The math is `keras_norms.ops.layer_norm`, which takes PyTorch's
    `F.layer_norm` where the normalized axes are the trailing ones. Masks are
    passed through unchanged, as Keras's layer does: masked positions are
    normalized with the others.

    Args:
        axis: int or list/tuple of ints, the axes normalized over (not the
            batch axis 0); negative or positive. Defaults to -1.
        epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-3.
        center: bool, whether to add the offset `beta` (shaped as `gamma`).
            Defaults to True.
        scale: bool, whether to multiply by `gamma`, whose shape is the sizes
            of the normalized axes. Defaults to True.
        beta_initializer: how `beta` starts. Defaults to `"zeros"`.
        gamma_initializer: how `gamma` starts. Defaults to `"ones"`.
        beta_regularizer: optional penalty on `beta` added to the loss.
            Defaults to None.
        gamma_regularizer: optional penalty on `gamma`. Defaults to None.
        beta_constraint: optional projection of `beta` after each update.
            Defaults to None.
        gamma_constraint: optional projection of `gamma`. Defaults to None.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: tensor of rank >= 2 with the batch on axis 0.
        training: ignored: training and inference are the same function.

    Returns:
        The normalized tensor, of the input's shape, in the compute dtype.

    Raises:
        ValueError: for an invalid argument (named in the message), or at
            build an axis out of range, the batch axis, an axis named twice or
            a normalized axis of unknown size.

    Example:

    ```python
    import keras, keras_norms
    model = keras.Sequential([
        keras.Input((16, 64)),
        keras.layers.Dense(64),
        keras_norms.LayerNormalization(),
    ])
    ```

    Reference:
        - [Ba et al., 2016](https://arxiv.org/abs/1607.06450), "Layer
          Normalization"
    """

    conversion_target = "layer_norm"

    def __init__(
        self,
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
        **kwargs,
    ):
        # Keras's config carries its deprecated `rms_scaling`: taken from kwargs, as Keras does, and stored.
        rms_scaling = kwargs.pop("rms_scaling", False)
        super().__init__(**kwargs)
        self._store_arguments(locals())
        self.supports_masking = True
        # As Keras's layer: a float32 input is normalized as is, not rounded to a 16-bit compute dtype first.
        self.autocast = False

    def _check_rms_scaling(self, rms_scaling):
        if rms_scaling is not False:
            raise self._error(
                "rms_scaling",
                rms_scaling,
                "Keras deprecated it (it divides by the standard deviation without centring): use "
                "keras_norms.RMSNormalization for RMS normalization, or leave `rms_scaling` out.",
            )
        return rms_scaling

    def build(self, input_shape):
        self._add_gamma_beta(self._build_axes(input_shape))

    def call(self, inputs, training=None):
        y = ln_ops.layer_norm(_stats.upcast(inputs), self.gamma, self.beta, self._axes, self.epsilon)
        return ops.cast(y, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        # Keras's key order: `rms_scaling` right after `scale`.
        rms_scaling, keys = config.pop("rms_scaling"), list(config)
        at = keys.index("scale") + 1
        return {**{k: config[k] for k in keys[:at]}, "rms_scaling": rms_scaling, **{k: config[k] for k in keys[at:]}}


@keras.saving.register_keras_serializable(package="keras_norms")
class RMSNormalization(_FeatureAxesLayer):
    """Root-mean-square normalization, a drop-in for `keras.layers.RMSNormalization`.

    Each example is divided by its root mean square over the axes
    $\\mathcal A$ = `axis` and scaled elementwise by $\\gamma$ (the weight
    `scale`) spanning those axes; no centring, no shift:

    $$y=\\gamma\\,\\frac{x}{\\sqrt{\\operatorname{mean}_{\\mathcal A}x^2+\\epsilon}} .$$

    Batch-independent and stateless. Same constructor arguments and defaults,
    weight (`scale`, initialized to ones), config keys and dtype behaviour as
    the Keras layer: the input is cast to the compute dtype (`autocast` is on,
    as in Keras), the statistics are computed in float32 (float64 stays
    float64) and the output is cast to the compute dtype. As Keras's layer, it
    does not support masking: a mask does not pass through. The math is
    `keras_norms.ops.rms_norm`, which takes PyTorch's `F.rms_norm` where the
    normalized axes are the trailing ones.

    Args:
        axis: int or list/tuple of ints, the axes normalized over (not the
            batch axis 0). Defaults to -1.
        epsilon: float > 0 added to the mean square inside the square root.
            Defaults to 1e-6.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: tensor of rank >= 2, batch on axis 0.
        training: accepted and ignored.

    Returns:
        A tensor of the input's shape in the layer's compute dtype.

    Raises:
        ValueError: as `LayerNormalization`.

    Example:

    ```python
    import keras, keras_norms
    block = keras.Sequential([keras.Input((16, 64)), keras_norms.RMSNormalization(), keras.layers.Dense(256)])
    ```

    Reference:
        - [Zhang & Sennrich, 2019](https://arxiv.org/abs/1910.07467), "Root
          Mean Square Layer Normalization"
    """

    def __init__(self, axis=-1, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self._store_arguments(locals())

    def build(self, input_shape):
        # As Keras's: autocast (a 16-bit compute dtype reads the weight rounded), no initializer argument.
        self.scale = self.add_weight(name="scale", shape=self._build_axes(input_shape), initializer="ones")

    def call(self, inputs, training=None):
        y = ln_ops.rms_norm(_stats.upcast(inputs), self.scale, self._axes, self.epsilon)
        return ops.cast(y, self.compute_dtype)

"""GroupNormalization: a drop-in for `keras.layers.GroupNormalization` on the package's fast group-norm op.

References:
    Wu & He, "Group Normalization", ECCV 2018, arXiv:1803.08494. Peers:
    `keras.layers.GroupNormalization` (same arguments, weights and config),
    PyTorch `torch.nn.GroupNorm`.
"""

import keras
from keras import ops

from keras_norms.layers._base import NormalizationLayer
from keras_norms.ops import _stats
from keras_norms.ops import batch_channel as group_ops
from keras_norms.ops._dispatch import inference_call


@keras.saving.register_keras_serializable(package="keras_norms")
class GroupNormalization(NormalizationLayer):
    """Group normalization, a drop-in for `keras.layers.GroupNormalization`.

    The $C$ channels are split into $G$ = `groups` groups of $C_g=C/G$
    consecutive channels; each example's group is normalized over its
    channels and all spatial positions $\\mathcal S_{n,g}$, then scaled and
    shifted per channel:

    $$\\mu_{n,g}=\\operatorname{mean}_{\\mathcal S_{n,g}}x,\\qquad
      \\sigma^2_{n,g}=\\operatorname{mean}_{\\mathcal S_{n,g}}(x-\\mu_{n,g})^2,\\qquad
      y=\\gamma_c\\,\\frac{x-\\mu_{n,g}}{\\sqrt{\\sigma^2_{n,g}+\\epsilon}}+\\beta_c .$$

    The layer is batch-independent and has no state: training and inference
    compute the same function. `groups=1` normalizes each example over all
    its channels and positions (layer normalization over channels and
    space); `groups=-1` (one channel per group) is instance normalization.

    Same constructor arguments and defaults, weight names and order
    (`gamma`, then `beta`) and config keys as the Keras layer, so
    `set_weights`/`get_weights` and `.weights.h5` files move between the two
    and a Keras config rebuilds this layer. The statistics are computed in
    float32 (float64 stays float64), two-pass, and the output is cast to the
    layer's compute dtype; as in Keras, a float32 input is not cast down to
    a 16-bit compute dtype before normalizing (`autocast` is off). The math
    is `keras_norms.ops.group_norm`, which takes PyTorch's `F.group_norm`
    or the one-pass XLA kernel where they apply (see the fast-paths page).
    Masks are passed through unchanged, as Keras's layer does: masked
    positions are normalized with the others.

    Args:
        groups: int, the number of channel groups $G$; must divide the
            channel count; -1 means one channel per group (instance
            normalization). Defaults to 32.
        axis: int, the channel axis (negative or positive, not 0). Defaults
            to -1.
        epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-3.
        center: bool, whether to add the offset `beta`. Defaults to True.
        scale: bool, whether to multiply by `gamma`. Defaults to True.
        beta_initializer: initializer of `beta`. Defaults to `"zeros"`.
        gamma_initializer: initializer of `gamma`. Defaults to `"ones"`.
        beta_regularizer: optional regularizer of `beta`. Defaults to None.
        gamma_regularizer: optional regularizer of `gamma`. Defaults to None.
        beta_constraint: optional constraint on `beta`. Defaults to None.
        gamma_constraint: optional constraint on `gamma`. Defaults to None.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: tensor of rank >= 2, batch on axis 0.
        training: accepted and ignored (the layer computes the same function
            in both modes).

    Returns:
        A tensor of the input's shape in the layer's compute dtype.

    Raises:
        ValueError: for an invalid argument (named in the message), an input
            whose channel axis is out of range, 0 or of unknown size, or a
            channel count that `groups` does not divide (at build).

    Example:

    ```python
    import keras, keras_norms
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras_norms.WSConv2D(64, 3, use_bias=False),
        keras_norms.GroupNormalization(groups=32),
        keras.layers.ReLU(),
    ])
    ```

    Reference:
        - [Wu & He, 2018](https://arxiv.org/abs/1803.08494), "Group
          Normalization"
    """

    conversion_target = "group_norm"

    def __init__(
        self,
        groups=32,
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
        super().__init__(**kwargs)
        self._store_arguments(locals())
        self.supports_masking = True
        # As Keras's layer: a float32 input is normalized as is, not rounded to a 16-bit compute dtype first.
        self.autocast = False

    def build(self, input_shape):
        channels = self._build_channels(input_shape)
        self._num_groups = self._groups_of(channels, input_shape)
        self._add_gamma_beta((channels,))

    def call(self, inputs, training=None):
        x = _stats.upcast(inputs)
        gamma, beta = self._cast_all(x.dtype, self.gamma, self.beta)
        with inference_call(training is False):  # a kernel may decline a forward pass alone
            y = group_ops.group_norm(x, gamma, beta, self._channel_axis, self.epsilon, self._num_groups)
        return ops.cast(y, self.compute_dtype)

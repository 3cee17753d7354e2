"""InstanceNormalization: group normalization with one channel per group, the layer tf-addons had.

References:
    Ulyanov, Vedaldi & Lempitsky, "Instance Normalization: The Missing
    Ingredient for Fast Stylization", arXiv:1607.08022. Peers:
    `keras.layers.GroupNormalization(groups=-1)` (same function, weights
    and config but `groups`), tf-addons `InstanceNormalization` (a
    GroupNormalization forcing `groups=-1`), PyTorch
    `torch.nn.InstanceNorm2d(affine=True)`.
"""

import keras

from keras_norms.layers.group_normalization import GroupNormalization

_GROUPS_NOTE = (
    "InstanceNormalization has one channel per group and takes `groups` only as tf-addons' configs wrote it (-1, "
    "or the channel count after build): leave it out, or use keras_norms.GroupNormalization"
)


@keras.saving.register_keras_serializable(package="keras_norms")
class InstanceNormalization(GroupNormalization):
    """Instance normalization: `keras_norms.GroupNormalization` with one channel per group.

    Each example's channel $c$ is normalized over its spatial positions
    $\\mathcal S_{n,c}$, then scaled and shifted per channel:

    $$\\mu_{n,c}=\\operatorname{mean}_{\\mathcal S_{n,c}}x,\\qquad
      \\sigma^2_{n,c}=\\operatorname{mean}_{\\mathcal S_{n,c}}(x-\\mu_{n,c})^2,\\qquad
      y=\\gamma_c\\,\\frac{x-\\mu_{n,c}}{\\sqrt{\\sigma^2_{n,c}+\\epsilon}}+\\beta_c .$$

    Keras has no instance-normalization layer: this one computes
    `keras.layers.GroupNormalization(groups=-1)`, with the same weights in
    the same order (`gamma`, then `beta`, of shape $(C,)$) and the same
    config without `groups`, so `set_weights`/`get_weights` and `.h5`
    files move between the two and a Keras `GroupNormalization(groups=-1)`
    config rebuilds it (a Keras 3 `.weights.h5` file keys each layer by its
    class name: load it into the model that saved it, then copy the weights
    with `set_weights`). It replaces
    tf-addons' `InstanceNormalization`: that layer's configs rebuild this
    one (its `groups` key, -1 before build and the channel count after, is
    accepted and dropped), also under its registered name
    `"Addons>InstanceNormalization"`. Batch-independent and stateless, with
    float32 statistics, as `keras_norms.GroupNormalization`; the math is
    `keras_norms.ops.group_norm` with $C$ groups, on its fast paths.

    Args:
        **kwargs: every argument of `keras_norms.GroupNormalization` but
            `groups`, with the same defaults (`axis=-1`, `epsilon=1e-3`,
            `center=True`, `scale=True`, the initializers, regularizers and
            constraints of `gamma` and `beta`), and the base `Layer`
            arguments (`name`, `dtype`, `trainable`). `groups` is taken only
            as tf-addons' configs carry it: -1, None or the channel count.

    Call arguments:
        inputs: tensor of rank >= 3 (batch, spatial axes, channels in any
            order but batch first); on rank 2 each statistic is over one
            value, and the output is `beta`.
        training: accepted and ignored (the same function in both modes).

    Returns:
        A tensor of the input's shape in the layer's compute dtype.

    Raises:
        ValueError: as `keras_norms.GroupNormalization`, and at build for a
            `groups` other than -1, None or the channel count.

    Example:

    ```python
    import keras, keras_norms
    model = keras.Sequential([
        keras.Input((64, 64, 3)),
        keras.layers.Conv2D(32, 3, padding="same"),
        keras_norms.InstanceNormalization(),
        keras.layers.ReLU(),
    ])
    ```

    Reference:
        - [Ulyanov et al., 2016](https://arxiv.org/abs/1607.08022),
          "Instance Normalization: The Missing Ingredient for Fast
          Stylization"
    """

    conversion_target = "instance_norm"

    def __init__(self, **kwargs):
        super().__init__(groups=kwargs.pop("groups", -1), **kwargs)

    def _check_groups(self, groups):
        # Not an argument of this layer: what tf-addons' configs wrote (-1, or C after build; C is checked at build).
        if groups is None or (groups == -1 and not isinstance(groups, bool)):
            return -1
        return self._check_positive_int("groups", groups, f"{_GROUPS_NOTE} for groups of several channels.")

    def _groups_of(self, channels, input_shape):
        if self.groups not in (-1, channels):
            raise self._error(
                "groups",
                self.groups,
                f"The input has {channels} channels on axis {self.axis}; {_GROUPS_NOTE}(groups={self.groups}).",
            )
        return channels

    def get_config(self):
        config = super().get_config()
        del config["groups"]  # always one channel per group: not written, as the layer takes no `groups`
        return config

    @classmethod
    def from_batch_normalization(cls, bn, **options):
        """An InstanceNormalization in place of `bn` (see `NormalizationLayer.from_batch_normalization`)."""
        # One channel per group, not the default of the grouped layers (the largest divisor of C <= 32).
        return super().from_batch_normalization(bn, **{"groups": -1, **options})


# tf-addons registered its layer as "Addons>InstanceNormalization": that name deserializes to this class (saved
# configs keep working), while this class still serializes as "keras_norms>InstanceNormalization".
keras.saving.get_custom_objects().setdefault("Addons>InstanceNormalization", InstanceNormalization)

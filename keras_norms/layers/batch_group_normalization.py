"""BatchGroupNormalization: the Four Things BN/GN combination for tiny batches.

References:
    Summers & Dinneen, "Four Things Everyone Should Know to Improve Batch
    Normalization", ICLR 2020, item (d) (official code:
    github.com/ceciliaresearch/four_things_batch_norm, whose docstring calls
    it "Batch/Group Normalization Generalization").
    Wu & He, "Group Normalization", ECCV 2018.

Not to be confused with Zhou et al.'s unrelated 2020 paper "Batch Group
Normalization".
"""


import keras
from keras import ops

from keras_norms.layers._base import NormalizationLayer
from keras_norms.layers._base import bn_moments
from keras_norms.ops import _stats
from keras_norms.ops import group as group_ops


@keras.saving.register_keras_serializable(package="keras_norms")
class BatchGroupNormalization(NormalizationLayer):
    """Batch-Group normalization: group norm pooled over a few examples.

    The Four Things BN/GN combination for very small batches. In training,
    the batch is split into example groups of `examples_per_group` ($E$)
    **consecutive** examples and the channels into `groups` ($G$) groups of
    $C_g=C/G$ consecutive channels; each (example group $e$ x channel group
    $g$) cell is normalized with its own statistics over its examples, its
    channels and all spatial positions, with a **per-channel** affine:

    $$\\mu_{e,g}=\\operatorname{mean}_{\\mathcal S_{e,g}}x,\\quad
      \\sigma^2_{e,g}=\\operatorname{mean}_{\\mathcal S_{e,g}}(x-\\mu_{e,g})^2,\\quad
      y=\\gamma_c\\frac{x-\\mu_{e,g}}{\\sqrt{\\sigma^2_{e,g}+\\epsilon}}+\\beta_c .$$

    $E$ is capped at the batch size; when $E$ does not divide the batch the
    trailing examples form a smaller last example group. Special cases:
    $E=1$ is group normalization, so **batch size 1 (or
    `examples_per_group=1`) trains exactly as `keras.layers.GroupNormalization`**;
    `groups=-1` with $E\\ge N$ is batch normalization.

    **Moving state.** As in the official code the state holds raw moments,
    not a variance: `moving_mean` $\\bar m^{(1)}_c$ and
    `moving_second_moment` $\\bar m^{(2)}_c$, updated once per training step
    from the **full-batch** per-channel averages of $x$ and $x^2$ (over
    every axis except `axis`): $\\bar m^{(k)}\\leftarrow\\rho\\,\\bar m^{(k)}
    +(1-\\rho)\\operatorname{mean}(x^k)$.

    **Inference.** The moving moments are averaged over each channel group,
    $\\bar M^{(k)}_g$, and mixed with example $n$'s own group moments
    $S^{(k)}_{n,g}$ (the mean of $x^k$ over the group's channels and all
    spatial positions) by $\\alpha$ = `inference_example_weight`:

    $$\\tilde\\mu_{n,g}=(1-\\alpha)\\bar M^{(1)}_g+\\alpha S^{(1)}_{n,g},\\quad
      \\tilde\\sigma^2_{n,g}=\\max\\big((1-\\alpha)\\bar M^{(2)}_g+\\alpha S^{(2)}_{n,g}
      -\\tilde\\mu^2_{n,g},0\\big),\\quad
      y=\\gamma_c\\frac{x-\\tilde\\mu_{n,g}}{\\sqrt{\\tilde\\sigma^2_{n,g}+\\epsilon}}+\\beta_c .$$

    With the default $\\alpha=0$ (as in the official code) even $E=1$ uses
    population statistics at inference, which is **not** group
    normalization: standard GN at test time needs
    `inference_example_weight=1` together with `examples_per_group=1`.

    Statistics are computed in float32 (float64 stays float64) with a
    two-pass variance in training and a cancellation-safe, clamped mix at
    inference; the output is cast to the layer's compute dtype.

    Args:
        groups: int, the number of channel groups $G$; must divide the
            channel count. -1 means one channel per group (as in
            `keras.layers.GroupNormalization`). Defaults to 32.
        examples_per_group: positive int $E$, the number of consecutive
            examples pooled into each training statistic; capped at the
            batch size. Defaults to 2.
        axis: int, the channel axis (negative or positive, not 0). Defaults
            to -1.
        momentum: float in [0, 1], weight of the old value in the moving
            averages (the official `moving_average_decay`; PyTorch's
            `momentum=0.1` is Keras's 0.9). Defaults to 0.99.
        epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-3 (this package's choice, as Keras
            GroupNormalization; the official code uses 1e-5).
        center: bool, whether to add the offset `beta`. Defaults to True.
        scale: bool, whether to multiply by `gamma`. Defaults to True.
        beta_initializer: initializer of `beta`. Defaults to `"zeros"`.
        gamma_initializer: initializer of `gamma`. Defaults to `"ones"`.
        moving_mean_initializer: initializer of `moving_mean`. Defaults to
            `"zeros"`.
        moving_second_moment_initializer: initializer of
            `moving_second_moment`. Defaults to `"ones"`.
        beta_regularizer: optional regularizer of `beta`. Defaults to None.
        gamma_regularizer: optional regularizer of `gamma`. Defaults to None.
        beta_constraint: optional constraint on `beta`. Defaults to None.
        gamma_constraint: optional constraint on `gamma`. Defaults to None.
        inference_example_weight: float $\\alpha$ in [0, 1]. Defaults to 0
            (population statistics only). A Python float captured when a
            test or predict function is traced: after changing it, call
            `model.make_test_function(force=True)` and
            `model.make_predict_function(force=True)`. On rank-2 inputs with
            one channel per group, $\\alpha=1$ outputs `beta`.
        synchronized: bool, for data-parallel training. An example group
            never spans replicas (each replica splits its own batch, $E$
            capped at it), so the training output does not change; True
            all-reduces the full-batch moments of the moving state, so that
            every replica keeps the moments of the global batch. False:
            each replica's own (averaged over the devices on JAX).
            Identical on one device. See the guide "Training on several
            devices" (`docs/guides/multi_device.md`). Defaults to False.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: tensor of rank >= 2, batch on axis 0.
        training: bool, training mode (cell statistics, moving moments
            updated). A layer with `trainable=False` always runs in
            inference mode, as Keras's BatchNormalization does.
        mask: optional boolean tensor of rank `ndim - 1` (Keras
            BatchNormalization's convention: it covers every axis but the
            last and is broadcast over it), e.g. from a `Masking` layer or
            `Embedding(mask_zero=True)`. In training, each cell's statistics
            and the moving moments are taken over the unmasked entries only;
            masked entries are normalized like the others. A cell with no
            unmasked entry is normalized with mean 0 and variance 0 (finite
            outputs). At inference the mask is not used (with
            `inference_example_weight` > 0 the example's own moments cover
            all its entries). The output mask is the input mask.

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
        keras.layers.Conv2D(64, 3, use_bias=False),
        keras_norms.BatchGroupNormalization(groups=32, examples_per_group=2),
        keras.layers.ReLU(),
    ])
    ```

    Reference:
        - [Summers & Dinneen, 2020](https://arxiv.org/abs/1906.03548),
          "Four Things Everyone Should Know to Improve Batch Normalization"
          (item (d) and inference example weighing)
        - [Wu & He, 2018](https://arxiv.org/abs/1803.08494) (Group
          Normalization)
    """

    conversion_target = "batch_group_norm"
    conversion_carries = "γ, β, moving mean"
    conversion_adds = "moving second moment = variance + mean²"
    _carried_weights = {"gamma": "gamma", "beta": "beta", "moving_mean": "moving_mean"}
    population_statistics = {"moving_mean": "mean", "moving_second_moment": "second_moment"}

    def __init__(
        self,
        groups=32,
        examples_per_group=2,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_second_moment_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        inference_example_weight=0.0,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._store_arguments(locals())
        self.supports_masking = True
        self.moving_mean = None
        self.moving_second_moment = None

    # ------------------------------------------------------------ validation
    def _check_examples_per_group(self, value):
        fix = "Pass a positive int (1 gives group normalization in training)."
        return self._check_positive_int("examples_per_group", value, fix)

    # ----------------------------------------------------------------- state
    def build(self, input_shape):
        channels = self._build_channels(input_shape)
        self._num_groups = self._groups_of(channels, input_shape)
        shape = (channels,)
        self._add_gamma_beta(shape)
        self.moving_mean = self._state("moving_mean", shape, self.moving_mean_initializer)
        self.moving_second_moment = self._state(
            "moving_second_moment", shape, self.moving_second_moment_initializer
        )

    def _carry_from_batch_normalization(self, bn):
        # BGN keeps raw moments: its second moment is the BN's variance + mean**2 (computed in float64).
        super()._carry_from_batch_normalization(bn)
        self.moving_second_moment.assign(bn_moments(bn)[1].astype(self.moving_second_moment.dtype))

    # ------------------------------------------------------------------ call
    def call(self, inputs, training=None, mask=None):
        x = _stats.upcast(inputs)
        dtype = x.dtype
        gamma, beta = self._cast_all(dtype, self.gamma, self.beta)
        axis = self._channel_axis
        if training and self.trainable:
            y, mean, second_moment = group_ops.batch_group_norm(
                x,
                gamma,
                beta,
                axis,
                self.epsilon,
                self._num_groups,
                self.examples_per_group,
                mask,
                synchronized=self.synchronized,
            )
            self._update_moving(self.moving_mean, mean)
            self._update_moving(self.moving_second_moment, second_moment)
        else:
            y = group_ops.batch_group_norm_inference(
                x,
                ops.cast(self.moving_mean, dtype),
                ops.cast(self.moving_second_moment, dtype),
                gamma,
                beta,
                axis,
                self.epsilon,
                self._num_groups,
                self.inference_example_weight,
            )
        return ops.cast(y, self.compute_dtype)

"""BatchChannelNormalization: batch knowledge, then group normalization.

References:
    Qiao, Wang, Liu, Shen & Yuille, "Micro-Batch Training with Batch-Channel
    Normalization and Weight Standardization", arXiv:1903.10520 (official
    code: github.com/joe-siyuan-qiao/Batch-Channel-Normalization).
    Wu & He, "Group Normalization", ECCV 2018.
"""

import keras
from keras import ops

from keras_norms.layers._base import NormalizationLayer
from keras_norms.layers._base import carry_weights
from keras_norms.ops import _stats
from keras_norms.ops import batch_channel as bcn_ops
from keras_norms.ops._dispatch import inference_call

_MODES = ("batch", "estimate")
_FINAL_AFFINES = ("channel", "group")


@keras.saving.register_keras_serializable(package="keras_norms")
class BatchChannelNormalization(NormalizationLayer):
    """Batch-Channel normalization (BCN): a batch step, then group norm.

    Three steps, in the order of the official code:

    1. **Batch knowledge, per channel**, with its own affine
       $\\gamma^b,\\beta^b$ (`batch_gamma`, `batch_beta`):

       $$\\hat x=\\gamma^b_c\\,\\frac{x-\\hat\\mu_c}{\\sqrt{\\hat\\sigma^2_c+\\epsilon}}+\\beta^b_c ;$$

    2. **group normalization without affine**, per example, over each group
       of $C_g=C/G$ consecutive channels and all spatial positions;
    3. **a final affine** $\\gamma,\\beta$, per channel (default) or per group:

       $$y=\\gamma_{c|g}\\,\\frac{\\hat x-\\mu_{n,g}(\\hat x)}
         {\\sqrt{\\sigma^2_{n,g}(\\hat x)+\\epsilon}}+\\beta_{c|g}.$$

    Where $\\hat\\mu,\\hat\\sigma^2$ come from depends on `mode`:

    * `"batch"` (large batches): the batch mean and biased variance in
      training, with Keras BatchNormalization semantics for the moving
      averages, $m\\leftarrow\\rho\\,m+(1-\\rho)\\,b$; the moving statistics
      at inference.
    * `"estimate"` (EstBN, micro-batches): **estimated population
      statistics in the forward pass, in training too**. Each training step
      first updates the estimates with update rate $r=1-\\rho$
      ($\\rho$ = `momentum`; default $r=0.01$), taking the variance about
      the **old** mean as the official code does,

      $$\\hat\\mu_c\\leftarrow\\rho\\,\\hat\\mu_c+r\\,m_c,\\qquad
        \\hat\\sigma^2_c\\leftarrow\\rho\\,\\hat\\sigma^2_c+r\\,v_c,\\qquad
        v_c=\\operatorname{mean}_{\\neg c}(x-\\hat\\mu^{old}_c)^2,$$

      with $m_c$ the batch mean, then normalizes with the **just-updated**
      estimates under **stop-gradient**: no gradient flows into the
      statistics. Inference uses the same formula with frozen estimates, so
      training and inference compute the same function up to the update.
      Whether the paper (not the code) takes the variance about the old
      mean, and which update rate the authors used, are not confirmed: the
      official code leaves $r$ at 0 for the training driver to set; 0.01 is
      the value of a third-party fork.

    The state (`moving_mean`, `moving_variance`: $\\hat\\mu$, $\\hat\\sigma^2$,
    initialized to 0 and 1) has the same names and meaning in both modes.
    The official code's final affine is per group (`final_affine="group"`,
    for parity with released checkpoints); whether the paper's is per
    channel is not confirmed. See the Design notes page of the
    documentation, section Batch-Channel Normalization. Statistics are computed in float32 (float64 stays
    float64) with two-pass variances; the output is cast to the layer's
    compute dtype.

    Args:
        groups: int, the number of channel groups $G$ of the group-norm
            step; must divide the channel count. -1 means one channel per
            group (then the group step removes the batch step's affine:
            use $C_g\\ge 2$). Defaults to 32.
        mode: `"batch"` (batch statistics in training) or `"estimate"`
            (EstBN: estimated statistics under stop-gradient in training).
            Defaults to `"batch"`.
        final_affine: `"channel"` (a `(C,)` final $\\gamma,\\beta$) or
            `"group"` (a `(G,)` one, as in the official code). Defaults to
            `"channel"` (this package's choice; the official code's is
            per group).
        axis: int, the channel axis (negative or positive, not 0). Defaults
            to -1.
        momentum: float $\\rho$ in [0, 1], the weight of the old value in the
            moving averages (`"batch"`) or the estimates (`"estimate"`); the
            update rate of the paper's code is $r=1-\\rho$ (PyTorch's
            `momentum=0.1` is $\\rho=0.9$). `momentum=1` freezes the
            statistics (the official code's $r=0$). Defaults to 0.99
            (this package's choice, the value of a third-party fork; the
            paper's value is not confirmed).
        epsilon: float > 0 added to the variance inside the square root, in
            both normalization steps. Defaults to 1e-5 (the official value).
        center: bool, whether to add the shifts `batch_beta` and `beta`.
            Defaults to True.
        scale: bool, whether to multiply by `batch_gamma` and `gamma`.
            Defaults to True.
        beta_initializer: initializer of both shifts. Defaults to `"zeros"`.
        gamma_initializer: initializer of both scales. Defaults to `"ones"`.
        moving_mean_initializer: Defaults to `"zeros"`.
        moving_variance_initializer: Defaults to `"ones"`.
        beta_regularizer: optional regularizer of both shifts. Defaults to
            None.
        gamma_regularizer: optional regularizer of both scales. Defaults to
            None.
        beta_constraint: optional constraint on both shifts. Defaults to
            None.
        gamma_constraint: optional constraint on both scales. Defaults to
            None.
        synchronized: bool, all-reduce the batch step's statistics across
            replicas in data-parallel training: the batch statistics
            (`"batch"`) or the estimates' update (`"estimate"`) come from the
            global batch, the same on every replica. False: each replica
            (device) uses its own batch's. The group step is per example.
            Identical on one device. See the guide "Training on several
            devices" (`docs/guides/multi_device.md`). Defaults to False.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: tensor of rank >= 2, batch on axis 0.
        training: bool, training mode (statistics updated; in `"batch"` mode
            batch statistics are used). A layer with `trainable=False`
            always runs in inference mode, as Keras's BatchNormalization
            does.
        mask: optional boolean tensor of rank `ndim - 1` (Keras
            BatchNormalization's convention: it covers every axis but the
            last and is broadcast over it), e.g. from a `Masking` layer or
            `Embedding(mask_zero=True)`. In training, the batch step's
            statistics (`"batch"`) or the estimates' update (`"estimate"`)
            are taken over the unmasked entries only, so masked entries never
            move the moving statistics. The group step is per example and,
            like `keras.layers.GroupNormalization`, uses no mask: an
            example's group statistics cover all its entries. At inference
            the mask is not used. The output mask is the input mask.

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
        keras_norms.BatchChannelNormalization(groups=32, mode="estimate"),
        keras.layers.ReLU(),
    ])
    ```

    Reference:
        - [Qiao et al., 2019](https://arxiv.org/abs/1903.10520),
          "Micro-Batch Training with Batch-Channel Normalization and Weight
          Standardization"
        - [Wu & He, 2018](https://arxiv.org/abs/1803.08494) (Group
          Normalization)
    """

    _momentum_fix = (
        "Pass a float in [0, 1], the weight of the old statistics "
        "(the update rate is 1 - momentum; PyTorch's momentum=0.1 is 0.9)."
    )
    conversion_target = "batch_channel_norm"
    conversion_carries = (
        'γ, β (to the final affine; with `final_affine="group"`, to `batch_gamma`, `batch_beta`), moving mean and '
        "variance"
    )
    conversion_adds = "`batch_gamma` = 1, `batch_beta` = 0 (group final affine: γ = 1, β = 0)"
    population_statistics = {"moving_mean": "mean", "moving_variance": "variance"}

    def __init__(
        self,
        groups=32,
        mode="batch",
        final_affine="channel",
        axis=-1,
        momentum=0.99,
        epsilon=1e-5,
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
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._store_arguments(locals())
        self.supports_masking = True
        self.batch_gamma = None
        self.batch_beta = None
        self.moving_mean = None
        self.moving_variance = None

    # ------------------------------------------------------------ validation
    def _check_mode(self, mode):
        return self._check_choice("mode", mode, _MODES)

    def _check_final_affine(self, final_affine):
        return self._check_choice("final_affine", final_affine, _FINAL_AFFINES)

    # ----------------------------------------------------------------- state
    def build(self, input_shape):
        channels = self._build_channels(input_shape)
        self._num_groups = self._groups_of(channels, input_shape)
        shape = (channels,)
        final_shape = shape if self.final_affine == "channel" else (self._num_groups,)
        if self.scale:
            self.batch_gamma = self._add_affine("batch_gamma", shape, "gamma")
        if self.center:
            self.batch_beta = self._add_affine("batch_beta", shape, "beta")
        self._add_gamma_beta(final_shape)
        self.moving_mean = self._state("moving_mean", shape, self.moving_mean_initializer)
        self.moving_variance = self._state(
            "moving_variance", shape, self.moving_variance_initializer
        )

    def _carry_from_batch_normalization(self, bn):
        # Per-channel final affine: the old gamma/beta restore the pretrained scale after the group step; a
        # per-group one cannot hold them, so they go to the batch step.
        affine = {"gamma": "gamma", "beta": "beta"}
        if self.final_affine != "channel":
            affine = {"batch_gamma": "gamma", "batch_beta": "beta"}
        carry_weights(bn, self, {**affine, "moving_mean": "moving_mean", "moving_variance": "moving_variance"})

    # ------------------------------------------------------------------ call
    def call(self, inputs, training=None, mask=None):
        x = _stats.upcast(inputs)
        affines = self._cast_all(x.dtype, self.batch_gamma, self.batch_beta, self.gamma, self.beta)
        common = dict(axis=self._channel_axis, epsilon=self.epsilon, groups=self._num_groups)
        moving = self._cast_all(x.dtype, self.moving_mean, self.moving_variance)
        if training and self.trainable:
            sync = self.synchronized
            if self.mode == "batch":
                y, mean, variance = bcn_ops.batch_channel_norm(x, *affines, mask=mask, synchronized=sync, **common)
                mean = self._moving_average(self.moving_mean, mean)
                variance = self._moving_average(self.moving_variance, variance)
            else:
                y, mean, variance = bcn_ops.batch_channel_norm_estimate(
                    x, *moving, *affines, momentum=self.momentum, mask=mask, synchronized=sync, **common
                )
            self.moving_mean.assign(ops.cast(mean, self.moving_mean.dtype))
            self.moving_variance.assign(ops.cast(variance, self.moving_variance.dtype))
        else:
            with inference_call(training is False):  # a kernel may decline a forward pass alone
                y = bcn_ops.batch_channel_norm_inference(x, *moving, *affines, **common)
        return ops.cast(y, self.compute_dtype)

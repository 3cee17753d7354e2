"""Normalization Propagation (NormProp): weight-normalized layers and the NormProp ReLU.

NormProp standardizes the data once and keeps every
pre-activation near $\\mathcal N(0,1)$ analytically, without batch
statistics: each output unit's weight vector is divided by its $\\ell_2$
norm, a per-unit $\\gamma,\\beta$ follows, and the ReLU output is re-centred
and re-scaled by the fixed mean and standard deviation of a rectified
standard normal. Training and inference compute the same function; the
output of an example never depends on the other examples of the batch.

`NormPropDense` and `NormPropConv1D/2D/3D` subclass their Keras counterparts
(same constructors, minus the bias arguments) through the kernel machinery of
the WS layers (`KernelReparameterizationMixin`): the raw `kernel` is the
trainable weight, read as its float32 master value, and the layer applies
the normalized kernel computed at call time. `NormPropReLU` is the
activation placed between them.

Reference:
    Arpit, Zhou, Kota & Govindaraju, "Normalization Propagation: A Parametric
    Technique for Removing Internal Covariate Shift in Deep Networks",
    ICML 2016, arXiv:1603.01431. No official code was found.
"""

import keras
from keras import initializers
from keras import ops

from keras_norms.layers._base import NormalizationLayer
from keras_norms.layers.weight_standardization import KernelReparameterizationMixin
from keras_norms.layers.weight_standardization import add_channel_vector
from keras_norms.ops import _stats
from keras_norms.ops import norm_prop as norm_prop_ops
from keras_norms.ops import weight_standardization as ws_ops

# The gamma initialization commonly given for the paper's algorithm (not
# confirmed in the paper): compensates an empirically observed variance
# inflation. docs/design_notes.md, section Normalization Propagation.
GAMMA_INIT = 1.0 / 1.21

# Arguments of the Keras layers that NormProp replaces with `beta`.
_BIAS_ARGUMENTS = ("use_bias", "bias_initializer", "bias_regularizer", "bias_constraint")


class NormPropMixin(KernelReparameterizationMixin):
    """NormProp on top of a Keras `Dense` or `Conv*D` layer (not public).

    Adds `epsilon`, the trainable per-output-unit `gamma` and `beta`
    (created after `kernel`) with their initializers, regularizers and
    constraints, and removes the bias: the layer computes
    $\\gamma\\odot(\\hat Wx)+\\beta$ with $\\hat W_i=W_i/\\sqrt{\\|W_i\\|^2+\\epsilon}$,
    then the activation.
    """

    def __init__(
        self,
        *args,
        epsilon=1e-8,
        gamma_initializer=None,
        beta_initializer="zeros",
        gamma_regularizer=None,
        beta_regularizer=None,
        gamma_constraint=None,
        beta_constraint=None,
        **kwargs,
    ):
        own = dict(locals())  # first: the NormProp arguments, stored once the Keras layer exists
        bias_arguments = {k: kwargs.pop(k) for k in _BIAS_ARGUMENTS if k in kwargs}
        super().__init__(*args, use_bias=False, **kwargs)
        refused = [k for k, v in bias_arguments.items() if not (k == "use_bias" and v is False)]
        if refused:
            raise self._error(
                refused[0],
                bias_arguments[refused[0]],
                "NormProp layers have no bias: `beta` is the per-unit shift. "
                "Remove the bias arguments; use `beta_initializer`, "
                "`beta_regularizer` and `beta_constraint` instead.",
            )
        self._store_arguments(own)
        self.gamma = None
        self.beta = None

    def _check_gamma_initializer(self, gamma_initializer):
        return initializers.get(initializers.Constant(GAMMA_INIT) if gamma_initializer is None else gamma_initializer)

    # ----------------------------------------------------------------- state
    def build(self, input_shape):
        if getattr(self, "quantization_mode", None) is not None:
            self.quantize()  # raises: the normalization needs the float kernel
        # Keras enables LoRA at the end of its build and then locks the
        # variable tracker; gamma and beta are created before that happens.
        lora_rank, self.lora_rank = self.lora_rank, None
        try:
            super().build(input_shape)
        finally:
            self.lora_rank = lora_rank
        self._add_gamma_beta((int(self._kernel_variable().shape[-1]),))
        if lora_rank:
            self.enable_lora(lora_rank, lora_alpha=self.lora_alpha)

    def save_own_variables(self, store):
        super().save_own_variables(store)  # "0": the kernel (LoRA merged)
        if self.built:
            store["1"] = self.gamma
            store["2"] = self.beta

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built:
            self.gamma.assign(store["1"])
            self.beta.assign(store["2"])

    def quantize(self, mode=None, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} (layer '{self.name}'): quantization of a "
            "NormProp kernel is not supported: the layer normalizes the float "
            "kernel at every call."
        )

    # ------------------------------------------------------------------ math
    def _fan_in_axes(self, kernel):
        return ws_ops.fan_in_axes(len(kernel.shape), self._output_axes)

    def normalized_kernel(self):
        """$W_i/\\sqrt{\\sum_jW_{ij}^2+\\epsilon}$ per output unit $i$, in float32, without $\\gamma$.

        Computed from the float32 master kernel (with the LoRA delta when
        LoRA is enabled); float64 under a float64 policy.
        """
        kernel = self.effective_kernel()
        return norm_prop_ops.l2_normalize_weights(kernel, self._fan_in_axes(kernel), self.epsilon)

    def _call_kernel(self):
        # gamma_i * (W_i / ||W_i||) . x equals gamma_i * ((W_i / ||W_i||) . x): gamma is
        # folded into the (smaller) kernel.
        kernel = self.effective_kernel()
        kernel = norm_prop_ops.l2_normalize_weights(kernel, self._fan_in_axes(kernel), self.epsilon, self.gamma)
        return ops.cast(kernel, self.compute_dtype)

    def call(self, inputs, training=None):
        return self._conv_call(inputs)

    def _bias_and_activation(self, outputs):
        outputs = add_channel_vector(outputs, self.beta, getattr(self, "data_format", "channels_last"))
        return super()._bias_and_activation(outputs)  # no bias: the activation

    # ---------------------------------------------------------- serialization
    def get_config(self):
        config = {k: v for k, v in super().get_config().items() if k not in _BIAS_ARGUMENTS}
        return {**config, **self._config_of(*self._argument_names)}


@keras.saving.register_keras_serializable(package="keras_norms")
class NormPropDense(NormPropMixin, keras.layers.Dense):
    """Dense layer with NormProp weight normalization, per-unit `gamma` and `beta`.

    `keras.layers.Dense` without a bias (`beta` takes its place). With the
    raw kernel $W$ of shape `(in, units)`, for each unit $i$ over its inputs
    $j$:

    $$u_i=\\gamma_i\\,\\frac{\\sum_jW_{ji}x_j}{\\sqrt{\\sum_jW_{ji}^2+\\epsilon}}+\\beta_i$$

    then `activation` (none by default). The norm is computed in float32 from
    the float32 master kernel, with $\\epsilon$ inside the square root and
    gradients through it; $\\gamma_i$ is folded into the normalized kernel,
    which is cast to the compute dtype. If $x$ has zero mean and identity
    covariance, each $\\hat W_i^\\top x$ has mean 0 and variance 1, so $u_i$ has
    mean $\\beta_i$ and standard deviation $\\gamma_i$: standardize the data
    (e.g. with `keras.layers.Normalization` adapted on the training set)
    and follow each hidden layer with `NormPropReLU`. The layer formulation,
    $\\gamma$ and $\\beta$ between the normalized map and the ReLU, is the
    usual statement of the paper's Algorithm 1, not confirmed against the
    paper (see the Design notes page of the documentation, section
    Normalization Propagation).

    Args:
        *args: positional arguments of `keras.layers.Dense`: `units`, the
            number of output units (it may also be passed by keyword).
        epsilon: float > 0 added to the sum of squares inside the square
            root. Defaults to 1e-8 (this package's choice, not the
            paper's).
        gamma_initializer: initializer of `gamma` (one value per output
            unit). Defaults to `None`: the constant 1/1.21 (about 0.8264),
            the value commonly given for the paper's algorithm, which this
            package has not confirmed in the paper; pass `"ones"` for the
            plain analysis. See the Design notes page of the documentation,
            section Normalization Propagation.
        beta_initializer: initializer of `beta`. Defaults to `"zeros"`.
        gamma_regularizer: optional regularizer of `gamma`. Defaults to
            `None`.
        beta_regularizer: optional regularizer of `beta`. Defaults to
            `None`.
        gamma_constraint: optional constraint of `gamma`. Defaults to
            `None`.
        beta_constraint: optional constraint of `beta`. Defaults to `None`.
        **kwargs: every other argument of `keras.layers.Dense`
            (`activation`, `kernel_initializer`, `kernel_regularizer`,
            `kernel_constraint`, `activity_regularizer`, `lora_rank`,
            `lora_alpha`, `name`, `dtype`, ...). `use_bias` and the bias
            arguments are refused. Quantization is not supported.

    Call arguments:
        inputs: tensor of rank >= 2, features last.

    Returns:
        A tensor `(..., units)` in the layer's compute dtype.

    Raises:
        ValueError: for an invalid `epsilon`, or a bias argument.

    Example:

    ```python
    x = keras.random.normal((8, 16))
    u = keras_norms.NormPropDense(32)(x)
    h = keras_norms.NormPropReLU()(u)
    ```

    Reference:
        - [Arpit et al., 2016](https://arxiv.org/abs/1603.01431)
    """

    _plain_layer = keras.layers.Dense

    def call(self, inputs, training=None):
        return self._bias_and_activation(ops.matmul(inputs, self._call_kernel()))


@keras.saving.register_keras_serializable(package="keras_norms")
class NormPropConv1D(NormPropMixin, keras.layers.Conv1D):
    """1D convolution with NormProp weight normalization, per-channel `gamma` and `beta`.

    `keras.layers.Conv1D` without a bias (`beta` takes its place). Each
    output channel $i$ of the raw kernel $W$, of shape
    `(kernel_size, in // groups, filters)`, is divided by its $\\ell_2$ norm
    over the fan-in $j$ (kernel axes 0 and 1):

    $$u_i=\\gamma_i\\,(\\hat W_i * x)+\\beta_i,\\qquad
      \\hat W_{ij}=\\frac{W_{ij}}{\\sqrt{\\sum_jW_{ij}^2+\\epsilon}}$$

    then `activation`. The norm is computed in float32 from the float32
    master kernel, gradients flow through it, and $\\gamma_i\\hat W_i$ is cast
    to the compute dtype. Treating each filter as a row of the im2col matrix
    is the usual reading of the paper, not confirmed against it; overlapping
    patches make the identity-covariance assumption approximate.

    Args:
        *args: positional arguments of `keras.layers.Conv1D` (`filters`,
            `kernel_size`, ...; they may also be passed by keyword).
        epsilon: float > 0 added to the sum of squares inside the square
            root. Defaults to 1e-8 (this package's choice, not the paper's).
        **kwargs: `gamma_initializer`, `beta_initializer` and the
            regularizers and constraints of `gamma` and `beta`, as in
            `NormPropDense`; and every other argument of `keras.layers.Conv1D`
            (`strides`, `padding` ("valid", "same" or "causal"),
            `data_format`, `dilation_rate`, `groups`, `activation`,
            `kernel_initializer`, `kernel_regularizer`, `kernel_constraint`,
            `activity_regularizer`, `lora_rank`, `lora_alpha`, `name`,
            `dtype`, ...). `use_bias` and the bias arguments are refused.

    Call arguments:
        inputs: tensor of rank 3, `(batch, steps, channels)` or channels
            first.

    Returns:
        `keras.layers.Conv1D`'s output shape, in the layer's compute dtype.

    Raises:
        ValueError: for an invalid `epsilon`, or a bias argument.

    Example:

    ```python
    y = keras_norms.NormPropConv1D(16, 3, padding="causal")(keras.random.normal((4, 32, 8)))
    y = keras_norms.NormPropReLU()(y)
    ```

    Reference:
        - [Arpit et al., 2016](https://arxiv.org/abs/1603.01431)
    """

    _plain_layer = keras.layers.Conv1D


@keras.saving.register_keras_serializable(package="keras_norms")
class NormPropConv2D(NormPropMixin, keras.layers.Conv2D):
    """2D convolution with NormProp weight normalization, per-channel `gamma` and `beta`.

    `keras.layers.Conv2D` without a bias (`beta` takes its place). Each
    output channel $i$ of the raw kernel $W$, of shape
    `(kh, kw, in // groups, filters)`, is divided by its $\\ell_2$ norm over
    the fan-in $j$ (kernel axes 0, 1, 2; $k_hk_wC_{in}/\\text{groups}$
    entries):

    $$u_i=\\gamma_i\\,(\\hat W_i * x)+\\beta_i,\\qquad
      \\hat W_{ij}=\\frac{W_{ij}}{\\sqrt{\\sum_jW_{ij}^2+\\epsilon}}$$

    then `activation`. The norm is computed in float32 from the float32
    master kernel, gradients flow through it, and $\\gamma_i\\hat W_i$ is cast
    to the compute dtype. The kernel layout is the same in both data formats.
    Treating each filter as a row of the im2col matrix is the usual reading
    of the paper, not confirmed against it; overlapping patches make the
    identity-covariance assumption approximate. Max-pooling and dropout
    between NormProp layers break the bookkeeping.

    Args:
        *args: positional arguments of `keras.layers.Conv2D` (`filters`,
            `kernel_size`, ...; they may also be passed by keyword).
        epsilon: float > 0 added to the sum of squares inside the square
            root. Defaults to 1e-8 (this package's choice, not the paper's).
        **kwargs: `gamma_initializer`, `beta_initializer` and the
            regularizers and constraints of `gamma` and `beta`, as in
            `NormPropDense`; and every other argument of `keras.layers.Conv2D`
            (`strides`, `padding`, `data_format`, `dilation_rate`, `groups`,
            `activation`, `kernel_initializer`, `kernel_regularizer`,
            `kernel_constraint`, `activity_regularizer`, `lora_rank`,
            `lora_alpha`, `name`, `dtype`, ...). `use_bias` and the bias
            arguments are refused.

    Call arguments:
        inputs: tensor of rank 4, `(batch, height, width, channels)` or
            channels first.

    Returns:
        `keras.layers.Conv2D`'s output shape, in the layer's compute dtype.

    Raises:
        ValueError: for an invalid `epsilon`, or a bias argument.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras_norms.NormPropConv2D(8, 3, padding="same"),
        keras_norms.NormPropReLU(),
        keras_norms.NormPropConv2D(8, 3, padding="same"),  # the last layer: no NormPropReLU
    ])
    ```

    Reference:
        - [Arpit et al., 2016](https://arxiv.org/abs/1603.01431)
    """

    _plain_layer = keras.layers.Conv2D


@keras.saving.register_keras_serializable(package="keras_norms")
class NormPropConv3D(NormPropMixin, keras.layers.Conv3D):
    """3D convolution with NormProp weight normalization, per-channel `gamma` and `beta`.

    `keras.layers.Conv3D` without a bias (`beta` takes its place). Each
    output channel $i$ of the raw kernel $W$, of shape
    `(kd, kh, kw, in // groups, filters)`, is divided by its $\\ell_2$ norm
    over the fan-in $j$ (every kernel axis but the last):

    $$u_i=\\gamma_i\\,(\\hat W_i * x)+\\beta_i,\\qquad
      \\hat W_{ij}=\\frac{W_{ij}}{\\sqrt{\\sum_jW_{ij}^2+\\epsilon}}$$

    then `activation`, computed as in `NormPropConv2D` (float32 norm from the
    float32 master kernel; the im2col reading of the paper is not confirmed
    against it).

    Args:
        *args: positional arguments of `keras.layers.Conv3D` (`filters`,
            `kernel_size`, ...; they may also be passed by keyword).
        epsilon: float > 0 added to the sum of squares inside the square
            root. Defaults to 1e-8 (this package's choice, not the paper's).
        **kwargs: `gamma_initializer`, `beta_initializer` and the
            regularizers and constraints of `gamma` and `beta`, as in
            `NormPropDense`; and every other argument of `keras.layers.Conv3D`
            (`strides`, `padding`, `data_format`, `dilation_rate`, `groups`,
            `activation`, `kernel_initializer`, `kernel_regularizer`,
            `kernel_constraint`, `activity_regularizer`, `lora_rank`,
            `lora_alpha`, `name`, `dtype`, ...). `use_bias` and the bias
            arguments are refused.

    Call arguments:
        inputs: tensor of rank 5, channels last or first.

    Returns:
        `keras.layers.Conv3D`'s output shape, in the layer's compute dtype.

    Raises:
        ValueError: for an invalid `epsilon`, or a bias argument.

    Example:

    ```python
    y = keras_norms.NormPropConv3D(4, 3, padding="same")(keras.random.normal((2, 6, 6, 6, 3)))
    ```

    Reference:
        - [Arpit et al., 2016](https://arxiv.org/abs/1603.01431)
    """

    _plain_layer = keras.layers.Conv3D


@keras.saving.register_keras_serializable(package="keras_norms")
class NormPropReLU(NormalizationLayer):
    """The NormProp ReLU: a ReLU re-centred and re-scaled by fixed constants.

    Elementwise, no weights:

    $$y=\\frac{\\max(x,0)-1/\\sqrt{2\\pi}}{\\sqrt{\\tfrac12\\left(1-\\tfrac1\\pi\\right)}}$$

    The constants are the mean $1/\\sqrt{2\\pi}\\approx0.3989422804$ and the
    standard deviation $\\sqrt{(1-1/\\pi)/2}\\approx0.5838193701$ of
    $\\max(Z,0)$ for $Z\\sim\\mathcal N(0,1)$ (`keras_norms.ops.norm_prop.RELU_MEAN`
    and `RELU_STD`, computed from their closed forms), so a standard normal
    input gives an output of mean 0 and variance 1, the input the next
    NormProp layer assumes. They are fixed: they ignore the $\\gamma,\\beta$ of
    the layer before, which move away from 1, 0 during training (NormProp's
    design; Proxy Normalization recomputes them). Computed in float32 and cast
    to the compute dtype.

    Use it between NormProp layers, **not after the last layer** (the
    network's output is not re-normalized).

    Args:
        axis: int, the channel axis. The layer is elementwise; once built it
            checks that inputs keep the rank and the number of channels on
            `axis` that it was built for, as the NormProp layer before it
            does. Defaults to -1.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of any rank >= 1.
        training: ignored (the same function in training and inference).

    Returns:
        A tensor of the input's shape, in the layer's compute dtype.

    Example:

    ```python
    u = keras.random.normal((4096, 8))
    y = keras_norms.NormPropReLU()(u)  # mean about 0, variance about 1
    ```

    Reference:
        - [Arpit et al., 2016](https://arxiv.org/abs/1603.01431)
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self._store_arguments(locals())
        self.supports_masking = True

    def build(self, input_shape):
        ndim = len(input_shape)
        axis = _stats.canonical_axis(self.axis, ndim, owner=self._owner())
        channels = input_shape[axis]
        self.input_spec = keras.InputSpec(
            ndim=ndim, axes={axis: channels} if channels is not None else None
        )

    def call(self, inputs, training=None):
        return ops.cast(norm_prop_ops.norm_prop_relu(_stats.upcast(inputs)), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

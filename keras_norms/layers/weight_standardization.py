"""Weight-standardized convolutions and dense layers: WS and Scaled WS.

Each layer subclasses its Keras counterpart with the same constructor, the
same weights (`kernel`, `bias`) and the same call, and applies the
standardized kernel instead of the raw one. The raw
`kernel` stays the trainable weight, so weights move between a WS layer and
its Keras counterpart with `set_weights`, in both directions;
`keras_norms.fold_weight_standardization` bakes the standardized kernel into
the plain Keras layers for export.

References:
    Qiao, Wang, Liu, Shen & Yuille, "Micro-Batch Training with
    Batch-Channel Normalization and Weight Standardization",
    arXiv:1903.10520 (official code: github.com/joe-siyuan-qiao/
    WeightStandardization).
    Brock, De & Smith, arXiv:2101.08692 (NF-ResNets); Brock, De, Smith &
    Simonyan, arXiv:2102.06171 (NF-Nets); timm `ScaledStdConv2d`.
"""

import keras
from keras import initializers
from keras import ops

from keras_norms.layers._base import LayerArguments
from keras_norms.ops import _stats
from keras_norms.ops import weight_standardization as ws_ops

# Read as float32 master values in the forward pass: standardizing an
# already-rounded float16 copy would lose precision (see docs/numerics.md).
_MASTER_WEIGHTS = ("kernel", "lora_kernel_a", "lora_kernel_b")


def add_channel_vector(outputs, vector, data_format):
    """`outputs` plus a per-channel `vector` (a bias), channels last or first.

    Not `ops.add`: on TensorFlow, Keras 3.15 turns an add of a vector-shaped
    tensor into `tf.nn.bias_add` and guesses the channel axis from the
    shapes, so a channels-first output whose last axis has as many entries
    as there are channels got the bias along that axis
    (`keras.layers.Conv*D` have the same bug).
    """
    vector = ops.cast(vector, outputs.dtype)
    if data_format == "channels_first":
        vector = ops.reshape(vector, (1, -1) + (1,) * (len(outputs.shape) - 2))
    return outputs + vector


def kernel_variable(layer):
    """The kernel variable of a Keras `Dense` or convolution `layer` (LoRA not applied)."""
    # Conv*D and Dense keep the variable in `_kernel` behind a `kernel`
    # property (which adds LoRA); the depthwise and transposed layers
    # store it in `kernel` itself.
    variable = getattr(layer, "_kernel", None)
    return layer.kernel if variable is None else variable


def layer_kernel(layer):
    """The float32 kernel of a Keras `Dense` or convolution `layer`, plus its LoRA delta when LoRA is enabled.

    Read from the float32 master variables (`layer` must not autocast them:
    call it where no autocast scope is active, or on variables created with
    `autocast=False`).
    """
    kernel = _stats.upcast(kernel_variable(layer))
    if getattr(layer, "lora_enabled", False):
        delta = ops.matmul(_stats.upcast(layer.lora_kernel_a), _stats.upcast(layer.lora_kernel_b))
        kernel = kernel + delta * (layer.lora_alpha / layer.lora_rank)
    return kernel


def kernel_op(layer, inputs, kernel):
    """What the Keras `Dense`, `Conv1D/2D/3D`, `DepthwiseConv2D` or `Conv2DTranspose` `layer` computes
    before its bias, with `kernel` in place of its own ("causal" padding included)."""
    if isinstance(layer, keras.layers.Dense):
        return ops.matmul(inputs, kernel)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return ops.depthwise_conv(
            inputs,
            kernel,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return ops.conv_transpose(
            inputs,
            kernel,
            strides=list(layer.strides),
            padding=layer.padding,
            output_padding=layer.output_padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    padding = layer.padding
    if padding == "causal":
        inputs = ops.pad(inputs, layer._compute_causal_padding())
        padding = "valid"
    return ops.conv(
        inputs,
        kernel,
        strides=list(layer.strides),
        padding=padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )


def bias_and_activation(layer, outputs, bias):
    """What the Keras `layer` does after its convolution or matmul, with `bias` (or None) as its bias."""
    if bias is not None:
        outputs = add_channel_vector(outputs, bias, getattr(layer, "data_format", "channels_last"))
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


class KernelReparameterizationMixin(LayerArguments):
    """Applies a function of the float32 master kernel instead of the raw kernel.

    The machinery shared by the WS layers below and the NormProp layers
    (`keras_norms.layers.normalization_propagation`); not public. Subclasses
    set `_plain_layer` (the Keras counterpart) and, where the kernel layout
    needs it, `_output_axes` (the kernel axes that index the output units;
    every other axis is fan-in), and define `_call_kernel()` (the kernel the
    layer applies, in the compute dtype). The mixin:

    * creates `kernel` (and LoRA factors) with `autocast=False`, so the
      statistics are always computed from the float32 master weights, after
      the hook `_check_kernel_shape(shape)` (no check here);
    * `effective_kernel()`: the raw kernel plus the LoRA delta, in float32;
    * `call(inputs, training=None)`, `_conv_call(inputs)` (the convolution
      of `keras.layers.Conv1D/2D/3D`) and `_bias_and_activation(outputs)`.
    """

    _plain_layer = None
    _output_axes = (-1,)

    # ------------------------------------------------------------ validation
    def _check_kernel_shape(self, shape):
        """Hook called with the kernel's shape before it is created."""

    # ----------------------------------------------------------------- state
    def add_weight(self, *args, **kwargs):
        name = kwargs.get("name")
        if name == "kernel" and kwargs.get("shape") is not None:
            self._check_kernel_shape(kwargs["shape"])
        if name in _MASTER_WEIGHTS:
            kwargs["autocast"] = False
        return super().add_weight(*args, **kwargs)

    # ------------------------------------------------------------------ math
    def _kernel_variable(self):
        return kernel_variable(self)

    def effective_kernel(self):
        """The raw kernel plus the LoRA delta (if enabled), in float32."""
        return layer_kernel(self)

    def call(self, inputs, training=None):
        # `training` is accepted, and ignored (these layers compute the same
        # function in training and inference), so that
        # `stateless_call(..., training=...)` works as on every keras_norms
        # layer; the Keras convolutions' `call` takes no `training`.
        return super().call(inputs)

    def _conv_call(self, inputs):
        """The Keras layer's call (convolution or matmul, bias, activation) with `_call_kernel()`."""
        return self._bias_and_activation(kernel_op(self, inputs, self._call_kernel()))

    def _bias_and_activation(self, outputs):
        return bias_and_activation(self, outputs, self.bias)


class WeightStandardizationMixin(KernelReparameterizationMixin):
    """Standardizes the kernel of the Keras layer that follows it in the MRO.

    Subclasses set `_plain_layer` (the Keras counterpart) and, where the
    kernel layout needs it, `_output_axes` (the kernel axes that index the
    standardized units; every other axis is fan-in). The mixin adds the
    `ws_epsilon` argument and:

    * creates `kernel` (and LoRA factors) with `autocast=False`, so the
      statistics are always computed from the float32 master weights;
    * raises a `ValueError` at `build` when the fan-in is 1;
    * `standardized_kernel()`: the kernel the layer applies, in float32;
    * `get_config()` with `ws_epsilon`.
    """

    def __init__(self, *args, ws_epsilon=1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self.ws_epsilon = self._check_positive("ws_epsilon", ws_epsilon)

    def _check_kernel_shape(self, shape):
        shape = tuple(int(s) for s in shape)
        axes = ws_ops.fan_in_axes(len(shape), self._output_axes)
        if ws_ops.fan_in(shape, axes) == 1:
            raise ValueError(
                f"{type(self).__name__} (layer '{self.name}'): the kernel of "
                f"shape {shape} has fan-in 1 (the product of its axes "
                f"{tuple(axes)}), so every standardized weight would be 0 and "
                "the layer would output its bias alone. Give each output "
                "channel more than one weight (a larger `kernel_size`, or more "
                "input channels per group), or use "
                f"keras.layers.{self._plain_layer.__name__} for this layer."
            )

    # ------------------------------------------------------------------ math
    def _standardize(self, kernel, axes):
        return ws_ops.standardize_weights(kernel, axes, self.ws_epsilon)

    def standardized_kernel(self):
        """The kernel the layer applies, in float32 (float64 under float64).

        Computed from the float32 master weights (with the LoRA delta when
        LoRA is enabled); the forward pass casts it to the compute dtype.
        """
        kernel = self.effective_kernel()
        return self._standardize(kernel, ws_ops.fan_in_axes(len(kernel.shape), self._output_axes))

    def _call_kernel(self):
        return ops.cast(self.standardized_kernel(), self.compute_dtype)

    # ---------------------------------------------------------- serialization
    def get_config(self):
        return {**super().get_config(), "ws_epsilon": self.ws_epsilon}


class ScaledWeightStandardizationMixin:
    """Scaled WS on top of a WS layer: fan-in scaling, `gain` and `gamma`.

    Placed before a `WeightStandardizationMixin` layer in the MRO. Adds the
    trainable per-output-channel `gain` (created after `kernel` and `bias`,
    so `set_weights(conv.get_weights() + [gain])` works) and the arguments
    `gamma` and `gain_initializer`; `ws_epsilon` defaults to 1e-6.
    """

    def __init__(self, *args, ws_epsilon=1e-6, gamma=1.0, gain_initializer="ones", **kwargs):
        super().__init__(*args, ws_epsilon=ws_epsilon, **kwargs)
        self.gamma = self._check_positive(
            "gamma",
            gamma,
            "Pass a positive float: 1.0 (no constant), or the activation's "
            "constant, e.g. 1.7128585504 for ReLU.",
        )
        self.gain_initializer = initializers.get(gain_initializer)
        self.gain = None

    def build(self, input_shape):
        # Keras enables LoRA at the end of its build and then locks the
        # variable tracker; the gain is created before that happens.
        lora_rank, self.lora_rank = self.lora_rank, None
        try:
            super().build(input_shape)
        finally:
            self.lora_rank = lora_rank
        self.gain = self.add_weight(
            name="gain",
            shape=(self.filters,),
            initializer=self.gain_initializer,
            trainable=True,
            autocast=False,
        )
        if lora_rank:
            self.enable_lora(lora_rank, lora_alpha=self.lora_alpha)

    def _standardize(self, kernel, axes):
        return ws_ops.scaled_standardize_weights(kernel, axes, self.gain, self.ws_epsilon, self.gamma)

    def save_own_variables(self, store):
        super().save_own_variables(store)  # "0": kernel, "1": bias
        if self.built:
            store[str(1 + int(self.use_bias))] = self.gain

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built:
            self.gain.assign(store[str(1 + int(self.use_bias))])

    def get_config(self):
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "gain_initializer": initializers.serialize(self.gain_initializer),
        }


# --------------------------------------------------------------------------- WS layers
@keras.saving.register_keras_serializable(package="keras_norms")
class WSConv1D(WeightStandardizationMixin, keras.layers.Conv1D):
    """1D convolution with a weight-standardized kernel.

    `keras.layers.Conv1D` (same arguments, weights and call, `causal`
    padding included) applying, instead of the raw kernel $W$ of shape
    `(kernel_size, in // groups, filters)`, its standardization per output
    channel $i$ over the fan-in $j$ (kernel axes 0 and 1), as `WSConv2D`
    computes it, with the biased mean and variance over $j$:

    $$\\hat W_{ij}=\\frac{W_{ij}-\\mu_i}{\\sqrt{\\sigma^2_i+\\epsilon}}$$

    Follow it with a normalization layer: WS
    removes the weight scale, so the layer cannot learn its output scale
    alone.

    Args:
        ws_epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-5.
        *args: positional arguments of `keras.layers.Conv1D`.
        **kwargs: every other argument of `keras.layers.Conv1D` (`filters`,
            `kernel_size`, `strides`, `padding`, `data_format`,
            `dilation_rate`, `groups`, `activation`, `use_bias`, ...).

    Call arguments:
        inputs: tensor of rank 3, `(batch, steps, channels)` or channels
            first.

    Returns:
        `keras.layers.Conv1D`'s output, in the layer's compute dtype.

    Raises:
        ValueError: for an invalid `ws_epsilon`, and at `build` when the
            fan-in `kernel_size * in // groups` is 1.

    Example:

    ```python
    x = keras.random.normal((4, 32, 8))
    y = keras_norms.WSConv1D(16, 3, padding="causal", use_bias=False)(x)
    y = keras_norms.GroupNormalization(groups=4)(y)
    ```

    Reference:
        - [Qiao et al., 2019](https://arxiv.org/abs/1903.10520)
    """

    _plain_layer = keras.layers.Conv1D

    def call(self, inputs, training=None):
        # keras.layers.Conv1D.call convolves `self.kernel` directly (not
        # through `convolution_op`), so the 1D layer overrides `call`.
        return self._conv_call(inputs)


@keras.saving.register_keras_serializable(package="keras_norms")
class WSConv2D(WeightStandardizationMixin, keras.layers.Conv2D):
    """2D convolution with a weight-standardized kernel.

    `keras.layers.Conv2D` (same arguments, weights and call) that
    applies, instead of the raw kernel $W$ of shape
    `(kh, kw, in // groups, filters)`, its standardization per output
    channel $i$ over the fan-in $j$ (kernel axes 0, 1, 2; $I = k_hk_w\\,
    C_{in}/\\text{groups}$ entries):

    $$\\hat W_{ij}=\\frac{W_{ij}-\\mu_i}{\\sqrt{\\sigma^2_i+\\epsilon}},\\qquad
      \\mu_i=\\frac1I\\sum_jW_{ij},\\quad
      \\sigma^2_i=\\frac1I\\sum_j(W_{ij}-\\mu_i)^2$$

    with the biased variance and $\\epsilon$ = `ws_epsilon` inside the square
    root, computed in float32 from the float32 master kernel (plus the LoRA
    delta when LoRA is enabled) and cast to the compute dtype; gradients flow
    through $\\mu_i$ and $\\sigma_i$. The kernel layout is the same in both data
    formats. (This estimator and $\\epsilon$ placement are this package's
    choice: the paper's are not confirmed and the official snippets
    disagree; they differ negligibly for fan-in >= 27. See the Design notes
    page of the documentation, section Weight Standardization and Scaled
    WS.) Use it only where a normalization layer follows: WS removes
    the weight scale.

    Args:
        ws_epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-5.
        *args: positional arguments of `keras.layers.Conv2D`.
        **kwargs: every other argument of `keras.layers.Conv2D` (`filters`,
            `kernel_size`, `strides`, `padding`, `data_format`,
            `dilation_rate`, `groups`, `activation`, `use_bias`,
            initializers, regularizers and constraints of the raw kernel,
            `lora_rank`, ...).

    Call arguments:
        inputs: tensor of rank 4, `(batch, height, width, channels)` or
            channels first.

    Returns:
        `keras.layers.Conv2D`'s output, in the layer's compute dtype.

    Raises:
        ValueError: for an invalid `ws_epsilon`, and at `build` when the
            fan-in is 1 (a 1x1 kernel with one input channel per group).

    Example:

    ```python
    block = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras_norms.WSConv2D(32, 3, padding="same", use_bias=False),
        keras_norms.GroupNormalization(groups=8, epsilon=1e-5),
        keras.layers.ReLU(),
    ])
    ```

    Reference:
        - [Qiao et al., 2019](https://arxiv.org/abs/1903.10520)
    """

    _plain_layer = keras.layers.Conv2D

    def call(self, inputs, training=None):
        # Not keras.layers.Conv2D.call: its bias add is wrong for some
        # channels-first shapes on TensorFlow (see `add_channel_vector`).
        return self._conv_call(inputs)


@keras.saving.register_keras_serializable(package="keras_norms")
class WSConv3D(WeightStandardizationMixin, keras.layers.Conv3D):
    """3D convolution with a weight-standardized kernel.

    `keras.layers.Conv3D` (same arguments, weights and call) that
    applies, instead of the raw kernel $W$ of shape
    `(kd, kh, kw, in // groups, filters)`, its standardization per output
    channel $i$ over the fan-in $j$ (every kernel axis but the last), as
    `WSConv2D` computes it:

    $$\\hat W_{ij}=\\frac{W_{ij}-\\mu_i}{\\sqrt{\\sigma^2_i+\\epsilon}}$$

    Use it only where a normalization layer follows.

    Args:
        ws_epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-5.
        *args: positional arguments of `keras.layers.Conv3D`.
        **kwargs: every other argument of `keras.layers.Conv3D`.

    Call arguments:
        inputs: tensor of rank 5, channels last or first.

    Returns:
        `keras.layers.Conv3D`'s output, in the layer's compute dtype.

    Raises:
        ValueError: for an invalid `ws_epsilon`, and at `build` when the
            fan-in is 1.

    Example:

    ```python
    y = keras_norms.WSConv3D(8, 3, padding="same")(keras.random.normal((2, 8, 8, 8, 4)))
    ```

    Reference:
        - [Qiao et al., 2019](https://arxiv.org/abs/1903.10520)
    """

    _plain_layer = keras.layers.Conv3D

    def call(self, inputs, training=None):
        # Not keras.layers.Conv3D.call (see WSConv2D.call).
        return self._conv_call(inputs)


@keras.saving.register_keras_serializable(package="keras_norms")
class WSDepthwiseConv2D(WeightStandardizationMixin, keras.layers.DepthwiseConv2D):
    """Depthwise 2D convolution with a weight-standardized kernel.

    `keras.layers.DepthwiseConv2D` (same arguments, weights and call). Its
    kernel has shape `(kh, kw, in, depth_multiplier)`; each (input channel,
    multiplier) pair $i$ is one output channel, standardized as `WSConv2D`
    does over its $k_hk_w$ spatial taps $j$ (kernel axes 0 and 1):

    $$\\hat W_{ij}=\\frac{W_{ij}-\\mu_i}{\\sqrt{\\sigma^2_i+\\epsilon}}$$

    A 1x1 depthwise kernel has fan-in 1 and is refused.

    Args:
        ws_epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-5.
        *args: positional arguments of `keras.layers.DepthwiseConv2D`.
        **kwargs: every other argument of `keras.layers.DepthwiseConv2D`
            (`kernel_size`, `strides`, `padding`, `depth_multiplier`,
            `data_format`, `dilation_rate`, `activation`, `use_bias`, ...).

    Call arguments:
        inputs: tensor of rank 4, channels last or first.

    Returns:
        `keras.layers.DepthwiseConv2D`'s output, in the layer's compute
        dtype.

    Raises:
        ValueError: for an invalid `ws_epsilon`, and at `build` for a 1x1
            kernel (fan-in 1).

    Example:

    ```python
    y = keras_norms.WSDepthwiseConv2D(3, padding="same")(keras.random.normal((2, 16, 16, 8)))
    ```

    Reference:
        - [Qiao et al., 2019](https://arxiv.org/abs/1903.10520)
    """

    _plain_layer = keras.layers.DepthwiseConv2D
    _output_axes = (-2, -1)

    def call(self, inputs, training=None):
        # DepthwiseConv2D has no `convolution_op` to override.
        return self._conv_call(inputs)


@keras.saving.register_keras_serializable(package="keras_norms")
class WSConv2DTranspose(WeightStandardizationMixin, keras.layers.Conv2DTranspose):
    """Transposed 2D convolution with a weight-standardized kernel.

    `keras.layers.Conv2DTranspose` (same arguments, weights and call). Its
    kernel has shape `(kh, kw, filters, in)` (output channels on axis 2),
    and is standardized as `WSConv2D` does, per output channel $i$ over
    kernel axes (0, 1, 3), $k_hk_wC_{in}$ entries $j$:

    $$\\hat W_{ij}=\\frac{W_{ij}-\\mu_i}{\\sqrt{\\sigma^2_i+\\epsilon}}$$

    With `strides` $s>1$ an output pixel receives only about
    $(k_h/s)(k_w/s)$ of the taps: the standardization is over the whole
    kernel, not over the taps that reach one output pixel.

    Args:
        ws_epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-5.
        *args: positional arguments of `keras.layers.Conv2DTranspose`.
        **kwargs: every other argument of `keras.layers.Conv2DTranspose`.

    Call arguments:
        inputs: tensor of rank 4, channels last or first.

    Returns:
        `keras.layers.Conv2DTranspose`'s output, in the layer's compute
        dtype.

    Raises:
        ValueError: for an invalid `ws_epsilon`, and at `build` when the
            fan-in is 1 (a 1x1 kernel on a single input channel).

    Example:

    ```python
    y = keras_norms.WSConv2DTranspose(8, 3, strides=2, padding="same")(
        keras.random.normal((2, 8, 8, 16))
    )  # (2, 16, 16, 8)
    ```

    Reference:
        - [Qiao et al., 2019](https://arxiv.org/abs/1903.10520)
    """

    _plain_layer = keras.layers.Conv2DTranspose
    _output_axes = (-2,)

    def call(self, inputs, training=None):
        # Conv2DTranspose has no `convolution_op` to override.
        return self._conv_call(inputs)


@keras.saving.register_keras_serializable(package="keras_norms")
class WSDense(WeightStandardizationMixin, keras.layers.Dense):
    """Dense layer with a weight-standardized kernel.

    `keras.layers.Dense` (same arguments, weights and call). Its kernel
    `(in, units)` is standardized as `WSConv2D` does, per unit $i$ over its
    $C_{in}$ inputs $j$ (kernel axis 0), LoRA delta included when enabled:

    $$\\hat W_{ij}=\\frac{W_{ij}-\\mu_i}{\\sqrt{\\sigma^2_i+\\epsilon}}$$

    Quantization is not supported: fold
    first (`keras_norms.fold_weight_standardization`), then quantize.

    Args:
        ws_epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-5.
        *args: positional arguments of `keras.layers.Dense`.
        **kwargs: every other argument of `keras.layers.Dense`.

    Call arguments:
        inputs: tensor of rank >= 2, features last.

    Returns:
        `keras.layers.Dense`'s output, in the layer's compute dtype.

    Raises:
        ValueError: for an invalid `ws_epsilon`, and at `build` for a single
            input feature (fan-in 1).
        NotImplementedError: from `quantize()`.

    Example:

    ```python
    y = keras_norms.WSDense(16)(keras.random.normal((4, 32)))
    y = keras.layers.LayerNormalization()(y)
    ```

    Reference:
        - [Qiao et al., 2019](https://arxiv.org/abs/1903.10520)
    """

    _plain_layer = keras.layers.Dense

    def build(self, input_shape):
        if self.quantization_mode is not None:
            self.quantize()  # raises: the standardization needs the float kernel
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self._conv_call(inputs)

    def quantize(self, mode=None, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} (layer '{self.name}'): quantization of a "
            "weight-standardized kernel is not supported. Fold the model "
            "first with keras_norms.fold_weight_standardization(model), then "
            "quantize the plain Dense layers."
        )


# --------------------------------------------------------------------------- Scaled WS layers
@keras.saving.register_keras_serializable(package="keras_norms")
class ScaledWSConv1D(ScaledWeightStandardizationMixin, WSConv1D):
    """1D convolution with a Scaled Weight Standardization kernel (NF-Nets).

    `keras_norms.WSConv1D` with timm's Scaled WS, as `ScaledWSConv2D`
    computes it over the fan-in of kernel axes 0 and 1 ($I$ entries):

    $$\\hat W_{ij}=g_i\\,\\gamma\\,I^{-1/2}\\,\\frac{W_{ij}-\\mu_i}{\\sqrt{\\sigma^2_i+\\epsilon}}$$

    With $I^{-1/2}$, $\\sum_j\\hat W_{ij}^2\\approx g_i^2\\gamma^2$: on
    zero-mean, unit-variance, uncorrelated inputs the output variance is about
    $g_i^2\\gamma^2$, as normalizer-free networks (NF-ResNets, NF-Nets) need.

    Args:
        gamma: float > 0, the activation constant folded into the kernel.
            Defaults to 1.0 (none); for ReLU see `ScaledWSConv2D`.
        ws_epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-6 (timm).
        gain_initializer: initializer of `gain` (shape `(filters,)`).
            Defaults to `"ones"`.
        *args: positional arguments of `keras.layers.Conv1D`.
        **kwargs: every other argument of `keras.layers.Conv1D`.

    Call arguments:
        inputs: tensor of rank 3, channels last or first.

    Returns:
        `keras.layers.Conv1D`'s output, in the layer's compute dtype.

    Raises:
        ValueError: for an invalid `ws_epsilon` or `gamma`, and at `build`
            when the fan-in is 1.

    Example:

    ```python
    y = keras_norms.ScaledWSConv1D(16, 3, gamma=1.7128585504)(keras.random.normal((4, 32, 8)))
    y = keras.layers.ReLU()(y)
    ```

    Reference:
        - [Brock et al., 2021a](https://arxiv.org/abs/2101.08692) (NF-ResNets)
        - [Brock et al., 2021b](https://arxiv.org/abs/2102.06171) (NF-Nets)
    """


@keras.saving.register_keras_serializable(package="keras_norms")
class ScaledWSConv2D(ScaledWeightStandardizationMixin, WSConv2D):
    """2D convolution with a Scaled Weight Standardization kernel (NF-Nets).

    `keras_norms.WSConv2D` with timm's Scaled WS (`ScaledStdConv2d`): per
    output channel $i$, with the biased mean $\\mu_i$ and variance
    $\\sigma^2_i$ over the fan-in (kernel axes 0, 1, 2; $I = k_hk_w\\,
    C_{in}/\\text{groups}$ entries), a trainable `gain` $g_i$ (initialized to
    1) and the fixed activation constant $\\gamma$:

    $$\\hat W_{ij}=g_i\\,\\gamma\\,I^{-1/2}\\,
      \\frac{W_{ij}-\\mu_i}{\\sqrt{\\sigma^2_i+\\epsilon}}$$

    computed in float32 from the float32 master weights and cast to the
    compute dtype. Weights: `kernel`, `bias` (if `use_bias`), then `gain`.

    Args:
        gamma: float > 0, the activation constant folded into the kernel.
            Defaults to 1.0 (none). For ReLU: 1.7128585504 (analytic,
            $\\sqrt{2/(1-1/\\pi)}$) or 1.7139588594 (DeepMind's measured
            value). In the kernel it scales the activation's *input*;
            DeepMind applies it to the activation's *output*: the two agree
            for ReLU only (not for GELU or SiLU).
        ws_epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-6 (timm). DeepMind's floor
            $\\sqrt{\\max(I\\sigma^2,10^{-4})}$ is not implemented.
        gain_initializer: initializer of `gain` (shape `(filters,)`).
            Defaults to `"ones"`.
        *args: positional arguments of `keras.layers.Conv2D`.
        **kwargs: every other argument of `keras.layers.Conv2D`.

    Call arguments:
        inputs: tensor of rank 4, channels last or first.

    Returns:
        `keras.layers.Conv2D`'s output, in the layer's compute dtype.

    Raises:
        ValueError: for an invalid `ws_epsilon` or `gamma`, and at `build`
            when the fan-in is 1.

    Example:

    ```python
    x = keras.random.normal((2, 16, 16, 8))
    y = keras.layers.ReLU()(keras_norms.ScaledWSConv2D(16, 3, padding="same", gamma=1.7128585504)(x))
    ```

    Reference:
        - [Brock et al., 2021a](https://arxiv.org/abs/2101.08692) (NF-ResNets)
        - [Brock et al., 2021b](https://arxiv.org/abs/2102.06171) (NF-Nets)
    """


@keras.saving.register_keras_serializable(package="keras_norms")
class ScaledWSConv3D(ScaledWeightStandardizationMixin, WSConv3D):
    """3D convolution with a Scaled Weight Standardization kernel (NF-Nets).

    `keras_norms.WSConv3D` with timm's Scaled WS, as `ScaledWSConv2D`
    computes it over the fan-in of every kernel axis but the last ($I$
    entries):

    $$\\hat W_{ij}=g_i\\,\\gamma\\,I^{-1/2}\\,\\frac{W_{ij}-\\mu_i}{\\sqrt{\\sigma^2_i+\\epsilon}}$$

    Args:
        gamma: float > 0, the activation constant folded into the kernel.
            Defaults to 1.0 (none); for ReLU 1.7128585504 (analytic) or
            1.7139588594 (DeepMind's measured value; DeepMind applies it
            after the activation, which agrees for ReLU only).
        ws_epsilon: float > 0 added to the variance inside the square root.
            Defaults to 1e-6 (timm).
        gain_initializer: initializer of `gain` (shape `(filters,)`).
            Defaults to `"ones"`.
        *args: positional arguments of `keras.layers.Conv3D`.
        **kwargs: every other argument of `keras.layers.Conv3D`.

    Call arguments:
        inputs: tensor of rank 5, channels last or first.

    Returns:
        `keras.layers.Conv3D`'s output, in the layer's compute dtype.

    Raises:
        ValueError: for an invalid `ws_epsilon` or `gamma`, and at `build`
            when the fan-in is 1.

    Example:

    ```python
    y = keras_norms.ScaledWSConv3D(8, 3)(keras.random.normal((2, 8, 8, 8, 4)))
    ```

    Reference:
        - [Brock et al., 2021a](https://arxiv.org/abs/2101.08692) (NF-ResNets)
        - [Brock et al., 2021b](https://arxiv.org/abs/2102.06171) (NF-Nets)
    """

"""Weight Normalization: a wrapper reparameterizing the kernel of a Keras layer as a gain times a unit direction.

`WeightNormalization(layer)` replaces tf-addons' `tfa.layers.WeightNormalization` (which does not run on Keras 3):
it takes the same arguments, and tf-addons' configs (also under the name `"Addons>WeightNormalization"`) rebuild it.

Reference:
    Salimans & Kingma, "Weight Normalization: A Simple Reparameterization to
    Accelerate Training of Deep Neural Networks", arXiv:1602.07868.
"""

import warnings

import keras
from keras import ops

# Keras offers no public way to read a variable created with `autocast=True` (the wrapped layer's kernel and bias)
# at its float32 master value inside a mixed-precision call: a scope with no dtype turns autocasting off.
from keras.src.backend import AutocastScope
from keras.src.backend.common.stateless_scope import in_stateless_scope

from keras_norms.layers._base import LayerArguments
from keras_norms.layers.weight_standardization import bias_and_activation
from keras_norms.layers.weight_standardization import kernel_op
from keras_norms.layers.weight_standardization import kernel_variable
from keras_norms.layers.weight_standardization import layer_kernel
from keras_norms.ops import _stats
from keras_norms.ops import weight_normalization as wn_ops
from keras_norms.ops import weight_standardization as ws_ops

# The layers it wraps (exactly these classes) -> the kernel axes that index the output units.
OUTPUT_AXES = {
    keras.layers.Dense: (-1,),
    keras.layers.Conv1D: (-1,),
    keras.layers.Conv2D: (-1,),
    keras.layers.Conv3D: (-1,),
    keras.layers.Conv2DTranspose: (-2,),
    keras.layers.DepthwiseConv2D: (-2, -1),
}


@keras.saving.register_keras_serializable(package="keras_norms")
class WeightNormalization(LayerArguments, keras.layers.Wrapper):
    """Weight Normalization of a Dense or convolution layer's kernel (a wrapper).

    Reparameterizes the kernel of `layer` per output unit $i$ as a trainable
    gain $g_i$ times the unit-norm direction of the layer's own `kernel`
    $v$, over its fan-in $j$:

    $$w_{ij}=g_i\\,\\frac{v_{ij}}{\\sqrt{\\sum_jv_{ij}^2+\\epsilon}},\\qquad\\epsilon=10^{-12}$$

    and computes `layer`'s function (bias, activation, padding, strides,
    data format) with $w$. The output units are the last kernel axis for
    `Dense` and `Conv1D/2D/3D`, axis -2 for `Conv2DTranspose`
    (`(kh, kw, filters, in)`), and each (input channel, multiplier) pair for
    `DepthwiseConv2D` (`(kh, kw, in, multiplier)`, norm over the taps);
    $g$ has the shape of those axes. $w$ is computed in float32 from the
    float32 master weights and cast to the compute dtype.

    At build, $g=\\lVert v\\rVert$, so that $w=v$. With `data_init=True`, the
    first call with `training=True` (the first batch of `fit`) then sets,
    from the pre-activation $t=v\\cdot x/\\lVert v\\rVert$ with mean $\\mu$
    and variance $\\sigma^2$ over the batch (and spatial positions), in
    float32, $g=1/\\sqrt{\\sigma^2+10^{-10}}$ and $b=-\\mu g$, so that the
    pre-activation has mean 0 and variance 1 per unit on that batch (the
    paper's data-dependent initialization); that call uses these values, and
    the non-trainable flag `initialized` records it (it is saved with the
    model, so a loaded model does not initialize again). Inference calls
    never initialize.

    A stateless call cannot write trainable weights: on the JAX backend,
    `fit` runs the model statelessly, so call the model once on a batch with
    `training=True` before `fit` (harmless on the other backends, where
    `fit` would initialize on its first batch). Otherwise a stateless
    training call warns and trains from the variables as they are, as with
    `data_init=False`, setting the flag.

    Args:
        layer: an unbuilt or built `keras.layers.Dense`, `Conv1D`, `Conv2D`,
            `Conv3D`, `Conv2DTranspose` or `DepthwiseConv2D` (exactly these
            classes), without LoRA. Its `kernel` is the direction $v$ and
            keeps its name and its place in `layer`'s weights.
        data_init: bool, whether to run the data-dependent initialization.
            Defaults to True (tf-addons' default).
        **kwargs: base `Layer` arguments (`name`, `trainable`, `dtype`);
            `dtype` defaults to `layer`'s dtype policy.

    Call arguments:
        inputs: the input `layer` takes.
        training: bool or None; with `data_init`, the first call with
            `training=True` initializes $g$ and the bias.

    Returns:
        `layer`'s output computed with $w$, in the layer's compute dtype.

    Raises:
        ValueError: for a `layer` of another class or with LoRA, or a
            `data_init` that is not a bool.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras_norms.WeightNormalization(keras.layers.Conv2D(8, 3, activation="relu")),
        keras.layers.Flatten(),
        keras_norms.WeightNormalization(keras.layers.Dense(10)),
    ])
    x = keras.random.normal((16, 8, 8, 3))
    model(x, training=True)  # the data-dependent initialization, on one batch
    ```

    Reference:
        - [Salimans & Kingma, 2016](https://arxiv.org/abs/1602.07868)
    """

    def __init__(self, layer, data_init=True, **kwargs):
        if isinstance(layer, keras.layers.Layer):
            kwargs.setdefault("dtype", layer.dtype_policy)
        # keras.layers.Layer's constructor, not Wrapper's: Wrapper's check of `layer` would raise first, naming no fix.
        keras.layers.Layer.__init__(self, **kwargs)
        self._store_arguments(locals())
        # The wrapped layer's spec (its rank, then its channels once built): Keras checks an input against it before
        # building, so an input the layer cannot take leaves the wrapper unbuilt.
        self.input_spec = self.layer.input_spec
        self.g = None
        self.initialized = None
        # Whether the `initialized` flag was seen at 1 outside any stateless scope (see `_known_initialized`).
        self._seen_initialized = False

    def _check_layer(self, layer):
        if type(layer) not in OUTPUT_AXES:
            names = ", ".join(f"keras.layers.{cls.__name__}" for cls in OUTPUT_AXES)
            raise self._error(
                "layer",
                layer,
                f"Wrap one of {names} (exactly these classes: a subclass may compute its output from another "
                "kernel than the one this wrapper normalizes).",
            )
        if getattr(layer, "lora_rank", None):
            raise self._error(
                "layer",
                layer,
                "Wrap the layer without LoRA (lora_rank=None): fold the model with "
                "keras_norms.fold_weight_standardization, then enable LoRA on the plain layers.",
            )
        return layer

    def _check_data_init(self, data_init):
        return self._check_bool("data_init", data_init)

    # ----------------------------------------------------------------- state
    def build(self, input_shape):
        with AutocastScope(None):
            super().build(input_shape)  # builds the wrapped layer
            ndim = len(kernel_variable(self.layer).shape)
            self._fan_in_axes = ws_ops.fan_in_axes(ndim, OUTPUT_AXES[type(self.layer)])
            self.g = self.add_weight(
                name="g",
                shape=tuple(int(kernel_variable(self.layer).shape[a]) for a in range(ndim) if a not in self._fan_in_axes),
                initializer=lambda shape, dtype: ops.cast(
                    wn_ops.weight_norm_gain(layer_kernel(self.layer), self._fan_in_axes), dtype
                ),
                trainable=True,
                autocast=False,
            )
            if self.data_init:
                self.initialized = self.add_weight(
                    name="initialized", shape=(), initializer="zeros", trainable=False, autocast=False
                )
        self.input_spec = self.layer.input_spec

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    # ------------------------------------------------------------------ math
    def normalized_kernel(self):
        """The kernel $w$ the layer applies, in float32 (float64 under float64)."""
        with AutocastScope(None):
            return wn_ops.weight_norm(layer_kernel(self.layer), self.g, self._fan_in_axes)

    def call(self, inputs, training=None):
        with AutocastScope(None):
            g, bias = self.g, self.layer.bias
            if self.data_init and training and self.trainable:
                g, bias = self._data_dependent_init(inputs)
            kernel = wn_ops.weight_norm(layer_kernel(self.layer), g, self._fan_in_axes)
            outputs = kernel_op(self.layer, inputs, ops.cast(kernel, inputs.dtype))
            return bias_and_activation(self.layer, outputs, bias)

    def _data_dependent_init(self, inputs):
        """`(g, bias)` for a training call: the data-dependent values if not initialized yet, else the variables.

        Chosen by `ops.cond` on the `initialized` flag (a traced value), and written back with the flag. The
        initialization step itself is not differentiated (it precedes training in the paper): the first call's
        gradients are those of a call with the initialized values as the variables' values.
        """
        stateless = in_stateless_scope()
        bias = self.layer.bias

        def later():
            # Values, not the variables: assigning a variable to itself in a stateless scope makes it its own value.
            return tuple(_stats.upcast(v.value) for v in (self.g, bias) if v is not None)

        def first():
            direction = wn_ops.weight_norm(layer_kernel(self.layer), None, self._fan_in_axes)
            t = kernel_op(self.layer, _stats.upcast(inputs), direction)
            channel_axis = 1 if getattr(self.layer, "data_format", None) == "channels_first" else -1
            scale, shift = wn_ops.weight_norm_init(t, channel_axis)
            initial = (ops.reshape(scale, self.g.shape), shift)
            return tuple(v + ops.stop_gradient(i - v) for v, i in zip(later(), initial))

        if stateless and not self._known_initialized():
            # A stateless call returns the non-trainable state only: written g and bias would be dropped while the
            # flag is kept. Train from the variables, as with data_init=False, and set the flag, so that no later
            # call initializes over trained weights.
            warnings.warn(
                f"{self._owner()}: the data-dependent initialization (data_init=True) cannot run in a stateless "
                "call (the JAX backend's fit, stateless_call), which drops writes to trainable weights: the layer "
                "trains from its initial g and bias, as with data_init=False. To initialize, call the model once "
                "on a batch with training=True before fit, e.g. model(x[:32], training=True).",
                stacklevel=2,
            )
            values = later()
        else:
            values = ops.cond(self.initialized > 0.5, later, first)
        # Written before they are used: on torch, writing a tensor that the backward pass saved fails.
        for variable, value in zip((self.g, bias), values):
            variable.assign(value)
        self.initialized.assign(ops.ones((), self.initialized.dtype))
        if not stateless:
            self._seen_initialized = True
        return values[0], (values[1] if bias is not None else None)

    def _known_initialized(self):
        """Whether the `initialized` flag is known to be 1 outside the current stateless scope.

        Read from the variable where it holds a value (JAX's `fit` detaches the values while it trains), else
        what this object saw: a training call outside a stateless scope, or weights loaded with the flag set.
        """
        if not self._seen_initialized:
            stored = self.initialized._value  # the variable's own value, not the scope's
            try:
                self._seen_initialized = stored is not None and float(ops.convert_to_numpy(stored)) > 0.5
            except (TypeError, ValueError, NotImplementedError):  # symbolic (a TensorFlow graph): not known
                pass
        return self._seen_initialized

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.initialized is not None:  # the loaded flag decides, read now: JAX's fit detaches it later
            self._seen_initialized = False
            self._known_initialized()

    # ---------------------------------------------------------- serialization
    def get_config(self):
        config = super().get_config()  # Wrapper's: the wrapped layer, serialized
        # Its build config would make the config of a built wrapper differ from an unbuilt one's; the wrapper's
        # own build config builds it.
        config["layer"] = {k: v for k, v in config["layer"].items() if k != "build_config"}
        return {**config, "data_init": self.data_init}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)  # Wrapper.from_config pops "layer" from the caller's dict
        layer = config.pop("layer")
        if "module" not in layer and hasattr(keras.layers, layer.get("class_name", "")):
            # A tf.keras config (tf-addons'): the built-in layer by its class name alone, which Keras 3's
            # deserialization no longer looks up.
            layer = getattr(keras.layers, layer["class_name"]).from_config(layer["config"])
        else:
            layer = keras.saving.deserialize_keras_object(layer, custom_objects=custom_objects)
        return cls(layer, **config)


# tf-addons registered its wrapper as "Addons>WeightNormalization": that name deserializes to this class (saved
# configs keep working), while this class still serializes as "keras_norms>WeightNormalization".
keras.saving.get_custom_objects().setdefault("Addons>WeightNormalization", WeightNormalization)

"""ProxyNormalization: affine, activation, then normalization by a Gaussian proxy.

Reference:
    Labatie, Masters, Eaton-Rosen & Luschi, "Proxy-Normalizing Activations to
    Match Batch Normalization while Removing Batch Dependence", NeurIPS 2021
    No official code was found.
"""

import keras
from keras import ops

from keras_norms.layers._base import NormalizationLayer
from keras_norms.ops import _stats
from keras_norms.ops.proxy import DEFAULT_NUM_POINTS
from keras_norms.ops.proxy import check_num_points
from keras_norms.ops.proxy import get_activation
from keras_norms.ops.proxy import proxy_norm
from keras_norms.ops.proxy import quantile_grid


@keras.saving.register_keras_serializable(package="keras_norms")
class ProxyNormalization(NormalizationLayer):
    """Proxy Normalization (PN): per-channel affine, activation, proxy normalization.

    Put it after a normalization that works per example and has no affine of
    its own, `LayerNormalization(center=False, scale=False)` or
    `GroupNormalization(..., center=False, scale=False)`, **in place of the
    affine and the activation**: this layer owns both. With the normalized
    input $y$ it computes, per channel $c$,

    $$\\hat z=\\frac{\\phi(\\gamma_c\\,y+\\beta_c)-E_{Y}\\big[\\phi(\\gamma_c Y_c+\\beta_c)\\big]}
    {\\sqrt{\\operatorname{Var}_{Y}\\big[\\phi(\\gamma_c Y_c+\\beta_c)\\big]+\\epsilon}},$$

    where $Y_c\\sim\\mathcal N(0,1)$ is a Gaussian **proxy** of the
    normalized pre-activation, or $Y_c\\sim\\mathcal N(\\tilde\\beta_c,
    (1+\\tilde\\gamma_c)^2)$ with `proxy_affine=True` (extra trainable
    `proxy_gamma`, `proxy_beta`, initialized to 0). The expectation and
    variance are over the proxy, not over the data: they depend on the
    parameters alone, so the output of an example never depends on the
    other examples, training equals inference and batch size 1 is fine.
    They are an equal-weight quadrature over the $S_q$ = `num_points`
    Gaussian quantiles $y_s=\\sqrt2\\,\\operatorname{erfinv}(2(s+\\frac12)/S_q-1)$,
    computed once, with a two-pass variance in float32; gradients flow
    through them into $\\gamma,\\beta$ (and $\\tilde\\gamma,\\tilde\\beta$).
    The output is cast to the layer's compute dtype. There is no
    non-trainable state.

    The paper's number of quadrature points, its
    $\\epsilon$ and the $\\mathcal N(\\tilde\\beta,(1+\\tilde\\gamma)^2)$ form of
    the proxy affine are not confirmed against the paper; the defaults below
    are this package's choices. With the default 256 points the proxy
    moments are within 6.1e-4 (mean) and 0.82% (standard deviation) of the
    exact Gaussian ones for relu, gelu and swish with $\\gamma\\in[0.7,1.5]$,
    $|\\beta|\\le1$ (measured); $\\epsilon=10^{-3}$ keeps a ReLU with a very
    negative $\\beta$ (proxy variance near 0) from amplifying its input: the
    output's standard deviation on $\\mathcal N(0,1)$ inputs stays below
    1.01 for every $\\beta\\in[-6,0]$, where $10^{-5}$ reaches 5.6. See the
    Design notes page of the documentation, section Proxy Normalization.

    Args:
        activation: the activation $\\phi$, a Keras activation name
            (`"relu"`, `"gelu"`, `"swish"`, ...) or an elementwise callable;
            serialized with `keras.activations.serialize`. Softmax-type
            activations are rejected. Defaults to `"relu"`.
        num_points: int >= 2, the number of quadrature points $S_q$.
            Defaults to 256 (this package's choice; the paper's value is
            not confirmed).
        epsilon: float > 0 added to the proxy variance inside the square
            root. Defaults to 1e-3 (this package's choice; the paper's
            value is not confirmed).
        proxy_affine: bool, whether to learn the proxy's mean
            $\\tilde\\beta$ and scale $1+\\tilde\\gamma$ (this form of the
            learned proxy is not confirmed against the paper).
            Defaults to False.
        axis: int, the channel axis (negative or positive, not 0). Defaults
            to -1.
        beta_initializer: initializer of $\\beta$. Defaults to `"zeros"`.
        gamma_initializer: initializer of $\\gamma$. Defaults to `"ones"`.
        proxy_beta_initializer: initializer of $\\tilde\\beta$. Defaults to
            `"zeros"`.
        proxy_gamma_initializer: initializer of $\\tilde\\gamma$. Defaults to
            `"zeros"`.
        beta_regularizer: optional regularizer of $\\beta$. Defaults to None.
        gamma_regularizer: optional regularizer of $\\gamma$. Defaults to
            None.
        beta_constraint: optional constraint on $\\beta$. Defaults to None.
        gamma_constraint: optional constraint on $\\gamma$. Defaults to None.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: tensor of rank >= 2, batch on axis 0, normalized
            pre-activations (roughly zero mean and unit variance per
            example, e.g. from LayerNormalization or GroupNormalization).
        training: unused: training and inference compute the same function.

    Returns:
        A tensor of the input's shape in the layer's compute dtype.

    Raises:
        ValueError: for an invalid argument (named in the message), or an
            input whose channel axis is out of range, 0 or of unknown size.

    Example:

    ```python
    import keras, keras_norms
    block = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(64, 3, use_bias=False),
        keras.layers.GroupNormalization(groups=8, center=False, scale=False),
        keras_norms.ProxyNormalization(activation="relu"),
    ])
    ```

    Reference:
        - [Labatie et al., 2021](https://papers.neurips.cc/paper_files/paper/2021/hash/8d2a5f7d4afa5d0530789d3066945330-Abstract.html),
          "Proxy-Normalizing Activations to Match Batch Normalization while
          Removing Batch Dependence", NeurIPS 2021
    """

    def __init__(
        self,
        activation="relu",
        num_points=DEFAULT_NUM_POINTS,
        epsilon=1e-3,
        proxy_affine=False,
        axis=-1,
        beta_initializer="zeros",
        gamma_initializer="ones",
        proxy_beta_initializer="zeros",
        proxy_gamma_initializer="zeros",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._store_arguments(locals())
        self.proxy_gamma = None
        self.proxy_beta = None

    # ------------------------------------------------------------ validation
    def _check_activation(self, activation):
        fix = "Pass an elementwise Keras activation such as 'relu', 'gelu' or 'swish', or a callable."
        if activation is None:
            raise self._error("activation", activation, "The layer applies the activation itself. " + fix)
        try:
            return get_activation(activation, type(self).__name__)
        except ValueError:
            raise self._error("activation", activation, fix) from None

    def _check_proxy_affine(self, proxy_affine):
        return self._check_bool("proxy_affine", proxy_affine)

    def _check_num_points(self, num_points):
        try:
            return check_num_points(num_points)
        except ValueError:
            raise self._error(
                "num_points",
                num_points,
                f"Pass an int >= 2, the number of Gaussian quadrature points "
                f"(a few hundred, e.g. {DEFAULT_NUM_POINTS}).",
            ) from None

    # ----------------------------------------------------------------- state
    def build(self, input_shape):
        channels = self._build_channels(input_shape)
        # The layer always owns the affine before the activation (it has no `center` or `scale`).
        self._add_gamma_beta((channels,))
        if self.proxy_affine:
            self.proxy_gamma = self._add_affine("proxy_gamma", (channels,))
            self.proxy_beta = self._add_affine("proxy_beta", (channels,))

    # ------------------------------------------------------------------ call
    def call(self, inputs, training=None):
        y = proxy_norm(
            _stats.upcast(inputs),
            self.gamma,
            self.beta,
            activation=self.activation,
            grid=quantile_grid(self.num_points),
            epsilon=self.epsilon,
            axis=self._channel_axis,
            proxy_gamma=self.proxy_gamma,
            proxy_beta=self.proxy_beta,
        )
        return ops.cast(y, self.compute_dtype)

"""TensorFlow and JAX fast paths for the EvoNorm ops: one-pass shifted moments, which XLA fuses.

Written in `keras.ops` only, so the two backends share the kernels of
`evonorm_b0` and `evonorm_s0`. JAX's `evonorm_b0` takes the variant with a
hand-written gradient of the output expression (`_b0_output`): with
autodiff of `maximum` and the division, XLA on CPU materialized eight
full-size intermediates in the backward pass; with it, a (4, 28, 28, 512)
training step took 9.3 ms instead of 12.2 ms (the reference), with an 18 MB
peak instead of 31 MB (temporaries and outputs; one CPU thread, medians of
CPU time). TensorFlow keeps autodiff: under `tf.function(jit_compile=True)`
the hand-written gradient was no faster (CPU, (4, 28, 28, 512): 42 ms both,
reference 42 ms; autodiff of the one-pass kernel 30 ms) and took more
temporary memory. There is no
`evonorm_b0_inference` kernel: with the moving variance given, the
reference needs the instance variance only, and the one-pass form was no
faster (0.8-0.9x on (4, 28, 28, 512), TensorFlow and JAX).

Both EvoNorms need per-(example, channel) moments over the spatial
positions. The reference takes each variance two-pass (the mean, then the
mean squared deviation), and B0 takes two of them (batch and instance):
four reductions over the input, each depending on the last. Here one fused
pass gives two sums of **shifted** data per (example, channel), $d=x-k$
with $k_{n,c}$ the example's value at the first spatial position behind a
stop-gradient:

$$\\bar d_{n,c}=\\tfrac1S\\textstyle\\sum_s d,\\qquad
  s^2_{n,c}=\\max\\big(\\tfrac1S\\textstyle\\sum_s d^2-\\bar d_{n,c}^2,\\;0\\big),\\qquad
  \\mu_{n,c}=k_{n,c}+\\bar d_{n,c},$$

and the wider variances follow from these small `(N, C)` tensors by the law
of total variance over equal-sized parts (a sum of non-negative terms, no
cancellation):

$$s^2_{b,c}=\\operatorname{mean}_n\\big(s^2_{n,c}+(\\mu_{n,c}-\\mu_c)^2\\big),\\qquad
  s^2_{n,g}=\\operatorname{mean}_{c\\in g}\\big(s^2_{n,c}+(\\mu_{n,c}-\\mu_{n,g})^2\\big).$$

The shift keeps $E[d^2]-\\bar d^2$ from cancelling when $|\\mu|\\gg\\sigma$
(the variance is shift-invariant, and the gradient of $x-k$ is the
identity), as in `group_norm.py`. The output
formulas are the reference's; autodiff of the whole gives the exact
gradients, through the statistics included.

Taken for float32 and float64 inputs (the ops upcast 16-bit inputs first),
rank >= 3, any channel axis but 0 (the ops check it), any batch size, also
unknown while tracing. Declines (`decline(reason)`) other dtypes and ranks.
"""

from keras import backend
from keras import ops

from keras_norms._backends.xla.group_norm import first_position
from keras_norms._backends.xla.group_norm import tensorflow_inference_refusal
from keras_norms.ops import _common
from keras_norms.ops._dispatch import decline
from keras_norms.ops._dispatch import decline_input
from keras_norms.ops._dispatch import kernel


def _refusal(x):
    """A `Declined` for an input the kernels do not take, or `None` when they take it."""
    if backend.standardize_dtype(x.dtype) not in ("float32", "float64"):
        return decline_input(x)
    if len(x.shape) < 3:
        return decline(f"rank-{len(x.shape)} input (kernel takes rank >= 3)")
    return None


def _channel_moments(x, axis):
    """Per-(example, channel) mean and biased variance over the spatial axes, kept as size-1 axes."""
    spatial = _common.spatial_axes(len(x.shape), axis)
    first = ops.stop_gradient(first_position(x, spatial))
    d = x - first
    count = ops.cast(_common.count(x, spatial), x.dtype)
    mean_d = ops.sum(d, axis=spatial, keepdims=True) / count  # the two sums fuse into one pass
    variance = ops.maximum(ops.sum(ops.square(d), axis=spatial, keepdims=True) / count - ops.square(mean_d), 0.0)
    return first + mean_d, variance


def _vector(v, x, axis, per_example):
    """A `(C,)` vector broadcast to `per_example`'s `(N, 1, ..., C, ..., 1)` shape.

    Broadcasting the small vectors per example first makes every full-size
    reduction of the backward pass a per-(example, channel) one, which XLA
    fuses into one pass (a `(C,)` gradient is then a sum over the small
    `(N, C)` result); reductions straight to `(C,)` next to `(N, C)` ones
    took separate passes.
    """
    if v is None:
        return None
    return _common.channel_vector(v, len(x.shape), axis) * per_example


def _sum_to(t, shape):
    """`t` summed over the axes where the (static) `shape` has size 1 and `t` does not."""
    axes = [i for i, (a, b) in enumerate(zip(t.shape, shape)) if b == 1 and a != 1]
    return ops.sum(t, axis=axes, keepdims=True) if axes else t


@ops.custom_gradient
def _b0_output(x, left, instance_std, v, gamma, beta):
    """$y=x/\\max(l,\\;r+v\\,x)\\,\\gamma+\\beta$ with a hand-written gradient (all arguments of x's rank)."""
    right = instance_std + v * x
    den = ops.maximum(left, right)
    z = x / den

    def grad(*args, upstream=None):
        dy = args[0] if upstream is None else upstream  # JAX passes it positionally
        dz = dy * gamma
        dx = dz / den  # through the numerator
        minus_dden = dx * z
        minus_dright = ops.where(right > left, minus_dden, 0.0)  # ties: the left branch
        return (
            dx - minus_dright * v,
            -_sum_to(minus_dden - minus_dright, left.shape),
            -_sum_to(minus_dright, instance_std.shape),
            -_sum_to(minus_dright * x, v.shape),
            _sum_to(dy * z, gamma.shape),
            _sum_to(dy, beta.shape),
        )

    return z * gamma + beta, grad


def _b0_output_autodiff(x, left, instance_std, v, gamma, beta):
    return x / ops.maximum(left, instance_std + v * x) * gamma + beta


def _b0(x, batch_variance, instance_variance, v, gamma, beta, axis, epsilon, output=_b0_output_autodiff):
    ones = ops.ones_like(instance_variance)
    v, gamma = (ones if t is None else _vector(t, x, axis, ones) for t in (v, gamma))
    beta = ops.zeros_like(ones) if beta is None else _vector(beta, x, axis, ones)
    left = ops.sqrt(batch_variance + epsilon) * ones
    return output(x, left, ops.sqrt(instance_variance + epsilon), v, gamma, beta)


def _evonorm_b0(x, v, gamma, beta, axis, epsilon, output):
    refusal = _refusal(x)
    if refusal is not None:
        return refusal
    mean_nc, var_nc = _channel_moments(x, axis)
    batch = ops.cast(ops.shape(x)[0], x.dtype)
    mean_c = ops.sum(mean_nc, axis=0, keepdims=True) / batch
    batch_variance = ops.sum(var_nc + ops.square(mean_nc - mean_c), axis=0, keepdims=True) / batch
    y = _b0(x, batch_variance, var_nc, v, gamma, beta, axis, epsilon, output)
    return y, ops.reshape(batch_variance, (-1,))


@kernel("evonorm_b0", backends=("tensorflow",))
def evonorm_b0(x, v=None, gamma=None, beta=None, axis=-1, epsilon=1e-5):
    """EvoNorm-B0 training kernel, autodiff gradients (TensorFlow's): `(y, batch variance)` as the reference."""
    return _evonorm_b0(x, v, gamma, beta, axis, epsilon, _b0_output_autodiff)


@kernel("evonorm_b0", backends=("jax",))
def evonorm_b0_custom_gradient(x, v=None, gamma=None, beta=None, axis=-1, epsilon=1e-5):
    """EvoNorm-B0 training kernel with `_b0_output`'s hand-written gradient (JAX's; see the module doc)."""
    return _evonorm_b0(x, v, gamma, beta, axis, epsilon, _b0_output)


@kernel("evonorm_s0", backends=("tensorflow", "jax"))
def evonorm_s0(x, v=None, gamma=None, beta=None, axis=-1, epsilon=1e-5, groups=32):
    """EvoNorm-S0 kernel; the op hands a non-negative `axis` and the resolved, positive `groups`.

    Declines a layer's inference call on TensorFlow, as `group_norm_one_pass` does.
    """
    refusal = _refusal(x)
    if refusal is None:  # (a `Declined` is falsy: no `or` between them)
        refusal = tensorflow_inference_refusal()
    if refusal is not None:
        return refusal
    channels = x.shape[axis]
    mean_nc, var_nc = _channel_moments(x, axis)
    mean_nc = ops.reshape(mean_nc, (-1, groups, channels // groups))  # (N, G, C_g)
    var_nc = ops.reshape(var_nc, (-1, groups, channels // groups))
    mean_g = ops.mean(mean_nc, axis=2, keepdims=True)
    var_g = ops.mean(var_nc + ops.square(mean_nc - mean_g), axis=2, keepdims=True)
    scale = ops.rsqrt(var_g + epsilon) * ops.ones_like(mean_nc)  # (N, G, C_g)
    if gamma is not None:
        scale = scale * ops.reshape(gamma, (1, groups, -1))
    scale = ops.reshape(scale, _common.per_example_shape(len(x.shape), axis, channels))
    ones = ops.ones_like(scale)
    v, beta = _vector(v, x, axis, ones), _vector(beta, x, axis, ones)
    y = x * ops.sigmoid(x if v is None else v * x) * scale
    return y if beta is None else y + beta

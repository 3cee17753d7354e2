"""Statistics shared by every normalization: dtype policy, axes and moments.

The numerical contract (the Numerics page of the documentation):

* statistics are computed in float32, or in the wider of the input dtype and
  float32 (float64 stays float64);
* the variance is two-pass, mean first and then the mean of squared
  deviations, so it is never negative and all backends agree; where a formula
  needs raw moments it is clamped at 0 before epsilon is added;
* `keras.ops.moments` is not used: it is one-pass and unclamped on torch.
"""

from keras import KerasTensor
from keras import backend
from keras import ops

from keras_norms.ops import _common


def statistics_dtype(dtype):
    """The dtype statistics are computed in: float64 for float64, else float32."""
    return "float64" if backend.standardize_dtype(dtype) == "float64" else "float32"


def upcast(x):
    """`x` as a tensor in `statistics_dtype(x.dtype)` (no copy when already there)."""
    if not isinstance(x, KerasTensor) and not ops.is_tensor(x):
        x = ops.convert_to_tensor(x, dtype=getattr(x, "dtype", None))
    dtype = statistics_dtype(x.dtype)
    return x if backend.standardize_dtype(x.dtype) == dtype else ops.cast(x, dtype)


def like(v, x):
    """`v` (array, tensor or `None`) as a tensor of `x`'s dtype, for vectors."""
    if v is None or isinstance(v, KerasTensor):
        return v
    return ops.cast(v, x.dtype)


def canonical_axis(axis, ndim, owner="keras_norms"):
    """Returns `axis` as a non-negative int for a rank-`ndim` input.

    Args:
        axis: int, negative or positive.
        ndim: int, the input rank.
        owner: str, the layer or op named in the error message.

    Raises:
        ValueError: if `axis` is not an int in `[-ndim, ndim)`.
    """
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ValueError(
            f"{owner}: `axis` must be an int, received axis={axis!r}. "
            "Pass the channel axis, e.g. -1 (channels_last) or 1 "
            "(channels_first)."
        )
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{owner}: axis={axis} is out of range for an input of rank "
            f"{ndim}. Use an axis in [{-ndim}, {ndim - 1}]."
        )
    return axis % ndim


def channel_axis(axis, ndim, owner, fix=", which example groups split. Pass the channel axis (e.g. -1 or 1)."):
    """`canonical_axis` that refuses the batch axis 0; `fix` completes "axis=0 is the batch axis" in the message.

    Raises:
        ValueError: for a bad `axis`, or `axis` 0.
    """
    axis = canonical_axis(axis, ndim, owner)
    if axis == 0:
        raise ValueError(f"{owner}: axis=0 is the batch axis{fix}")
    return axis


def grouped_input(x, axis, groups, owner):
    """`(x, axis, groups)` of a grouped op: `x` upcast, its channel axis (not 0), `groups` resolved.

    Raises:
        ValueError: for a bad `axis` or `groups`.
    """
    x = upcast(x)
    axis = channel_axis(axis, len(x.shape), owner)
    return x, axis, _common.resolve_groups(groups, x.shape[axis], owner)


def reduction_axes(ndim, axis):
    """All axes of a rank-`ndim` tensor except the (non-negative) `axis`."""
    return [i for i in range(ndim) if i != axis]


def moments(x, axes, keepdims=False, mask=None):
    """Mean and biased variance over `axes`, two-pass, in float32 or wider.

    $$\\mu = \\frac{1}{n}\\sum x,\\qquad \\sigma^2 = \\frac{1}{n}\\sum (x-\\mu)^2$$

    With a `mask` (broadcastable to `x`, true for the entries that count),
    $n$ is the number of unmasked entries and masked entries are left out of
    both sums; an all-masked slice gives mean and variance 0.

    Args:
        x: tensor.
        axes: list of ints, the axes to reduce.
        keepdims: bool, keep the reduced axes with size 1.
        mask: optional boolean (or 0/1) tensor broadcastable to `x`.

    Returns:
        `(mean, variance)` in `statistics_dtype(x.dtype)`.
    """
    x = upcast(x)
    axes = list(axes)
    if mask is None:
        # Sums over a count, not ops.mean: Keras's torch mean runs float64 in float32.
        count = ops.cast(_common.count(x, axes), x.dtype)
        mean = ops.sum(x, axis=axes, keepdims=True) / count
        # d(variance)/d(mean) = -2 * sum(x - mean) / count = 0 exactly, so the
        # mean is frozen here: the same gradients, one full-size reduction less
        # in the backward pass (as tf.nn.moments does).
        variance = ops.sum(ops.square(x - ops.stop_gradient(mean)), axis=axes, keepdims=True) / count
    else:
        weights = ops.cast(ops.broadcast_to(mask, ops.shape(x)), x.dtype)
        count = ops.sum(weights, axis=axes, keepdims=True)
        safe_count = ops.maximum(count, 1.0)
        mean = ops.sum(x * weights, axis=axes, keepdims=True) / safe_count
        deviation = (x - ops.stop_gradient(mean)) * weights  # zero gradient, as above
        variance = ops.sum(ops.square(deviation), axis=axes, keepdims=True)
        variance = variance / safe_count
    if not keepdims:
        mean = ops.squeeze(mean, axis=axes)
        variance = ops.squeeze(variance, axis=axes)
    return mean, variance


def group_moments(x, axis, groups):
    """The `(N, ..., G, C_g, ...)` view of `x` and its per-(example, group) moments.

    Two-pass mean and biased variance (`moments`) over each example's group
    channels and all spatial positions, kept broadcastable against the view.
    Shared by group norm, EvoNorm-S0 and the example's own moments of
    Batch-Group inference. `axis` is non-negative and `groups` divides the
    channel count.
    """
    x = upcast(x)
    view = ops.reshape(x, _common.split_channels(ops.shape(x), axis, groups))
    reduce_axes = [i for i in range(len(view.shape)) if i not in (0, axis)]
    mean, variance = moments(view, reduce_axes, keepdims=True)
    return view, mean, variance


def mix_moments(own_mean, own_variance, mean, variance, alpha):
    """Example weighing: the moments of the mix `alpha` (own) and `1 - alpha` (population).

    $$\\tilde\\mu=\\alpha m+(1-\\alpha)\\mu,\\qquad
      \\tilde\\sigma^2=\\max\\big(\\alpha v+(1-\\alpha)\\sigma^2+\\alpha(1-\\alpha)(m-\\mu)^2,\\;0\\big),$$

    which equals $\\alpha E_{own}[x^2]+(1-\\alpha)(\\sigma^2+\\mu^2)-\\tilde\\mu^2$ written as a
    sum of non-negative terms, so float32 cannot cancel it below zero.
    """
    mixed_mean = alpha * own_mean + (1.0 - alpha) * mean
    mixed_variance = (
        alpha * own_variance + (1.0 - alpha) * variance + alpha * (1.0 - alpha) * ops.square(own_mean - mean)
    )
    return mixed_mean, ops.maximum(mixed_variance, 0.0)


# ------------------------------------------------------------------- masks
def broadcast_mask(mask, x):
    """Keras BN's mask convention: rank `ndim - 1`, a trailing axis added (`None` stays `None`)."""
    if mask is None:
        return None
    if len(mask.shape) != len(x.shape) - 1:
        raise ValueError(
            "keras_norms: the mask must have one dimension less than the "
            f"inputs. Received mask.shape={tuple(mask.shape)}, "
            f"inputs.shape={tuple(x.shape)}."
        )
    return ops.expand_dims(ops.cast(mask, "bool"), -1)


def as_mask(mask):
    """A mask given as an array made a tensor (sliced per device), `None` and symbolic ones as they are."""
    if mask is None or isinstance(mask, KerasTensor):
        return mask
    return ops.convert_to_tensor(mask)


def mask_weights(mask, x):
    """The mask as 0/1 weights of `x`'s dtype, broadcast to `x`'s shape (Keras BN's convention)."""
    return ops.broadcast_to(ops.cast(broadcast_mask(mask, x), x.dtype), ops.shape(x))


def unmasked_count(x, mask, axis):
    """The `(C,)` number of unmasked entries per channel, for pooling statistics across replicas."""
    return ops.sum(mask_weights(mask, x), axis=reduction_axes(len(x.shape), axis))

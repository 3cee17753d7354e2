"""PyTorch fast paths for `keras_norms.ops.batch_norm` and `batch_norm_inference`: `F.batch_norm`.

Layout: channels-last input `(N, ..., C)` is viewed as `(M, C)` with
`M = N * spatial`, a free reshape of a contiguous tensor, for which
`F.batch_norm` uses its channels-last kernel; no transpose copy is made.
"""

import torch.nn.functional as F

from keras_norms._backends.torch._common import cast
from keras_norms._backends.torch._common import contiguous_grad
from keras_norms._backends.torch._common import refusal
from keras_norms.ops._dispatch import Declined
from keras_norms.ops._dispatch import decline
from keras_norms.ops._dispatch import kernel


def _prepare(x, axis):
    """A view of `x` with channels on dim 1 (no copy), or `Declined` saying why there is none.

    The public ops hand kernels a validated, non-negative `axis`.
    """
    declined = refusal(x)
    if declined is not None:
        return declined
    if x.dim() < 2:
        return decline("rank-1 input")
    if axis == 1:
        return x
    if axis != x.dim() - 1:
        return decline("channel axis in the middle (only last or 1)")
    if not x.is_contiguous():
        return decline("channels-last input not contiguous in memory")
    return x.reshape(-1, x.shape[-1])


@kernel("batch_norm", backends=("torch",))
def batch_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3, mask=None):
    """`F.batch_norm` in training mode, returning Keras's biased statistics.

    Training-mode `F.batch_norm` differentiates through the batch statistics
    (the fused torch BN that Keras reverted used the inference kernel with
    detached statistics, and so had wrong gradients). Its running-variance
    output is unbiased, so it is written into a scratch buffer with
    momentum 1 and rescaled by (n-1)/n; the layer's variables are never
    handed to torch.
    """
    if mask is not None:
        return decline("mask given")
    view = _prepare(x, axis)
    if isinstance(view, Declined):
        return view
    channels = view.shape[1]
    count = view.numel() // max(channels, 1)
    if count < 2:  # torch rejects one value per channel; the reference gives 0.
        return decline("one value per channel")
    mean, variance = view.new_zeros(channels), view.new_zeros(channels)
    y = F.batch_norm(view, mean, variance, cast(gamma, x.dtype), cast(beta, x.dtype), training=True, momentum=1.0,
                     eps=epsilon)
    y = contiguous_grad(y)  # a stride-0 upstream gradient (a loss of sum(y)) made torch's backward 5x slower
    variance = variance * ((count - 1) / count)
    return y.reshape(x.shape), mean, variance


@kernel("batch_norm_inference", backends=("torch",))
def batch_norm_inference(x, mean, variance, gamma=None, beta=None, axis=-1, epsilon=1e-3, example_weight=0.0):
    """`F.batch_norm` in inference mode; declines example weighing."""
    if example_weight != 0:
        return decline("inference example weight is not 0")
    view = _prepare(x, axis)
    if isinstance(view, Declined):
        return view
    y = F.batch_norm(view, mean.to(x.dtype), variance.to(x.dtype), cast(gamma, x.dtype), cast(beta, x.dtype),
                     training=False, eps=epsilon)
    return y.reshape(x.shape)

"""PyTorch fast paths: fused native kernels behind `keras_norms.ops`.

Each function has the name and signature of the op it replaces and declines
with `decline(reason)`. Decisions use static facts only (rank, axis, dtype).

Layout: channels-last input `(N, ..., C)` is viewed as `(M, C)` with
`M = N * spatial`, a free reshape of a contiguous tensor, for which
`F.batch_norm` uses its channels-last kernel; no transpose copy is made.
"""

import torch
import torch.nn.functional as F

from keras_norms._backends import Declined
from keras_norms._backends import decline
from keras_norms._backends import decline_input
from keras_norms._backends.torch_activations import norm_prop_relu  # noqa: F401  (re-exported kernel)
from keras_norms._backends.torch_evonorm import evonorm_b0  # noqa: F401  (re-exported kernels)
from keras_norms._backends.torch_evonorm import evonorm_b0_inference  # noqa: F401
from keras_norms._backends.torch_evonorm import evonorm_s0  # noqa: F401
from keras_norms._backends.torch_ghost import ghost_batch_norm  # noqa: F401  (re-exported kernel)
from keras_norms._backends.torch_group import batch_group_norm  # noqa: F401  (re-exported kernel)
from keras_norms._backends.torch_group_norm import group_norm  # noqa: F401  (re-exported kernel)
from keras_norms._backends.torch_memorized import memorized_batch_norm  # noqa: F401  (re-exported kernel)
from keras_norms._backends.torch_tlu import tlu  # noqa: F401  (re-exported kernel)


_FLOAT_DTYPES = (torch.float32, torch.float64)


def _prepare(x, axis):
    """A view of `x` with channels on dim 1 (no copy), or `Declined` saying why there is none.

    The public ops hand kernels a validated, non-negative `axis`.
    """
    if not isinstance(x, torch.Tensor) or x.dtype not in _FLOAT_DTYPES:
        return decline_input(x)
    if x.dim() < 2:
        return decline("rank-1 input")
    if axis == 1:
        return x
    if axis != x.dim() - 1:
        return decline("channel axis in the middle (only last or 1)")
    if not x.is_contiguous():
        return decline("channels-last input not contiguous in memory")
    return x.reshape(-1, x.shape[-1])


def _param(v, dtype):
    return None if v is None else v.to(dtype)


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
    mean = torch.zeros(channels, dtype=x.dtype, device=x.device)
    variance = torch.zeros(channels, dtype=x.dtype, device=x.device)
    y = F.batch_norm(
        view,
        mean,
        variance,
        weight=_param(gamma, x.dtype),
        bias=_param(beta, x.dtype),
        training=True,
        momentum=1.0,
        eps=epsilon,
    )
    variance = variance * ((count - 1) / count)
    return y.reshape(x.shape), mean, variance


def batch_norm_inference(
    x, mean, variance, gamma=None, beta=None, axis=-1, epsilon=1e-3, example_weight=0.0
):
    """`F.batch_norm` in inference mode; declines example weighing."""
    if example_weight != 0:
        return decline("inference example weight is not 0")
    view = _prepare(x, axis)
    if isinstance(view, Declined):
        return view
    y = F.batch_norm(
        view,
        mean.to(x.dtype),
        variance.to(x.dtype),
        weight=_param(gamma, x.dtype),
        bias=_param(beta, x.dtype),
        training=False,
        eps=epsilon,
    )
    return y.reshape(x.shape)

"""PyTorch fast path for `keras_norms.ops.group_norm`: `F.group_norm`.

Layouts (channels on dim 1 for torch):

* channel axis 1 (channels-first, and rank-2 `(N, C)`): `x.reshape(N, C, -1)`,
  a free view of a contiguous tensor, reaches torch's contiguous CPU kernel
  (a Welford-type, cancellation-free variance).
* channel axis last, rank >= 3: the free channels-last view
  `(N, S, 1, C)` permuted to `(N, C, S, 1)` (`torch.channels_last` strides)
  reaches torch's channels-last CPU kernel, which is the fastest for NHWC data
  but computes the variance as $E[x^2]-E[x]^2$ in float32: at
  |mean|/std = 300 it was off by 0.07 on a (8, 8, 8, 16) input with 4 groups.
  The kernel therefore feeds it **shifted** data, $x-k_{n,g}$, where $k$ is
  the mean of the group's channels at the first spatial position, detached
  (group normalization is invariant to a per-(example, group) constant, and
  the gradient of $x-k$ is the identity). The shifted input has
  $|\\text{mean}|/\\text{std}=O(1)$: the same input was then within 2e-5 of
  the float64 result (the transpose-to-contiguous layout: 6e-5). One
  elementwise pass is added; the transposed layout costs a copy in and one
  out in both directions and was measured slower (median forward+backward on
  a (32, 32, 32, 64) input, G=32, 2 shared CPU threads: shifted channels-last
  17 ms, transposed 22 ms, unshifted channels-last 16 ms).

With `groups == C` (instance normalization) `F.instance_norm` was measured and is not used: its train step on a
(32, 32, 32, 64) input, one CPU thread, took 11.6 ms against `F.group_norm`'s 3.9-4.3 ms channels-first and
24 ms against 17-20 ms channels-last (forward alone: 4.4 against 0.6 ms and 7 against 0.7 ms). This kernel's
channels-last path with 64 groups took 19-24 ms there, the transposed contiguous layout 21-23 ms.

Two torch 2.13 bugs are steered around (both found by the GroupNormalization registry cases): a bias without a
weight fails in backward in every layout (a constant weight of ones is passed), and the channels-last CPU backward
segfaults when the input needs no gradient but the weights do (a layer right after a model's `Input`): that case
takes the contiguous kernel on a transposed copy.

Declines (`decline(reason)`): dtypes other than float32 and float64 (the op
upcasts first; this only matters for direct calls); a channel axis that is
neither 1 nor the last one; rank-2 input and one channel per group on
channels-last input, where the benchmark suite measured the reference faster
(train step 0.8x on (256, 1024); 0.3-0.4x with C groups on the ResNet shapes);
one value per group and example (the output is beta; the fused kernel's
round-off would show). Decisions use static facts only.
"""

import math

import torch
import torch.nn.functional as F

from keras_norms._backends.torch._common import cast
from keras_norms._backends.torch._common import refusal
from keras_norms._backends.torch._common import vector_or
from keras_norms.ops._dispatch import decline
from keras_norms.ops._dispatch import kernel


def _shifted_channels_last(x, groups):
    """`x - k` as a `(N, C, S, 1)` channels-last view, `k` detached per (example, group)."""
    n, channels = x.shape[0], x.shape[-1]
    rows = x.reshape(n, -1, channels)  # (N, S, C), a view when x is contiguous
    with torch.no_grad():
        first = rows[:, 0, :].reshape(n, groups, channels // groups).mean(dim=2)  # (N, G)
        shift = first.repeat_interleave(channels // groups, dim=1).unsqueeze(1)  # (N, 1, C)
    shifted = rows - shift  # contiguous (N, S, C)
    return shifted.reshape(n, -1, 1, channels).permute(0, 3, 1, 2)


@kernel("group_norm", backends=("torch",))
def group_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3, groups=32):
    """`F.group_norm` on a free view; the same output as the reference.

    The public op hands kernels a non-negative `axis` and the resolved,
    positive `groups`.
    """
    declined = refusal(x)
    if declined is not None:
        return declined
    if math.prod(x.shape[1:]) == groups:
        # One value per group and example: the exact output is beta. F.group_norm computes x * s + (beta - mean * s),
        # s = gamma / sqrt(epsilon), whose round-off (|x| s 6e-8: 1e-4 at |x| = 100) the reference's (x - mean) * s
        # does not have; with one example F.group_norm raises ("more than 1 value per channel").
        return decline("one value per group and example")
    if x.dim() == 2:
        # (N, C): one value per channel and example; the suite's (256, 1024) cell took 1.22x the reference's time
        return decline("rank-2 input (the reference was faster)")
    if axis == x.dim() - 1 and groups == x.shape[axis]:
        # Instance normalization, channels last: the reference's per-channel reductions took 0.3-0.4x this
        # kernel's time on the suite's shapes (train step; inference too)
        return decline("one channel per group on channels-last input (the reference was faster)")
    weight, bias = cast(gamma, x.dtype), cast(beta, x.dtype)
    if weight is None and bias is not None:
        # torch 2.13's backward fails ("tensor does not have a device") with a bias but no weight, in every layout.
        weight = vector_or(None, x.shape[axis], x, 1.0)
    if axis == 1:
        y = F.group_norm(x.reshape(x.shape[0], x.shape[1], -1), groups, weight, bias, epsilon)
        return y.reshape(x.shape)
    if axis != x.dim() - 1:  # no free view with channels on dim 1
        return decline("channel axis in the middle (only last or 1)")
    if not x.requires_grad and any(v is not None and v.requires_grad for v in (weight, bias)):
        # torch 2.13's channels-last CPU backward crashes (segfault) when only the weights' gradients are asked,
        # e.g. a GroupNormalization right after a model's Input: a contiguous (N, C, S) copy takes the other kernel.
        rows = x.reshape(x.shape[0], -1, x.shape[-1])
        y = F.group_norm(rows.transpose(1, 2).contiguous(), groups, weight, bias, epsilon)
        return y.transpose(1, 2).reshape(x.shape)
    y = F.group_norm(_shifted_channels_last(x, groups), groups, weight, bias, epsilon)
    return y.permute(0, 2, 3, 1).reshape(x.shape)

"""PyTorch fast path for `keras_norms.ops.batch_group_norm`: `F.group_norm`.

Batch-Group normalization is group normalization of a tensor in which each
example group is one sample: put the $E$ consecutive examples of a group
next to the spatial positions, `(N/E, C, E*S)`, and `F.group_norm` with
`num_groups=G` reduces each sample's group of $C_g$ consecutive channels over
$C_g\\cdot E\\cdot S$ elements, with its per-channel affine on dim 1. That is
exactly the op's (example group x channel group) cell with a per-channel
$\\gamma,\\beta$.

Layouts (the kernel runs on a contiguous `(N/E, C, E*S)` tensor):

* channels-first, `axis=1`, $E=1$: `x.reshape(N, C, -1)`, a free view;
* channels-first, $E>1$: `(N/E, E, C, S)` with the two middle axes swapped,
  one copy in and one out;
* channels-last, `axis=-1`: `(N/E, E*S, C)` transposed, one copy in and one
  out. A free channels-last view exists, `(N/E, E*S, 1, C)` permuted to
  `(N/E, C, E*S, 1)`, which torch's CPU group norm accepts without a copy,
  but that kernel computes the variance in one pass, $E[x^2]-E[x]^2$ in
  float32: with |mean|/std = 300 its output was off by 0.26 on a
  (32, 16, 16, 64) input (the contiguous kernel, which uses Welford: 6e-5;
  the two-pass reference: 3e-4). The copies are kept; forward and backward
  together were still 1.6-2.8x faster than the reference on a
  (32, 32, 32, 64) input with G=32, E=2 (CPU, 1 or 2 threads).

Declines (`decline(reason)`): float16/bfloat16 (the op upcasts before
dispatching, so this only matters for direct calls); rank 2, where each
sample has only $E$ values per channel and torch's kernel was measured
slower than the reference (0.6-0.85x on a (256, 512) input with $E=2$, CPU);
channels-last input with 1024 channels or more, where the two transposes
cost more than the kernel saves (train step, kernel / reference, one CPU
thread, medians of paired runs: (4, 14, 14, 1024) 1.06-1.43x, (4, 7, 7,
2048) 1.5-1.6x, (16, 16, 16, 1024) 1.1-1.6x, (64, 7, 7, 2048) 1.1-1.4x,
while (4, 14, 14, 768) took 0.55-0.77x, (16, 7, 7, 512) 0.75-1.0x and
(4, 28, 28, 512) 0.93-1.08x: the channel count, not the ratio of positions
to channels, decides);
a channel axis that is neither 1 nor the last one; and an $E$ that does not
divide the batch size (the reference pads the last group and masks it); one
value per (example group, channel group) cell; a mask. Decisions use static facts only; in eager torch the batch
size is static.
"""

import torch.nn.functional as F

from keras_norms._backends.torch._common import cast
from keras_norms._backends.torch._common import refusal
from keras_norms.ops._dispatch import decline
from keras_norms.ops._dispatch import kernel


def _to_groups(x, axis, examples):
    """`(N/E, C, E*S)` contiguous, and a function taking a result back to `x`'s shape."""
    n, channels = x.shape[0], x.shape[axis]
    samples = n // examples
    shape = x.shape
    if axis == x.dim() - 1:
        rows = x.reshape(samples, -1, channels)  # (N/E, E*S, C)
        grouped = rows.transpose(1, 2).contiguous()

        def back(y):
            return y.transpose(1, 2).reshape(shape)

        return grouped, back
    if examples == 1:
        return x.reshape(n, channels, -1), lambda y: y.reshape(shape)
    split = x.reshape(samples, examples, channels, -1)  # (N/E, E, C, S)
    grouped = split.transpose(1, 2).reshape(samples, channels, -1)

    def back(y):
        return y.reshape(samples, channels, examples, -1).transpose(1, 2).reshape(shape)

    return grouped, back


@kernel("batch_group_norm", backends=("torch",))
def batch_group_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3, groups=32, examples_per_group=2, mask=None):
    """`F.group_norm` on example groups; the same `(y, mean, second_moment)`.

    The public op hands kernels a non-negative `axis` and the resolved,
    positive `groups`.
    """
    if mask is not None:
        return decline("mask given (the reference handles it)")
    declined = refusal(x)
    if declined is not None:
        return declined
    if x.dim() < 3:
        # dense (N, C): E*S = E values per channel, measured slower than the reference
        return decline("rank-2 input (the reference is faster there)")
    if axis not in (1, x.dim() - 1):
        # no layout without a transpose of the channels
        return decline("channel axis in the middle (only last or 1)")
    if axis == x.dim() - 1 and x.shape[-1] >= 1024:
        return decline("channels-last input with 1024 or more channels (the reference is faster there)")
    n = x.shape[0]
    examples = max(1, min(examples_per_group, n))
    if n % examples:
        # a smaller trailing example group: the reference handles it
        return decline(f"batch size {n} not divisible by examples_per_group {examples}")
    grouped, back = _to_groups(x, axis, examples)
    if (x.shape[axis] // groups) * grouped.shape[2] == 1:
        # One value per group and example group: the exact output is beta. F.group_norm raises with one example
        # group ("more than 1 value per channel") and otherwise computes x * s + (beta - mean * s),
        # s = gamma / sqrt(epsilon), whose round-off (1e-4 at |x| = 100) the reference does not have.
        return decline("one value per group and example group")
    y = F.group_norm(grouped, groups, weight=cast(gamma, x.dtype), bias=cast(beta, x.dtype), eps=epsilon)
    # Full-batch per-channel raw moments for the moving state, from the
    # contiguous (N/E, C, E*S) tensor (reductions over its inner axis).
    count = grouped.shape[0] * grouped.shape[2]
    mean = grouped.sum(dim=(0, 2)) / count
    second_moment = grouped.square().sum(dim=(0, 2)) / count
    return back(y), mean, second_moment

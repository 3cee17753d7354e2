"""PyTorch fast path for `keras_norms.ops.memorized_batch_norm` (training): one autograd node per call.

The reference takes the batch's two-pass moments $m_b,v_b$, pools them with
the memory (stop-gradient) into $\\mu,\\sigma^2$, normalizes, and lets
autograd differentiate every step. Here the memory bookkeeping (slot,
weights: `keras_norms.ops._common.memory_slots`, the same code) stays in
`keras.ops`, and a `torch.autograd.Function` does the full-size work on a
free `(M, C)` (channels last) or `(N, C, S)` (channels first) view. With
$w_0$ the current slot's weight and $\\delta=m_b-\\mu$ (the weights sum to
1, so $\\sum_j w_j(m_j-\\mu)=0$):

$$\\frac{\\partial\\mu}{\\partial m_b}=w_0,\\qquad
  \\frac{\\partial\\sigma^2}{\\partial m_b}=2w_0\\,\\delta,\\qquad
  \\frac{\\partial\\sigma^2}{\\partial v_b}=w_0,$$

and with $a=\\gamma/\\sqrt{\\sigma^2+\\epsilon}$, $c=x-m_b$ and $g$ the upstream gradient,

$$\\frac{\\partial L}{\\partial x}=a\\,g+\\frac{1}{M}\\frac{\\partial L}{\\partial m_b}
  +\\frac{2c}{M}\\frac{\\partial L}{\\partial v_b},\\qquad
  \\frac{\\partial L}{\\partial\\mu}=-a\\textstyle\\sum g,\\qquad
  \\frac{\\partial L}{\\partial\\sigma^2}=-\\tfrac12\\gamma(\\sigma^2+\\epsilon)^{-3/2}\\sum g\\,(c+\\delta).$$

Five full-size passes forward and five backward. The statistics are the
reference's (two-pass moments, the pooled centred form).

Declines (`decline(reason)`): dtypes other than float32/float64 (the op
upcasts first), a tensor not contiguous in memory and a channel axis that is neither 1 nor the last of a
contiguous tensor. Decisions use static facts only.
"""

import torch

from keras_norms._backends.torch._common import refusal
from keras_norms._backends.torch._common import vector_or
from keras_norms.ops import _common  # the slot bookkeeping the reference uses (keras.ops)
from keras_norms.ops._dispatch import decline
from keras_norms.ops._dispatch import kernel


class _MemorizedBatchNorm(torch.autograd.Function):
    """`(y, m_b, v_b)`; `memory_means`, `memory_variances` `(k, C)` constants, `weights` `(k,)`, `current` `(k, 1)`."""

    @staticmethod
    def forward(ctx, view, gamma, beta, memory_means, memory_variances, current, weights, dims, epsilon):
        shape = [1] * view.dim()
        shape[1] = -1
        batch_mean = view.mean(dims, keepdim=True)
        centred = view - batch_mean
        batch_variance = centred.square().mean(dims, keepdim=True)
        m_b, v_b = batch_mean.reshape(1, -1), batch_variance.reshape(1, -1)
        means = torch.where(current, m_b, memory_means)
        variances = torch.where(current, v_b, memory_variances)
        w = weights.unsqueeze(1)
        mean = (w * means).sum(0)
        variance = (w * (variances + (means - mean).square())).sum(0)
        inv_std = torch.rsqrt(variance + epsilon).reshape(shape)
        delta = (m_b.reshape(-1) - mean).reshape(shape)
        scale = inv_std * gamma.reshape(shape)
        y = torch.addcmul(beta.reshape(shape) + delta * scale, centred, scale)  # (x - mean) * scale + beta
        w0 = (weights * current.reshape(-1).to(weights.dtype)).sum()
        ctx.save_for_backward(centred, inv_std, delta, gamma.reshape(shape), w0)
        ctx.dims = dims
        ctx.mark_non_differentiable(batch_mean, batch_variance)
        return y, batch_mean, batch_variance

    @staticmethod
    def backward(ctx, dy, _dmean, _dvariance):
        centred, inv_std, delta, gamma, w0 = ctx.saved_tensors
        dims = ctx.dims
        count = centred.numel() // inv_std.numel()
        sum_dy = dy.sum(dims, keepdim=True)
        sum_dy_centred = (dy * centred).sum(dims, keepdim=True)
        sum_dy_x_mu = sum_dy_centred + delta * sum_dy  # sum of g * (x - mean)
        scale = inv_std * gamma
        d_mean = -scale * sum_dy
        d_variance = -0.5 * gamma * inv_std.pow(3) * sum_dy_x_mu
        d_batch_mean = w0 * (d_mean + 2.0 * delta * d_variance)
        d_batch_variance = w0 * d_variance
        dx = torch.addcmul(d_batch_mean / count, dy, scale).addcmul_(centred, d_batch_variance * (2.0 / count))
        dgamma = (inv_std * sum_dy_x_mu).reshape(-1) if ctx.needs_input_grad[1] else None
        dbeta = sum_dy.reshape(-1) if ctx.needs_input_grad[2] else None
        return dx, dgamma, dbeta, None, None, None, None, None, None


@kernel("memorized_batch_norm", backends=("torch",))
def memorized_batch_norm(
    x, memory_mean, memory_second_moment, count, gamma=None, beta=None, axis=-1, epsilon=1e-3, memory_weights=None
):
    """MBN training kernel: the reference's `(y, new memory mean, new memory second moment)`."""
    declined = refusal(x)
    if declined is not None:
        return declined
    if x.dim() < 2:
        return decline("rank-1 input")
    if not x.is_contiguous():
        return decline("input not contiguous in memory")
    channels = x.shape[axis]
    if axis == x.dim() - 1:
        view, dims = x.reshape(-1, channels), (0,)
    elif axis == 1:
        view, dims = x.reshape(x.shape[0], channels, -1), (0, 2)
    else:
        return decline("channel axis in the middle (only last or 1)")
    memory_mean, memory_second, current, weights = _common.memory_slots(
        memory_mean, memory_second_moment, count, memory_weights, x.dtype
    )
    memory_variances = _common.memory_variances(memory_mean, memory_second)
    gamma, beta = vector_or(gamma, channels, x, 1.0), vector_or(beta, channels, x, 0.0)
    y, batch_mean, batch_variance = _MemorizedBatchNorm.apply(
        view, gamma, beta, memory_mean, memory_variances, current, weights, dims, epsilon
    )
    batch_mean, batch_variance = batch_mean.reshape(1, -1), batch_variance.reshape(1, -1)
    new_mean = torch.where(current, batch_mean, memory_mean)
    new_second = torch.where(current, batch_variance + batch_mean.square(), memory_second)
    return y.reshape(x.shape), new_mean, new_second

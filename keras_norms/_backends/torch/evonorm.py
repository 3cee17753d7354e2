"""PyTorch fast paths for `keras_norms.ops.evonorm_b0`, `evonorm_b0_inference` and `evonorm_s0`.

Both EvoNorms need per-(example, channel) moments over the spatial positions:
B0 the instance variance $s^2_{n,c}$ and the batch variance $s^2_{b,c}$, S0
the group variance $s^2_{n,g}$. The reference takes them two-pass with
`keras.ops` reductions over several axes, and torch's `var_mean` over the
spatial axis of a channels-last tensor was slower still (a Welford loop
that does not vectorize across channels: 22 ms for a (16, 1024, 64) input
on one CPU thread, while two sums over the same axis took 0.6 ms). These
kernels take the moments from two sums of **shifted** data instead, on a
free `(N, S, C)` view (channels last) or `(N, C, S)` view (channels first):

$$d=x-k_{n,c},\\quad \\bar d_{n,c}=\\tfrac1S\\textstyle\\sum_s d,\\quad
  s^2_{n,c}=\\max\\big(\\tfrac1S\\textstyle\\sum_s d^2-\\bar d_{n,c}^2,\\;0\\big),\\quad
  \\mu_{n,c}=k_{n,c}+\\bar d_{n,c},$$

with $k_{n,c}$ the example's value at the first spatial position, detached
(the variance is shift-invariant, and the gradient of $x-k$ is the
identity). Shifting keeps $E[d^2]-\\bar d^2$ from cancelling when
$|\\mu|\\gg\\sigma$ (see `keras_norms/_backends/xla/group_norm.py`). The
wider moments follow by the law of total variance over equal-sized parts,
a sum of non-negative terms:

$$s^2_{b,c}=\\operatorname{mean}_n\\big(s^2_{n,c}+(\\mu_{n,c}-\\mu_c)^2\\big),\\qquad
  s^2_{n,g}=\\operatorname{mean}_{c\\in g}\\big(s^2_{n,c}+(\\mu_{n,c}-\\mu_{n,g})^2\\big).$$

The output is then one `addcmul`-style expression per EvoNorm; B0's has a
hand-written backward (`_B0Output`), everything else is differentiated by
autograd, statistics included. Measured against the reference (one CPU
thread, (4, 28, 28, 512), train step): B0 2.3x and S0 1.7x faster; the
remaining gap to `F.batch_norm` + `F.relu` and `F.group_norm` + `F.silu` is
discussed in `docs/performance.md`.

Declines (`decline(reason)`): dtypes other than float32 and float64 (the ops
upcast first), rank < 3, a channel axis that is neither 1 nor the last one, and
anything these kernels do not handle (no extra arguments are accepted).
Decisions use static facts only.
"""

import torch

from keras_norms._backends.torch._common import refusal
from keras_norms.ops._dispatch import Declined
from keras_norms.ops._dispatch import decline
from keras_norms.ops._dispatch import kernel


def _rows(x, axis):
    """`(view, spatial dim)`: `x` as `(N, S, C)` (channels last) or `(N, C, S)` (channels first), or `(Declined, _)`."""
    declined = refusal(x)
    if declined is not None:
        return declined, None
    if x.dim() < 3:
        return decline(f"rank-{x.dim()} input (kernel takes rank >= 3)"), None
    n = x.shape[0]
    if axis == x.dim() - 1:
        return x.reshape(n, -1, x.shape[-1]), 1
    if axis == 1:
        return x.reshape(n, x.shape[1], -1), 2
    return decline("channel axis in the middle (only last or 1)"), None


def _channel_moments(rows, dim):
    """Per-(example, channel) mean and biased variance over `dim`, kept as size-1 `dim` (shifted sums)."""
    first = rows.narrow(dim, 0, 1).detach()
    d = rows - first
    count = rows.shape[dim]
    mean_d = d.sum(dim, keepdim=True) / count
    variance = torch.clamp_min(d.square().sum(dim, keepdim=True) / count - mean_d.square(), 0.0)
    return first + mean_d, variance


def _vector(t, rows, dim):
    """A `(C,)` vector (or None) shaped to broadcast against `rows` along its channel dim."""
    if t is None:
        return None
    t = t.to(rows.dtype)
    return t.reshape(1, 1, -1) if dim == 1 else t.reshape(1, -1, 1)


class _B0Output(torch.autograd.Function):
    """$y=x/\\max(l,\\;v\\,x+r)\\,\\gamma+\\beta$ with a hand-written backward.

    Autograd of `torch.maximum` and of the division, with `l` broadcast over
    examples and positions, spent 70% of the step in `where`/`masked_fill`
    on full-size tensors (a (16, 32, 32, 64) input: 74 ms forward and
    backward, against 9 ms for `F.batch_norm` + `F.relu`). Here the backward
    is a few elementwise products and per-(example, channel) sums. Where the
    two branches tie the gradient goes to the left one (torch's `maximum`
    splits it); at $x=0$, where ties are common, that gradient is 0 anyway.
    """

    @staticmethod
    def forward(ctx, rows, left, instance_std, v, gamma, beta, dim):
        right = torch.addcmul(instance_std, rows, v)
        den = torch.maximum(left, right)
        z = rows / den
        ctx.save_for_backward(rows, den, right > left, v, gamma)
        ctx.dim = dim
        return torch.addcmul(beta, z, gamma)

    @staticmethod
    def backward(ctx, dy):
        rows, den, right_wins, v, gamma = ctx.saved_tensors
        dim = ctx.dim
        z = rows / den
        dgamma = (dy * z).sum((0, dim), keepdim=True)
        dbeta = dy.sum((0, dim), keepdim=True)
        drows = dy * gamma / den  # through the numerator
        minus_dden = drows * z  # dL/d(den) = -dy * gamma * x / den^2
        minus_dright = torch.where(right_wins, minus_dden, 0.0)
        minus_dinstance = minus_dright.sum(dim, keepdim=True)  # (N, 1, C): r is per example and channel
        minus_dleft = (minus_dden.sum(dim, keepdim=True) - minus_dinstance).sum(0, keepdim=True)
        dv = -(minus_dright * rows).sum((0, dim), keepdim=True)
        drows = drows - minus_dright * v
        return drows, -minus_dleft, -minus_dinstance, dv, dgamma, dbeta, None


def _b0(rows, dim, batch_variance, instance_variance, v, gamma, beta, epsilon):
    left = torch.sqrt(batch_variance + epsilon)
    instance_std = torch.sqrt(instance_variance + epsilon)
    ones = torch.ones_like(left)
    v, gamma = ones if v is None else v, ones if gamma is None else gamma
    beta = torch.zeros_like(left) if beta is None else beta
    if not torch.is_grad_enabled() or not any(
        t.requires_grad for t in (rows, left, instance_std, v, gamma, beta)
    ):
        # No gradient wanted (inference): one full-size buffer, updated in place.
        y = torch.addcmul(instance_std, rows, v)
        torch.maximum(y, left, out=y)
        torch.div(rows, y, out=y)
        return y.mul_(gamma).add_(beta)
    return _B0Output.apply(rows, left, instance_std, v, gamma, beta, dim)


@kernel("evonorm_b0", backends=("torch",))
def evonorm_b0(x, v=None, gamma=None, beta=None, axis=-1, epsilon=1e-5):
    """EvoNorm-B0 training kernel: the same `(y, batch variance)` as the reference."""
    rows, dim = _rows(x, axis)
    if isinstance(rows, Declined):
        return rows
    mean_nc, var_nc = _channel_moments(rows, dim)
    mean_c = mean_nc.mean(0, keepdim=True)
    batch_variance = (var_nc + (mean_nc - mean_c).square()).mean(0, keepdim=True)
    v, gamma, beta = (_vector(t, rows, dim) for t in (v, gamma, beta))
    y = _b0(rows, dim, batch_variance, var_nc, v, gamma, beta, epsilon)
    return y.reshape(x.shape), batch_variance.reshape(-1)


@kernel("evonorm_b0_inference", backends=("torch",))
def evonorm_b0_inference(x, moving_variance, v=None, gamma=None, beta=None, axis=-1, epsilon=1e-5):
    """EvoNorm-B0 inference kernel: the moving variance, detached, replaces the batch variance."""
    rows, dim = _rows(x, axis)
    if isinstance(rows, Declined):
        return rows
    _, var_nc = _channel_moments(rows, dim)
    batch_variance = _vector(moving_variance.detach(), rows, dim)
    v, gamma, beta = (_vector(t, rows, dim) for t in (v, gamma, beta))
    return _b0(rows, dim, batch_variance, var_nc, v, gamma, beta, epsilon).reshape(x.shape)


@kernel("evonorm_s0", backends=("torch",))
def evonorm_s0(x, v=None, gamma=None, beta=None, axis=-1, epsilon=1e-5, groups=32):
    """EvoNorm-S0 kernel; the public op hands a non-negative `axis` and the resolved, positive `groups`."""
    rows, dim = _rows(x, axis)
    if isinstance(rows, Declined):
        return rows
    n, channels = rows.shape[0], x.shape[axis]
    mean_nc, var_nc = _channel_moments(rows, dim)  # (N, 1, C) or (N, C, 1)
    mean_nc, var_nc = mean_nc.reshape(n, groups, -1), var_nc.reshape(n, groups, -1)
    mean_g = mean_nc.mean(2, keepdim=True)
    var_g = (var_nc + (mean_nc - mean_g).square()).mean(2, keepdim=True)  # (N, G, 1)
    scale = torch.rsqrt(var_g + epsilon).expand(n, groups, channels // groups)
    if gamma is not None:
        scale = scale * gamma.to(rows.dtype).reshape(1, groups, -1)
    scale = scale.reshape((n, 1, channels) if dim == 1 else (n, channels, 1))
    v, beta = _vector(v, rows, dim), _vector(beta, rows, dim)
    gated = rows * torch.sigmoid(rows if v is None else rows * v)
    y = gated * scale if beta is None else torch.addcmul(beta, gated, scale)
    return y.reshape(x.shape)

"""What the PyTorch kernels share: the dtypes they take and the conversions of their arguments."""

import torch

from keras_norms.ops._dispatch import decline_input

FLOAT_DTYPES = (torch.float32, torch.float64)


def refusal(x, dtypes=FLOAT_DTYPES, accepted="float32/float64"):
    """A `Declined` for an `x` that is not a torch tensor of one of `dtypes`; `None` when the kernel takes it."""
    if isinstance(x, torch.Tensor) and x.dtype in dtypes:
        return None
    return decline_input(x, accepted)


def cast(v, dtype):
    """`v` (a tensor or `None`) in `dtype`."""
    return None if v is None else v.to(dtype)


def vector_or(v, channels, x, value):
    """`v` in `x`'s dtype, or a `(channels,)` vector of `value` on `x`'s device when `v` is `None`."""
    if v is None:
        return torch.full((channels,), value, dtype=x.dtype, device=x.device)
    return v.to(x.dtype)


class _ContiguousGrad(torch.autograd.Function):
    """The identity; its backward hands on the incoming gradient made dense."""

    @staticmethod
    def forward(ctx, y):
        return y.view_as(y)

    @staticmethod
    def backward(ctx, dy):
        return dy.contiguous()


def contiguous_grad(y):
    """`y`, through a node that makes its upstream gradient contiguous before the kernel's backward reads it.

    A loss of `sum(y)`, or a pooling right after the layer, hands back an expanded gradient with zero strides.
    `F.batch_norm`'s backward on such a gradient took 17 ms instead of 3.3 ms (a (32, 32, 32, 64) input as
    `(M, C)`, one CPU thread); one copy first costs 0.3 ms. Kernels with their own backward or other torch
    kernels were measured not to slow down (`benchmarks/suite.py --upstream sum`), and do not use it.
    """
    if not (torch.is_grad_enabled() and y.requires_grad):
        return y
    return _ContiguousGrad.apply(y)

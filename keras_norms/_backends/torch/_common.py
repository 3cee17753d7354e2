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

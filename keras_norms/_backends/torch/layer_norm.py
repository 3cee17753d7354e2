"""PyTorch fast paths for `keras_norms.ops.layer_norm` and `rms_norm`: `F.layer_norm` and `F.rms_norm`.

Both torch functions normalize the trailing dimensions, so the kernels take
inputs whose normalized axes are the last ones (the usual `axis=-1`, or e.g.
`[1, 2, 3]` of a rank-4 input) and pass the weights reshaped to those
dimensions, a free view; they decline other axes (a transposed copy in and one
out would cost more than the reference saves) and dtypes other than float32
and float64. No shift is needed: torch's CPU layer norm computes the variance
cancellation-free, and at |mean|/std = 300 on a (4, 8, 8, 16) input its
float32 output and gradients were as close to float64 as the two-pass
reference's (output 1e-4, d/dx 1.2e-4, reference 7e-5 and 8e-5: both are the
float32 rounding of a mean near 300).

On CPU, torch 2.13's `F.rms_norm` is faster than the reference in the forward
pass but not in training (forward and backward, (32, 32, 32, 64), one thread,
CPU time, a loaded machine: medians 22.9 ms against 17.6 ms, minima 11.2 ms
both; inference 2.2 ms against 2.9 ms), so `rms_norm` declines on CPU when a
gradient will be taken. `F.layer_norm` was 4-5x faster than the reference in
both (benchmarks/suite.py, the same input).
"""

import torch
import torch.nn.functional as F

from keras_norms._backends.torch._common import cast
from keras_norms._backends.torch._common import refusal
from keras_norms.ops._dispatch import decline
from keras_norms.ops._dispatch import kernel


def _refusal(x, axis):
    """A `Declined` for an input the kernels do not take, else `None`; the op hands `axis` sorted, non-negative."""
    declined = refusal(x)
    if declined is None and tuple(axis) != tuple(range(x.dim() - len(axis), x.dim())):
        declined = decline("normalized axes are not the trailing ones (torch normalizes the last dimensions)")
    return declined


def _weight(v, x, shape):
    return None if v is None else cast(v, x.dtype).reshape(shape)


@kernel("layer_norm", backends=("torch",))
def layer_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3):
    """`F.layer_norm` over the trailing normalized axes; the same output as the reference."""
    declined = _refusal(x, axis)
    if declined is not None:
        return declined
    shape = tuple(x.shape[x.dim() - len(axis) :])
    return F.layer_norm(x, shape, _weight(gamma, x, shape), _weight(beta, x, shape), epsilon)


@kernel("rms_norm", backends=("torch",))
def rms_norm(x, scale=None, axis=-1, epsilon=1e-6):
    """`F.rms_norm` over the trailing normalized axes; the same output as the reference."""
    declined = _refusal(x, axis)
    if declined is not None:
        return declined
    needs_gradient = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, scale))
    if x.device.type == "cpu" and needs_gradient:
        return decline("gradients on CPU (F.rms_norm's backward is no faster than the reference's there)")
    shape = tuple(x.shape[x.dim() - len(axis) :])
    return F.rms_norm(x, shape, _weight(scale, x, shape), epsilon)

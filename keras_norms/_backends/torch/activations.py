"""PyTorch fast path for `keras_norms.ops.norm_prop_relu`: one autograd node instead of three.

The reference, $(\\max(x,0)-m)/s$ with NormProp's constants, is three eager
operations with a full-size output each and three autograd nodes. Here the
forward is `torch.relu` followed by the same subtraction and division in
place (bit-identical outputs), and the backward is ReLU's own
`threshold_backward` divided by $s$ in place: the same values as autograd's
(masking commutes with the division).

Declines (`decline(reason)`) for tensors other than float32/float64 (the op
upcasts first). Decisions use static facts only.
"""

import torch

from keras_norms._backends.torch._common import refusal
from keras_norms.ops._common import RELU_MEAN
from keras_norms.ops._common import RELU_STD
from keras_norms.ops._dispatch import kernel


class _NormPropReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.relu(x).sub_(RELU_MEAN).div_(RELU_STD)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(dy, x, 0.0).div_(RELU_STD)


@kernel("norm_prop_relu", backends=("torch",))
def norm_prop_relu(x):
    """NormPropReLU kernel: the reference's outputs and gradients in one node."""
    declined = refusal(x)
    if declined is not None:
        return declined
    if not torch.is_grad_enabled() or not x.requires_grad:
        return torch.relu(x).sub_(RELU_MEAN).div_(RELU_STD)
    return _NormPropReLU.apply(x)

"""Float64 NumPy reference implementations ("oracles") written from ALGORITHMS.md, independent of keras_norms."""

from .batch_norm import (
    batch_norm_inference,
    batch_norm_train,
    batch_renorm_train,
    ghost_batch_norm_train,
    ghost_batch_renorm_train,
    initial_renorm_state,
    moving_average,
)
from .gradcheck import numerical_gradient

__all__ = [
    "batch_norm_train",
    "ghost_batch_norm_train",
    "ghost_batch_renorm_train",
    "moving_average",
    "batch_norm_inference",
    "batch_renorm_train",
    "initial_renorm_state",
    "numerical_gradient",
]

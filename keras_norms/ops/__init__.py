"""`keras_norms.ops`: the math of every layer, as functions on `keras.ops`.

Layers hold state and call these functions; backend fast paths replace some
of them at runtime (see `keras_norms.config`). Nothing here imports
TensorFlow, JAX or PyTorch.
"""

from keras_norms.ops._stats import canonical_axis
from keras_norms.ops._stats import moments
from keras_norms.ops.batch_channel import batch_channel_norm
from keras_norms.ops.batch_channel import batch_channel_norm_estimate
from keras_norms.ops.batch_channel import batch_channel_norm_inference
from keras_norms.ops.batch_channel import estimated_moments
from keras_norms.ops.batch_channel import group_norm
from keras_norms.ops.evonorm import evonorm_b0
from keras_norms.ops.evonorm import evonorm_b0_inference
from keras_norms.ops.evonorm import evonorm_s0
from keras_norms.ops.filter_response import filter_response_norm
from keras_norms.ops.filter_response import tlu
from keras_norms.ops.group import batch_group_moments
from keras_norms.ops.group import batch_group_norm
from keras_norms.ops.group import batch_group_norm_inference
from keras_norms.ops.layer_normalization import layer_norm
from keras_norms.ops.layer_normalization import rms_norm
from keras_norms.ops.memorized import advance_memory_count
from keras_norms.ops.memorized import memorized_batch_norm
from keras_norms.ops.memorized import memorized_batch_norm_inference
from keras_norms.ops.memorized import memorized_moments
from keras_norms.ops.normalization import batch_norm
from keras_norms.ops.normalization import batch_norm_inference
from keras_norms.ops.normalization import batch_renorm
from keras_norms.ops.normalization import ghost_batch_norm
from keras_norms.ops.normalization import ghost_batch_renorm
from keras_norms.ops.normalization import ghost_moments
from keras_norms.ops.normalization import normalize
from keras_norms.ops.normalization import renorm_correction
from keras_norms.ops.norm_prop import l2_normalize_weights
from keras_norms.ops.norm_prop import norm_prop_relu
from keras_norms.ops.proxy import proxy_moments
from keras_norms.ops.proxy import proxy_norm
from keras_norms.ops.proxy import quantile_grid
from keras_norms.ops.weight_normalization import weight_norm
from keras_norms.ops.weight_normalization import weight_norm_gain
from keras_norms.ops.weight_normalization import weight_norm_init
from keras_norms.ops.weight_standardization import scaled_standardize_weights
from keras_norms.ops.weight_standardization import standardize_weights

__all__ = [
    "batch_channel_norm",
    "batch_channel_norm_estimate",
    "batch_channel_norm_inference",
    "estimated_moments",
    "evonorm_b0",
    "evonorm_b0_inference",
    "evonorm_s0",
    "filter_response_norm",
    "group_norm",
    "batch_group_moments",
    "batch_group_norm",
    "batch_group_norm_inference",
    "batch_norm",
    "batch_norm_inference",
    "batch_renorm",
    "canonical_axis",
    "ghost_batch_norm",
    "ghost_batch_renorm",
    "ghost_moments",
    "advance_memory_count",
    "memorized_batch_norm",
    "memorized_batch_norm_inference",
    "memorized_moments",
    "layer_norm",
    "l2_normalize_weights",
    "moments",
    "normalize",
    "norm_prop_relu",
    "proxy_moments",
    "proxy_norm",
    "quantile_grid",
    "renorm_correction",
    "rms_norm",
    "scaled_standardize_weights",
    "standardize_weights",
    "tlu",
    "weight_norm",
    "weight_norm_gain",
    "weight_norm_init",
]

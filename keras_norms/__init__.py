"""keras_norms: normalization layers for Keras 3 on TensorFlow, JAX and PyTorch.

The whole public API:

* Layers: `BatchNormalization` (Keras's, plus Ghost batches and inference
  example weighing), `GhostBatchNormalization`, `BatchGroupNormalization`
  (the BN/GN combination for tiny batches), `BatchChannelNormalization`
  (batch step + group norm; EstBN micro-batch mode).
* Drop-ins for Keras's own normalizations, on the package's fast paths:
  `GroupNormalization` (same arguments, weights and config as
  `keras.layers.GroupNormalization`) and `InstanceNormalization` (its
  `groups=-1`; tf-addons' layer of that name); `LayerNormalization` and
  `RMSNormalization` (Keras's layers of those names).
* Normalization-activation layers: `EvoNormB0` (batch-dependent, replaces
  BN + ReLU) and `EvoNormS0` (batch-independent, replaces GN + Swish).
* Batch-independent layers: `FilterResponseNormalization` (FRN, optional
  learned epsilon), `TLU` (its per-channel thresholded activation) and
  `FilterResponseNormalizationTLU` (the two in one layer).
* `ProxyNormalization`: the affine and activation after a LayerNorm or
  GroupNorm, normalized by a Gaussian proxy (batch-independent BN + activation).
* `MemorizedBatchNormalization` (MBN): BN statistics pooled over the last k
  batches, the same memory at inference; `with_double_forward` (functional
  models; it returns a `DoubleForwardModel`) and `DoubleForwardMixin`
  (subclassed models) add its Double Forward training step.
* Weight-standardized layers: `WSConv1D`, `WSConv2D`, `WSConv3D`,
  `WSDepthwiseConv2D`, `WSConv2DTranspose`, `WSDense` (Weight
  Standardization) and `ScaledWSConv1D`, `ScaledWSConv2D`, `ScaledWSConv3D`
  (Scaled WS with a gain, NF-Nets); `WeightNormalization` (a wrapper:
  gain times unit direction per output unit, data-dependent initialization;
  replaces tf-addons'); `fold_weight_standardization` bakes the standardized
  and weight-normalized kernels into plain Keras layers for export.
* Normalization Propagation: `NormPropDense`, `NormPropConv1D`,
  `NormPropConv2D`, `NormPropConv3D` (weights divided by their norm per
  output unit, then gamma and beta) and `NormPropReLU` (the ReLU re-centred
  by fixed constants); no batch statistics.
* Training and inference utilities: `tune_inference_example_weight` (choose
  the example weight on held-out data), `set_inference_example_weight`,
  `BatchRenormSchedule` (a callback relaxing renorm's clipping),
  `recompute_batch_statistics` (Precise BN: the exact population statistics
  of every batch-dependent layer, after training), `average_moving_statistics`
  and the callback `AverageMovingStatistics` (moving statistics averaged over
  the replicas when they are not synchronized).
* Model conversion: `convert_normalization` (every BatchNormalization of a
  built model, e.g. a Keras Applications ResNet, replaced by another
  normalization, optionally with WS convolutions, weights carried over),
  `freeze_normalization` (normalization layers frozen: BN in inference
  mode), `fold_batch_normalization` (inference BN folded into the
  convolution before it, for export).
* Weight decay on gamma/beta: `DecayToward` (an L2 regularizer toward a
  target, 1/2 convention), `add_gamma_beta_decay` (gamma toward 1, beta toward
  0 on every normalization layer of a built model).
* `keras_norms.ops`: the math of every layer as functions on `keras.ops`.
* `keras_norms.config`: the switch for backend fast paths, and
  `record_dispatch` (which path each op call took); `fast_path_report` says
  it per layer of a model.
"""

from keras_norms import config
from keras_norms import ops
from keras_norms.callbacks import BatchRenormSchedule
from keras_norms.models.convert import convert_normalization
from keras_norms.models.double_forward import DoubleForwardMixin
from keras_norms.models.double_forward import DoubleForwardModel
from keras_norms.models.double_forward import with_double_forward
from keras_norms.models.fold import fold_weight_standardization
from keras_norms.models.fold import fold_batch_normalization
from keras_norms.models.freeze import freeze_normalization
from keras_norms.models.statistics import AverageMovingStatistics
from keras_norms.models.statistics import average_moving_statistics
from keras_norms.models.statistics import recompute_batch_statistics
from keras_norms.inference_weight import ExampleWeightSearch
from keras_norms.inference_weight import set_inference_example_weight
from keras_norms.inference_weight import tune_inference_example_weight
from keras_norms.layers import BatchChannelNormalization
from keras_norms.layers import BatchGroupNormalization
from keras_norms.layers import BatchNormalization
from keras_norms.layers import EvoNormB0
from keras_norms.layers import EvoNormS0
from keras_norms.layers import FilterResponseNormalization
from keras_norms.layers import FilterResponseNormalizationTLU
from keras_norms.layers import GhostBatchNormalization
from keras_norms.layers import GroupNormalization
from keras_norms.layers import InstanceNormalization
from keras_norms.layers import LayerNormalization
from keras_norms.layers import MemorizedBatchNormalization
from keras_norms.layers import NormPropConv1D
from keras_norms.layers import NormPropConv2D
from keras_norms.layers import NormPropConv3D
from keras_norms.layers import NormPropDense
from keras_norms.layers import NormPropReLU
from keras_norms.layers import ProxyNormalization
from keras_norms.layers import RMSNormalization
from keras_norms.layers import ScaledWSConv1D
from keras_norms.layers import ScaledWSConv2D
from keras_norms.layers import ScaledWSConv3D
from keras_norms.layers import TLU
from keras_norms.layers import WSConv1D
from keras_norms.layers import WSConv2D
from keras_norms.layers import WSConv2DTranspose
from keras_norms.layers import WSConv3D
from keras_norms.layers import WSDense
from keras_norms.layers import WSDepthwiseConv2D
from keras_norms.layers import WeightNormalization
from keras_norms.regularizers import DecayToward
from keras_norms.regularizers import add_gamma_beta_decay
from keras_norms.report import FastPathReport
from keras_norms.report import fast_path_report

__version__ = "0.1.0.dev0"

__all__ = [
    "AverageMovingStatistics",
    "BatchChannelNormalization",
    "BatchGroupNormalization",
    "BatchNormalization",
    "BatchRenormSchedule",
    "DecayToward",
    "DoubleForwardMixin",
    "DoubleForwardModel",
    "EvoNormB0",
    "EvoNormS0",
    "ExampleWeightSearch",
    "FastPathReport",
    "FilterResponseNormalization",
    "FilterResponseNormalizationTLU",
    "GhostBatchNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "MemorizedBatchNormalization",
    "NormPropConv1D",
    "NormPropConv2D",
    "NormPropConv3D",
    "NormPropDense",
    "NormPropReLU",
    "ProxyNormalization",
    "RMSNormalization",
    "ScaledWSConv1D",
    "ScaledWSConv2D",
    "ScaledWSConv3D",
    "TLU",
    "WSConv1D",
    "WSConv2D",
    "WSConv2DTranspose",
    "WSConv3D",
    "WSDense",
    "WSDepthwiseConv2D",
    "WeightNormalization",
    "__version__",
    "add_gamma_beta_decay",
    "average_moving_statistics",
    "config",
    "convert_normalization",
    "fast_path_report",
    "fold_batch_normalization",
    "fold_weight_standardization",
    "freeze_normalization",
    "ops",
    "recompute_batch_statistics",
    "set_inference_example_weight",
    "tune_inference_example_weight",
    "with_double_forward",
]

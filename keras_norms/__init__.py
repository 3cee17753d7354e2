"""keras_norms: normalization layers for Keras 3 on TensorFlow, JAX and PyTorch.

The whole public API:

* Layers: `BatchNormalization` (Keras's, plus Ghost batches and inference
  example weighing), `GhostBatchNormalization`, `BatchGroupNormalization`
  (the BN/GN combination for tiny batches), `BatchChannelNormalization`
  (batch step + group norm; EstBN micro-batch mode).
* Weight-standardized layers: `WSConv1D`, `WSConv2D`, `WSConv3D`,
  `WSDepthwiseConv2D`, `WSConv2DTranspose`, `WSDense` (Weight
  Standardization) and `ScaledWSConv1D`, `ScaledWSConv2D`, `ScaledWSConv3D`
  (Scaled WS with a gain, NF-Nets); `fold_weight_standardization` bakes the
  standardized kernels into plain Keras layers for export.
* Training and inference utilities: `tune_inference_example_weight` (choose
  the example weight on held-out data), `set_inference_example_weight`,
  `BatchRenormSchedule` (a callback relaxing renorm's clipping).
* Weight decay on gamma/beta: `DecayToward` (an L2 regularizer toward a
  target, 1/2 convention), `add_gamma_beta_decay` (gamma toward 1, beta toward
  0 on every normalization layer of a built model).
* `keras_norms.ops`: the math of every layer as functions on `keras.ops`.
* `keras_norms.config`: the switch for backend fast paths.
"""

from keras_norms import config
from keras_norms import ops
from keras_norms.callbacks import BatchRenormSchedule
from keras_norms.fold import fold_weight_standardization
from keras_norms.inference_weight import ExampleWeightSearch
from keras_norms.inference_weight import set_inference_example_weight
from keras_norms.inference_weight import tune_inference_example_weight
from keras_norms.layers import BatchChannelNormalization
from keras_norms.layers import BatchGroupNormalization
from keras_norms.layers import BatchNormalization
from keras_norms.layers import GhostBatchNormalization
from keras_norms.layers import ScaledWSConv1D
from keras_norms.layers import ScaledWSConv2D
from keras_norms.layers import ScaledWSConv3D
from keras_norms.layers import WSConv1D
from keras_norms.layers import WSConv2D
from keras_norms.layers import WSConv2DTranspose
from keras_norms.layers import WSConv3D
from keras_norms.layers import WSDense
from keras_norms.layers import WSDepthwiseConv2D
from keras_norms.regularizers import DecayToward
from keras_norms.regularizers import add_gamma_beta_decay

__version__ = "0.1.0.dev0"

__all__ = [
    "BatchChannelNormalization",
    "BatchGroupNormalization",
    "BatchNormalization",
    "BatchRenormSchedule",
    "DecayToward",
    "ExampleWeightSearch",
    "GhostBatchNormalization",
    "ScaledWSConv1D",
    "ScaledWSConv2D",
    "ScaledWSConv3D",
    "WSConv1D",
    "WSConv2D",
    "WSConv2DTranspose",
    "WSConv3D",
    "WSDense",
    "WSDepthwiseConv2D",
    "__version__",
    "add_gamma_beta_decay",
    "config",
    "fold_weight_standardization",
    "ops",
    "set_inference_example_weight",
    "tune_inference_example_weight",
]

"""keras_norms: normalization layers for Keras 3 on TensorFlow, JAX and PyTorch.

The whole public API:

* Layers: `BatchNormalization` (Keras's, plus Ghost batches and inference
  example weighing), `GhostBatchNormalization`.
* `keras_norms.ops`: the math of every layer as functions on `keras.ops`.
* `keras_norms.config`: the switch for backend fast paths.
"""

from keras_norms import config
from keras_norms import ops
from keras_norms.layers import BatchNormalization
from keras_norms.layers import GhostBatchNormalization

__version__ = "0.1.0.dev0"

__all__ = [
    "BatchNormalization",
    "GhostBatchNormalization",
    "__version__",
    "config",
    "ops",
]

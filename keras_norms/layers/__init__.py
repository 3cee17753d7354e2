"""Public layers, one module per family."""

from keras_norms.layers.batch_normalization import BatchNormalization
from keras_norms.layers.batch_normalization import GhostBatchNormalization

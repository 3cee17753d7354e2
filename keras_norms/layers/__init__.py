"""Public layers, one module per family."""

from keras_norms.layers.batch_group_normalization import BatchGroupNormalization
from keras_norms.layers.batch_normalization import BatchNormalization
from keras_norms.layers.batch_normalization import GhostBatchNormalization

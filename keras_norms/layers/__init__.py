"""Public layers, one module per family."""

from keras_norms.layers.batch_channel_normalization import BatchChannelNormalization
from keras_norms.layers.batch_group_normalization import BatchGroupNormalization
from keras_norms.layers.batch_normalization import BatchNormalization
from keras_norms.layers.batch_normalization import GhostBatchNormalization
from keras_norms.layers.evonorm import EvoNormB0
from keras_norms.layers.evonorm import EvoNormS0
from keras_norms.layers.filter_response_normalization import FilterResponseNormalization
from keras_norms.layers.filter_response_normalization import FilterResponseNormalizationTLU
from keras_norms.layers.filter_response_normalization import TLU
from keras_norms.layers.group_normalization import GroupNormalization
from keras_norms.layers.instance_normalization import InstanceNormalization
from keras_norms.layers.layer_normalization import LayerNormalization
from keras_norms.layers.layer_normalization import RMSNormalization
from keras_norms.layers.memorized_batch_normalization import MemorizedBatchNormalization
from keras_norms.layers.normalization_propagation import NormPropConv1D
from keras_norms.layers.normalization_propagation import NormPropConv2D
from keras_norms.layers.normalization_propagation import NormPropConv3D
from keras_norms.layers.normalization_propagation import NormPropDense
from keras_norms.layers.normalization_propagation import NormPropReLU
from keras_norms.layers.proxy_normalization import ProxyNormalization
from keras_norms.layers.weight_standardization import ScaledWSConv1D
from keras_norms.layers.weight_standardization import ScaledWSConv2D
from keras_norms.layers.weight_standardization import ScaledWSConv3D
from keras_norms.layers.weight_standardization import WSConv1D
from keras_norms.layers.weight_standardization import WSConv2D
from keras_norms.layers.weight_standardization import WSConv2DTranspose
from keras_norms.layers.weight_standardization import WSConv3D
from keras_norms.layers.weight_standardization import WSDense
from keras_norms.layers.weight_standardization import WSDepthwiseConv2D
from keras_norms.layers.weight_normalization import WeightNormalization

import keras as _keras

from keras_norms.layers._base import NormalizationLayer as _NormalizationLayer

# Keras's own normalization layers (those this Keras has).
KERAS_NORMALIZATION = tuple(
    getattr(_keras.layers, name)
    for name in ("BatchNormalization", "GroupNormalization", "LayerNormalization", "RMSNormalization")
    if hasattr(_keras.layers, name)
)


def is_batch_normalization(layer):
    """Whether `layer` is a Keras or keras_norms batch normalization (Ghost BN and subclasses included).

    The layers `convert_normalization` replaces and `fold_batch_normalization` folds.
    """
    return isinstance(layer, (_keras.layers.BatchNormalization, BatchNormalization))


def is_normalization(layer):
    """Whether `layer` is a normalization layer: one of Keras's (`KERAS_NORMALIZATION`) or of keras_norms'.

    keras_norms' are the layers that normalize activations (`TLU` and `NormPropReLU` included), not the
    weight-reparameterized `WS*` and `NormProp*` kernel layers: the layers `freeze_normalization` freezes
    (`add_gamma_beta_decay` decays their scale and shift, and the NormProp layers').
    """
    return isinstance(layer, KERAS_NORMALIZATION + (_NormalizationLayer,))


def conversion_targets():
    """`{target name: layer class}` for each keras_norms layer that can replace a BatchNormalization, by name.

    Read from the classes: each one that sets `conversion_target` in its own body (a subclass does not
    inherit its parent's target).
    """
    classes = [cls for cls in globals().values() if isinstance(cls, type) and issubclass(cls, _NormalizationLayer)]
    targets = {vars(cls)["conversion_target"]: cls for cls in classes if vars(cls).get("conversion_target")}
    return dict(sorted(targets.items()))

"""Conformance cases of Normalization Propagation (spec §11).

All are batch-independent. The layers' outputs scale with the input (a unit-norm kernel, no normalization of the
data), hence `normalized=False`. Filters equal the input channels and "same"/"causal" padding keep the output shape
equal to the input shape, which the shared checks use for upstream gradients and fit targets.
"""

import keras_norms
from tests.case import Case
from tests.reference import norm_prop as np_ref

_BAD = (
    (dict(epsilon=0.0), ValueError, r"`epsilon`=0.0.*positive float"),
    (dict(epsilon=None), ValueError, r"`epsilon`=None.*positive float"),
    (dict(use_bias=True), ValueError, r"`use_bias`=True.*no bias.*beta"),
    (dict(bias_initializer="ones"), ValueError, r"`bias_initializer`='ones'.*no bias"),
)
_CONV = dict(channel_kwarg="data_format", normalized=False, batch_independent=True)

CASES = (
    Case(
        "norm_prop_dense",
        keras_norms.NormPropDense,
        dict(units=5),
        (3, 5),
        np_ref.norm_prop_dense_oracle,
        channel_kwarg=None,
        bad_arguments=tuple((kw, e, r"NormPropDense.*" + m) for kw, e, m in _BAD),
        normalized=False,
        batch_independent=True,
    ),
    Case(
        "norm_prop_conv1d_causal_dilated",
        keras_norms.NormPropConv1D,
        dict(filters=3, kernel_size=3, padding="causal", dilation_rate=2),
        (2, 7, 3),
        np_ref.norm_prop_conv_oracle,
        **_CONV,
    ),
    Case(
        # Grouped, with a ReLU activation after beta.
        "norm_prop_conv2d_groups_relu",
        keras_norms.NormPropConv2D,
        dict(filters=4, kernel_size=3, padding="same", groups=2, activation="relu", epsilon=1e-6),
        (2, 5, 6, 4),
        np_ref.norm_prop_conv_oracle,
        bad_arguments=_BAD,
        **_CONV,
    ),
    Case(
        "norm_prop_conv3d_even_kernel",
        keras_norms.NormPropConv3D,
        dict(filters=2, kernel_size=2, padding="same"),
        (2, 3, 4, 3, 2),
        np_ref.norm_prop_conv_oracle,
        **_CONV,
    ),
    Case(
        "norm_prop_relu",
        keras_norms.NormPropReLU,
        {},
        (3, 4, 5),
        np_ref.norm_prop_relu_oracle,
        bad_arguments=((dict(axis=[1, 2]), ValueError, r"NormPropReLU.*`axis`=\[1, 2\].*Pass one int"),),
        normalized=False,
        batch_independent=True,
    ),
)

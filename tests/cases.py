"""The conformance registry: every public layer, with small constructor examples.

A new layer is one `Case` away from every shared check in
`test_conformance.py` (and `test_public_api.py` fails while an exported layer
has none). Each case gives:

* `layer`, `kwargs`: how to build it; `input_shape`: a small channels-last
  input, batch included;
* `oracle(x, weights, training, frozen_input=None, **kwargs) -> (y, new_state)`:
  the float64 NumPy reference from `tests/reference/` (written from the spec,
  not from the package), where `weights` maps weight names to arrays and
  `new_state` maps each non-trainable weight to its value after the call;
  `frozen_input`, used by the finite-difference gradient check, is the input
  that quantities behind a stop-gradient are computed from (oracles without
  such quantities ignore it);
* `channel_kwarg`: the argument naming the channel axis, for the
  channels-first and bad-channel checks: `"axis"` (an int), `"data_format"`
  (`"channels_last"`/`"channels_first"`: the convolutions), or `None` for a
  layer whose features are always last (`WSDense`);
* `bad_arguments`: documented bad constructor arguments, each with the
  exception type and a regex of its message;
* `normalized`: whether the output is O(1) whatever the input's scale (true
  for normalization layers). The WS layers' outputs scale with the input,
  and so does a 16-bit output's rounding error: their mixed-precision check
  takes its absolute tolerance relative to the largest output;
* `batch_independent`: whether, in training as in inference, an example's
  output depends on that example alone (FRN, NormProp, EvoNorm-S0, ...): the
  suite then checks it alone against it among random others.

The core families' cases are below; each other family keeps its cases in
`tests/cases_<family>.py` (a tuple `CASES` of `tests.case.Case`), collected
here in file-name order.
"""

import importlib
import pathlib

import keras_norms
from tests import reference as ref
from tests.case import Case
from tests.reference import weight_standardization as ws_ref
from tests.reference.batch_channel_norm import batch_channel_norm_oracle
from tests.reference.batch_group_norm import batch_group_norm_oracle


_RENORM_STATE = ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean", "renorm_stddev")


def batch_norm_oracle(
    x,
    weights,
    training,
    axis=-1,
    momentum=0.99,
    epsilon=1e-3,
    renorm=False,
    renorm_clipping=None,
    renorm_momentum=0.99,
    virtual_batch_size=None,
    inference_example_weight=0.0,
    frozen_input=None,
    mask=None,
    **_,
):
    gamma, beta = weights.get("gamma"), weights.get("beta")
    if not training:
        y = ref.batch_norm_inference(
            x,
            weights["moving_mean"],
            weights["moving_variance"],
            gamma,
            beta,
            axis,
            epsilon,
            inference_example_weight,
        )
        return y, {}
    if renorm:
        state = {k: weights[k] for k in _RENORM_STATE}
        return ref.ghost_batch_renorm_train(
            x, gamma, beta, state, axis, epsilon, momentum, renorm_momentum, renorm_clipping, virtual_batch_size,
            frozen_input, mask,
        )
    y, mean, variance = ref.ghost_batch_norm_train(x, gamma, beta, axis, epsilon, virtual_batch_size, mask)
    return y, {
        "moving_mean": ref.moving_average(weights["moving_mean"], mean, momentum),
        "moving_variance": ref.moving_average(weights["moving_variance"], variance, momentum),
    }


_WS_BAD = (
    (dict(ws_epsilon=0.0), ValueError, r"`ws_epsilon`=0.0.*positive float"),
    (dict(ws_epsilon=None), ValueError, r"`ws_epsilon`=None.*positive float"),
)
_SCALED_WS_BAD = _WS_BAD + ((dict(gamma=-1.0), ValueError, r"ScaledWSConv2D.*`gamma`=-1.0.*positive float"),)
_WS = dict(channel_kwarg="data_format", normalized=False)

_BN_BAD = (
    (dict(axis=[1, 2]), ValueError, r"BatchNormalization.*`axis`=\[1, 2\].*Pass one int"),
    (dict(momentum=1.5), ValueError, r"`momentum`=1.5.*\[0, 1\]"),
    (dict(epsilon=0.0), ValueError, r"`epsilon`=0.0.*positive float"),
    (dict(virtual_batch_size=0), ValueError, r"`virtual_batch_size`=0.*positive int"),
    (dict(virtual_batch_size=2.5), ValueError, r"`virtual_batch_size`=2.5.*positive int"),
    (dict(inference_example_weight=-0.1), ValueError, r"`inference_example_weight`=-0.1.*\[0, 1\]"),
    (dict(inference_example_weight=1.5), ValueError, r"`inference_example_weight`=1.5.*\[0, 1\]"),
    (dict(renorm=True, renorm_clipping={"rmax": 1.0, "bad": 2}), ValueError, r"`renorm_clipping`.*remove \['bad'\]"),
    (dict(renorm=True, renorm_clipping={"rmax": 0.5, "rmin": 1.0}), ValueError, r"rmax must be >= rmin"),
    (dict(synchronized="yes"), ValueError, r"`synchronized`='yes'.*Pass True"),
)

CASES = (
    Case(
        "batch_norm",
        keras_norms.BatchNormalization,
        {},
        (6, 4, 4, 3),
        batch_norm_oracle,
        bad_arguments=_BN_BAD,
    ),
    Case(
        "batch_norm_dense_keras_app_eps",
        keras_norms.BatchNormalization,
        dict(momentum=0.9, epsilon=1.001e-5),
        (7, 5),
        batch_norm_oracle,
    ),
    Case(
        "batch_norm_example_weight",
        keras_norms.BatchNormalization,
        dict(inference_example_weight=0.25),
        (5, 3, 4, 3),
        batch_norm_oracle,
    ),
    Case(
        "batch_norm_renorm",
        keras_norms.BatchNormalization,
        dict(renorm=True, renorm_clipping={"rmax": 1.5, "rmin": 0.8, "dmax": 0.5}, renorm_momentum=0.9),
        (8, 3, 3, 4),
        batch_norm_oracle,
    ),
    Case(
        "ghost_batch_renorm_uneven",
        keras_norms.GhostBatchNormalization,
        dict(virtual_batch_size=3, renorm=True, renorm_clipping={"rmax": 1.2, "dmax": 0.3}, momentum=0.9),
        (7, 3, 2, 4),
        batch_norm_oracle,
    ),
    Case(
        "ghost_batch_norm_uneven",
        keras_norms.GhostBatchNormalization,
        dict(virtual_batch_size=4, inference_example_weight=0.25),
        (10, 3, 3, 4),
        batch_norm_oracle,
        bad_arguments=(
            (dict(virtual_batch_size=None), ValueError, r"GhostBatchNormalization.*`virtual_batch_size` is required"),
        ),
    ),
    Case(
        "batch_group_norm",
        keras_norms.BatchGroupNormalization,
        dict(groups=2, examples_per_group=2),
        (6, 3, 3, 4),
        batch_group_norm_oracle,
        bad_arguments=(
            (dict(groups=0), ValueError, r"BatchGroupNormalization.*`groups`=0.*positive int"),
            (dict(examples_per_group=0), ValueError, r"`examples_per_group`=0.*positive int"),
            (dict(inference_example_weight=1.5), ValueError, r"`inference_example_weight`=1.5.*\[0, 1\]"),
            (dict(momentum=1.5), ValueError, r"`momentum`=1.5.*\[0, 1\]"),
            (dict(epsilon=0.0), ValueError, r"`epsilon`=0.0.*positive float"),
            (dict(axis=[1, 2]), ValueError, r"`axis`=\[1, 2\].*Pass one int"),
        ),
    ),
    Case(
        "batch_group_norm_uneven_one_channel_per_group",
        keras_norms.BatchGroupNormalization,
        dict(groups=-1),
        (7, 4, 4),
        batch_group_norm_oracle,
    ),
    Case(
        "batch_group_norm_example_weight",
        keras_norms.BatchGroupNormalization,
        dict(groups=2, examples_per_group=3, momentum=0.9, inference_example_weight=0.5),
        (7, 3, 2, 4),
        batch_group_norm_oracle,
    ),
    Case(
        "batch_channel_norm",
        keras_norms.BatchChannelNormalization,
        dict(groups=2, momentum=0.9),
        (6, 3, 3, 4),
        batch_channel_norm_oracle,
        bad_arguments=(
            (dict(groups=0), ValueError, r"BatchChannelNormalization.*`groups`=0.*positive int"),
            (dict(mode="micro"), ValueError, r"`mode`='micro'.*\['batch', 'estimate'\]"),
            (dict(final_affine="layer"), ValueError, r"`final_affine`='layer'.*\['channel', 'group'\]"),
            (dict(momentum=1.5), ValueError, r"`momentum`=1.5.*\[0, 1\]"),
            (dict(epsilon=0.0), ValueError, r"`epsilon`=0.0.*positive float"),
            (dict(axis=[1, 2]), ValueError, r"`axis`=\[1, 2\].*Pass one int"),
        ),
    ),
    Case(
        "batch_channel_norm_estimate_group_affine",
        keras_norms.BatchChannelNormalization,
        dict(groups=3, mode="estimate", final_affine="group", momentum=0.9),
        (5, 4, 6),
        batch_channel_norm_oracle,
    ),
    Case(
        "ghost_batch_norm_sequence_unscaled",
        keras_norms.GhostBatchNormalization,
        dict(virtual_batch_size=3, center=False, scale=False),
        (8, 5, 4),
        batch_norm_oracle,
    ),
    # Weight Standardization: filters = input channels and "same"/"causal" padding keep the output shape equal to
    # the input shape, which the shared checks use for upstream gradients and fit targets.
    Case(
        "ws_conv1d_causal_dilated",
        keras_norms.WSConv1D,
        dict(filters=3, kernel_size=3, padding="causal", dilation_rate=2),
        (2, 7, 3),
        ws_ref.ws_conv_oracle,
        bad_arguments=_WS_BAD,
        **_WS,
    ),
    Case(
        "ws_conv2d",
        keras_norms.WSConv2D,
        dict(filters=3, kernel_size=3, padding="same"),
        (2, 6, 6, 3),
        ws_ref.ws_conv_oracle,
        bad_arguments=_WS_BAD,
        **_WS,
    ),
    Case(
        "ws_conv3d_even_kernel",
        keras_norms.WSConv3D,
        dict(filters=2, kernel_size=2, padding="same"),
        (2, 3, 4, 3, 2),
        ws_ref.ws_conv_oracle,
        **_WS,
    ),
    Case(
        "ws_depthwise_conv2d",
        keras_norms.WSDepthwiseConv2D,
        dict(kernel_size=3, padding="same"),
        (2, 5, 5, 3),
        ws_ref.ws_depthwise_oracle,
        **_WS,
    ),
    Case(
        "ws_conv2d_transpose",
        keras_norms.WSConv2DTranspose,
        dict(filters=3, kernel_size=3, padding="same"),
        (2, 5, 5, 3),
        ws_ref.ws_conv_transpose_oracle,
        **_WS,
    ),
    Case(
        "ws_dense",
        keras_norms.WSDense,
        dict(units=5),
        (3, 5),
        ws_ref.ws_dense_oracle,
        channel_kwarg=None,
        bad_arguments=_WS_BAD,
        normalized=False,
    ),
    Case(
        "scaled_ws_conv1d",
        keras_norms.ScaledWSConv1D,
        dict(filters=3, kernel_size=3, padding="same"),
        (2, 7, 3),
        ws_ref.scaled_ws_conv_oracle,
        **_WS,
    ),
    Case(
        "scaled_ws_conv2d_relu_gamma",
        keras_norms.ScaledWSConv2D,
        dict(filters=3, kernel_size=3, padding="same", gamma=1.7128585504),
        (2, 6, 6, 3),
        ws_ref.scaled_ws_conv_oracle,
        bad_arguments=_SCALED_WS_BAD,
        **_WS,
    ),
    Case(
        "scaled_ws_conv3d",
        keras_norms.ScaledWSConv3D,
        dict(filters=2, kernel_size=2, padding="same"),
        (2, 3, 4, 3, 2),
        ws_ref.scaled_ws_conv_oracle,
        **_WS,
    ),
)


def _family_cases():
    """Cases of the other families, from `tests/cases_<family>.py` (each defines `CASES`)."""
    found = ()
    for path in sorted(pathlib.Path(__file__).parent.glob("cases_*.py")):
        found += importlib.import_module(f"tests.{path.stem}").CASES
    return found


CASES = CASES + _family_cases()

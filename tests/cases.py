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
* `channel_kwarg`: the argument naming the channel axis (for the
  channels-first check);
* `bad_arguments`: documented bad constructor arguments, each with the
  exception type and a regex of its message.
"""

import dataclasses
from typing import Callable

import keras_norms
from tests import reference as ref
from tests.reference.batch_group_norm import batch_group_norm_oracle


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    layer: type
    kwargs: dict
    input_shape: tuple
    oracle: Callable
    channel_kwarg: str = "axis"
    bad_arguments: tuple = ()

    def build(self, **overrides):
        return self.layer(**{**self.kwargs, **overrides})

    def __repr__(self):  # pytest ids
        return self.name


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
            frozen_input,
        )
    y, mean, variance = ref.ghost_batch_norm_train(x, gamma, beta, axis, epsilon, virtual_batch_size)
    return y, {
        "moving_mean": ref.moving_average(weights["moving_mean"], mean, momentum),
        "moving_variance": ref.moving_average(weights["moving_variance"], variance, momentum),
    }


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
    (dict(synchronized=True), NotImplementedError, r"synchronized=True is not implemented"),
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
        "ghost_batch_norm_sequence_unscaled",
        keras_norms.GhostBatchNormalization,
        dict(virtual_batch_size=3, center=False, scale=False),
        (8, 5, 4),
        batch_norm_oracle,
    ),
)

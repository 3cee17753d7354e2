"""Conformance cases of InstanceNormalization: group normalization with one channel per group.

The oracle is the group-norm one with `groups=-1` (one channel per group, written from the paper's equations).
Sizes differ between axes, so that reducing over a wrong axis cannot go unnoticed.
"""

import keras_norms
from tests.case import Case
from tests.reference.group_norm import group_norm_oracle


def instance_norm_oracle(x, weights, training, **kwargs):
    return group_norm_oracle(x, weights, training, groups=-1, **kwargs)


CASES = (
    Case(
        "instance_norm",
        keras_norms.InstanceNormalization,
        {},
        (3, 4, 5, 6),
        instance_norm_oracle,
        bad_arguments=(
            (dict(groups=0), ValueError, r"InstanceNormalization.*`groups`=0.*one channel per group.*leave it out"),
            (dict(epsilon=0.0), ValueError, r"`epsilon`=0.0.*positive float such as 1e-3"),
        ),
        batch_independent=True,
    ),
    Case(
        "instance_norm_rank3_eps_uncentered",
        keras_norms.InstanceNormalization,
        dict(epsilon=1e-5, center=False),
        (2, 7, 3),
        instance_norm_oracle,
        batch_independent=True,
    ),
)

"""Conformance cases of GroupNormalization, the drop-in for `keras.layers.GroupNormalization`.

Batch-independent and stateless. Sizes differ between axes, so that grouping or reducing over a wrong axis cannot
go unnoticed.
"""

import keras_norms
from tests.case import Case
from tests.reference.group_norm import group_norm_oracle

_GN_BAD = (
    (dict(groups=0), ValueError, r"GroupNormalization.*`groups`=0.*positive int.*-1"),
    (dict(groups=2.5), ValueError, r"`groups`=2.5.*positive int"),
    (dict(groups=True), ValueError, r"`groups`=True.*positive int"),
    (dict(epsilon=0.0), ValueError, r"`epsilon`=0.0.*positive float such as 1e-3"),
    (dict(epsilon=None), ValueError, r"`epsilon`=None.*positive float"),
    (dict(axis=[1, 2]), ValueError, r"GroupNormalization.*`axis`=\[1, 2\].*Pass one int"),
)

CASES = (
    Case(
        "group_norm",
        keras_norms.GroupNormalization,
        dict(groups=2),
        (3, 4, 5, 6),
        group_norm_oracle,
        bad_arguments=_GN_BAD,
        batch_independent=True,
    ),
    Case(
        # A positive channel axis, as Keras Applications pass it. Registry inputs are channels last (the suite's
        # symbolic-shape and channels-first checks assume it): channels first (axis=1) against the oracle is in
        # tests/layers/test_group_normalization.py, and the suite checks it against channels last.
        "group_norm_positive_axis_eps",
        keras_norms.GroupNormalization,
        dict(groups=3, axis=3, epsilon=1e-5),
        (3, 4, 5, 6),
        group_norm_oracle,
        batch_independent=True,
    ),
    Case(
        # One group: layer normalization over channels and space.
        "group_norm_one_group_rank3",
        keras_norms.GroupNormalization,
        dict(groups=1),
        (3, 7, 4),
        group_norm_oracle,
        batch_independent=True,
    ),
    Case(
        # One channel per group: instance normalization.
        "group_norm_instance_unscaled",
        keras_norms.GroupNormalization,
        dict(groups=-1, scale=False),
        (2, 3, 5, 4),
        group_norm_oracle,
        batch_independent=True,
    ),
    Case(
        "group_norm_dense_uncentered",
        keras_norms.GroupNormalization,
        dict(groups=4, center=False),
        (5, 8),
        group_norm_oracle,
        batch_independent=True,
    ),
)

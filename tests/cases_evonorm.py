"""Conformance cases of EvoNorm-B0 and EvoNorm-S0 (spec §12).

B0 depends on the batch in training (its inference is per example); S0 is batch-independent. Sizes differ
between axes, so that reducing over a wrong axis cannot go unnoticed, and every `groups` divides the channels.
"""

import keras_norms
from tests.case import Case
from tests.reference import evonorm as evo_ref

_COMMON_BAD = (
    (dict(axis=[1, 2]), ValueError, r"`axis`=\[1, 2\].*Pass one int"),
    (dict(epsilon=0.0), ValueError, r"`epsilon`=0.0.*positive float"),
    (dict(init_zero="yes"), ValueError, r"`init_zero`='yes'.*True.*or False"),
    (dict(init_zero=True, gamma_initializer="zeros"), ValueError, r"`gamma_initializer`='zeros'.*not both"),
)

CASES = (
    Case(
        "evonorm_b0",
        keras_norms.EvoNormB0,
        {},
        (6, 3, 2, 4),
        evo_ref.evonorm_b0_oracle,
        bad_arguments=(
            (dict(momentum=1.5), ValueError, r"EvoNormB0.*`momentum`=1.5.*\[0, 1\]"),
            (dict(momentum=None), ValueError, r"`momentum`=None.*\[0, 1\]"),
        )
        + _COMMON_BAD,
    ),
    Case(
        "evonorm_b0_sequence_momentum_eps",
        keras_norms.EvoNormB0,
        dict(momentum=0.8, epsilon=1e-3),
        (5, 4, 3),
        evo_ref.evonorm_b0_oracle,
    ),
    Case(
        "evonorm_s0",
        keras_norms.EvoNormS0,
        dict(groups=2),
        (4, 3, 2, 6),
        evo_ref.evonorm_s0_oracle,
        bad_arguments=(
            (dict(groups=0), ValueError, r"EvoNormS0.*`groups`=0.*positive int"),
            (dict(groups=2.0), ValueError, r"`groups`=2.0.*positive int"),
        )
        + _COMMON_BAD,
        batch_independent=True,
    ),
    Case(
        "evonorm_s0_volume_one_channel_per_group",
        keras_norms.EvoNormS0,
        dict(groups=-1),
        (3, 2, 3, 2, 3),
        evo_ref.evonorm_s0_oracle,
        batch_independent=True,
    ),
)

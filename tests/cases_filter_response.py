"""Conformance cases of Filter Response Normalization, TLU and the two fused (spec §10).

All three are batch-independent. Sizes differ between axes, so that reducing over a wrong axis (for example in
the channels-first check, which moves the channel axis to 1) cannot go unnoticed.
"""

import keras_norms
from tests.case import Case
from tests.reference import filter_response as frn_ref

_FRN_BAD = (
    (dict(axis=[1, 2]), ValueError, r"FilterResponseNormalization.*`axis`=\[1, 2\].*axis=-1 here"),
    (dict(epsilon=0.0), ValueError, r"`epsilon`=0.0.*positive float"),
    (dict(epsilon=None), ValueError, r"`epsilon`=None.*positive float"),
    (dict(learned_epsilon="yes"), ValueError, r"`learned_epsilon`='yes'.*True or False"),
)

CASES = (
    Case(
        "filter_response_norm",
        keras_norms.FilterResponseNormalization,
        {},
        (4, 5, 6, 3),
        frn_ref.frn_oracle,
        bad_arguments=_FRN_BAD,
        batch_independent=True,
    ),
    Case(
        # A positive channel axis, as Keras Applications pass it.
        "filter_response_norm_positive_axis_eps",
        keras_norms.FilterResponseNormalization,
        dict(axis=3, epsilon=1e-5),
        (3, 4, 7, 5),
        frn_ref.frn_oracle,
        batch_independent=True,
    ),
    Case(
        "filter_response_norm_rank3_learned_epsilon",
        keras_norms.FilterResponseNormalization,
        dict(learned_epsilon=True),
        (3, 7, 4),
        frn_ref.frn_oracle,
        batch_independent=True,
    ),
    Case(
        "filter_response_norm_rank5_unscaled",
        keras_norms.FilterResponseNormalization,
        dict(scale=False),
        (2, 3, 4, 5, 2),
        frn_ref.frn_oracle,
        batch_independent=True,
    ),
    Case(
        # The output is max(x, tau): not normalized, it scales with the input.
        "tlu",
        keras_norms.TLU,
        {},
        (3, 4, 5, 6),
        frn_ref.tlu_oracle,
        bad_arguments=((dict(axis=[1, 2]), ValueError, r"TLU.*`axis`=\[1, 2\].*Pass one int"),),
        normalized=False,
        batch_independent=True,
    ),
    Case(
        "filter_response_norm_tlu_learned_epsilon",
        keras_norms.FilterResponseNormalizationTLU,
        dict(learned_epsilon=True),
        (4, 6, 5, 3),
        frn_ref.frn_tlu_oracle,
        bad_arguments=(
            (dict(epsilon=-1e-6), ValueError, r"FilterResponseNormalizationTLU.*`epsilon`=-1e-06"),
        ),
        batch_independent=True,
    ),
    Case(
        "filter_response_norm_tlu_rank5",
        keras_norms.FilterResponseNormalizationTLU,
        {},
        (2, 3, 2, 4, 5),
        frn_ref.frn_tlu_oracle,
        batch_independent=True,
    ),
)

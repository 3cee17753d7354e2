"""Conformance cases of LayerNormalization and RMSNormalization, the drop-ins for Keras's layers of those names.

Batch-independent and stateless. Sizes differ between axes, so that reducing over a wrong axis cannot go
unnoticed. Several axes at once need static sizes on them (the suite's symbolic-shape check gives None spatial
sizes): they are in tests/layers/test_layer_normalization.py.
"""

import keras_norms
from tests.case import Case
from tests.reference.layer_norm import layer_norm_oracle
from tests.reference.layer_norm import rms_norm_oracle

_AXIS_BAD = (
    (dict(axis=1.5), ValueError, r"`axis`=1.5.*an int or a non-empty list of ints"),
    (dict(axis=[]), ValueError, r"`axis`=\[\].*non-empty list"),
    (dict(axis=[1, True]), ValueError, r"`axis`=\[1, True\]"),
)

CASES = (
    Case(
        "layer_norm",
        keras_norms.LayerNormalization,
        {},
        (3, 4, 5, 6),
        layer_norm_oracle,
        bad_arguments=_AXIS_BAD + (
            (dict(epsilon=0.0), ValueError, r"LayerNormalization.*`epsilon`=0.0.*positive float such as 1e-3"),
            (dict(rms_scaling=True), ValueError, r"`rms_scaling`=True.*keras_norms.RMSNormalization"),
        ),
        batch_independent=True,
    ),
    Case(
        "layer_norm_rank3_eps_unscaled",
        keras_norms.LayerNormalization,
        dict(epsilon=1e-5, scale=False),
        (3, 7, 4),
        layer_norm_oracle,
        batch_independent=True,
    ),
    Case(
        "layer_norm_dense_uncentered",
        keras_norms.LayerNormalization,
        dict(center=False),
        (5, 8),
        layer_norm_oracle,
        batch_independent=True,
    ),
    Case(
        "rms_norm",
        keras_norms.RMSNormalization,
        {},
        (3, 4, 5, 6),
        rms_norm_oracle,
        bad_arguments=_AXIS_BAD + (
            (dict(epsilon=-1.0), ValueError, r"RMSNormalization.*`epsilon`=-1.0.*positive float such as 1e-6"),
        ),
        batch_independent=True,
    ),
    Case(
        "rms_norm_dense_eps",
        keras_norms.RMSNormalization,
        dict(epsilon=1e-3),
        (5, 8),
        rms_norm_oracle,
        batch_independent=True,
    ),
)

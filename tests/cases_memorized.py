"""Conformance cases of MemorizedBatchNormalization (spec §9)."""

import keras_norms
from tests.case import Case
from tests.reference.memorized_batch_norm import memorized_batch_norm_oracle

CASES = (
    Case(
        "memorized_batch_norm",
        keras_norms.MemorizedBatchNormalization,
        {},
        (4, 3, 3, 3),
        memorized_batch_norm_oracle,
        bad_arguments=(
            (dict(memory_size=0), ValueError, r"MemorizedBatchNormalization.*`memory_size`=0.*positive int"),
            (dict(memory_size=2.0), ValueError, r"`memory_size`=2.0.*positive int"),
            (dict(memory_weights=[1.0, 0.5]), ValueError, r"`memory_weights`=\[1.0, 0.5\].*memory_size=4"),
            (dict(memory_size=2, memory_weights=[1.0, 0.0]), ValueError, r"`memory_weights`.*positive floats"),
            (dict(epsilon=0.0), ValueError, r"`epsilon`=0.0.*positive float"),
            (dict(axis=[1, 2]), ValueError, r"`axis`=\[1, 2\].*Pass one int"),
        ),
    ),
    Case(
        "memorized_batch_norm_decaying_dense",
        keras_norms.MemorizedBatchNormalization,
        dict(memory_size=3, memory_weights=[1.0, 0.5, 0.25], epsilon=1e-5),
        (5, 4),
        memorized_batch_norm_oracle,
    ),
)

"""Conformance case of WeightNormalization (a wrapper: its inner layer is built anew for each layer, `Fresh`).

Without the data-dependent initialization: the suite sets every weight at random, a random `initialized` flag
included, and its state checks expect every non-trainable weight to change in training, which a flag set once does
not; `tests/layers/test_weight_normalization.py` tests `data_init=True`. `channel_kwarg=None`: the wrapper has no
channel argument, and the wrapped `Dense` takes inputs of any rank >= 2 (the fuzz test draws them); the wrapped
convolutions, channels first included, are tested there too.
"""

import keras

import keras_norms
from tests.case import Case
from tests.case import Fresh
from tests.reference.weight_norm import weight_norm_oracle

CASES = (
    Case(
        "weight_norm_dense",
        keras_norms.WeightNormalization,
        dict(layer=Fresh(keras.layers.Dense, dict(units=5, name="inner")), data_init=False),
        (3, 5),
        weight_norm_oracle,
        channel_kwarg=None,
        normalized=False,
        batch_independent=True,
        bad_arguments=(
            (dict(layer=keras.layers.LayerNormalization()), ValueError,
             r"WeightNormalization.*`layer`=.*LayerNormalization.*Wrap one of keras.layers.Dense"),
            (dict(layer=keras_norms.WSDense(3)), ValueError, r"`layer`=.*WSDense.*exactly these classes"),
            (dict(layer=keras.layers.Dense(3, lora_rank=2)), ValueError, r"`layer`=.*without LoRA"),
            (dict(data_init="yes"), ValueError, r"`data_init`='yes'. Pass True or False"),
        ),
    ),
)

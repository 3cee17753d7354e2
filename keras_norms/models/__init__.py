"""Model surgery: whole-model operations on built Keras models.

`convert.py` (`convert_normalization`: every BatchNormalization replaced by
another normalization, weights carried), `freeze.py`
(`freeze_normalization`), `fold.py` (`fold_batch_normalization`,
`fold_weight_standardization`: for export), `double_forward.py` (Memorized
BN's Double Forward training step) and `clone.py` (the functional-model
cloning they share). The public names are exported from `keras_norms`.
"""

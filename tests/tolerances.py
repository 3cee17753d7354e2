"""Tolerances per dtype, used by every numerical comparison in the suite.

float32: 1e-5 relative, with an absolute floor of 1e-5 for entries near zero
(normalized outputs are O(1)). Gradients through a normalization in float32,
compared with float64 finite differences, get 1e-4: backprop subtracts
O(1) terms whose rounding is about 1e-6 each. 16-bit policies compute the
statistics in float32 and round only the output, so their tolerance is the
dtype's resolution: float16 has 11 significant bits (~5e-4), bfloat16 8
(~4e-3), with a margin for the rounding of the input.
"""

import numpy as np

TOLERANCES = {
    "float64": dict(rtol=1e-10, atol=1e-10),
    "float32": dict(rtol=1e-5, atol=1e-5),
    "float16": dict(rtol=2e-3, atol=2e-3),
    "bfloat16": dict(rtol=2e-2, atol=2e-2),
}
GRADIENT = dict(rtol=1e-4, atol=1e-4)
# Across backends: the same float32 math with different reduction orders.
CROSS_BACKEND = dict(rtol=1e-5, atol=1e-5)


def assert_close(actual, expected, dtype="float32", err_msg="", **override):
    tol = {**TOLERANCES[dtype], **override}
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), np.asarray(expected, np.float64), err_msg=err_msg, **tol
    )

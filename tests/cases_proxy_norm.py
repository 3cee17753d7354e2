"""Conformance cases of Proxy Normalization (spec §13).

The layer is batch-independent (its statistics come from the proxy, not the data). Its output is an affine map of
phi(gamma * x + beta) with parameter-only coefficients, so it scales with the input: `normalized=False`.
"""

import keras_norms
from tests.case import Case
from tests.reference.proxy_norm import proxy_norm_oracle

_PN_BAD = (
    (dict(activation="nope"), ValueError, r"ProxyNormalization.*`activation`='nope'.*elementwise Keras activation"),
    (dict(activation=None), ValueError, r"ProxyNormalization.*`activation`=None"),
    (dict(activation="softmax"), ValueError, r"`activation`='softmax'.*elementwise"),
    (dict(num_points=1), ValueError, r"ProxyNormalization.*`num_points`=1.*int >= 2"),
    (dict(num_points=256.0), ValueError, r"`num_points`=256.0.*int >= 2"),
    (dict(epsilon=0.0), ValueError, r"`epsilon`=0.0.*positive float"),
    (dict(proxy_affine="yes"), ValueError, r"`proxy_affine`='yes'.*True or False"),
    (dict(axis=[1, 2]), ValueError, r"`axis`=\[1, 2\].*Pass one int"),
)

CASES = (
    Case(
        "proxy_norm_relu",
        keras_norms.ProxyNormalization,
        {},
        (3, 4, 5),
        proxy_norm_oracle,
        bad_arguments=_PN_BAD,
        normalized=False,
        batch_independent=True,
    ),
    Case(
        "proxy_norm_gelu_proxy_affine",
        keras_norms.ProxyNormalization,
        dict(activation="gelu", proxy_affine=True, num_points=128, epsilon=1e-2),
        (2, 3, 2, 4),
        proxy_norm_oracle,
        normalized=False,
        batch_independent=True,
    ),
)

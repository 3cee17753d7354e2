"""Float64 NumPy oracle for Filter Response Normalization and TLU.

Written from the specification (``ALGORITHMS.md`` §10), independently of the package:

* §10.1  per example n and channel c, nu2 = mean over the S spatial positions of x^2 (no mean subtraction,
  no variance), x_hat = x / sqrt(nu2 + eps), y = gamma_c x_hat + beta_c, TLU z = max(y, tau_c);
* §10.2  epsilon inside the square root; the learned form adds |eps_l| to the fixed epsilon (TF-Addons);
* §10 decision box  per-channel gamma, beta, tau of shape (C,); any channel axis.

Deliberately naive: the channel axis moved last, explicit loops over examples and channels.
"""

import numpy as np

__all__ = [
    "filter_response_norm",
    "tlu",
    "frn_oracle",
    "tlu_oracle",
    "frn_tlu_oracle",
]


def _channels_last(x, axis):
    x = np.asarray(x, np.float64)
    axis = axis % x.ndim
    if axis == 0:
        raise ValueError("axis 0 is the batch axis")
    return np.moveaxis(x, axis, -1), axis


def _vector(v, channels, default):
    return np.full(channels, default) if v is None else np.asarray(v, np.float64).reshape(channels)


def filter_response_norm(x, gamma=None, beta=None, epsilon=1e-6, axis=-1, learned_epsilon=None):
    """FRN, per example and channel, with the total epsilon eps + |eps_l|."""
    xl, axis = _channels_last(x, axis)
    n, c = xl.shape[0], xl.shape[-1]
    gamma, beta = _vector(gamma, c, 1.0), _vector(beta, c, 0.0)
    eps = float(epsilon)
    if learned_epsilon is not None:
        eps += abs(float(np.asarray(learned_epsilon, np.float64).reshape(())))
    y = np.empty_like(xl)
    for i in range(n):
        for k in range(c):
            values = xl[i, ..., k]
            nu2 = np.mean(values * values)
            y[i, ..., k] = gamma[k] * values / np.sqrt(nu2 + eps) + beta[k]
    return np.moveaxis(y, -1, axis)


def tlu(x, tau, axis=-1):
    """max(x, tau_c), one threshold per channel."""
    xl, axis = _channels_last(x, axis)
    tau = _vector(tau, xl.shape[-1], 0.0)
    z = np.empty_like(xl)
    for k in range(xl.shape[-1]):
        z[..., k] = np.maximum(xl[..., k], tau[k])
    return np.moveaxis(z, -1, axis)


# Conformance-registry oracles: oracle(x, weights, training, frozen_input=None, **layer_kwargs) -> (y, new_state).
# Training and inference compute the same function, and there is no state.


def frn_oracle(x, weights, training, axis=-1, epsilon=1e-6, learned_epsilon=False, frozen_input=None, **_):
    y = filter_response_norm(
        x,
        weights.get("gamma"),
        weights.get("beta"),
        epsilon,
        axis,
        weights["learned_epsilon"] if learned_epsilon else None,
    )
    return y, {}


def tlu_oracle(x, weights, training, axis=-1, frozen_input=None, **_):
    return tlu(x, weights["tau"], axis), {}


def frn_tlu_oracle(x, weights, training, axis=-1, epsilon=1e-6, learned_epsilon=False, frozen_input=None, **_):
    y, _ = frn_oracle(x, weights, training, axis, epsilon, learned_epsilon)
    return tlu(y, weights["tau"], axis), {}

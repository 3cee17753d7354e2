"""Float64 NumPy oracle for group normalization (Wu & He 2018, eq. 1-3 with the GN set of eq. 7).

Written from the paper's equations, independently of the package: per example n and group g of C/G consecutive
channels, S_{n,g} is every entry of that example whose channel is in g (all spatial positions);
mu = mean over S, sigma^2 = mean over S of (x - mu)^2 (biased), x_hat = (x - mu) / sqrt(sigma^2 + eps),
y = gamma_c x_hat + beta_c with a per-channel affine. groups=-1 is one channel per group. Stateless: training
and inference are the same function.

Deliberately naive: the channel axis moved last, explicit loops over examples and groups.
"""

import numpy as np

__all__ = ["group_norm", "group_norm_oracle"]


def group_norm(x, gamma=None, beta=None, groups=32, axis=-1, epsilon=1e-3):
    x = np.asarray(x, np.float64)
    axis = axis % x.ndim
    if axis == 0:
        raise ValueError("axis 0 is the batch axis")
    xl = np.moveaxis(x, axis, -1)
    channels = xl.shape[-1]
    groups = channels if groups == -1 else groups
    if channels % groups:
        raise ValueError(f"groups={groups} does not divide {channels} channels")
    size = channels // groups
    gamma = np.ones(channels) if gamma is None else np.asarray(gamma, np.float64)
    beta = np.zeros(channels) if beta is None else np.asarray(beta, np.float64)
    y = np.empty_like(xl)
    for n in range(xl.shape[0]):
        for g in range(groups):
            cell = xl[n, ..., g * size:(g + 1) * size]
            mu = cell.mean()
            var = ((cell - mu) ** 2).mean()
            for c in range(g * size, (g + 1) * size):
                y[n, ..., c] = gamma[c] * (xl[n, ..., c] - mu) / np.sqrt(var + epsilon) + beta[c]
    return np.moveaxis(y, -1, axis)


def group_norm_oracle(x, weights, training, groups=32, axis=-1, epsilon=1e-3, frozen_input=None, **_):
    """The registry's oracle signature: `(y, new_state)`, with no state."""
    return group_norm(x, weights.get("gamma"), weights.get("beta"), groups, axis, epsilon), {}

"""Float64 NumPy oracle for ProxyNormalization, written from ``ALGORITHMS.md`` §13, independently of the package.

* §13.2 placement: per-channel affine ``gamma_c * y + beta_c``, activation ``phi``, then PN;
* §13.2 equation: ``(phi(gamma y + beta) - E_Y[phi(gamma Y + beta)]) / sqrt(Var_Y[phi(gamma Y + beta)] + eps)``,
  the moments taken over the Gaussian proxy ``Y_c ~ N(proxy_beta_c, (1 + proxy_gamma_c)^2)`` (``N(0, 1)``
  without the proxy affine), not over the data;
* §13.2 computation: the conformance oracle uses the same quadrature rule as specified, equal weights over the
  ``S_q`` quantile points ``y_s = sqrt(2) erfinv(2 (s + 1/2) / S_q - 1)``, i.e. the standard normal quantile of
  ``(s + 1/2) / S_q``. Here the quantiles are found by bisection on ``math.erf`` (not through the package's
  ``statistics.NormalDist``), and the variance is the centred (two-pass) mean of squares over the points.

``gaussian_moments`` is the exact reference for the quadrature itself: the mean and variance of
``phi(gamma Y + beta)`` for a Gaussian ``Y``, by a trapezoid rule on a fine grid of +-14 standard deviations
(400001 points; its own error is below 1e-12 for the activations here).
"""

import functools
import math

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "quantile_points",
    "quadrature_moments",
    "gaussian_moments",
    "proxy_norm",
    "proxy_norm_oracle",
]

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x):
    x = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),  # exact (erf) GELU, Keras's default
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "linear": lambda x: np.asarray(x, np.float64),
}


def _phi(activation):
    return ACTIVATIONS[activation] if isinstance(activation, str) else activation


@functools.lru_cache(maxsize=None)
def quantile_points(num_points):
    """The ``S_q`` points ``Phi^{-1}((s + 1/2) / S_q)``, by bisection on ``Phi(y) = (1 + erf(y / sqrt 2)) / 2``."""
    targets = (np.arange(num_points, dtype=np.float64) + 0.5) / num_points
    lo = np.full(num_points, -40.0)
    hi = np.full(num_points, 40.0)
    for _ in range(100):  # the interval halves each time: 80 / 2**100 is far below float64 resolution
        mid = 0.5 * (lo + hi)
        below = 0.5 * (1.0 + _erf(mid / math.sqrt(2.0))) < targets
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    points = 0.5 * (lo + hi)
    points.setflags(write=False)
    return points


def quadrature_moments(activation, gamma, beta, num_points, proxy_gamma=None, proxy_beta=None):
    """Per-channel ``(mean, variance)`` of ``phi(gamma * u + beta)`` over the quantile points (equal weights)."""
    gamma = np.atleast_1d(np.asarray(gamma, np.float64))
    beta = np.atleast_1d(np.asarray(beta, np.float64))
    channels = max(gamma.size, beta.size)
    mean = np.empty(channels)
    variance = np.empty(channels)
    for c in range(channels):
        u = quantile_points(num_points).copy()
        if proxy_gamma is not None:
            u = (1.0 + float(np.asarray(proxy_gamma, np.float64)[c])) * u
        if proxy_beta is not None:
            u = u + float(np.asarray(proxy_beta, np.float64)[c])
        z = _phi(activation)(gamma[c % gamma.size] * u + beta[c % beta.size])
        mean[c] = z.sum() / num_points
        variance[c] = ((z - mean[c]) ** 2).sum() / num_points
    return mean, variance


def gaussian_moments(activation, gamma=1.0, beta=0.0, loc=0.0, scale=1.0, points=400001, width=14.0):
    """Exact (to ~1e-12) mean and variance of ``phi(gamma * Y + beta)``, ``Y ~ N(loc, scale^2)``, by trapezoid."""
    t = np.linspace(-width, width, points)
    density = np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    weights = np.full(points, t[1] - t[0]) * density
    weights[[0, -1]] *= 0.5
    z = _phi(activation)(gamma * (loc + scale * t) + beta)
    mean = float(np.sum(z * weights))
    variance = float(np.sum((z - mean) ** 2 * weights))
    return mean, variance


def proxy_norm(x, gamma, beta, activation, num_points, epsilon, axis=-1, proxy_gamma=None, proxy_beta=None):
    """The full layer in float64: channel axis moved last, the formula of §13.2 applied per channel."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    channels = x.shape[-1]
    gamma = np.ones(channels) if gamma is None else np.asarray(gamma, np.float64)
    beta = np.zeros(channels) if beta is None else np.asarray(beta, np.float64)
    mean, variance = quadrature_moments(activation, gamma, beta, num_points, proxy_gamma, proxy_beta)
    z = _phi(activation)(x * gamma + beta)
    y = (z - mean) / np.sqrt(variance + epsilon)
    return np.moveaxis(y, -1, axis)


def proxy_norm_oracle(
    x,
    weights,
    training,
    activation="relu",
    num_points=256,
    epsilon=1e-3,
    proxy_affine=False,
    axis=-1,
    frozen_input=None,
    **_,
):
    """Conformance oracle: same function in training and inference, no state."""
    y = proxy_norm(
        x,
        weights["gamma"],
        weights["beta"],
        activation,
        num_points,
        epsilon,
        axis,
        weights["proxy_gamma"] if proxy_affine else None,
        weights["proxy_beta"] if proxy_affine else None,
    )
    return y, {}

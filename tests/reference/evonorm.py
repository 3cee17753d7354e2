"""Float64 NumPy oracle for EvoNorm-B0 and EvoNorm-S0.

Written from the specification (``ALGORITHMS.md`` §12, the official TF code's semantics), independently of the
package:

* §12.1 B0: ``y = x / max(sqrt(s2_b + eps), v x + sqrt(s2_i + eps)) * gamma + beta``, with ``s2_b`` the biased
  per-channel variance over (N, spatial axes) (the batch statistic in training, the moving variance at inference)
  and ``s2_i`` the biased per-example, per-channel variance over the spatial axes; elementwise max;
* §12.2 S0: ``y = x * sigmoid(v x) / sqrt(s2_g + eps) * gamma + beta``, with ``s2_g`` the biased, centred variance
  per example over (spatial axes, the C_g consecutive channels of the group);
* §12.4 / decision box: B0's moving variance ``m <- rho m + (1 - rho) s2_b`` with the biased variance (no Bessel
  factor), rho = momentum (0.9 = the official decay); S0 has no state; eps 1e-5; groups=-1 is one channel per group.

Deliberately naive: the channel axis moved last, explicit loops over examples, channels and groups.
"""

import numpy as np

__all__ = [
    "evonorm_b0_train",
    "evonorm_b0_inference",
    "evonorm_s0",
    "evonorm_b0_oracle",
    "evonorm_s0_oracle",
    "timm_b0_running_variance",
]


def _f64(a):
    return np.asarray(a, np.float64)


def _channels_last(x, axis):
    x = _f64(x)
    axis = axis % x.ndim
    if axis == 0 or x.ndim < 3:
        raise ValueError("EvoNorm needs rank >= 3 and a channel axis other than 0")
    return np.moveaxis(x, axis, -1), axis


def _vector(v, channels, default):
    return np.full(channels, default) if v is None else _f64(v)


def _b0(xl, batch_variance, v, gamma, beta, epsilon):
    n, c = xl.shape[0], xl.shape[-1]
    y = np.empty_like(xl)
    for i in range(n):
        for ch in range(c):
            cell = xl[i, ..., ch]
            instance_variance = ((cell - cell.mean()) ** 2).mean()
            left = np.sqrt(batch_variance[ch] + epsilon)
            right = v[ch] * cell + np.sqrt(instance_variance + epsilon)
            y[i, ..., ch] = cell / np.maximum(left, right) * gamma[ch] + beta[ch]
    return y


def evonorm_b0_train(x, v=None, gamma=None, beta=None, axis=-1, epsilon=1e-5):
    """B0 in training (§12.1): returns ``(y, batch_variance)``, the biased variance over (N, spatial axes)."""
    xl, axis = _channels_last(x, axis)
    c = xl.shape[-1]
    flat = xl.reshape(-1, c)
    variance = ((flat - flat.mean(axis=0)) ** 2).mean(axis=0)
    y = _b0(xl, variance, _vector(v, c, 1.0), _vector(gamma, c, 1.0), _vector(beta, c, 0.0), epsilon)
    return np.moveaxis(y, -1, axis), variance


def evonorm_b0_inference(x, moving_variance, v=None, gamma=None, beta=None, axis=-1, epsilon=1e-5):
    """B0 at inference (§12.1): the moving variance replaces the batch variance."""
    xl, axis = _channels_last(x, axis)
    c = xl.shape[-1]
    y = _b0(xl, _f64(moving_variance), _vector(v, c, 1.0), _vector(gamma, c, 1.0), _vector(beta, c, 0.0), epsilon)
    return np.moveaxis(y, -1, axis)


def evonorm_s0(x, v=None, gamma=None, beta=None, axis=-1, epsilon=1e-5, groups=32):
    """S0 (§12.2): Swish-like numerator over the per-example group standard deviation."""
    xl, axis = _channels_last(x, axis)
    n, c = xl.shape[0], xl.shape[-1]
    g_count = c if groups == -1 else int(groups)
    if g_count < 1 or c % g_count:
        raise ValueError(f"groups={groups} does not divide {c} channels")
    cg = c // g_count
    v, gamma, beta = _vector(v, c, 1.0), _vector(gamma, c, 1.0), _vector(beta, c, 0.0)
    y = np.empty_like(xl)
    for i in range(n):
        for g in range(g_count):
            ch = slice(g * cg, (g + 1) * cg)
            cell = xl[i, ..., ch]
            std = np.sqrt(((cell - cell.mean()) ** 2).mean() + epsilon)
            gate = 0.5 * (1.0 + np.tanh(0.5 * v[ch] * cell))  # the logistic sigmoid, without exp overflow
            y[i, ..., ch] = cell * gate / std * gamma[ch] + beta[ch]
    return np.moveaxis(y, -1, axis)


def timm_b0_running_variance(running_variance, x, momentum=0.1, axis=-1):
    """timm's ``EvoNorm2dB0`` running-variance update (torch momentum convention, Bessel factor n/(n-1)).

    ``r <- (1 - m) r + m * var_b * n / (n - 1)`` with ``var_b`` biased and ``n`` the elements per channel; a
    porting check, not the package's semantics (§12.3).
    """
    xl, _ = _channels_last(x, axis)
    flat = xl.reshape(-1, xl.shape[-1])
    n = flat.shape[0]
    variance = ((flat - flat.mean(axis=0)) ** 2).mean(axis=0)
    return (1.0 - momentum) * _f64(running_variance) + momentum * variance * n / (n - 1)


def evonorm_b0_oracle(x, weights, training, axis=-1, momentum=0.9, epsilon=1e-5, frozen_input=None, **_):
    """The registry adapter (``tests/cases.py``) for ``EvoNormB0``: ``(y, new_state)``."""
    v, gamma, beta = (weights.get(k) for k in ("v", "gamma", "beta"))
    if not training:
        return evonorm_b0_inference(x, weights["moving_variance"], v, gamma, beta, axis, epsilon), {}
    y, variance = evonorm_b0_train(x, v, gamma, beta, axis, epsilon)
    return y, {"moving_variance": momentum * _f64(weights["moving_variance"]) + (1.0 - momentum) * variance}


def evonorm_s0_oracle(x, weights, training, groups=32, axis=-1, epsilon=1e-5, frozen_input=None, **_):
    """The registry adapter for ``EvoNormS0``: ``(y, {})`` (no state; training is irrelevant)."""
    v, gamma, beta = (weights.get(k) for k in ("v", "gamma", "beta"))
    return evonorm_s0(x, v, gamma, beta, axis, epsilon, groups), {}

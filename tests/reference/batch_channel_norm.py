"""Float64 NumPy oracle for BatchChannelNormalization (BCN) and plain group normalization.

Written from the specification (``ALGORITHMS.md`` §8), independently of the package:

* §8.1  order: a per-channel batch step with its own affine (gamma_b, beta_b), then group normalization per
  example over (spatial axes, the C_g consecutive channels of the group) with no inner affine and the biased
  variance, then the final affine, per channel or per group (the official code's is per group);
* §8.2  "batch" mode: the batch step is ordinary BN (batch mean, biased variance over every axis but the channel
  axis) in training, moving statistics at inference; moving averages with Keras momentum m <- rho m + (1-rho) b;
* §8.3  "estimate" mode (EstBN): with r = 1 - momentum, m_c = batch mean, v_c = mean (x - mu_old)^2 (about the
  OLD estimate, computed literally here, not through the var + (m - mu_old)^2 identity), mu <- (1-r) mu + r m,
  var <- (1-r) var + r v; then normalize with the just-updated estimates (no gradient through them: the
  estimates are computed from ``frozen_input`` when given); inference uses the frozen estimates;
* §8 decision box  epsilon 1e-5 in both steps; groups=-1 is one channel per group.

Deliberately naive: the channel axis moved last, explicit loops over examples and groups.
"""

import numpy as np

__all__ = [
    "group_norm",
    "batch_channel_norm_train",
    "batch_channel_norm_estimate_train",
    "batch_channel_norm_inference",
    "batch_channel_norm_oracle",
]


def _f64(a):
    return np.asarray(a, np.float64)


def _channels_last(x, axis):
    x = _f64(x)
    axis = axis % x.ndim
    if axis == 0:
        raise ValueError("axis 0 is the batch axis")
    return np.moveaxis(x, axis, -1), axis


def _num_groups(groups, channels):
    g = channels if groups == -1 else int(groups)
    if g < 1 or channels % g:
        raise ValueError(f"groups={groups} does not divide {channels} channels")
    return g


def _per_channel(v, channels, groups, default):
    """A final-affine vector as (C,): None -> default, (G,) repeated over each group's channels."""
    if v is None:
        return np.full(channels, default)
    v = _f64(v)
    return v if v.shape[0] == channels else np.repeat(v, channels // groups)


def group_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3, groups=32):
    """GN (Wu & He): per example n and channel group g, two-pass mean and biased variance, per-channel affine."""
    xl, axis = _channels_last(x, axis)
    n, c = xl.shape[0], xl.shape[-1]
    g_count = _num_groups(groups, c)
    cg = c // g_count
    gamma = _per_channel(gamma, c, g_count, 1.0)
    beta = _per_channel(beta, c, g_count, 0.0)
    y = np.empty_like(xl)
    for i in range(n):
        for g in range(g_count):
            ch = slice(g * cg, (g + 1) * cg)
            cell = xl[i, ..., ch]
            mu = cell.mean()
            var = ((cell - mu) ** 2).mean()
            y[i, ..., ch] = gamma[ch] * (cell - mu) / np.sqrt(var + epsilon) + beta[ch]
    return np.moveaxis(y, -1, axis)


def _batch_step(x, mean, variance, gamma_b, beta_b, axis, epsilon):
    xl, axis = _channels_last(x, axis)
    c = xl.shape[-1]
    gamma_b = np.ones(c) if gamma_b is None else _f64(gamma_b)
    beta_b = np.zeros(c) if beta_b is None else _f64(beta_b)
    y = gamma_b * (xl - _f64(mean)) / np.sqrt(_f64(variance) + epsilon) + beta_b
    return np.moveaxis(y, -1, axis)


def _flat_weights(x, axis, mask):
    """``x`` as (entries, C) with the (entries, C) weights of ``mask`` (Keras BN's convention: rank ``ndim - 1``,
    a trailing axis appended, nonzero = included), ones without one."""
    xl, axis = _channels_last(x, axis)
    w = np.ones(xl.shape)
    if mask is not None:
        w = np.moveaxis(np.broadcast_to(np.asarray(mask)[..., None].astype(bool), np.shape(x)), axis, -1) * w
    return xl.reshape(-1, xl.shape[-1]), w.reshape(-1, xl.shape[-1])


def _weighted_mean(v, w):
    """Mean of ``v`` over the entries with weight 1, per channel; 0 for a channel with none."""
    count = w.sum(axis=0)
    return (w * v).sum(axis=0) / np.where(count > 0, count, 1.0)


def _batch_moments(x, axis, mask=None):
    flat, w = _flat_weights(x, axis, mask)
    mean = _weighted_mean(flat, w)
    return mean, _weighted_mean((flat - mean) ** 2, w)


def batch_channel_norm_inference(x, mean, variance, batch_gamma, batch_beta, gamma, beta, axis=-1, epsilon=1e-5,
                                 groups=32):
    """Step 1 with the given statistics, then GN with the final affine (§8.1)."""
    x_hat = _batch_step(x, mean, variance, batch_gamma, batch_beta, axis, epsilon)
    return group_norm(x_hat, gamma, beta, axis, epsilon, groups)


def batch_channel_norm_train(x, batch_gamma, batch_beta, gamma, beta, axis=-1, epsilon=1e-5, groups=32, mask=None):
    """Large-batch BCN (§8.2): returns ``(y, batch_mean, batch_variance)`` (biased variance).

    ``mask``: the batch moments over the unmasked entries only (0 and 0 for a channel with none); the group step
    is per example over all its entries (no mask), and every entry is normalized.
    """
    mean, variance = _batch_moments(x, axis, mask)
    y = batch_channel_norm_inference(x, mean, variance, batch_gamma, batch_beta, gamma, beta, axis, epsilon, groups)
    return y, mean, variance


def estimate_update(x, moving_mean, moving_variance, axis=-1, momentum=0.99, mask=None):
    """EstBN's update (§8.3): the new (mu, var), the variance taken about the old mean, literally.

    ``mask``: m and v are means over the unmasked entries only (0 for a channel with none).
    """
    flat, w = _flat_weights(x, axis, mask)
    r = 1.0 - momentum
    old_mean, old_variance = _f64(moving_mean), _f64(moving_variance)
    m = _weighted_mean(flat, w)
    v = _weighted_mean((flat - old_mean) ** 2, w)
    return (1.0 - r) * old_mean + r * m, (1.0 - r) * old_variance + r * v


def batch_channel_norm_estimate_train(x, moving_mean, moving_variance, batch_gamma, batch_beta, gamma, beta,
                                      axis=-1, epsilon=1e-5, groups=32, momentum=0.99, frozen_input=None, mask=None):
    """Micro-batch BCN (§8.3): ``(y, new_mean, new_variance)``; the estimates come from ``frozen_input`` if given.

    ``mask``: the update over the unmasked entries only (``estimate_update``).
    """
    source = x if frozen_input is None else frozen_input
    mean, variance = estimate_update(source, moving_mean, moving_variance, axis, momentum, mask)
    y = batch_channel_norm_inference(x, mean, variance, batch_gamma, batch_beta, gamma, beta, axis, epsilon, groups)
    return y, mean, variance


def batch_channel_norm_oracle(
    x,
    weights,
    training,
    groups=32,
    mode="batch",
    final_affine="channel",
    axis=-1,
    momentum=0.99,
    epsilon=1e-5,
    frozen_input=None,
    mask=None,
    **_,
):
    """The registry adapter (``tests/cases.py``): ``(y, new_state)`` for one call of the layer.

    ``weights`` maps ``batch_gamma``, ``batch_beta``, ``gamma``, ``beta`` (each optional), ``moving_mean`` and
    ``moving_variance`` to arrays; the final affine may be per channel or per group (``final_affine`` only
    decides its shape, which the arrays carry). In "estimate" mode ``frozen_input`` (when given) is the input
    the stop-gradient estimates are computed from.
    """
    affines = [weights.get(k) for k in ("batch_gamma", "batch_beta", "gamma", "beta")]
    state = weights["moving_mean"], weights["moving_variance"]
    if not training:
        return batch_channel_norm_inference(x, *state, *affines, axis, epsilon, groups), {}
    if mode == "estimate":
        y, mean, variance = batch_channel_norm_estimate_train(
            x, *state, *affines, axis, epsilon, groups, momentum, frozen_input, mask
        )
        return y, {"moving_mean": mean, "moving_variance": variance}
    y, mean, variance = batch_channel_norm_train(x, *affines, axis, epsilon, groups, mask)
    return y, {
        "moving_mean": momentum * _f64(state[0]) + (1.0 - momentum) * mean,
        "moving_variance": momentum * _f64(state[1]) + (1.0 - momentum) * variance,
    }

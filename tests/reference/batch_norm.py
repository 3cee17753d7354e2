"""Float64 NumPy oracles for the BatchNormalization superset.

Written from the specification (``ALGORITHMS.md``), independently of the package:

* §1.2/§1.7  conventions: biased variance, epsilon inside the square root, statistics per channel over every
  other axis, Keras momentum ``m <- rho*m + (1-rho)*b``;
* §3.1       Keras BatchNormalization in training (including the masked moments of ``call(mask=...)``);
* §3.2/§3.5  ghost batches: consecutive examples, a smaller trailing ghost, and the decision-box rule that the
  moving statistics see the ghost means/variances averaged with weights ``n_k / N``;
* §4.2       inference example weighing, mixing first and second moments (raw-moment form, clamped at 0);
* §14.4      Batch Renormalization with Keras >= 3.14 semantics.

Everything is computed in float64 and kept deliberately naive (explicit loops, two-pass variances), so that it
can serve as a reference for the vectorized float32 package code.
"""

import numpy as np

__all__ = [
    "batch_norm_train",
    "ghost_batch_norm_train",
    "moving_average",
    "batch_norm_inference",
    "batch_renorm_train",
    "ghost_batch_renorm_train",
    "initial_renorm_state",
]

_RENORM_KEYS = ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean", "renorm_stddev")


def _f64(a):
    return np.asarray(a, np.float64)


def _channel_axis(x, axis):
    """Normalizes a negative or positive channel axis; raises like an out-of-range index would."""
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis={axis} is out of bounds for an input of rank {x.ndim}")
    return axis % x.ndim


def _bshape(x, axis):
    """Shape that broadcasts a (C,) vector along the channel axis of ``x``."""
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    return shape


def _affine(x, gamma, beta, axis):
    """(gamma, beta) as float64 arrays broadcastable against ``x``; None means ones / zeros."""
    c = x.shape[axis]
    gamma = np.ones(c) if gamma is None else _f64(gamma)
    beta = np.zeros(c) if beta is None else _f64(beta)
    return gamma.reshape(_bshape(x, axis)), beta.reshape(_bshape(x, axis))


def _normalize(x, mean, variance, gamma, beta, axis, epsilon):
    """y = gamma * (x - mean) / sqrt(variance + eps) + beta with (C,) statistics."""
    g, b = _affine(x, gamma, beta, axis)
    shape = _bshape(x, axis)
    mean, variance = _f64(mean).reshape(shape), _f64(variance).reshape(shape)
    return g * (x - mean) / np.sqrt(variance + epsilon) + b


def _moments(x, axis, mask=None):
    """Biased two-pass per-channel moments, shape (C,).

    ``mask`` follows Keras BN: rank ``ndim - 1``, broadcast by appending a trailing axis (``mask[..., None]``),
    nonzero = included. Keras divides by ``count + 1e-7``; the oracle divides by the exact count (a relative
    difference of 1e-7 / count) and, like Keras up to that 1e-7, gives 0 for a channel with no selected entry.
    """
    red = tuple(i for i in range(x.ndim) if i != axis)
    if mask is None:
        mean = x.mean(axis=red, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=red)
        return mean.reshape(-1), var
    mask = np.asarray(mask)
    if mask.ndim != x.ndim - 1:
        raise ValueError(f"mask must have rank {x.ndim - 1}, got shape {mask.shape}")
    w = np.broadcast_to(mask[..., None].astype(bool), x.shape).astype(np.float64)
    count = w.sum(axis=red, keepdims=True)
    safe = np.where(count > 0, count, 1.0)
    mean = (w * x).sum(axis=red, keepdims=True) / safe
    var = (w * (x - mean) ** 2).sum(axis=red, keepdims=True) / safe  # two-pass, weighted
    return mean.reshape(-1), var.reshape(-1)


def batch_norm_train(x, gamma, beta, axis=-1, epsilon=1e-3, mask=None):
    """Keras BN in training (§3.1): returns ``(y, mean, variance)``, the statistics with shape (C,).

    The variance is the biased batch variance. With ``mask``, masked-out entries are excluded from the moments
    but ``y`` is still computed for every entry (as Keras does).
    """
    x = _f64(x)
    axis = _channel_axis(x, axis)
    mean, var = _moments(x, axis, mask)
    return _normalize(x, mean, var, gamma, beta, axis, epsilon), mean, var


def _entry_counts(x, axis, mask=None):
    """(C,) number of entries per channel that count: all of them, or the unmasked ones (Keras mask convention)."""
    red = tuple(i for i in range(x.ndim) if i != axis)
    w = np.ones(x.shape) if mask is None else np.broadcast_to(np.asarray(mask)[..., None].astype(bool), x.shape)
    return w.sum(axis=red).astype(np.float64)


def ghost_batch_norm_train(x, gamma, beta, axis=-1, epsilon=1e-3, virtual_batch_size=None, mask=None):
    """Ghost BN in training (§3.2, §3.5): returns ``(y, mean, variance)``.

    Ghost k is the consecutive slice ``x[k*B':(k+1)*B']``; the last one is smaller when N is not a multiple of
    B'. Each ghost is normalized with its own biased statistics. The returned (C,) mean and variance, which feed
    the single moving-average update per step, are the ghost statistics averaged with weights ``n_k / N``
    (decision box of §3; for equal ghosts this is the plain mean over ghosts).

    ``mask`` (Keras convention, see ``_moments``): each ghost's statistics are its masked moments (0 and 0 for a
    ghost with no unmasked entry), and the pooling weights are each ghost's share of the unmasked entries of the
    channel, ``n_kc / sum_j n_jc`` (without a mask the entries per channel are ``n_k * S``, the same weights).
    A channel with no unmasked entry in the whole batch pools to 0 and 0.
    """
    x = _f64(x)
    axis = _channel_axis(x, axis)
    if axis == 0:
        raise ValueError("ghost batches split axis 0, which cannot also be the channel axis")
    n = x.shape[0]
    if virtual_batch_size is not None and (int(virtual_batch_size) != virtual_batch_size or virtual_batch_size < 1):
        raise ValueError(f"virtual_batch_size must be a positive int, got {virtual_batch_size!r}")
    # None or >= N: a single ghost, i.e. plain BN (the same loop runs once).
    bv = n if virtual_batch_size is None else min(int(virtual_batch_size), n)
    ys = []
    mean = np.zeros(x.shape[axis])
    var = np.zeros(x.shape[axis])
    total = _entry_counts(x, axis, mask)
    for start in range(0, n, bv):
        ghost = x[start:start + bv]
        ghost_mask = None if mask is None else np.asarray(mask)[start:start + bv]
        y_k, mean_k, var_k = batch_norm_train(ghost, gamma, beta, axis, epsilon, ghost_mask)
        ys.append(y_k)
        share = np.divide(_entry_counts(ghost, axis, ghost_mask), total, out=np.zeros_like(total), where=total > 0)
        mean += mean_k * share
        var += var_k * share
    return np.concatenate(ys, axis=0), mean, var


def moving_average(old, batch_stat, momentum):
    """Keras momentum convention (§1.2): ``momentum`` weights the old value."""
    return _f64(old) * momentum + _f64(batch_stat) * (1.0 - momentum)


def batch_norm_inference(x, moving_mean, moving_variance, gamma, beta, axis=-1, epsilon=1e-3,
                         example_weight=0.0):
    """BN inference with inference example weighing (§4.2), in the raw-moment form.

    alpha = ``example_weight``. Per-example moments s1, s2 are taken over every axis except the batch axis 0 and
    the channel axis (for rank 2: s1 = x, s2 = x**2). The example's and the population's first and second moments
    are mixed, the population second moment being ``moving_variance + moving_mean**2``; the mixed variance is
    clamped at 0 before epsilon is added. alpha = 0 is plain BN inference (up to float64 round-off).
    """
    x = _f64(x)
    axis = _channel_axis(x, axis)
    alpha = float(example_weight)
    shape = _bshape(x, axis)
    mm = _f64(moving_mean).reshape(shape)
    mv = _f64(moving_variance).reshape(shape)
    red = tuple(i for i in range(x.ndim) if i not in (0, axis))
    s1 = x.mean(axis=red, keepdims=True)  # an empty `red` leaves x unchanged: s1 = x, s2 = x**2
    s2 = (x**2).mean(axis=red, keepdims=True)
    mu = alpha * s1 + (1.0 - alpha) * mm
    second = alpha * s2 + (1.0 - alpha) * (mv + mm**2)
    var = np.maximum(second - mu**2, 0.0)
    g, b = _affine(x, gamma, beta, axis)
    return g * (x - mu) / np.sqrt(var + epsilon) + b


def initial_renorm_state(moving_mean, moving_variance):
    """Renorm state as Keras >= 3.14 builds it: stddevs are sqrt of the moving-variance initial value."""
    mm, mv = _f64(moving_mean), _f64(moving_variance)
    return {
        "moving_mean": mm.copy(),
        "moving_variance": mv.copy(),
        "moving_stddev": np.sqrt(mv),
        "renorm_mean": mm.copy(),
        "renorm_stddev": np.sqrt(mv),
    }


def batch_renorm_train(x, gamma, beta, state, axis=-1, epsilon=1e-3, momentum=0.99, renorm_momentum=0.99,
                       renorm_clipping=None, frozen_input=None, mask=None):
    """One training step of Batch Renormalization, Keras >= 3.14 semantics (§14.1, §14.4).

    ``state`` holds (C,) arrays ``moving_mean, moving_variance, moving_stddev, renorm_mean, renorm_stddev``.
    Returns ``(y, new_state)``.

    * sigma_B = sqrt(var_B + eps); r = sigma_B / s and d = (mu_B - renorm_mean) / s, where s is renorm_stddev
      floored at sqrt(eps). ``renorm_clipping`` keys rmin, rmax, dmax clip r and d; a missing key means no clip.
    * r, d are composed into the affine: gamma' = r * gamma, beta' = d * gamma + beta, then
      y = gamma' * (x - mu_B) / sigma_B + beta'. (In Keras r, d are stop-gradiented; irrelevant for values.)
    * Updates use the old values: renorm_mean and renorm_stddev (unfloored) with ``renorm_momentum``;
      moving_mean and moving_stddev with ``momentum``; moving_variance = relu(moving_stddev**2 - eps) from the
      *new* moving_stddev (the old moving_variance is not read).
    * ``frozen_input``: r and d are stop-gradiented, so for finite differences they must not move with ``x``;
      when given, r and d are computed from the batch statistics of ``frozen_input`` instead of ``x``.
    * ``mask`` (Keras convention): the batch statistics, and so r, d and the updates, are the masked moments.
    """
    x = _f64(x)
    axis = _channel_axis(x, axis)
    clip = renorm_clipping or {}
    unknown = set(clip) - {"rmax", "rmin", "dmax"}
    if unknown:
        raise ValueError(f"unknown renorm_clipping keys: {sorted(unknown)}")
    old = {k: _f64(state[k]) for k in _RENORM_KEYS}

    mean, var = _moments(x, axis, mask)
    stddev = np.sqrt(var + epsilon)
    s = np.maximum(old["renorm_stddev"], np.sqrt(epsilon))  # avoids dividing by ~0 early in training
    corr_mean, corr_var = (mean, var) if frozen_input is None else _moments(_f64(frozen_input), axis, mask)
    r = np.sqrt(corr_var + epsilon) / s
    d = (corr_mean - old["renorm_mean"]) / s
    if clip.get("rmin") is not None:
        r = np.maximum(r, clip["rmin"])
    if clip.get("rmax") is not None:
        r = np.minimum(r, clip["rmax"])
    if clip.get("dmax") is not None:
        d = np.clip(d, -clip["dmax"], clip["dmax"])

    c = x.shape[axis]
    gamma = np.ones(c) if gamma is None else _f64(gamma)
    beta = np.zeros(c) if beta is None else _f64(beta)
    y = _normalize(x, mean, var, r * gamma, d * gamma + beta, axis, epsilon)

    moving_stddev = moving_average(old["moving_stddev"], stddev, momentum)
    new_state = {
        "renorm_mean": moving_average(old["renorm_mean"], mean, renorm_momentum),
        "renorm_stddev": moving_average(old["renorm_stddev"], stddev, renorm_momentum),
        "moving_mean": moving_average(old["moving_mean"], mean, momentum),
        "moving_stddev": moving_stddev,
        "moving_variance": np.maximum(moving_stddev**2 - epsilon, 0.0),
    }
    return y, new_state


def ghost_batch_renorm_train(x, gamma, beta, state, axis=-1, epsilon=1e-3, momentum=0.99, renorm_momentum=0.99,
                             renorm_clipping=None, virtual_batch_size=None, frozen_input=None, mask=None):
    """Batch Renorm per ghost batch (decision box of §3 and §14): returns ``(y, new_state)``.

    Every consecutive ghost is renormalized by ``batch_renorm_train`` against the *same* old state (its own
    r_k, d_k). The state is then updated once, as one renorm step would be, from the ghost statistics pooled
    with weights ``n_k / N`` (mean, and stddev = sqrt(pooled variance + eps)). ``frozen_input``: see
    ``batch_renorm_train``. ``mask``: each ghost's masked moments, pooled as in ``ghost_batch_norm_train``.
    """
    x = _f64(x)
    axis = _channel_axis(x, axis)
    n = x.shape[0]
    bv = n if virtual_batch_size is None else min(int(virtual_batch_size), n)
    ys = []
    for start in range(0, n, bv):
        frozen = None if frozen_input is None else _f64(frozen_input)[start:start + bv]
        ghost_mask = None if mask is None else np.asarray(mask)[start:start + bv]
        y_k, _ = batch_renorm_train(x[start:start + bv], gamma, beta, state, axis, epsilon, momentum,
                                    renorm_momentum, renorm_clipping, frozen, ghost_mask)
        ys.append(y_k)
    _, mean, var = ghost_batch_norm_train(x, None, None, axis, epsilon, bv, mask)
    old = {k: _f64(state[k]) for k in _RENORM_KEYS}
    stddev = np.sqrt(var + epsilon)
    moving_stddev = moving_average(old["moving_stddev"], stddev, momentum)
    new_state = {
        "renorm_mean": moving_average(old["renorm_mean"], mean, renorm_momentum),
        "renorm_stddev": moving_average(old["renorm_stddev"], stddev, renorm_momentum),
        "moving_mean": moving_average(old["moving_mean"], mean, momentum),
        "moving_stddev": moving_stddev,
        "moving_variance": np.maximum(moving_stddev**2 - epsilon, 0.0),
    }
    return np.concatenate(ys, axis=0), new_state

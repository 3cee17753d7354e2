"""Float64 NumPy oracle for BatchGroupNormalization (the Four Things BN/GN combination).

Written from the specification (``ALGORITHMS.md``), independently of the package:

* §2 (training)   per-example, per-channel spatial moments s1, s2; the moving state holds the full-batch averages
  of s1 and s2 (raw first and second moments, not a variance), updated once per step with Keras momentum;
  each (example group of E consecutive examples) x (channel group of C_g consecutive channels) cell is
  normalized with mu = mean of s1 over the cell and sigma^2 = mean of s2 over the cell - mu^2 (the official
  sufficient-statistics formula), with a per-channel affine;
* §2 (inference)  the moving moments averaged over each channel group, mixed with the example's own group
  moments by alpha: mu~ = (1-alpha) M1 + alpha S1, sigma~^2 = (1-alpha) M2 + alpha S2 - mu~^2 (moments, not
  variances), clamped at 0 (the keras_norms addition, §6 decision box);
* §6 decision box  groups=-1 is one channel per group; groups must divide C; E is capped at N; a batch that is
  not a multiple of E ends with a smaller example group.

Deliberately naive: explicit loops over example groups and channel groups, the channel axis moved last.
"""

import numpy as np

__all__ = [
    "batch_group_norm_train",
    "batch_group_norm_inference",
    "batch_group_norm_oracle",
]


def _f64(a):
    return np.asarray(a, np.float64)


def _channels_last(x, axis):
    """``x`` (float64) with the channel axis moved last, and the canonical axis."""
    x = _f64(x)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis={axis} is out of bounds for an input of rank {x.ndim}")
    axis = axis % x.ndim
    if axis == 0:
        raise ValueError("axis 0 is the batch axis")
    return np.moveaxis(x, axis, -1), axis


def _num_groups(groups, channels):
    g = channels if groups == -1 else int(groups)
    if g < 1 or channels % g:
        raise ValueError(f"groups={groups} does not divide {channels} channels")
    return g


def _spatial_moments(x):
    """s1[n, c], s2[n, c]: per-example, per-channel means of x and x**2 over the spatial axes (§1.2).

    ``x`` is channels-last; for rank 2 (no spatial axes) s1 = x and s2 = x**2.
    """
    n, c = x.shape[0], x.shape[-1]
    flat = x.reshape(n, -1, c)
    return flat.mean(axis=1), (flat**2).mean(axis=1)


def _vectors(gamma, beta, channels):
    gamma = np.ones(channels) if gamma is None else _f64(gamma)
    beta = np.zeros(channels) if beta is None else _f64(beta)
    return gamma, beta


def _weighted_moments(x, w, axis=None):
    """Mean of ``x`` and of ``x**2`` over the entries with weight 1 (0 and 0 where there is none)."""
    count = w.sum(axis=axis)
    safe = np.where(count > 0, count, 1.0)
    return (w * x).sum(axis=axis) / safe, (w * x**2).sum(axis=axis) / safe


def batch_group_norm_train(x, gamma, beta, axis=-1, epsilon=1e-3, groups=32, examples_per_group=2, mask=None):
    """Training step (§2 training, §6.1): returns ``(y, mean, second_moment)``.

    ``mean`` and ``second_moment`` are the (C,) full-batch averages of s1 and s2, which feed the moving state.
    Cell statistics use the official formulas: mu = mean s1, sigma^2 = mean s2 - mu^2 over the cell's examples
    and channels (every example in a cell has the same number S of spatial positions, so this is the biased
    variance over E * C_g * S elements).

    ``mask`` (Keras BN's convention: rank ``ndim - 1``, a trailing axis appended, nonzero = included): the same
    raw-moment formulas over the unmasked entries only, for every cell and for the full-batch moments; a cell
    (or a channel) with no unmasked entry gets mu = sigma^2 = 0 (moments 0 and 0). Every entry is normalized.
    """
    xl, axis = _channels_last(x, axis)
    n, c = xl.shape[0], xl.shape[-1]
    g_count = _num_groups(groups, c)
    cg = c // g_count
    e = max(1, min(int(examples_per_group), n))
    gamma, beta = _vectors(gamma, beta, c)
    if mask is None:
        w = np.ones(xl.shape)
    else:  # broadcast in the input's own layout, then moved like x
        w = np.moveaxis(np.broadcast_to(np.asarray(mask)[..., None].astype(bool), np.shape(x)), axis, -1)
        w = w.astype(np.float64)
    y = np.empty_like(xl)
    for start in range(0, n, e):
        examples = slice(start, min(start + e, n))
        for g in range(g_count):
            channels = slice(g * cg, (g + 1) * cg)
            cell = xl[examples, ..., channels]
            mu, second = _weighted_moments(cell, w[examples, ..., channels])
            var = second - mu**2
            y[examples, ..., channels] = (
                gamma[channels] * (cell - mu) / np.sqrt(var + epsilon) + beta[channels]
            )
    mean, second_moment = _weighted_moments(xl.reshape(-1, c), w.reshape(-1, c), axis=0)
    return np.moveaxis(y, -1, axis), mean, second_moment


def batch_group_norm_inference(x, moving_mean, moving_second_moment, gamma, beta, axis=-1, epsilon=1e-3,
                               groups=32, example_weight=0.0):
    """Inference (§2 inference, with the §6 clamp), example by example and group by group."""
    xl, axis = _channels_last(x, axis)
    n, c = xl.shape[0], xl.shape[-1]
    g_count = _num_groups(groups, c)
    cg = c // g_count
    alpha = float(example_weight)
    gamma, beta = _vectors(gamma, beta, c)
    m1, m2 = _f64(moving_mean), _f64(moving_second_moment)
    s1, s2 = _spatial_moments(xl)
    y = np.empty_like(xl)
    for i in range(n):
        for g in range(g_count):
            channels = slice(g * cg, (g + 1) * cg)
            pop1, pop2 = m1[channels].mean(), m2[channels].mean()
            own1, own2 = s1[i, channels].mean(), s2[i, channels].mean()
            mu = (1.0 - alpha) * pop1 + alpha * own1
            var = max((1.0 - alpha) * pop2 + alpha * own2 - mu**2, 0.0)
            y[i, ..., channels] = gamma[channels] * (xl[i, ..., channels] - mu) / np.sqrt(var + epsilon) + beta[
                channels
            ]
    return np.moveaxis(y, -1, axis)


def batch_group_norm_oracle(
    x,
    weights,
    training,
    axis=-1,
    momentum=0.99,
    epsilon=1e-3,
    groups=32,
    examples_per_group=2,
    inference_example_weight=0.0,
    frozen_input=None,
    mask=None,
    **_,
):
    """The registry adapter (``tests/cases.py``): ``(y, new_state)`` for one call of the layer.

    ``frozen_input`` is ignored: no quantity of this layer sits behind a stop-gradient (the moving state is not
    part of the output).

    ``weights`` maps ``gamma``, ``beta`` (each optional), ``moving_mean`` and ``moving_second_moment`` to arrays.
    In training the new state is the old one mixed with the full-batch moments by ``momentum`` (Keras convention,
    ``momentum`` weights the old value); at inference the state is unchanged (``{}``).
    """
    gamma, beta = weights.get("gamma"), weights.get("beta")
    if not training:
        y = batch_group_norm_inference(
            x,
            weights["moving_mean"],
            weights["moving_second_moment"],
            gamma,
            beta,
            axis,
            epsilon,
            groups,
            inference_example_weight,
        )
        return y, {}
    y, mean, second_moment = batch_group_norm_train(x, gamma, beta, axis, epsilon, groups, examples_per_group, mask)
    return y, {
        "moving_mean": _f64(weights["moving_mean"]) * momentum + mean * (1.0 - momentum),
        "moving_second_moment": _f64(weights["moving_second_moment"]) * momentum + second_moment * (1.0 - momentum),
    }

"""Float64 NumPy oracles for layer normalization (Ba et al. 2016, eq. 4) and RMS normalization (Zhang & Sennrich
2019, eq. 4).

Written from the papers' equations, independently of the package: each example's slice over the normalized axes A
(every other index fixed) is one row; layer norm: mu = mean of the row, sigma^2 = mean of (x - mu)^2 (biased),
y = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta; RMS norm: y = gamma * x / sqrt(mean of x^2 + eps). gamma and beta
span A and are laid out as Keras lays them out: the sizes of the axes sorted as passed, read in row-major order over
the normalized axes in ascending order. Stateless: training and inference are the same function.

Deliberately naive: the normalized axes moved last, an explicit loop over the rows.
"""

import numpy as np

__all__ = ["layer_norm", "layer_norm_oracle", "rms_norm", "rms_norm_oracle"]


def _rows(x, axis):
    """`(rows, undo)`: `x` as `(rows, features)` with the normalized axes last, and the function putting it back."""
    x = np.asarray(x, np.float64)
    axes = sorted({a % x.ndim for a in (axis if isinstance(axis, (list, tuple)) else [axis])})
    others = [i for i in range(x.ndim) if i not in axes]
    moved = np.transpose(x, others + axes)
    rows = moved.reshape(-1, int(np.prod([x.shape[a] for a in axes])))
    return rows, lambda r: np.transpose(r.reshape(moved.shape), np.argsort(others + axes))


def _row_weight(w, width, default):
    return np.full(width, default) if w is None else np.asarray(w, np.float64).reshape(width)


def layer_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3):
    rows, undo = _rows(x, axis)
    gamma, beta = _row_weight(gamma, rows.shape[1], 1.0), _row_weight(beta, rows.shape[1], 0.0)
    y = np.empty_like(rows)
    for i, row in enumerate(rows):
        mu = row.mean()
        var = ((row - mu) ** 2).mean()
        y[i] = gamma * (row - mu) / np.sqrt(var + epsilon) + beta
    return undo(y)


def rms_norm(x, scale=None, axis=-1, epsilon=1e-6):
    rows, undo = _rows(x, axis)
    scale = _row_weight(scale, rows.shape[1], 1.0)
    y = np.empty_like(rows)
    for i, row in enumerate(rows):
        y[i] = scale * row / np.sqrt((row**2).mean() + epsilon)
    return undo(y)


def layer_norm_oracle(x, weights, training, axis=-1, epsilon=1e-3, frozen_input=None, **_):
    """The registry's oracle signature: `(y, new_state)`, with no state."""
    return layer_norm(x, weights.get("gamma"), weights.get("beta"), axis, epsilon), {}


def rms_norm_oracle(x, weights, training, axis=-1, epsilon=1e-6, frozen_input=None, **_):
    return rms_norm(x, weights.get("scale"), axis, epsilon), {}

"""Float64 NumPy oracle of Memorized Batch Normalization (spec §9.2, §9.4, and its decision box).

Written from the spec's equations, not from the package: the memory holds
raw moments $E[x]$, $E[x^2]$ per slot, the statistics are pooled with
normalized weights over the used slots in the raw-moment form

    mu = sum_j eta_j m1_j,   var = max(sum_j eta_j m2_j - mu^2, 0),

slot n mod k takes the current batch, and the counter is wrapped into
[k, 2k) once the memory is full (the package's documented representation).
`MemoryReplay` replays a sequence of batches step by step.
"""

import numpy as np


def _channel_last(x, axis):
    return np.moveaxis(np.asarray(x, np.float64), axis, -1)


def batch_raw_moments(x, axis=-1):
    """Per-channel E[x] and E[x^2] over every axis except `axis`."""
    z = _channel_last(x, axis).reshape(-1, np.shape(x)[axis])
    return z.mean(0), np.square(z).mean(0)


def slot_weights(newest, filled, size, memory_weights=None):
    """Normalized weights of slots 0..size-1; slot i holds the batch of age (newest - i) mod size."""
    raw = np.zeros(size)
    for i in range(int(filled)):
        age = (newest - i) % size
        raw[i] = 1.0 if memory_weights is None else float(memory_weights[age])
    total = raw.sum()
    return raw / total if total > 0 else raw


def advance(count, size):
    following = int(count) + 1
    return following if following < size else size + following % size


def pooled(m1, m2, weights):
    mu = weights @ m1
    return mu, np.maximum(weights @ m2 - mu**2, 0.0)


def _normalize(x, mu, var, gamma, beta, axis, epsilon):
    shape = [1] * np.ndim(x)
    shape[axis] = -1
    y = (np.asarray(x, np.float64) - mu.reshape(shape)) / np.sqrt(var.reshape(shape) + epsilon)
    if gamma is not None:
        y = y * np.reshape(gamma, shape)
    if beta is not None:
        y = y + np.reshape(beta, shape)
    return y


def memorized_batch_norm_oracle(
    x,
    weights,
    training,
    memory_size=4,
    memory_weights=None,
    axis=-1,
    epsilon=1e-3,
    frozen_input=None,
    **_,
):
    """The conformance-suite oracle: one call; returns `(y, new_state)`."""
    gamma, beta = weights.get("gamma"), weights.get("beta")
    m1 = np.array(weights["memory_mean"], np.float64)
    m2 = np.array(weights["memory_second_moment"], np.float64)
    count = int(round(float(weights["memory_count"])))
    k = memory_size
    if not training:
        filled = min(count, k)
        if filled == 0:
            mu, var = np.zeros(m1.shape[1]), np.ones(m1.shape[1])
        else:
            mu, var = pooled(m1, m2, slot_weights((count - 1) % k, filled, k, memory_weights))
        return _normalize(x, mu, var, gamma, beta, axis, epsilon), {}
    slot = count % k
    b1, b2 = batch_raw_moments(x, axis)
    used1, used2 = m1.copy(), m2.copy()
    used1[slot], used2[slot] = b1, b2
    mu, var = pooled(used1, used2, slot_weights(slot, min(count + 1, k), k, memory_weights))
    y = _normalize(x, mu, var, gamma, beta, axis, epsilon)
    return y, {"memory_mean": used1, "memory_second_moment": used2, "memory_count": np.float64(advance(count, k))}


class MemoryReplay:
    """Replays training and inference calls of one MBN layer on a sequence of batches."""

    def __init__(self, channels, memory_size=4, memory_weights=None, axis=-1, epsilon=1e-3, gamma=None, beta=None):
        self.k, self.memory_weights, self.axis, self.epsilon = memory_size, memory_weights, axis, epsilon
        self.gamma, self.beta = gamma, beta
        self.m1 = np.zeros((memory_size, channels))
        self.m2 = np.zeros((memory_size, channels))
        self.count = 0

    def state(self):
        return {"memory_mean": self.m1, "memory_second_moment": self.m2, "memory_count": np.float64(self.count)}

    def _weights(self):
        return {"memory_mean": self.m1, "memory_second_moment": self.m2, "memory_count": self.count,
                **({"gamma": self.gamma} if self.gamma is not None else {}),
                **({"beta": self.beta} if self.beta is not None else {})}

    def __call__(self, x, training):
        y, new = memorized_batch_norm_oracle(
            x, self._weights(), training, self.k, self.memory_weights, self.axis, self.epsilon
        )
        if training:
            self.m1, self.m2, self.count = new["memory_mean"], new["memory_second_moment"], int(new["memory_count"])
        return y

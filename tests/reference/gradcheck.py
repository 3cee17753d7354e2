"""Central-difference gradients for checking analytic or autodiff gradients against float64 oracles.

Used for the gradient items of the test plan (ALGORITHMS.md §16), e.g. that no gradient reaches the input of a
rank-2 ghost batch of size 1 (§3.6).
"""

import numpy as np

__all__ = ["numerical_gradient"]


def numerical_gradient(f, x, eps=1e-6):
    """Gradient of a scalar function ``f`` at ``x`` by central differences.

    ``g[i] = (f(x + eps*e_i) - f(x - eps*e_i)) / (2*eps)`` for every element i of ``x``. The truncation error is
    O(eps**2) and the round-off error O(|f| * 1e-16 / eps); eps = 1e-6 balances them to roughly 1e-9 relative for
    well-scaled float64 functions. ``f`` is called 2 * x.size times, on copies, so ``x`` is never modified.
    Returns a float64 array shaped like ``x``.
    """
    x = np.array(x, dtype=np.float64)  # a copy we are free to perturb
    grad = np.zeros_like(x)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)  # views into x and grad
    for i in range(flat_x.size):
        orig = flat_x[i]
        flat_x[i] = orig + eps
        f_plus = float(f(x.copy()))
        flat_x[i] = orig - eps
        f_minus = float(f(x.copy()))
        flat_x[i] = orig
        flat_g[i] = (f_plus - f_minus) / (2.0 * eps)
    return grad

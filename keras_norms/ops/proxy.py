"""Proxy Normalization as functions: the quadrature grid, the proxy moments, the op.

Labatie, Masters, Eaton-Rosen & Luschi, "Proxy-Normalizing Activations to
Match Batch Normalization while Removing Batch Dependence", NeurIPS 2021.
No official code was found; an unofficial PyTorch `ProxyNorm2d` was read, and
its quirks are not copied: here every channel gets its own $S_q$
quadrature points, and the quadrature offset is not the epsilon. See the
Design notes page of the documentation, section Proxy Normalization.

Proxy Normalization normalizes the output of an activation
$\\phi$ applied after a per-channel affine, with statistics taken over a
Gaussian **proxy** of the pre-activation rather than over the data:

$$\\hat z=\\frac{\\phi(\\gamma_c\\,y+\\beta_c)-E_Y[\\phi(\\gamma_c Y_c+\\beta_c)]}
{\\sqrt{\\operatorname{Var}_Y[\\phi(\\gamma_c Y_c+\\beta_c)]+\\epsilon}},
\\qquad Y_c\\sim\\mathcal N(\\tilde\\beta_c,(1+\\tilde\\gamma_c)^2)$$

($Y_c\\sim\\mathcal N(0,1)$ without the optional proxy affine
$\\tilde\\gamma,\\tilde\\beta$). The expectations are a deterministic
equal-weight quadrature over $S_q$ Gaussian quantiles,

$$y_s=\\sqrt2\\,\\operatorname{erfinv}\\big(2(s+\\tfrac12)/S_q-1\\big)
=\\Phi^{-1}\\big((s+\\tfrac12)/S_q\\big),\\qquad s=0,\\dots,S_q-1,$$

$$E_Y[f(Y_c)]\\approx\\frac1{S_q}\\sum_s f(\\tilde\\beta_c+(1+\\tilde\\gamma_c)\\,y_s),$$

and the variance is the two-pass (centred) variance over the same points.
The grid is a constant computed once per $S_q$ in float64 (Python's
`statistics.NormalDist.inv_cdf`, accurate to double precision); the moments
are computed in float32 (float64 stays float64) and gradients flow through
them into $\\gamma,\\beta$ (and $\\tilde\\gamma,\\tilde\\beta$). Results come
back in the statistics dtype for the caller to cast.

Measured quadrature error of the default $S_q=256$ against the exact
Gaussian moments, for relu, gelu and swish with $\\gamma\\in[0.7,1.5]$ and
$|\\beta|\\le1$: at most 6.1e-4 on the mean and 0.82% on the standard
deviation (both too small: the grid truncates the tails beyond
$|y|\\approx2.89$); it grows where only the tail of the proxy is active
(relu with $\\beta=-2$: 9% on the standard deviation). The error falls as
$1/S_q$.
"""

import functools
import statistics

import keras
import numpy as np
from keras import ops

from keras_norms.ops import _common
from keras_norms.ops import _stats

DEFAULT_NUM_POINTS = 256
"""Default number of quadrature points $S_q$: this package's choice (the paper's value is not confirmed)."""

# Activations that mix channels (not elementwise): a per-channel proxy cannot describe them.
NON_ELEMENTWISE_ACTIVATIONS = ("softmax", "log_softmax")


def check_num_points(num_points, owner="proxy_norm"):
    """Returns `num_points` if it is an int >= 2, else raises a ValueError naming `owner`."""
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 2:
        raise ValueError(
            f"{owner}: `num_points` must be an int >= 2 (the number of "
            f"Gaussian quadrature points, a few hundred such as "
            f"{DEFAULT_NUM_POINTS}), received num_points={num_points!r}."
        )
    return int(num_points)


@functools.lru_cache(maxsize=None)
def _grid(num_points):
    normal = statistics.NormalDist()
    points = np.array([normal.inv_cdf((s + 0.5) / num_points) for s in range(num_points)])
    points = 0.5 * (points - points[::-1])  # exactly antisymmetric, so the grid mean is 0
    points.setflags(write=False)
    return points


def quantile_grid(num_points=DEFAULT_NUM_POINTS):
    """The $S_q$ Gaussian quantile points $y_s=\\Phi^{-1}((s+\\frac12)/S_q)$.

    $$y_s=\\sqrt2\\,\\operatorname{erfinv}\\big(2(s+\\tfrac12)/S_q-1\\big),
    \\qquad s=0,\\dots,S_q-1.$$

    Computed once per `num_points` in float64 and cached.

    Args:
        num_points: int >= 2, $S_q$. Defaults to 256.

    Returns:
        A read-only float64 NumPy array of shape `(num_points,)`, increasing
        and antisymmetric ($y_{S_q-1-s}=-y_s$).

    Raises:
        ValueError: if `num_points` is not an int >= 2.
    """
    return _grid(check_num_points(num_points, "quantile_grid"))


def get_activation(activation, owner="proxy_norm"):
    """`activation` (a Keras activation name, a serialized one or a callable) as a callable.

    Raises:
        ValueError: for `None`, an unknown name or object, or an
            activation that is not elementwise (softmax, log_softmax).
    """
    fix = "Pass an elementwise Keras activation such as 'relu', 'gelu' or 'swish', or a callable."
    if activation is None:
        raise ValueError(f"{owner}: `activation` is required, received activation=None. {fix}")
    if isinstance(activation, str) and activation in NON_ELEMENTWISE_ACTIVATIONS:
        raise ValueError(
            f"{owner}: activation={activation!r} is not elementwise, so a per-channel "
            f"proxy cannot describe it. {fix}"
        )
    try:
        function = keras.activations.get(activation)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{owner}: unknown `activation`={activation!r} ({error}). {fix}") from None
    if function in (keras.activations.softmax, keras.activations.log_softmax):
        raise ValueError(
            f"{owner}: activation={activation!r} is not elementwise, so a per-channel "
            f"proxy cannot describe it. {fix}"
        )
    return function


def _grid_tensor(grid, dtype):
    if grid is None:
        grid = quantile_grid(DEFAULT_NUM_POINTS)
    elif isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        grid = quantile_grid(grid)
    if not ops.is_tensor(grid):
        grid = np.asarray(grid, "float64")
    return ops.cast(ops.convert_to_tensor(grid), dtype)


def _column(v, dtype):
    """A per-channel vector (or scalar) as a `(C, 1)` (or `(1, 1)`) column in `dtype`."""
    return ops.reshape(ops.cast(v, dtype), (-1, 1))


def proxy_moments(gamma, beta, activation, grid=None, proxy_gamma=None, proxy_beta=None):
    """Mean and variance of $\\phi(\\gamma_c Y_c+\\beta_c)$ over the proxy, per channel.

    $$E_c=\\frac1{S_q}\\sum_s\\phi(\\gamma_c u_{c,s}+\\beta_c),\\qquad
    V_c=\\frac1{S_q}\\sum_s\\big(\\phi(\\gamma_c u_{c,s}+\\beta_c)-E_c\\big)^2,$$

    with $u_{c,s}=\\tilde\\beta_c+(1+\\tilde\\gamma_c)\\,y_s$ when a proxy
    affine is given and $u_{c,s}=y_s$ otherwise; $y_s$ is `grid`. The sums
    run in float32 (float64 if `gamma` is float64); gradients flow into every
    argument.

    Args:
        gamma: `(C,)` scale before $\\phi$, or `None` for 1.
        beta: `(C,)` shift before $\\phi$, or `None` for 0.
        activation: a Keras activation name or an elementwise callable.
        grid: 1-D array of quadrature points, or an int $S_q$ for
            `quantile_grid(S_q)`. Defaults to `quantile_grid(256)`.
        proxy_gamma: optional `(C,)` $\\tilde\\gamma$ (the proxy's standard
            deviation is $1+\\tilde\\gamma$).
        proxy_beta: optional `(C,)` $\\tilde\\beta$, the proxy's mean.

    Returns:
        `(mean, variance)`, each of shape `(C,)` (or `(1,)` when no argument
        has a channel dimension), in float32 or float64.

    Raises:
        ValueError: for an unknown or non-elementwise `activation`, or a bad
            `grid` size.
    """
    activation = get_activation(activation, "proxy_moments")
    vectors = (gamma, beta, proxy_gamma, proxy_beta)
    dtypes = [_stats.statistics_dtype(getattr(v, "dtype", "float32")) for v in vectors if v is not None]
    dtype = "float64" if "float64" in dtypes else "float32"
    points = ops.reshape(_grid_tensor(grid, dtype), (1, -1))  # (1, S)
    if proxy_gamma is not None:
        points = (1.0 + _column(proxy_gamma, dtype)) * points
    if proxy_beta is not None:
        points = points + _column(proxy_beta, dtype)
    if gamma is not None:
        points = _column(gamma, dtype) * points
    if beta is not None:
        points = points + _column(beta, dtype)
    values = ops.cast(activation(points), dtype)  # (C, S)
    # Two-pass: never negative, no clamp needed (ops.maximum(v, 0.0) would also turn float64 into float32 on torch).
    return _stats.moments(values, axes=[1])


def proxy_norm(
    y, gamma=None, beta=None, activation="relu", grid=None, epsilon=1e-3, axis=-1, proxy_gamma=None, proxy_beta=None
):
    """Affine, activation and Proxy Normalization of `y`, per channel.

    $$\\hat z=\\frac{\\phi(\\gamma_c\\,y+\\beta_c)-E_c}{\\sqrt{V_c+\\epsilon}}$$

    with $E_c,V_c$ from `proxy_moments` (the proxy's statistics, not the
    data's): the result is a per-channel affine map of $\\phi$'s output,
    determined by the parameters alone, so every example is treated
    independently and training equals inference.

    Args:
        y: tensor of rank >= 2, normalized pre-activations (e.g. the output
            of a LayerNormalization or GroupNormalization without affine).
        gamma: `(C,)` scale before $\\phi$, or `None` for 1.
        beta: `(C,)` shift before $\\phi$, or `None` for 0.
        activation: a Keras activation name or an elementwise callable.
            Defaults to `"relu"`.
        grid: 1-D array of quadrature points, or an int $S_q$. Defaults to
            `quantile_grid(256)`.
        epsilon: float > 0 added to the proxy variance inside the square
            root. Defaults to 1e-3.
        axis: int, the channel axis. Defaults to -1.
        proxy_gamma: optional `(C,)` $\\tilde\\gamma$ of the proxy.
        proxy_beta: optional `(C,)` $\\tilde\\beta$ of the proxy.

    Returns:
        A tensor of `y`'s shape in float32 (float64 for float64 `y`).

    Raises:
        ValueError: for an unknown or non-elementwise `activation`, an `axis`
            out of range, or a bad `grid` size.
    """
    activation = get_activation(activation, "proxy_norm")
    x = _stats.upcast(y)
    dtype = x.dtype
    ndim = len(x.shape)
    axis = _stats.canonical_axis(axis, ndim, "proxy_norm")
    mean, variance = proxy_moments(
        None if gamma is None else ops.cast(gamma, dtype),
        None if beta is None else ops.cast(beta, dtype),
        activation,
        grid,
        None if proxy_gamma is None else ops.cast(proxy_gamma, dtype),
        None if proxy_beta is None else ops.cast(proxy_beta, dtype),
    )
    shape = _common.broadcast_shape(ndim, axis, -1)
    pre = x
    if gamma is not None:
        pre = pre * ops.reshape(ops.cast(gamma, dtype), shape)
    if beta is not None:
        pre = pre + ops.reshape(ops.cast(beta, dtype), shape)
    z = ops.cast(activation(pre), dtype)
    mean = ops.reshape(ops.cast(mean, dtype), shape)
    scale = ops.sqrt(ops.reshape(ops.cast(variance, dtype), shape) + epsilon)
    return (z - mean) / scale

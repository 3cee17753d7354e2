"""Self-checks of the float64 NumPy oracles in ``tests.reference`` (pure NumPy, no Keras).

Each test is one of the checks that ALGORITHMS.md tags [derived] in §2 (Four Things consequences), §3 (Ghost BN),
§4 (inference example weighing) and §14 (Batch Renormalization), or a plain sanity check of a helper. Passing
these makes the oracles trustworthy references for the package's parity tests.
"""

import numpy as np
import pytest

from tests.reference import (
    batch_norm_inference,
    batch_norm_train,
    batch_renorm_train,
    ghost_batch_norm_train,
    initial_renorm_state,
    moving_average,
    numerical_gradient,
)

RTOL = 1e-12
ATOL = 1e-12
EPS = 1e-3


def close(a, b, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def data(shape, seed=0, loc=0.5, scale=2.0):
    return np.random.default_rng(seed).normal(loc, scale, size=shape)


def affine(c, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, c), rng.normal(0.0, 1.0, c)


def instance_norm(x, gamma, beta, eps=EPS):
    """Per-example, per-channel normalization over the spatial axes of a channels-last input."""
    red = tuple(range(1, x.ndim - 1))
    mean = x.mean(axis=red, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=red, keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


# --------------------------------------------------------------------------------------------------------------
# §3.1 plain BN: axes and masks


def test_bn_statistics_and_axis_conventions():
    x = data((6, 4, 5, 3))
    gamma, beta = affine(3)
    y, mean, var = batch_norm_train(x, gamma, beta)
    flat = x.reshape(-1, 3)
    close(mean, flat.mean(axis=0))
    close(var, flat.var(axis=0))  # biased
    close(y, gamma * (x - mean) / np.sqrt(var + EPS) + beta)
    # A positive channel axis is the same axis (Keras Applications pass axis=3).
    close(batch_norm_train(x, gamma, beta, axis=3)[0], y)
    # Channels-first with axis=1 is the transposed channels-last computation.
    y_cf, mean_cf, var_cf = batch_norm_train(x.transpose(0, 3, 1, 2), gamma, beta, axis=1)
    close(y_cf, y.transpose(0, 3, 1, 2))
    close(mean_cf, mean)
    close(var_cf, var)


def test_bn_mask_excludes_entries_from_moments_only():
    x = data((5, 7, 3), seed=2)
    gamma, beta = affine(3)
    mask = np.random.default_rng(3).random((5, 7)) < 0.6
    y, mean, var = batch_norm_train(x, gamma, beta, mask=mask)
    selected = x[mask]  # (K, C): the unmasked rows
    close(mean, selected.mean(axis=0))
    close(var, selected.var(axis=0))
    close(y, gamma * (x - mean) / np.sqrt(var + EPS) + beta)  # every entry is still normalized
    # An all-true mask changes nothing.
    ref = batch_norm_train(x, gamma, beta)
    for a, b in zip(batch_norm_train(x, gamma, beta, mask=np.ones((5, 7), bool)), ref):
        close(a, b)


# --------------------------------------------------------------------------------------------------------------
# §3.2-§3.6 ghost batches


@pytest.mark.parametrize("vbs", [None, 8, 100])
def test_single_ghost_equals_bn(vbs):
    x = data((8, 3, 4, 5))
    gamma, beta = affine(5)
    for got, ref in zip(ghost_batch_norm_train(x, gamma, beta, virtual_batch_size=vbs),
                        batch_norm_train(x, gamma, beta)):
        close(got, ref)


def test_ghost_size_one_on_conv_features_is_instance_norm():
    x = data((5, 4, 3, 6))
    gamma, beta = affine(6)
    y, _, _ = ghost_batch_norm_train(x, gamma, beta, virtual_batch_size=1)
    close(y, instance_norm(x, gamma, beta))


def test_rank2_ghost_of_size_one_outputs_beta_without_gradient():
    gamma, beta = affine(4)
    x = data((6, 4))
    y, _, _ = ghost_batch_norm_train(x, gamma, beta, virtual_batch_size=1)
    np.testing.assert_array_equal(y, np.broadcast_to(beta, y.shape))  # exactly, not approximately
    # A trailing ghost of one example (N=9, B'=4: ghosts of 4, 4, 1) does the same.
    y, _, _ = ghost_batch_norm_train(data((9, 4)), gamma, beta, virtual_batch_size=4)
    np.testing.assert_array_equal(y[-1], beta)
    # No gradient reaches the input or gamma (§3.6).
    w = data((6, 4), seed=5)
    gx = numerical_gradient(lambda v: np.sum(w * ghost_batch_norm_train(v, gamma, beta, virtual_batch_size=1)[0]), x)
    gg = numerical_gradient(lambda g: np.sum(w * ghost_batch_norm_train(x, g, beta, virtual_batch_size=1)[0]), gamma)
    np.testing.assert_array_equal(gx, 0.0)
    np.testing.assert_array_equal(gg, 0.0)


@pytest.mark.parametrize("n, vbs", [(12, 4), (10, 4), (7, 3)])
def test_ghost_statistics_law_of_total_variance(n, vbs):
    # §3.3: count-weighted mean of ghost variances = full-batch variance - (count-weighted) variance of ghost
    # means; the count-weighted mean of ghost means is the full-batch mean. For equal ghosts, plain means.
    x = data((n, 3, 2, 4), seed=n)
    _, mean, var = ghost_batch_norm_train(x, None, None, virtual_batch_size=vbs)
    _, full_mean, full_var = batch_norm_train(x, None, None)
    ghosts = [x[k:k + vbs] for k in range(0, n, vbs)]
    weights = np.array([g.shape[0] / n for g in ghosts])
    ghost_means = np.stack([g.reshape(-1, 4).mean(axis=0) for g in ghosts])
    between = np.sum(weights[:, None] * (ghost_means - full_mean) ** 2, axis=0)
    close(mean, full_mean)
    close(var, full_var - between)
    if n % vbs == 0:
        ghost_vars = np.stack([g.reshape(-1, 4).var(axis=0) for g in ghosts])
        close(var, ghost_vars.mean(axis=0))
        close(var, full_var - ghost_means.var(axis=0))


@pytest.mark.parametrize("n, vbs", [(10, 4), (9, 3), (5, 2)])
def test_ghost_loop_matches_padded_vectorized_form(n, vbs):
    # §3.5: zero-pad to K*B', reshape to (K, B', ...), masked sums divided by the per-ghost counts, slice off.
    x = data((n, 3, 5), seed=7)
    gamma, beta = affine(5)
    k = -(-n // vbs)
    pad = np.concatenate([x, np.zeros((k * vbs - n,) + x.shape[1:])]).reshape((k, vbs) + x.shape[1:])
    valid = (np.arange(k * vbs) < n).reshape(k, vbs, 1, 1).astype(float)
    counts = valid.sum(axis=(1, 2, 3), keepdims=True) * x.shape[1]  # n_k * S
    mean = (pad * valid).sum(axis=(1, 2), keepdims=True) / counts
    var = (valid * (pad - mean) ** 2).sum(axis=(1, 2), keepdims=True) / counts
    y_vec = (gamma * (pad - mean) / np.sqrt(var + EPS) + beta).reshape((-1,) + x.shape[1:])[:n]
    w = counts / (n * x.shape[1])  # n_k / N
    y, ghost_mean, ghost_var = ghost_batch_norm_train(x, gamma, beta, virtual_batch_size=vbs)
    close(y, y_vec)
    close(ghost_mean, (w * mean).sum(axis=0).reshape(-1))
    close(ghost_var, (w * var).sum(axis=0).reshape(-1))


def test_tf_keras_strided_ghosts_match_after_permutation():
    # §3.4: tf-keras reshapes to (B', K, ...) and reduces over B', i.e. ghost j = {j, j+K, ...}. Feeding it
    # x'[i*K + j] = x[j*B' + i] and inverting the permutation reproduces consecutive ghosts.
    n, vbs = 12, 3
    k = n // vbs
    x = data((n, 2, 4), seed=8)
    gamma, beta = affine(4)
    x_perm = x.reshape((k, vbs) + x.shape[1:]).swapaxes(0, 1).reshape(x.shape)
    g = x_perm.reshape((vbs, k) + x.shape[1:])
    mean = g.mean(axis=(0, 2), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(0, 2), keepdims=True)
    y_strided = (gamma * (g - mean) / np.sqrt(var + EPS) + beta).reshape(x.shape)
    y_back = y_strided.reshape((vbs, k) + x.shape[1:]).swapaxes(0, 1).reshape(x.shape)
    y, ghost_mean, ghost_var = ghost_batch_norm_train(x, gamma, beta, virtual_batch_size=vbs)
    close(y_back, y)
    close(mean.mean(axis=1).reshape(-1), ghost_mean)  # the moving update is a mean over the same ghosts
    close(var.mean(axis=1).reshape(-1), ghost_var)


def test_moving_average_keras_convention():
    old, new = np.array([1.0, -2.0]), np.array([3.0, 5.0])
    close(moving_average(old, new, 0.0), new)
    close(moving_average(old, new, 1.0), old)
    close(moving_average(old, new, 0.99), 0.99 * old + 0.01 * new)
    m = old
    for _ in range(5):
        m = moving_average(m, new, 0.9)
    close(m, new + 0.9**5 * (old - new))  # geometric convergence to a constant batch statistic


def test_moment_state_includes_between_batch_spread():
    # §2: the Four Things moment estimate m2 - m1^2 over several batches equals the mean within-batch (Keras BN)
    # variance plus the variance of the batch means.
    batches = [data((4, 3, 2), seed=s, loc=s * 0.3) for s in range(6)]
    m1 = np.mean([b.reshape(-1, 2).mean(axis=0) for b in batches], axis=0)
    m2 = np.mean([(b**2).reshape(-1, 2).mean(axis=0) for b in batches], axis=0)
    stats = [batch_norm_train(b, None, None)[1:] for b in batches]
    within = np.mean([v for _, v in stats], axis=0)
    between = np.var([m for m, _ in stats], axis=0)
    close(m2 - m1**2, within + between)


# --------------------------------------------------------------------------------------------------------------
# §4 inference example weighing


def pop_stats(c, seed=11):
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, c), rng.uniform(0.5, 2.0, c)


def test_example_weight_zero_is_plain_bn_inference():
    x = data((5, 3, 4, 6))
    gamma, beta = affine(6)
    mm, mv = pop_stats(6)
    close(batch_norm_inference(x, mm, mv, gamma, beta), gamma * (x - mm) / np.sqrt(mv + EPS) + beta)
    x_cf = x.transpose(0, 3, 1, 2)
    y_cf = batch_norm_inference(x_cf, mm, mv, gamma, beta, axis=1)
    close(y_cf, (gamma * (x - mm) / np.sqrt(mv + EPS) + beta).transpose(0, 3, 1, 2))


def test_population_second_moment_is_variance_plus_mean_squared():
    # §4.2: with the population (biased) variance, var + mean^2 is E[x^2].
    x = data((7, 3, 5))
    _, mean, var = batch_norm_train(x, None, None)
    close(var + mean**2, (x**2).reshape(-1, 5).mean(axis=0))


@pytest.mark.parametrize("alpha", [0.0, 0.125, 0.5, 0.9])
def test_dense_form_of_example_weighing(alpha):
    # §4.2: on rank 2, mu~ = a x + (1-a) mu, var~ = (1-a) var + a (1-a) (x-mu)^2, x - mu~ = (1-a)(x - mu).
    x = data((9, 5), seed=4)
    gamma, beta = affine(5)
    mm, mv = pop_stats(5)
    var_t = (1 - alpha) * mv + alpha * (1 - alpha) * (x - mm) ** 2
    expected = gamma * (1 - alpha) * (x - mm) / np.sqrt(var_t + EPS) + beta
    close(batch_norm_inference(x, mm, mv, gamma, beta, example_weight=alpha), expected)


def test_example_weight_one_on_dense_inputs_gives_beta():
    x = data((6, 4))
    gamma, beta = affine(4)
    mm, mv = pop_stats(4)
    y = batch_norm_inference(x, mm, mv, gamma, beta, example_weight=1.0)
    np.testing.assert_array_equal(y, np.broadcast_to(beta, y.shape))


def test_example_weight_one_on_conv_features_is_instance_norm():
    # §2 consequences: alpha = 1 with per-channel statistics is instance normalization at test time.
    x = data((3, 4, 5, 6), seed=9)
    gamma, beta = affine(6)
    mm, mv = pop_stats(6)
    close(batch_norm_inference(x, mm, mv, gamma, beta, example_weight=1.0), instance_norm(x, gamma, beta))


def test_example_weighing_is_per_example():
    # §4.4: predictions never depend on the rest of the test batch, for any alpha.
    x = data((5, 3, 4, 2), seed=6)
    gamma, beta = affine(2)
    mm, mv = pop_stats(2)
    y = batch_norm_inference(x, mm, mv, gamma, beta, example_weight=0.3)
    for i in range(x.shape[0]):
        close(batch_norm_inference(x[i:i + 1], mm, mv, gamma, beta, example_weight=0.3), y[i:i + 1])


# --------------------------------------------------------------------------------------------------------------
# §14 Batch Renormalization


def renorm_state(c, seed=12):
    rng = np.random.default_rng(seed)
    state = {
        "moving_mean": rng.normal(0.0, 1.0, c),
        "moving_variance": rng.uniform(0.5, 2.0, c),
        "moving_stddev": rng.uniform(0.5, 2.0, c),
        "renorm_mean": rng.normal(0.0, 1.0, c),
        "renorm_stddev": rng.uniform(0.5, 2.0, c),
    }
    state["renorm_stddev"][0] = 1e-3  # below sqrt(eps) ~ 0.0316: exercises the floor
    return state


def test_renorm_with_identity_clipping_equals_bn():
    x = data((6, 3, 3, 4))
    gamma, beta = affine(4)
    y, _ = batch_renorm_train(x, gamma, beta, renorm_state(4),
                              renorm_clipping={"rmax": 1.0, "rmin": 1.0, "dmax": 0.0})
    close(y, batch_norm_train(x, gamma, beta)[0])


def test_unclipped_renorm_trains_the_inference_function():
    # §14.2: with unclipped r, d the training output is gamma (x - mu) / sigma + beta for the renorm moving
    # statistics (sigma floored at sqrt(eps) as in Keras). Missing clip keys mean no clipping.
    x = data((6, 3, 4))
    gamma, beta = affine(4)
    state = renorm_state(4)
    sigma = np.maximum(state["renorm_stddev"], np.sqrt(EPS))
    expected = gamma * (x - state["renorm_mean"]) / sigma + beta
    for clipping in (None, {}, {"rmax": np.inf, "dmax": np.inf}, {"rmin": 0.0}):
        y, _ = batch_renorm_train(x, gamma, beta, state, renorm_clipping=clipping)
        close(y, expected)


def test_renorm_clipped_r_scales_the_normalized_output():
    x = data((8, 3))
    gamma, beta = affine(3)
    y, _ = batch_renorm_train(x, gamma, beta, renorm_state(3), renorm_clipping={"rmin": 2.0, "rmax": 2.0, "dmax": 0.0})
    xhat = (batch_norm_train(x, None, None)[0])
    close(y, 2.0 * gamma * xhat + beta)


def test_renorm_state_update():
    x = data((7, 2, 3), seed=13)
    state = renorm_state(3)
    _, mean, var = batch_norm_train(x, None, None)
    stddev = np.sqrt(var + EPS)
    _, new = batch_renorm_train(x, None, None, state, momentum=0.9, renorm_momentum=0.8)
    close(new["renorm_mean"], 0.8 * state["renorm_mean"] + 0.2 * mean)
    close(new["renorm_stddev"], 0.8 * state["renorm_stddev"] + 0.2 * stddev)  # the stored value is not floored
    close(new["moving_mean"], 0.9 * state["moving_mean"] + 0.1 * mean)
    close(new["moving_stddev"], 0.9 * state["moving_stddev"] + 0.1 * stddev)
    close(new["moving_variance"], np.maximum(new["moving_stddev"] ** 2 - EPS, 0.0))
    # momentum 0: the inference statistics become the batch statistics (moving_variance up to round-off).
    _, new0 = batch_renorm_train(x, None, None, state, momentum=0.0, renorm_momentum=0.0)
    close(new0["moving_mean"], mean)
    close(new0["moving_variance"], var)
    close(new0["renorm_stddev"], stddev)
    # Keras's initial state: stddevs are sqrt of the initial moving variance.
    init = initial_renorm_state(np.zeros(3), np.ones(3))
    close(init["moving_stddev"], 1.0)
    close(init["renorm_stddev"], 1.0)


# --------------------------------------------------------------------------------------------------------------
# gradcheck


def test_numerical_gradient_known_function():
    x = data((3, 4), seed=14)
    g = numerical_gradient(lambda v: np.sum(np.sin(v) * v**2), x)
    close(g, np.cos(x) * x**2 + 2 * x * np.sin(x), rtol=1e-8, atol=1e-8)


def test_numerical_gradient_matches_analytic_bn_backward():
    # Textbook BN input gradient: dx = gamma / (N sigma) * (N dy - sum(dy) - xhat * sum(dy * xhat)).
    x = data((6, 3), seed=15)
    gamma, beta = affine(3)
    dy = data((6, 3), seed=16)
    _, mean, var = batch_norm_train(x, gamma, beta)
    sigma = np.sqrt(var + EPS)
    xhat = (x - mean) / sigma
    n = x.shape[0]
    dx = gamma / (n * sigma) * (n * dy - dy.sum(axis=0) - xhat * (dy * xhat).sum(axis=0))
    g = numerical_gradient(lambda v: np.sum(dy * batch_norm_train(v, gamma, beta)[0]), x)
    close(g, dx, rtol=1e-7, atol=1e-8)

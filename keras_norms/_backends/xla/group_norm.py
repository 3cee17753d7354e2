"""TensorFlow and JAX fast paths for `keras_norms.ops.group_norm` and `batch_group_norm`: one pass, folded affine.

The kernels are written in `keras.ops` only, so the two backends share
them. They are taken for float32 and float64 inputs (the public ops upcast
16-bit inputs first), any rank >= 3, any channel axis but 0, and
(batch-group norm) any batch size, a smaller trailing example group
included; they decline a mask and, on TensorFlow, a layer's inference call
(below). Under `jax.jit` or `tf.function(jit_compile=True)` XLA computes
the two sums below in **one** pass over the data (sibling reductions fuse),
and the output in a second, elementwise pass; the two-pass reference needs
the mean before the squared deviations, three passes in all.

A *cell* is the set $\\mathcal S$ normalized together: one example's group of
channels (group norm) or $E$ consecutive examples' group of channels (batch-group
norm), each over all spatial positions. With a per-cell shift $k$ behind a
stop-gradient (the mean of the cell's values at the first spatial position)
and $d = x - k$:

$$\\bar d=\\operatorname{mean}_{\\mathcal S}d,\\qquad
  \\sigma^2=\\max\\big(\\operatorname{mean}_{\\mathcal S}d^2-\\bar d^2,\\;0\\big),$$

$$a_c=\\frac{\\gamma_c}{\\sqrt{\\sigma^2+\\epsilon}},\\qquad
  b_c=\\beta_c-\\bar d\\,a_c,\\qquad y=d\\,a_c+b_c .$$

This equals the two-pass reference, $\\mu=k+\\bar d$: the variance is
shift-invariant, and $d\\,a+b=(x-\\mu)\\,a+\\beta$. Shifting matters in
float32: $E[x^2]-E[x]^2$ on raw data loses about $2\\log_{10}(|\\mu|/\\sigma)$
digits (all of them at $|\\mu|/\\sigma\\approx 3000$), while $|\\bar d|$ is of
the order of the cell's standard deviation. The clamp at 0 guards the
remaining round-off. Gradients are those of the formula: $k$ is a constant,
and autodiff of the one-pass moments gives the exact gradient of the
variance.

The full-size tensor is never regrouped: the sums are first taken over the
spatial axes per (example, channel), a reduction that keeps the channel axis
in place (for channels-last data the vectorized pattern of batch norm), and
only the small `(N, C)` partial sums are grouped into cells. On JAX (CPU,
(32, 32, 32, 64), G=32, forward and backward) reducing the grouped
`(N, H, W, G, C_g)` view directly took 7.1 ms, this form 3.5 ms, the two-pass
reference 10 ms.

A forward pass alone (inference) can be slower than the reference on
TensorFlow: in the benchmark suite's run of commit c16fc5b (one CPU thread,
medians), inference of GroupNormalization on the ResNet shapes took
1.22-1.39x the reference's time, BatchChannelNormalization 1.08-2.14x and
EvoNormS0's kernel (`evonorm.py`) 1.09-1.32x, while their train steps took
0.74-0.90x. So on TensorFlow both kernels decline a layer's inference call
(`keras_norms.ops._dispatch.inference_call`); on JAX they run.
"""

from keras import backend
from keras import ops

from keras_norms.ops import _common
from keras_norms.ops._dispatch import decline
from keras_norms.ops._dispatch import decline_input
from keras_norms.ops._dispatch import is_inference_call
from keras_norms.ops._dispatch import kernel

DENSE = "rank-2 input (no spatial axes: no pass to save, and the reference was faster)"
INFERENCE_ON_TENSORFLOW = "inference on TensorFlow (the one-pass form is faster only with its backward pass)"


def tensorflow_inference_refusal():
    """A `Declined` for a layer's inference call on TensorFlow (see the module docstring), else `None`."""
    if backend.backend() == "tensorflow" and is_inference_call():
        return decline(INFERENCE_ON_TENSORFLOW)
    return None


class _Cells:
    """Maps `(N, C)` per-(example, channel) values to `(K, G)` cells and back.

    `K` groups of `examples` consecutive examples (the last one smaller, zero
    padded, when `examples` does not divide the batch or the batch size is
    unknown), `G` groups of consecutive channels.
    """

    def __init__(self, per_example, groups, examples):
        """`per_example`: any `(N, C)` tensor of the batch (its size and layout)."""
        self.groups, self.channels, self.examples = groups, per_example.shape[1], examples
        if examples == 1:
            self.counts, self.batch, self.padded = None, None, False
        else:
            _, valid, self.counts, self.batch = _common.split_ghosts(per_example, examples)
            self.padded = valid is not None

    def sum(self, v):
        """`(N, C)` -> `(K, G)` sums over each cell's examples and channels."""
        if self.examples > 1:
            v, _, _, _ = _common.split_ghosts(v, self.examples)  # (K, E, C), padding rows are 0
            v = ops.sum(v, axis=1)
        return ops.sum(ops.reshape(v, (-1, self.groups, self.channels // self.groups)), axis=2)

    def examples_per_cell(self):
        """`(K, 1)` number of real examples in each cell's example group (or 1)."""
        return 1 if self.counts is None else ops.expand_dims(self.counts, 1)

    def spread(self, v):
        """`(K, G)` per-cell values -> `(N, C)`, each example's and channel's cell value."""
        if self.groups != self.channels:
            v = ops.repeat(v, self.channels // self.groups, axis=1)
        if self.examples > 1:
            v = ops.repeat(v, self.examples, axis=0)
            if self.padded:
                v = v[: self.batch]
        return v


def _normalize_cells(x, gamma, beta, axis, epsilon, groups, examples):
    """The one-pass normalization of every cell; also `(shift, s1, s2, spatial_count)`, all `(N, C)` but the count."""
    channels = x.shape[axis]
    spatial = _common.spatial_axes(len(x.shape), axis)
    per_channel_shape = _common.per_example_shape(len(x.shape), axis, channels)
    spatial_count = _common.count(x, spatial)
    first = ops.reshape(first_position(x, spatial), (-1, channels))
    cells = _Cells(first, groups, examples)
    per_cell_channels = channels // groups

    # Shift: the mean of each cell's values at the first spatial position, frozen.
    first_count = ops.cast(cells.examples_per_cell(), x.dtype) * per_cell_channels
    shift = ops.stop_gradient(cells.spread(cells.sum(first) / first_count))  # (N, C)
    # Any finite shift gives the same result. A NaN or inf at a cell's first position would make the shift, and
    # through it the per-channel moving statistics of every channel of the cell, non-finite: 0 keeps a non-finite
    # value in its own channel's statistics, as in the two-pass reference.
    shift = ops.where(ops.isfinite(shift), shift, ops.zeros_like(shift))
    d = x - ops.reshape(shift, per_channel_shape)
    if spatial:
        s1, s2 = ops.sum(d, axis=spatial), ops.sum(ops.square(d), axis=spatial)  # (N, C), one pass
    else:
        s1, s2 = d, ops.square(d)
    count = first_count * ops.cast(spatial_count, x.dtype)
    mean_d = cells.sum(s1) / count  # (K, G)
    variance = ops.maximum(cells.sum(s2) / count - ops.square(mean_d), 0.0)
    scale = cells.spread(ops.rsqrt(variance + epsilon))  # (N, C)
    if gamma is not None:
        scale = scale * gamma
    offset = -cells.spread(mean_d) * scale
    if beta is not None:
        offset = offset + beta
    y = d * ops.reshape(scale, per_channel_shape) + ops.reshape(offset, per_channel_shape)
    return y, (shift, s1, s2, spatial_count)


def first_position(x, spatial):
    """`x` at the first position of the `spatial` axes, which are kept with size 1."""
    return x[tuple(slice(0, 1) if i in spatial else slice(None) for i in range(len(x.shape)))]


def _accepts(x):
    return backend.standardize_dtype(x.dtype) in ("float32", "float64")


@kernel("group_norm", backends=("tensorflow", "jax"))
def group_norm_one_pass(x, gamma=None, beta=None, axis=-1, epsilon=1e-3, groups=32):
    """`group_norm` in one pass with folded scale and shift (see module doc).

    Kernel signature: the public op hands a non-negative `axis` and the
    resolved, positive `groups`. Declines (`decline_input`) for dtypes other
    than float32 and float64 (the op upcasts first; this only matters for
    direct calls), and rank-2 `(N, C)` input: with no spatial axes there is no
    pass to save, and BatchChannelNormalization on a (256, 1024) input was
    slower with the kernel (kernel / reference, medians of paired runs, one
    CPU thread: JAX 1.08x train and 2.79x inference, earlier 1.62x and 1.86x;
    TensorFlow 1.03x and 1.12x).
    """
    if not _accepts(x):
        return decline_input(x)
    if len(x.shape) < 3:
        return decline(DENSE)
    refusal = tensorflow_inference_refusal()
    if refusal is not None:
        return refusal
    y, _ = _normalize_cells(x, gamma, beta, axis, epsilon, groups, examples=1)
    return y


@kernel("batch_group_norm", backends=("tensorflow", "jax"))
def batch_group_norm_one_pass(
    x, gamma=None, beta=None, axis=-1, epsilon=1e-3, groups=32, examples_per_group=2, mask=None
):
    """`batch_group_norm` in one pass: cells of `E` examples x `C_g` channels.

    Also returns the full-batch per-channel raw moments of the moving state,
    from the same `(N, C)` partial sums of the shifted data:
    $\\sum x=\\sum d+kS$ and $\\sum x^2=\\sum d^2+2k\\sum d+k^2S$ per
    (example, channel), $S$ the spatial count, summed over the batch. The
    batch need not be a multiple of $E$ (the last example group is smaller)
    and may be unknown while tracing; $E$ is capped at a static batch size.
    Declines as `group_norm_one_pass` does (rank 2 included: on a (256,
    1024) input with E=2 the train step took 2.4 ms against the reference's
    0.9 ms on JAX, whose dense reference normalizes without folding the
    affine), and when a mask is given.
    """
    if mask is not None:
        return decline("mask given (the reference handles it)")
    if not _accepts(x):
        return decline_input(x)
    if len(x.shape) < 3:
        return decline(DENSE)
    examples = examples_per_group
    if x.shape[0] is not None:
        examples = max(1, min(examples, x.shape[0]))
    y, (shift, s1, s2, spatial_count) = _normalize_cells(x, gamma, beta, axis, epsilon, groups, examples)
    spatial_count = ops.cast(spatial_count, x.dtype)
    total = ops.cast(ops.shape(x)[0], x.dtype) * spatial_count
    mean = ops.sum(s1 + shift * spatial_count, axis=0) / total
    second_moment = ops.sum(s2 + 2.0 * shift * s1 + ops.square(shift) * spatial_count, axis=0) / total
    return y, mean, second_moment

"""What the suite measures: shapes, profiles, every public layer, its baselines and its targets.

Every layer exported by `keras_norms.layers` has one row here (`tests/test_benchmarks_smoke.py` fails
when one is missing). A row names a *family*, the core math it shares with its baselines:

| family | layers | Keras built-in | native kernel (torch; TF) |
|---|---|---|---|
| `bn` | BN, Ghost BN, Memorized BN | `BatchNormalization` | `F.batch_norm`; `tf.compat.v1.nn.fused_batch_norm` |
| `bn_act` | EvoNorm-B0, ProxyNorm (replace BN + activation) | `BatchNormalization` + `ReLU` | the same + ReLU |
| `gn` | GroupNormalization, Batch-Group, Batch-Channel | `GroupNormalization` (rank 2: and `LayerNormalization`) | `F.group_norm` (rank 2: and `F.layer_norm`) |
| `gn_act` | EvoNorm-S0 (replaces GN + Swish) | `GroupNormalization` + swish | `F.group_norm` + `F.silu` |
| `in` | InstanceNormalization, FRN, FRN + TLU (per example and channel) | `GroupNormalization(groups=C)` | `F.group_norm` with C groups |
| `ln` | LayerNormalization (over the last axis) | `LayerNormalization` | `F.layer_norm` |
| `rms` | RMSNormalization (over the last axis) | `RMSNormalization` | `F.rms_norm` |
| `act` | TLU, NormPropReLU | `ReLU` | `F.relu` |
| `conv` | WS, Scaled WS, NormProp convolutions and dense | the same Keras convolution or `Dense` | - |

JAX has no native normalization kernels: its baselines are the Keras built-ins.
"""

import dataclasses

# Published-figure targets: ratios of medians measured in the same run (see README.md).
TORCH_NATIVE_LIMIT = 1.2
XLA_BN_LIMIT = 1.1
XLA_GROUP_LIMIT = 2.0
# The drop-ins and the group family's targets, per layer (train step, dense upstream gradient). torch: against the
# family's native kernel (`F.group_norm` with the layer's groups, C groups for the per-channel ones; EvoNorm-S0's
# is `F.group_norm` + `F.silu`, the pair it replaces); TF and JAX: against our BatchNormalization, or Keras's.
TORCH_NATIVE_LIMITS = {
    "GroupNormalization": 1.2, "InstanceNormalization": 1.2, "LayerNormalization": 1.2, "RMSNormalization": 1.2,
    "BatchNormalization": 1.2, "GhostBatchNormalization": 1.3,
    "BatchGroupNormalization": 1.5, "BatchChannelNormalization": 1.5, "EvoNormS0": 1.5,
    "FilterResponseNormalization": 1.5, "FilterResponseNormalizationTLU": 1.5,
}
XLA_OUR_BN_LIMITS = {"GroupNormalization": 1.5, "BatchGroupNormalization": 2.0, "BatchChannelNormalization": 2.0,
                     "EvoNormS0": 2.0}
XLA_KERAS_LIMITS = {"GhostBatchNormalization": 1.2}
CONV_LIMIT = 1.05
MEMORY_LIMIT = 1.1
OUR_BN = "BatchNormalization"
# torch rows timed again with a loss of sum(y), whose gradient reaches the layer expanded with zero strides (as
# after a pooling), next to their native kernels timed the same way: `F.batch_norm`'s backward was 5x slower on it.
SUM_GRADIENT_ROWS = ("BatchNormalization", "GroupNormalization")
SUM_GRADIENT = ", sum(y) gradient"


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    dims: tuple
    conv_kernel: int  # the WS/NormProp convolutions' kernel size on this shape
    note: str

    @property
    def label(self):
        return f"{self.name} {'x'.join(map(str, self.dims))}"


SHAPES = {
    s.name: s
    for s in (
        Shape("tiny", (4, 4, 4, 8), 3, "smoke runs only"),
        Shape("small", (16, 16, 16, 64), 3, "small conv map, 3x3 convolutions"),
        Shape("r50s1", (4, 56, 56, 256), 1, "ResNet-50 stage 1 output, batch 4, 1x1 convolutions"),
        Shape("r50s2", (4, 28, 28, 512), 1, "ResNet-50 stage 2 output, batch 4, 1x1 convolutions"),
        Shape("r50s3", (4, 14, 14, 1024), 1, "ResNet-50 stage 3 output, batch 4, 1x1 convolutions"),
        Shape("r50s4", (4, 7, 7, 2048), 1, "ResNet-50 stage 4 output, batch 4, 1x1 convolutions"),
        Shape("dense", (256, 1024), 1, "rank-2 features (N, C)"),
        Shape("gpu_s1", (32, 56, 56, 256), 1, "GPU check: ResNet-50 stage 1 output, batch 32"),
        Shape("gpu_s3", (32, 14, 14, 1024), 1, "GPU check: ResNet-50 stage 3 output, batch 32"),
    )
}
def shape(name):
    """A named shape, or one written as dims (`32x32x32x64`, channels last; 3x3 convolutions), or None."""
    if name in SHAPES:
        return SHAPES[name]
    parts = name.split("x")
    if len(parts) >= 2 and all(p.isdigit() and int(p) > 0 for p in parts):
        return Shape(name, tuple(int(p) for p in parts), 3, "given on the command line")
    return None


POLICY_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}

NORM_FAMILIES = ("bn", "bn_act", "gn", "gn_act", "in", "ln", "rms", "act")
ALL = None

# profile -> (grid of (shape, policy, families or ALL), layer names or None, repeats, warmup, per-cell budget in s).
# The convolutions (family "conv") run on the small map and the dense case only by default: their overhead is
# the weight standardization, whose cost does not grow with the activations (the 1x1 convolutions of the
# ResNet-50 stages are in the full profile), and TensorFlow compiles each row's steps for 1-3 s.
PROFILES = {
    "smoke": ([("tiny", "float32", ALL)], ["BatchNormalization"], 2, 1, None),
    "quick": ([("small", "float32", ALL), ("dense", "float32", ALL)], None, 5, 2, 60),
    "default": (
        [("small", "float32", ALL), ("r50s2", "float32", NORM_FAMILIES), ("r50s3", "float32", NORM_FAMILIES),
         ("dense", "float32", ALL), ("r50s2", "mixed_bfloat16", NORM_FAMILIES)],
        None, 15, 2, 150,
    ),
    # benchmarks/gpu_check.sh: two batch-32 maps in float32 on one GPU, within its 8-minute budget.
    "gpu": ([("gpu_s1", "float32", NORM_FAMILIES), ("gpu_s3", "float32", NORM_FAMILIES)], None, 20, 3, 40),
    "full": (
        [(s, p, ALL) for p in ("float32", "mixed_bfloat16") for s in ("small", "r50s1", "r50s2", "r50s3", "r50s4",
                                                                       "dense")],
        None, 25, 3, None,
    ),
}

CONV_FILTERS = 64


def groups_for(channels):
    """The largest divisor of `channels` that is <= 32 (32 for every channel count used here)."""
    return max(g for g in range(1, 33) if channels % g == 0)


# ---------------------------------------------------------------------------------------------- rows
@dataclasses.dataclass(frozen=True)
class Row:
    """One layer of the suite: `make(shape)` returns `(layers, input dims)` or None where it does not apply."""

    name: str
    family: str
    make: object
    keras_twin: str = None  # conv rows: the Keras layer class the row is compared with


def _norm(cls_name, min_rank=2, **kwargs):
    def make(shape):
        import keras_norms

        if len(shape.dims) < min_rank:
            return None
        resolved = {k: (v(shape) if callable(v) else v) for k, v in kwargs.items()}
        return [getattr(keras_norms, cls_name)(**resolved)], shape.dims

    return make


def _groups(shape):
    return groups_for(shape.dims[-1])


def _conv_dims(rank, dims):
    """The input of a rank-`rank` convolution made from a channels-last feature map `dims` (same size)."""
    if len(dims) != 4:
        return None
    n, h, w, c = dims
    return {3: (n * h, w, c), 4: dims, 5: (n, 2, h // 2, w, c)}[rank]


def conv_kwargs(keras_class, shape):
    kwargs = {"kernel_size": shape.conv_kernel, "padding": "same"}
    if keras_class == "Dense":
        return {"units": shape.dims[-1]}
    if keras_class != "DepthwiseConv2D":
        kwargs["filters"] = CONV_FILTERS
    return kwargs


_CONV_RANK = {"Conv1D": 3, "Conv2D": 4, "Conv3D": 5, "DepthwiseConv2D": 4, "Conv2DTranspose": 4, "Dense": 2}


def conv_dims(keras_class, shape):
    rank = _CONV_RANK[keras_class]
    if keras_class == "Dense":
        return shape.dims if len(shape.dims) == 2 else None
    return _conv_dims(rank, shape.dims)


def _conv(cls_name, keras_class, wrapper=False):
    def make(shape):
        import keras
        import keras_norms

        dims = conv_dims(keras_class, shape)
        if dims is None:
            return None
        if wrapper:  # the layer wraps its Keras twin (WeightNormalization)
            inner = getattr(keras.layers, keras_class)(**conv_kwargs(keras_class, shape))
            return [getattr(keras_norms, cls_name)(inner)], dims
        return [getattr(keras_norms, cls_name)(**conv_kwargs(keras_class, shape))], dims

    return Row(cls_name, "conv", make, keras_twin=keras_class)


LAYERS = [
    Row("BatchNormalization", "bn", _norm("BatchNormalization")),
    Row("GhostBatchNormalization", "bn", _norm("GhostBatchNormalization",
                                                virtual_batch_size=lambda s: max(1, s.dims[0] // 2))),
    Row("MemorizedBatchNormalization", "bn", _norm("MemorizedBatchNormalization")),
    Row("EvoNormB0", "bn_act", _norm("EvoNormB0", min_rank=3)),
    Row("ProxyNormalization", "bn_act", _norm("ProxyNormalization")),
    Row("GroupNormalization", "gn", _norm("GroupNormalization", groups=_groups)),
    Row("BatchGroupNormalization", "gn", _norm("BatchGroupNormalization", groups=_groups)),
    Row("BatchChannelNormalization", "gn", _norm("BatchChannelNormalization", groups=_groups)),
    Row("EvoNormS0", "gn_act", _norm("EvoNormS0", min_rank=3, groups=_groups)),
    Row("InstanceNormalization", "in", _norm("InstanceNormalization", min_rank=3)),
    Row("FilterResponseNormalization", "in", _norm("FilterResponseNormalization", min_rank=3)),
    Row("FilterResponseNormalizationTLU", "in", _norm("FilterResponseNormalizationTLU", min_rank=3)),
    Row("LayerNormalization", "ln", _norm("LayerNormalization")),
    Row("RMSNormalization", "rms", _norm("RMSNormalization")),
    Row("TLU", "act", _norm("TLU", min_rank=3)),
    Row("NormPropReLU", "act", _norm("NormPropReLU")),
    _conv("WSConv1D", "Conv1D"),
    _conv("WSConv2D", "Conv2D"),
    _conv("WSConv3D", "Conv3D"),
    _conv("WSDepthwiseConv2D", "DepthwiseConv2D"),
    _conv("WSConv2DTranspose", "Conv2DTranspose"),
    _conv("WSDense", "Dense"),
    _conv("ScaledWSConv1D", "Conv1D"),
    _conv("ScaledWSConv2D", "Conv2D"),
    _conv("ScaledWSConv3D", "Conv3D"),
    _conv("NormPropConv1D", "Conv1D"),
    _conv("NormPropConv2D", "Conv2D"),
    _conv("NormPropConv3D", "Conv3D"),
    _conv("NormPropDense", "Dense"),
    _conv("WeightNormalization", "Conv2D", wrapper=True),
]


# ----------------------------------------------------------------------------------------- baselines
def keras_baselines(family, shape):
    """[(name, make() -> layers)] of the Keras built-ins for `family` on `shape` (not for `conv`)."""
    import keras

    c, groups, rank2 = shape.dims[-1], groups_for(shape.dims[-1]), len(shape.dims) == 2
    bn, relu = keras.layers.BatchNormalization, keras.layers.ReLU
    gn = keras.layers.GroupNormalization
    table = {
        "bn": [("keras BatchNormalization", lambda: [bn()])],
        "bn_act": [("keras BatchNormalization+ReLU", lambda: [bn(), relu()])],
        "gn": [(f"keras GroupNormalization({groups})", lambda: [gn(groups)])]
        + ([("keras LayerNormalization", lambda: [keras.layers.LayerNormalization()])] if rank2 else []),
        "gn_act": [(f"keras GroupNormalization({groups})+swish",
                    lambda: [gn(groups), keras.layers.Activation("swish")])],
        "in": [(f"keras GroupNormalization({c})", lambda: [gn(c)])] if not rank2 else [],
        "ln": [("keras LayerNormalization", lambda: [keras.layers.LayerNormalization()])],
        "rms": [("keras RMSNormalization", lambda: [keras.layers.RMSNormalization()])],
        "act": [("keras ReLU", lambda: [relu()])],
    }
    return table[family]


def keras_conv_baseline(keras_class, shape):
    import keras

    dims = conv_dims(keras_class, shape)
    if dims is None:
        return None
    return f"keras {keras_class}", (lambda: [getattr(keras.layers, keras_class)(**conv_kwargs(keras_class, shape))]), dims


def native_baselines(backend, family, shape):
    """[(name, build)] of the backend's native kernels for `family` (see `harness.native_steps`)."""
    rank2 = len(shape.dims) == 2
    c, groups = shape.dims[-1], groups_for(shape.dims[-1])
    if backend == "torch":
        table = {
            "bn": [("F.batch_norm", _torch_native("batch_norm", c))],
            "bn_act": [("F.batch_norm+F.relu", _torch_native("batch_norm", c, "relu"))],
            "gn": [(f"F.group_norm({groups})", _torch_native("group_norm", c, groups=groups))]
            + ([("F.layer_norm", _torch_native("layer_norm", c))] if rank2 else []),
            "gn_act": [(f"F.group_norm({groups})+F.silu", _torch_native("group_norm", c, "silu", groups=groups))],
            "in": [(f"F.group_norm({c})", _torch_native("group_norm", c, groups=c))] if not rank2 else [],
            "ln": [("F.layer_norm", _torch_native("layer_norm", c))],
            "rms": [("F.rms_norm", _torch_native("rms_norm", c))],
            "act": [("F.relu", _torch_native("identity", c, "relu"))],
        }
        return table.get(family, [])
    if backend == "tensorflow":
        table = {
            "bn": [("tf fused_batch_norm", _tf_fused_batch_norm(shape.dims))],
            "bn_act": [("tf fused_batch_norm+relu", _tf_fused_batch_norm(shape.dims, relu=True))],
        }
        return table.get(family, [])
    return []


def _torch_native(kind, channels, activation=None, groups=None):
    def build(x):
        import torch
        import torch.nn.functional as F

        gamma = torch.ones(channels, device=x.device, requires_grad=True)
        beta = torch.zeros(channels, device=x.device, requires_grad=True)
        moving_mean, moving_variance = torch.zeros(channels, device=x.device), torch.ones(channels, device=x.device)
        act = {None: lambda y: y, "relu": F.relu, "silu": F.silu}[activation]

        def forward(x, training):
            # Channels-last data viewed as channels-first without a copy (torch.channels_last strides).
            view = x.movedim(-1, 1) if x.dim() >= 3 else x
            if kind == "batch_norm":
                y = F.batch_norm(view, moving_mean, moving_variance, gamma, beta, training, 0.01, 1e-3)
            elif kind == "group_norm":
                y = F.group_norm(view, groups, gamma, beta, 1e-3)
            elif kind == "layer_norm":
                y = F.layer_norm(x, (channels,), gamma, beta, 1e-3)
            elif kind == "rms_norm":
                y = F.rms_norm(x, (channels,), gamma, 1e-6)
            else:
                y = x
            y = act(y)
            moved = x.dim() >= 3 and kind in ("batch_norm", "group_norm")
            return y.movedim(1, -1) if moved else y  # back to x's layout, a free view

        return forward, ([] if kind == "identity" else [gamma] if kind == "rms_norm" else [gamma, beta])

    return build


def _tf_fused_batch_norm(dims, relu=False):
    def build(x):
        import tensorflow as tf

        c = dims[-1]
        scale, offset = tf.ones(c), tf.zeros(c)
        moving_mean, moving_variance = tf.zeros(c), tf.ones(c)

        def forward(x, training):
            x4 = x if len(dims) == 4 else tf.reshape(x, (dims[0], -1, 1, c))
            if training:
                y, _, _ = tf.compat.v1.nn.fused_batch_norm(x4, scale, offset, epsilon=1e-3, is_training=True)
            else:
                y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                    x4, scale, offset, moving_mean, moving_variance, epsilon=1e-3, is_training=False
                )
            return tf.nn.relu(y) if relu else y

        return forward, [scale, offset]

    return build


# ------------------------------------------------------------------------------------------- targets
def time_target(backend, row):
    """`(baseline kind, limit, text)` of the time target for a row, or None where the issue sets none.

    Baseline kinds: "native" (the family's first native kernel), "keras" (the family's Keras built-in or
    the Keras twin of a convolution), "our_bn" (keras_norms.BatchNormalization on the same shape).
    """
    if row.family == "conv":
        return "keras", CONV_LIMIT, f"<= {CONV_LIMIT}x Keras {row.keras_twin}"
    if backend == "torch":
        limit = TORCH_NATIVE_LIMITS.get(row.name, TORCH_NATIVE_LIMIT)
        return "native", limit, f"<= {limit:g}x native kernel"
    if row.name in XLA_OUR_BN_LIMITS:
        limit = XLA_OUR_BN_LIMITS[row.name]
        return "our_bn", limit, f"<= {limit:g}x our BatchNormalization"
    if row.name in XLA_KERAS_LIMITS:
        limit = XLA_KERAS_LIMITS[row.name]
        return "keras", limit, f"<= {limit:g}x Keras built-in"
    if row.family in ("bn", "bn_act"):
        return "keras", XLA_BN_LIMIT, f"<= {XLA_BN_LIMIT}x Keras built-in"
    if row.family in ("gn", "gn_act", "in"):
        return "our_bn", XLA_GROUP_LIMIT, f"<= {XLA_GROUP_LIMIT:g}x our BatchNormalization"
    return None

"""The error catalogue, `docs/errors.md`: each entry raised and its message asserted; no raise left out.

Every entry of the page (a `### \\`id\\`` heading with a `**Type:**` line and the message in a ```text block,
`…` standing for a part that varies) has a trigger below, a call that must raise exactly that type with that
message (Keras adds context around errors raised inside `call`; the documented message must appear verbatim).
`test_every_raise_in_the_package_is_catalogued` runs every trigger and fails when a `raise` statement of
`keras_norms/` is reached by none of them: a new error needs its entry, and a removed one leaves a stale entry whose
trigger no longer raises.

`documented_error(error)` tells whether an exception is one of the catalogue's (the fuzz and state-safety tests
accept no other).
"""

import ast
import functools
import pathlib
import re

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms import ops as kops

ROOT = pathlib.Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "docs" / "errors.md"
PACKAGE = ROOT / "keras_norms"
WILDCARD = "…"
_ENTRY = re.compile(r"^### `([a-z0-9-]+)`\n(.*?)(?=^#{1,3} |\Z)", re.M | re.S)
_TYPE = re.compile(r"^\*\*Type:\*\* `(\w+)`", re.M)
_MESSAGE = re.compile(r"^```text\n(.*?)\n```", re.M | re.S)


@functools.lru_cache(maxsize=None)
def catalogue():
    """`{id: (exception type name, compiled message pattern)}` from `docs/errors.md`."""
    entries = {}
    for name, body in _ENTRY.findall(CATALOGUE.read_text()):
        kind, message = _TYPE.search(body), _MESSAGE.search(body)
        assert kind and message, f"errors.md entry {name!r} needs a **Type:** line and a ```text message"
        assert name not in entries, f"errors.md: duplicate entry {name!r}"
        parts = [re.escape(part) for part in message.group(1).split(WILDCARD)]
        entries[name] = (kind.group(1), re.compile(".*?".join(parts), re.S))
    return entries


def documented_error(error):
    """The catalogue id of `error`, or None.

    `error` is documented if it comes from a `raise` statement of keras_norms that an entry's trigger reaches
    (with any layer, name or value), or if its type and message match an entry (the errors Keras raises).
    """
    for name, (kind, pattern) in catalogue().items():
        if type(error).__name__ == kind and pattern.search(str(error)):
            return name
    statements = raise_statements()
    for site in _raise_sites(error, chained=False):
        for statement in _statements_at(statements, site):
            if statement in documented_statements():
                return documented_statements()[statement]
    return None


# ------------------------------------------------------------------ helpers of the triggers
def _x(*shape):
    return np.random.default_rng(0).normal(size=shape).astype("float32")


def _sequential(*layers, shape=(4, 4, 3)):
    return keras.Sequential([keras.Input(shape), *layers], name="net")


def _bn_net():
    # No random initializer: on JAX the first random draw of a process costs a compilation.
    return _sequential(keras.layers.Dense(4, kernel_initializer="ones", name="dense"), keras_norms.BatchNormalization(
        name="bn"))


def _call(layer, x, **kwargs):
    return layer(x, **kwargs)


def _tune(compiled=True, **kwargs):
    model = _sequential(keras.layers.Flatten(), keras_norms.BatchNormalization(name="bn"), shape=(2, 3))
    if compiled:
        model.compile(loss="mse")
    return keras_norms.tune_inference_example_weight(model, _x(4, 2, 3), _x(4, 6), **kwargs)


def _tune_needs_batch_size():
    model = _sequential(keras.layers.Flatten(), keras_norms.BatchNormalization(name="bn"), shape=(2, 3))
    return keras_norms.tune_inference_example_weight(model, _x(4, 2, 3), metric=lambda y, p: 0.0, y=_x(4, 6))


def _schedule_without_renorm():
    model = _bn_net()
    model.compile(optimizer="sgd", loss="mse")
    schedule = keras_norms.BatchRenormSchedule(rmax=3.0, dmax=5.0)
    schedule.set_model(model)
    schedule.on_train_begin()


def _renorm_layer(**kwargs):
    return keras_norms.BatchNormalization(renorm=True, name="bn", **kwargs)


def _symbolic_training():
    layer = keras_norms.BatchNormalization(name="bn")
    return layer(keras.Input((3,)), training=keras.KerasTensor((), dtype="bool"))


def _proxy_op(activation):
    return kops.proxy_norm(_x(2, 3), np.ones(3, "float32"), np.zeros(3, "float32"), activation=activation)


# id -> the call that raises it; `monkeypatch` is passed to the triggers that take it.
TRIGGERS = {
    # ---- every layer: arguments and inputs (layers/_base.py, ops/_stats.py)
    "axis-not-int": lambda: keras_norms.BatchNormalization(axis=[1, 2], name="bn"),
    "axis-out-of-range": lambda: keras_norms.BatchNormalization(axis=4, name="bn")(_x(2, 3, 3, 4)),
    "axis-batch": lambda: keras_norms.BatchNormalization(axis=0, name="bn")(_x(2, 3)),
    "input-rank-1": lambda: keras_norms.BatchNormalization(name="bn")(_x(4)),
    "channels-unknown": lambda: keras_norms.BatchNormalization(name="bn").build((None, 4, None)),
    "unit-float": lambda: keras_norms.BatchNormalization(momentum=1.5, name="bn"),
    "epsilon": lambda: keras_norms.BatchNormalization(epsilon=0.0, name="bn"),
    "synchronized": lambda: keras_norms.BatchNormalization(synchronized="yes", name="bn"),
    "training": lambda: keras_norms.BatchNormalization(name="bn")(_x(2, 3), training="False"),
    "training-symbolic": _symbolic_training,
    "input-spec": lambda: _call(_built(keras_norms.BatchNormalization(name="bn"), (2, 3)), _x(2, 4)),
    # ---- BatchNormalization, GhostBatchNormalization
    "bn-virtual-batch-size": lambda: keras_norms.BatchNormalization(virtual_batch_size=0, name="bn"),
    "bn-renorm-clipping-keys": lambda: _renorm_layer(renorm_clipping={"rmax": 3.0, "r_max": 3.0}),
    "bn-renorm-clipping-rmin": lambda: _renorm_layer(renorm_clipping={"rmax": 0.5, "rmin": 1.0}),
    "bn-renorm-clipping-dmax": lambda: _renorm_layer(renorm_clipping={"dmax": -1.0}),
    "bn-dense-ghost-of-one": lambda: keras_norms.BatchNormalization(virtual_batch_size=1, name="bn")(_x(4, 3)),
    "ghost-bn-virtual-batch-size": lambda: keras_norms.GhostBatchNormalization(),
    # ---- BatchGroupNormalization
    "bgn-groups": lambda: keras_norms.BatchGroupNormalization(groups=0, name="bgn"),
    "bgn-examples-per-group": lambda: keras_norms.BatchGroupNormalization(examples_per_group=0, name="bgn"),
    "bgn-groups-divide": lambda: keras_norms.BatchGroupNormalization(groups=4, name="bgn")(_x(2, 3, 6)),
    # ---- BatchChannelNormalization
    "bcn-groups": lambda: keras_norms.BatchChannelNormalization(groups=0, name="bcn"),
    "bcn-choice": lambda: keras_norms.BatchChannelNormalization(mode="micro", name="bcn"),
    "bcn-momentum": lambda: keras_norms.BatchChannelNormalization(momentum=1.5, name="bcn"),
    "bcn-groups-divide": lambda: keras_norms.BatchChannelNormalization(groups=4, name="bcn")(_x(2, 3, 6)),
    # ---- InstanceNormalization
    "in-groups": lambda: keras_norms.InstanceNormalization(groups=0, name="in"),
    "in-groups-channels": lambda: keras_norms.InstanceNormalization(groups=3, name="in")(_x(2, 3, 6)),
    # ---- LayerNormalization, RMSNormalization
    "ln-axis": lambda: keras_norms.LayerNormalization(axis=1.5, name="ln"),
    "ln-axis-batch": lambda: keras_norms.LayerNormalization(axis=0, name="ln")(_x(2, 3, 6)),
    "ln-axis-unknown": lambda: keras_norms.LayerNormalization(axis=[1, 2], name="ln").build((None, None, 6)),
    "ln-rms-scaling": lambda: keras_norms.LayerNormalization(rms_scaling=True, name="ln"),
    # ---- EvoNormB0, EvoNormS0
    "evonorm-init-zero": lambda: keras_norms.EvoNormS0(init_zero="yes", name="evo"),
    "evonorm-init-zero-gamma": lambda: keras_norms.EvoNormS0(init_zero=True, gamma_initializer="zeros", name="evo"),
    "evonorm-rank": lambda: keras_norms.EvoNormB0(name="evo")(_x(2, 8)),
    "evonorm-b0-momentum": lambda: keras_norms.EvoNormB0(momentum=1.5, name="evo"),
    "evonorm-s0-groups": lambda: keras_norms.EvoNormS0(groups=0, name="evo"),
    "evonorm-s0-groups-divide": lambda: keras_norms.EvoNormS0(groups=4, name="evo")(_x(2, 3, 6)),
    # ---- FilterResponseNormalization, TLU, FilterResponseNormalizationTLU
    "frn-axis-list": lambda: keras_norms.FilterResponseNormalization(axis=[1, 2], name="frn"),
    "frn-rank": lambda: keras_norms.FilterResponseNormalization(name="frn")(_x(2, 8)),
    "frn-learned-epsilon": lambda: keras_norms.FilterResponseNormalization(learned_epsilon="yes", name="frn"),
    # ---- MemorizedBatchNormalization
    "mbn-memory-size": lambda: keras_norms.MemorizedBatchNormalization(memory_size=0, name="mbn"),
    "mbn-memory-weights-type": lambda: keras_norms.MemorizedBatchNormalization(memory_weights="decay", name="mbn"),
    "mbn-memory-weights": lambda: keras_norms.MemorizedBatchNormalization(
        memory_size=2, memory_weights=[1.0, 0.0], name="mbn"
    ),
    # ---- NormProp layers
    "norm-prop-bias": lambda: keras_norms.NormPropDense(4, use_bias=True, name="np"),
    "norm-prop-quantize": lambda: _built(keras_norms.NormPropDense(4, name="np"), (2, 3)).quantize("int8"),
    # ---- ProxyNormalization
    "proxy-affine": lambda: keras_norms.ProxyNormalization(proxy_affine="yes", name="pn"),
    "proxy-activation-none": lambda: keras_norms.ProxyNormalization(activation=None, name="pn"),
    "proxy-activation": lambda: keras_norms.ProxyNormalization(activation="softmax", name="pn"),
    "proxy-num-points": lambda: keras_norms.ProxyNormalization(num_points=1, name="pn"),
    # ---- WS and Scaled WS layers
    "ws-positive": lambda: keras_norms.WSConv2D(4, 3, ws_epsilon=0.0, name="ws"),
    "ws-fan-in-one": lambda: keras_norms.WSConv2D(4, 1, name="ws")(_x(2, 5, 5, 1)),
    "ws-quantize": lambda: _built(keras_norms.WSDense(4, name="ws"), (2, 3)).quantize("int8"),
    "wn-layer": lambda: keras_norms.WeightNormalization(keras.layers.LayerNormalization(name="ln"), name="wn"),
    "wn-lora": lambda: keras_norms.WeightNormalization(keras.layers.Dense(3, lora_rank=2, name="dense"), name="wn"),
    # ---- keras_norms.ops
    "op-axis-not-int": lambda: kops.batch_norm(_x(2, 3), axis="-1"),
    "op-batch-axis": lambda: kops.batch_group_norm(_x(4, 3), axis=0),
    "op-groups": lambda: kops.group_norm(_x(2, 3, 6), groups=0),
    "op-groups-divide": lambda: kops.group_norm(_x(2, 3, 6), groups=4),
    "op-examples-per-group": lambda: kops.batch_group_norm(_x(4, 6), groups=2, examples_per_group=0),
    "op-virtual-batch-size": lambda: kops.ghost_batch_norm(_x(4, 3), virtual_batch_size=0),
    "op-mask-rank": lambda: kops.batch_norm(_x(4, 5, 3), mask=np.ones((4, 5, 3), bool)),
    "op-bcn-momentum": lambda: kops.estimated_moments(_x(4, 3), np.zeros(3), np.ones(3), momentum=1.5),
    "op-bcn-final-affine": lambda: kops.batch_channel_norm(_x(4, 5, 6), gamma=np.ones(4, "float32"), groups=2),
    "op-evonorm-rank": lambda: kops.evonorm_s0(_x(2, 8), groups=2),
    "op-frn-rank": lambda: kops.filter_response_norm(_x(3)),
    "op-frn-batch-axis": lambda: kops.filter_response_norm(_x(2, 3), axis=0),
    "op-memory-shape": lambda: kops.memorized_moments(np.zeros((2, 3)), np.zeros((3, 2)), 1.0),
    "op-memory-weights": lambda: kops.memorized_moments(np.zeros((2, 3)), np.zeros((2, 3)), 1.0, [1.0]),
    "op-num-points": lambda: kops.quantile_grid(1),
    "op-activation-none": lambda: _proxy_op(None),
    "op-activation-not-elementwise": lambda: _proxy_op("softmax"),
    "op-activation-unknown": lambda: _proxy_op("nope"),
    "op-activation-softmax-function": lambda: _proxy_op(keras.activations.softmax),
    "op-ws-axes": lambda: kops.standardize_weights(np.ones((3, 4)), axes=[], epsilon=1e-5),
    "op-l2-axes": lambda: kops.l2_normalize_weights(np.ones((3, 4)), axes=[]),
    # ---- utilities
    "set-fast-paths": lambda: keras_norms.config.set_fast_paths("off"),
    "fast-path-report-model": lambda: keras_norms.fast_path_report("net", _x(2, 3)),
    "model-not-functional": lambda: keras_norms.convert_normalization(keras.Sequential(name="net"), "group_norm"),
    "convert-unknown-target": lambda: keras_norms.convert_normalization(_bn_net(), "weight_norm"),
    "convert-options-with-callable": lambda: keras_norms.convert_normalization(
        _bn_net(), lambda layer: keras.layers.LayerNormalization(name=layer.name), groups=2
    ),
    "convert-convolutions": lambda: keras_norms.convert_normalization(_bn_net(), "group_norm", convolutions="all"),
    "convert-activations": lambda: keras_norms.convert_normalization(_bn_net(), "filter_response_norm",
                                                                      activations="tlu"),
    "convert-activations-target": lambda: keras_norms.convert_normalization(_bn_net(), "group_norm",
                                                                             activations="fuse"),
    "convert-groups-divide": lambda: keras_norms.convert_normalization(_bn_net(), "group_norm", groups=3),
    "convert-target-rejects": lambda: keras_norms.convert_normalization(_bn_net(), "ghost_batch_norm"),
    "convert-no-ws-version": lambda: keras_norms.convert_normalization(
        _sequential(
            keras.layers.SeparableConv2D(4, 3, depthwise_initializer="ones", pointwise_initializer="ones", name="sep"),
            keras.layers.BatchNormalization(name="bn"),
        ),
        "group_norm",
        convolutions="ws",
    ),
    "freeze-model": lambda: keras_norms.freeze_normalization("model"),
    "freeze-frozen": lambda: keras_norms.freeze_normalization(_bn_net(), frozen="yes"),
    "recompute-model": lambda: keras_norms.recompute_batch_statistics("model", np.ones((2, 3))),
    "recompute-argument": lambda: keras_norms.recompute_batch_statistics(_bn_net(), np.ones((2, 4, 4, 3)), batch_size=0),
    "recompute-verbose": lambda: keras_norms.recompute_batch_statistics(_bn_net(), np.ones((2, 4, 4, 3)), verbose=2),
    "recompute-no-layer": lambda: keras_norms.recompute_batch_statistics(
        _sequential(keras.layers.Dense(2, name="dense")), np.ones((2, 4, 4, 3))
    ),
    "recompute-empty": lambda: keras_norms.recompute_batch_statistics(_bn_net(), np.ones((0, 4, 4, 3))),
    "double-forward-model": lambda: keras_norms.with_double_forward(keras.Sequential(name="net")),
    "set-example-weight-value": lambda: keras_norms.set_inference_example_weight(_bn_net(), 1.5),
    "set-example-weight-no-layer": lambda: keras_norms.set_inference_example_weight(
        _sequential(keras.layers.Flatten()), 0.5
    ),
    "tune-no-layer": lambda: keras_norms.tune_inference_example_weight(_sequential(keras.layers.Flatten()), _x(4)),
    "tune-mode": lambda: _tune(mode="best"),
    "tune-not-compiled": lambda: _tune(compiled=False),
    "tune-metric-needs-y": lambda: keras_norms.tune_inference_example_weight(
        _bn_net(), _x(4, 4, 4, 3), metric=lambda y, p: 0.0
    ),
    "tune-training-batch-size": _tune_needs_batch_size,
    "tune-candidates": lambda: _tune(candidates=[0.0, 2.0]),
    "renorm-schedule-rmax": lambda: keras_norms.BatchRenormSchedule(rmax=0.5, dmax=5.0),
    "renorm-schedule-dmax": lambda: keras_norms.BatchRenormSchedule(rmax=3.0, dmax=-1.0),
    "renorm-schedule-steps": lambda: keras_norms.BatchRenormSchedule(rmax=3.0, dmax=5.0, warmup_steps=-1),
    "renorm-schedule-no-renorm": _schedule_without_renorm,
    "decay-weight-decay": lambda: keras_norms.DecayToward(-1.0),
    "decay-target": lambda: keras_norms.DecayToward(1e-4, target=float("nan")),
    "decay-model-type": lambda: keras_norms.add_gamma_beta_decay("model", 5e-4),
    "decay-model-not-built": lambda: keras_norms.add_gamma_beta_decay(keras.Sequential(name="net"), 5e-4),
}


def _built(layer, shape):
    layer.build(shape)
    return layer


def _raise_sites(error, chained=True):
    """`(file, line)` of the innermost keras_norms frame of `error`, and of the exceptions it chains if `chained`."""
    sites, seen = set(), set()
    while error is not None and id(error) not in seen and (chained or not seen):
        seen.add(id(error))
        frame, tb = None, error.__traceback__
        while tb is not None:
            path = pathlib.Path(tb.tb_frame.f_code.co_filename).resolve()
            if PACKAGE in path.parents:
                frame = (str(path.relative_to(ROOT)), tb.tb_lineno)
            tb = tb.tb_next
        if frame:
            sites.add(frame)
        error = error.__cause__ or error.__context__
    return sites


_outcomes = {}


def outcome(name):
    """`(exception, raise sites)` of the trigger `name` (run once per process)."""
    if name not in _outcomes:
        trigger = TRIGGERS[name]
        with pytest.MonkeyPatch.context() as monkeypatch:
            try:
                trigger(monkeypatch) if trigger.__code__.co_argcount else trigger()
            except Exception as error:  # the point: any exception, checked by the caller
                _outcomes[name] = (error, _raise_sites(error))
            else:
                _outcomes[name] = (None, set())
    return _outcomes[name]


def test_every_catalogue_entry_has_a_trigger():
    assert set(catalogue()) == set(TRIGGERS), (
        f"entries without trigger: {sorted(set(catalogue()) - set(TRIGGERS))}; "
        f"triggers without entry: {sorted(set(TRIGGERS) - set(catalogue()))}"
    )


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_catalogue_entry_raises_its_documented_message(name):
    error, _ = outcome(name)
    assert error is not None, f"{name}: the trigger did not raise"
    kind, pattern = catalogue()[name]
    assert type(error).__name__ == kind, f"{name}: raised {type(error).__name__}, documented {kind}: {error}"
    assert pattern.search(str(error)), f"{name}: the message differs from docs/errors.md:\n{error}"


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_message_names_its_source_once(name):
    """Regression (issue 17): the `convert_normalization` groups error, wrapped by the per-layer conversion error,
    read "convert_normalization: cannot convert ...: convert_normalization: layer ...". The opening owner of every
    message ("convert_normalization:", "BatchNormalization (layer 'bn'):") appears in it exactly once."""
    error, _ = outcome(name)
    head = re.match(r"([^\n:]+?): ", str(error))
    if head is None:  # wrapped by Keras ("Exception encountered when calling ..."), which we do not word
        pytest.skip("message wrapped by Keras")
    assert str(error).count(head.group(1) + ":") == 1, f"{name}: {head.group(1)!r} repeated in:\n{error}"


def test_convert_groups_error_has_one_prefix():
    """Regression (issue 17): the doubled "convert_normalization:" prefix of the `groups` error, triggered directly."""
    with pytest.raises(ValueError) as info:
        TRIGGERS["convert-groups-divide"]()
    assert str(info.value).count("convert_normalization") == 1, str(info.value)
    assert str(info.value).count("'bn'") == 1, str(info.value)


@functools.lru_cache(maxsize=None)
def raise_statements():
    """`{(file, first line): (last line, source)}` of every `raise X` in keras_norms/."""
    sites = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Raise) and node.exc is not None:
                segment = ast.get_source_segment(source, node).splitlines()[0]
                sites[(str(path.relative_to(ROOT)), node.lineno)] = (node.end_lineno, segment)
    return sites


def _statements_at(statements, site):
    """The raise statements (keys of `statements`) whose lines contain `site`."""
    path, line = site
    return [(p, first) for (p, first), (last, _) in statements.items() if p == path and first <= line <= last]


@functools.lru_cache(maxsize=None)
def documented_statements():
    """`{raise statement: catalogue id}` for every raise statement some trigger reaches."""
    statements, documented = raise_statements(), {}
    for name in TRIGGERS:
        for site in outcome(name)[1]:
            for statement in _statements_at(statements, site):
                documented.setdefault(statement, name)
    return documented


def test_every_raise_in_the_package_is_catalogued():
    statements = raise_statements()
    missing = sorted(set(statements) - set(documented_statements()))
    assert not missing, "raises no docs/errors.md entry reaches (add an entry and a trigger):\n" + "\n".join(
        f"  {path}:{line}: {statements[(path, line)][1].strip()}" for path, line in missing
    )

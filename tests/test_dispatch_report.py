"""Which path ran, and why: kernels' decline reasons, `config.record_dispatch` and `fast_path_report`.

A kernel declines with `decline("reason in words")`; a bare `None` gives the user no reason, so an AST scan of
every kernel fails on `return None`. The behavioural checks call the ops with inputs that each kernel documents
as declined (PyTorch ones run under KERAS_BACKEND=torch, the XLA ones under TensorFlow and JAX) and read the
recorded reason.
"""

import ast
import pathlib

import keras
import numpy as np
import pytest

import keras_norms
from keras_norms import config
from keras_norms.ops import _dispatch
from keras_norms.ops import _replicas
from tests.backend_utils import to_numpy

BACKEND = keras.backend.backend()
PACKAGE = pathlib.Path(keras_norms.__file__).parent
BACKENDS_DIR = PACKAGE / "_backends"
OFF = "fast paths switched off"
NO_KERNEL = "no kernel on this backend"
MIDDLE = "channel axis in the middle (only last or 1)"
torch_only = pytest.mark.skipif(BACKEND != "torch", reason="these kernels exist on torch only")
xla_only = pytest.mark.skipif(BACKEND == "torch", reason="the XLA kernels serve TensorFlow and JAX")


# ------------------------------------------------------------------ every kernel declines with a reason
def registered_names(source):
    """Names of the functions of `source` (a module's code) registered with `@kernel(...)`."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "kernel":
                    names.add(node.name)
    return names


def _kernel_modules():
    """`{path: names of the kernels defined there}`: every module under `_backends/` that registers one."""
    modules = {}
    for path in sorted(BACKENDS_DIR.rglob("*.py")):
        names = registered_names(path.read_text())
        if names:
            modules[path] = names
    return modules


def _own_nodes(function):
    """The nodes of `function`'s body, nested functions, lambdas and classes left out."""
    stack = list(function.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def silent_declines(source, kernel_names=None):
    """`[(function, line)]` of `return None` / bare `return` in the kernels of `source` (a module's code).

    Kernels are the public top-level functions (or `kernel_names`), and the module's functions whose result a
    kernel returns directly (`return _helper(...)`), which decline on its behalf.
    """
    functions = {n.name: n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    todo = [name for name in functions if (name in kernel_names if kernel_names is not None else name[0] != "_")]
    seen, found = set(), []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in _own_nodes(functions[name]):
            if not isinstance(node, ast.Return):
                continue
            if node.value is None or (isinstance(node.value, ast.Constant) and node.value.value is None):
                found.append((name, node.lineno))
            elif isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name):
                if node.value.func.id in functions:
                    todo.append(node.value.func.id)
    return sorted(found)


def test_the_scan_finds_a_silent_decline():
    source = (
        "def kernel(x):\n    if x:\n        return None\n    return _helper(x)\n\n"
        "def _helper(x):\n    if x:\n        return\n    return x\n\n"
        "def _vector(t):\n    return None\n"
    )
    assert silent_declines(source) == [("_helper", 8), ("kernel", 3)]
    registering = (
        '@kernel("op", backends=("torch",))\ndef fast(x):\n    return None\n\n@other\ndef slow(x):\n    return\n'
    )
    assert registered_names(registering) == {"fast"}
    assert silent_declines(registering, registered_names(registering)) == [("fast", 3)]


def registrations(source):
    """`[(op, backend, function)]` of the `@kernel("op", backends=(...))` decorators of `source` (literals)."""
    found = []
    for node in ast.parse(source).body:
        for decorator in getattr(node, "decorator_list", ()):
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "kernel":
                op = ast.literal_eval(decorator.args[0])
                backends = ast.literal_eval(next(k.value for k in decorator.keywords if k.arg == "backends"))
                backends = backends if isinstance(backends, tuple) else [backends]
                found += [(op, backend, node.name) for backend in backends]
    return found


def registration_problems(sources):
    """The registrations of `{path: source}` naming an unknown backend, or a second kernel of one op and backend."""
    problems, seen = [], {}
    for path, source in sources.items():
        for op, backend, function in registrations(source):
            if backend not in _dispatch.BACKENDS:
                problems.append(f"{path}: {function} registers {op!r} for {backend!r}, not one of {_dispatch.BACKENDS}")
            if (op, backend) in seen:
                problems.append(f"{path}: {function} and {seen[op, backend]} are both the {backend} kernel of {op!r}")
            seen[op, backend] = f"{path}: {function}"
    return problems


def test_registrations_name_known_backends_once():
    assert registration_problems({p: p.read_text() for p in sorted(BACKENDS_DIR.rglob("*.py"))}) == []
    bad = (
        '@kernel("tlu", backends=("tourch",))\ndef a(x):\n    pass\n\n'
        '@kernel("tlu", backends=("jax",))\ndef b(x):\n    pass\n'
    )
    assert registration_problems({"k.py": bad, "l.py": bad.replace("tourch", "torch")}) == [
        "k.py: a registers 'tlu' for 'tourch', not one of ('tensorflow', 'jax', 'torch')",
        "l.py: b and k.py: b are both the jax kernel of 'tlu'",
    ]


def test_every_kernel_declines_with_a_reason():
    modules = _kernel_modules()
    scanned = {path.relative_to(BACKENDS_DIR).as_posix() for path in modules}
    # The scan reaches the kernels of every backend, wherever they are defined.
    assert {"torch/batch_norm.py", "torch/ghost.py", "xla/evonorm.py", "xla/group_norm.py"} <= scanned, scanned
    for fn in _dispatch.registered_kernels().values():  # the scan sees every kernel of this backend
        assert fn.__name__ in modules.get(PACKAGE.parent / (fn.__module__.replace(".", "/") + ".py"), ()), fn
    problems = []
    for path, names in modules.items():
        for function, line in silent_declines(path.read_text(), names):
            problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({function})")
    assert not problems, (
        "a kernel declines without a reason; return `decline(\"reason in words\")` (from keras_norms.ops._dispatch) "
        "instead of None at: " + ", ".join(problems)
    )


# ------------------------------------------------------------------ the records and their reasons
def _x(*shape, dtype="float32"):
    return np.random.default_rng(0).normal(size=shape).astype(dtype)


def _record(fn, *args, **kwargs):
    with config.record_dispatch() as calls:
        fn(*args, **kwargs)
    assert len(calls) == 1, calls
    return calls[0]


def test_a_record_is_a_named_triple():
    record = _record(keras_norms.ops.batch_group_norm, _x(4, 3, 6), groups=2)
    assert isinstance(record, config.DispatchRecord)
    assert record == ("batch_group_norm", "fast", None)  # a kernel on every backend
    assert (record.op, record.path, record.reason) == tuple(record)


def test_switched_off_and_no_kernel_reasons():
    with config.fast_paths(False):
        assert _record(keras_norms.ops.batch_group_norm, _x(4, 3, 6), groups=2) == (
            "batch_group_norm", "reference", OFF)
    expected = ("fast", None) if BACKEND == "torch" else ("reference", NO_KERNEL)
    assert _record(keras_norms.ops.batch_norm, _x(4, 3))[1:] == expected
    assert _record(keras_norms.ops.batch_norm_inference, _x(4, 3), np.zeros(3), np.ones(3))[1:] == expected


def test_a_declined_kernel_is_never_a_result(monkeypatch):
    """A `Declined` is falsy and not a tensor: dispatch runs the reference and records the kernel's reason."""
    key = ("group_norm", BACKEND)
    assert key in _dispatch.registered_kernels(BACKEND)  # loads the backend's kernels before one is replaced
    monkeypatch.setitem(_dispatch._kernels, key, lambda *args, **kwargs: _dispatch.decline("a test reason"))
    x = _x(4, 3, 6)
    with config.record_dispatch() as calls:
        y = keras_norms.ops.group_norm(x, groups=2)
    assert calls == [("group_norm", "reference", "a test reason")]
    assert not _dispatch.decline("a test reason")
    with config.fast_paths(False):
        expected = keras_norms.ops.group_norm(x, groups=2)
    np.testing.assert_array_equal(to_numpy(y), to_numpy(expected))


def test_synchronized_calls_record_why_no_kernel_ran(monkeypatch):
    # One process: pretend replicas are active, with a cross-replica sum that is the identity (one replica).
    monkeypatch.setattr(_replicas, "active", lambda: True)
    monkeypatch.setattr(_replicas, "cross_replica_sum", lambda tensors: list(tensors))
    reason = "synchronized across replicas"
    assert _record(keras_norms.ops.batch_norm, _x(4, 3), synchronized=True) == ("batch_norm", "reference", reason)
    assert _record(keras_norms.ops.evonorm_b0, _x(4, 3, 6), synchronized=True) == ("evonorm_b0", "reference", reason)
    memory = np.zeros((2, 6), "float32")
    assert _record(keras_norms.ops.memorized_batch_norm, _x(4, 3, 6), memory, memory + 1.0, 1.0,
                   synchronized=True) == ("memorized_batch_norm", "reference", reason)


# (description, call, expected reason) for the PyTorch kernels: each one's documented declines, through the ops.
TORCH_DECLINES = [
    ("BN, channels in the middle", lambda: keras_norms.ops.batch_norm(_x(4, 6, 5, 5), axis=2), MIDDLE),
    ("BN, one value per channel", lambda: keras_norms.ops.batch_norm(_x(1, 6)), "one value per channel"),
    ("BN, mask", lambda: keras_norms.ops.batch_norm(_x(4, 5, 6), mask=np.ones((4, 5), bool)), "mask given"),
    ("BN inference, example weight",
     lambda: keras_norms.ops.batch_norm_inference(_x(4, 6), np.zeros(6), np.ones(6), example_weight=0.5),
     "inference example weight is not 0"),
    ("Ghost BN, batch not divisible",
     lambda: keras_norms.ops.ghost_batch_norm(_x(6, 5, 3), virtual_batch_size=4),
     "batch size 6 not divisible by virtual_batch_size 4"),
    ("Ghost BN, channels in the middle",
     lambda: keras_norms.ops.ghost_batch_norm(_x(8, 5, 6, 4), axis=2, virtual_batch_size=2), MIDDLE),
    ("BGN, rank 2", lambda: keras_norms.ops.batch_group_norm(_x(8, 6), groups=2),
     "rank-2 input (the reference is faster there)"),
    ("BGN, channels in the middle", lambda: keras_norms.ops.batch_group_norm(_x(4, 5, 6, 3), axis=2, groups=2),
     MIDDLE),
    ("BGN, batch not divisible", lambda: keras_norms.ops.batch_group_norm(_x(5, 3, 6), groups=2),
     "batch size 5 not divisible by examples_per_group 2"),
    ("GN, channels in the middle", lambda: keras_norms.ops.group_norm(_x(3, 4, 6, 2), axis=2, groups=3), MIDDLE),
    ("EvoNorm S0, channels in the middle",
     lambda: keras_norms.ops.evonorm_s0(_x(3, 5, 8, 2), axis=2, groups=2), MIDDLE),
    ("MBN, channels in the middle",
     lambda: keras_norms.ops.memorized_batch_norm(_x(6, 5, 4, 4), np.zeros((2, 4)), np.ones((2, 4)), 1.0, axis=2),
     MIDDLE),
]


@torch_only
@pytest.mark.parametrize("description, call, reason", TORCH_DECLINES, ids=[c[0] for c in TORCH_DECLINES])
def test_torch_kernel_declines_with_its_reason(description, call, reason):
    assert _record(call)[1:] == ("reference", reason)


@torch_only
def test_torch_kernels_name_the_dtype_they_decline():
    # The ops upcast 16-bit inputs before dispatching, so a direct call is the only way a kernel sees one.
    import torch

    kernels = {op: fn for (op, _), fn in _dispatch.registered_kernels("torch").items()}

    half = torch.zeros((4, 3, 5, 6), dtype=torch.float16)
    expected = "float16 input (kernel takes float32/float64)"
    assert kernels["batch_norm"](half).reason == expected
    assert kernels["batch_norm_inference"](half, torch.zeros(6), torch.ones(6)).reason == expected
    assert kernels["ghost_batch_norm"](half, virtual_batch_size=2).reason == expected
    assert kernels["evonorm_s0"](half, groups=2).reason == expected
    assert kernels["norm_prop_relu"](half.bfloat16()).reason == "bfloat16 input (kernel takes float32/float64)"
    assert kernels["tlu"](np.zeros((4, 6), "float32"), np.zeros(6)).reason == "input is a ndarray, not a torch tensor"
    # float16 is the TLU kernel's own: it runs.
    assert not isinstance(kernels["tlu"](half, torch.zeros(6)), _dispatch.Declined)


@xla_only
def test_xla_kernels_name_what_they_decline():
    from keras_norms._backends.xla import evonorm
    from keras_norms._backends.xla import group_norm

    half = keras.ops.zeros((4, 3, 5, 6), dtype="float16")
    expected = "float16 input (kernel takes float32/float64)"
    assert group_norm.group_norm_one_pass(half, groups=2).reason == expected
    assert group_norm.batch_group_norm_one_pass(half, groups=2).reason == expected
    assert evonorm.evonorm_s0(half, groups=2).reason == expected
    assert evonorm.evonorm_b0(keras.ops.zeros((4, 6)), axis=1).reason == "rank-2 input (kernel takes rank >= 3)"
    assert evonorm.evonorm_b0_custom_gradient(half).reason == expected


# ------------------------------------------------------------------ fast_path_report
def _report_model():
    """Layers whose path differs per backend; the middle one inside a nested model."""
    inputs = keras.Input((6, 5, 8))
    x = keras_norms.BatchNormalization(name="bn_last")(inputs)
    x = keras_norms.BatchNormalization(axis=1, name="bn_axis1")(x)  # channel axis 1 of a rank-4 tensor
    inner = keras.Sequential([keras.Input((6, 5, 8)), keras_norms.BatchNormalization(axis=2, name="bn_middle")],
                             name="inner")
    x = inner(x)
    x = keras_norms.GhostBatchNormalization(virtual_batch_size=4, name="ghost")(x)
    x = keras.layers.Dense(8, name="dense")(x)  # Keras's own: no keras_norms op, not in the report
    x = keras_norms.BatchNormalization(dtype="mixed_float16", name="bn_half")(x)
    x = keras_norms.BatchGroupNormalization(groups=2, dtype="mixed_float16", name="bgn_half")(x)
    return keras.Model(inputs, x, name="net")


def _expected(backend):
    """`{layer: (op, path, reason)}` as each backend's kernels are documented on docs/fast-paths.md."""
    if backend == "torch":
        return {
            "bn_last": ("batch_norm", "fast", None),
            "bn_axis1": ("batch_norm", "fast", None),
            "bn_middle": ("batch_norm", "reference", MIDDLE),
            "ghost": ("ghost_batch_norm", "reference", "batch size 6 not divisible by virtual_batch_size 4"),
            # float16 layers: the ops upcast to float32 before dispatching, so the kernels take them.
            "bn_half": ("batch_norm", "fast", None),
            "bgn_half": ("batch_group_norm", "fast", None),
        }
    return {
        "bn_last": ("batch_norm", "reference", NO_KERNEL),
        "bn_axis1": ("batch_norm", "reference", NO_KERNEL),
        "bn_middle": ("batch_norm", "reference", NO_KERNEL),
        "ghost": ("ghost_batch_norm", "reference", NO_KERNEL),
        "bn_half": ("batch_norm", "reference", NO_KERNEL),
        "bgn_half": ("batch_group_norm", "fast", None),
    }


def _state(model):
    return [to_numpy(v.value).copy() for v in model.variables]


def test_report_names_path_and_reason_per_layer_and_leaves_the_model_alone():
    model = _report_model()
    x = _x(6, 6, 5, 8)
    before = _state(model)
    report = keras_norms.fast_path_report(model, x)
    got = {r.layer: (r.op, r.path, r.reason) for r in report.records}
    assert got == _expected(BACKEND)
    assert len(report.records) == 6, "one record per op call"
    classes = {r.layer: r.layer_class for r in report.records}
    assert classes["ghost"] == "GhostBatchNormalization" and classes["bn_middle"] == "BatchNormalization"
    for a, b in zip(before, _state(model)):
        np.testing.assert_array_equal(a, b)
    assert not any("call" in vars(layer) for layer in model._flatten_layers()), "every `call` is put back"
    # The same training call outside the report does move the statistics: the report restored them.
    model(x, training=True)
    assert any(not np.array_equal(a, b) for a, b in zip(before, _state(model)))


def test_report_with_fast_paths_switched_off():
    model = _report_model()
    with config.fast_paths(False):
        report = keras_norms.fast_path_report(model, _x(6, 6, 5, 8))
    assert len(report.records) == 6
    assert {(r.path, r.reason) for r in report.records} == {("reference", OFF)}


def test_report_table_and_summary():
    model = _report_model()
    report = keras_norms.fast_path_report(model, _x(6, 6, 5, 8))
    lines = str(report).splitlines()
    assert lines[0].split() == ["layer", "class", "op", "path", "reason"]
    assert len(lines) == 7 and repr(report) == str(report)
    assert all(line.index(" " + r.op) == lines[0].index(" op") for line, r in zip(lines[1:], report.records)), (
        "columns aligned")
    ghost = next(line for line in lines if line.startswith("ghost "))
    assert ghost.endswith(_expected(BACKEND)["ghost"][2])
    summary = report.summary().splitlines()
    assert summary[0].split() == ["count", "class", "op", "path", "reason"]
    counts = {tuple(line.split()[1:4]): int(line.split()[0]) for line in summary[1:]}
    if BACKEND == "torch":  # bn_last, bn_axis1, bn_half
        assert counts[("BatchNormalization", "batch_norm", "fast")] == 3
    else:  # the four BatchNormalization layers
        assert counts[("BatchNormalization", "batch_norm", "reference")] == 4
    assert sum(counts.values()) == 6


class _Net(keras.Model):
    """A subclassed model calling a layer, then (when `fail`) raising."""

    def __init__(self):
        super().__init__(name="subclassed")
        self.bn = keras_norms.BatchNormalization(name="bn")
        self.fail = False

    def call(self, x, training=None):
        y = self.bn(x, training=training)
        if self.fail:
            raise RuntimeError("boom")
        return y


def test_report_of_a_subclassed_model_and_of_a_raising_call():
    net = _Net()
    x = _x(4, 3, 6)
    report = keras_norms.fast_path_report(net, x)  # unbuilt: built by an inference call first
    assert [(r.layer, r.layer_class, r.op) for r in report.records] == [("bn", "BatchNormalization", "batch_norm")]
    before = _state(net)
    net.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        keras_norms.fast_path_report(net, x)
    for a, b in zip(before, _state(net)):
        np.testing.assert_array_equal(a, b)
    assert not any("call" in vars(layer) for layer in net._flatten_layers())


def test_report_of_a_single_layer():
    layer = keras_norms.GhostBatchNormalization(virtual_batch_size=2, name="gbn")
    report = keras_norms.fast_path_report(layer, _x(8, 5, 6))
    path = "fast" if BACKEND == "torch" else "reference"
    assert [r[:4] for r in report.records] == [("gbn", "GhostBatchNormalization", "ghost_batch_norm", path)]
    inference = keras_norms.fast_path_report(layer, _x(8, 5, 6), training=False)
    assert [r.op for r in inference.records] == ["batch_norm_inference"]
    empty = keras_norms.fast_path_report(keras.layers.Dense(2), _x(4, 3))  # Keras's own layer: no keras_norms op
    assert empty.records == [] and "no keras_norms op" in str(empty)


def test_report_rejects_what_is_not_a_layer():
    with pytest.raises(ValueError, match=r"fast_path_report: `model` must be a keras.Model or keras.layers.Layer, "
                                         r"received 'net' \(str\)\. Pass the model"):
        keras_norms.fast_path_report("net", _x(2, 3))


# ------------------------------------------------------------------ inference calls
# Layers whose XLA kernel is faster only with its backward pass: on TensorFlow it declines their inference calls.
INFERENCE_LAYERS = {
    "GroupNormalization": (lambda: keras_norms.GroupNormalization(groups=2), "group_norm"),
    "InstanceNormalization": (lambda: keras_norms.InstanceNormalization(), "group_norm"),
    "BatchChannelNormalization": (lambda: keras_norms.BatchChannelNormalization(groups=2), "group_norm"),
    "EvoNormS0": (lambda: keras_norms.EvoNormS0(groups=2), "evonorm_s0"),
}


@pytest.mark.parametrize("name", sorted(INFERENCE_LAYERS))
def test_inference_calls_decline_the_one_pass_kernels_on_tensorflow_only(name):
    factory, op = INFERENCE_LAYERS[name]
    layer = factory()
    x = _x(4, 3, 5, 6)
    layer(x, training=True)  # built

    def paths(training):
        with config.record_dispatch() as calls:
            y = layer(x, training=training)
        return y, [(c.path, c.reason) for c in calls if c.op == op]

    inference, inference_paths = paths(False)
    with config.fast_paths(False):  # the same values either way (before a training call moves BCN's statistics)
        np.testing.assert_allclose(to_numpy(inference), to_numpy(layer(x, training=False)), rtol=1e-5, atol=1e-6)
    training_paths = paths(True)[1]
    assert paths(None)[1] == training_paths  # a call that does not say is not marked
    if BACKEND == "tensorflow":
        from keras_norms._backends.xla.group_norm import INFERENCE_ON_TENSORFLOW

        assert training_paths == [("fast", None)]
        assert inference_paths == [("reference", INFERENCE_ON_TENSORFLOW)]
    else:  # JAX's one-pass kernel and torch's native ones decide as in training
        assert inference_paths == training_paths
    assert not _dispatch.is_inference_call()  # the mark ends with the call

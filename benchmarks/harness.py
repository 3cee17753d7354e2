"""Shared benchmark machinery: backend selection, train/inference steps, interleaved timing, peak memory.

Used by `suite.py`, `model_fit.py` and the older entry points (`bench_layers.py`, `bench_ws.py`,
`bench_group_norm.py`). Import it only after `select_backend` (the backend is fixed when Keras is first
imported):

    import harness
    harness.select_backend("jax")
    import keras  # now the JAX backend

A *step* is a callable that runs one synchronous call and returns nothing. `layer_steps` builds two for a
chain of Keras layers (a training step: forward with `training=True`, loss $\\sum y\\cdot w$ for a fixed random
$w$, gradients with respect to the input and every trainable weight; and an inference forward), compiled as
the backend compiles a `fit` step: TensorFlow `tf.function(jit_compile=True)` (XLA), JAX `jax.jit` of
`stateless_call` (ahead-of-time compiled, so the compiler's memory analysis is at hand), PyTorch eager.
`native_steps` builds the same pair for a backend-native function (`F.batch_norm`, `F.group_norm`,
`tf.compat.v1.nn.fused_batch_norm`, ...). `run_interleaved` times many steps in shuffled rounds, so that
background load hits every row alike; `peak_memory` measures the memory one step allocates.
"""

import contextlib
import gc
import inspect
import os
import platform
import random
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPILE_MODE = {"tensorflow": "xla", "jax": "jit", "torch": "eager"}
BACKEND = None


def select_backend(backend, threads=1):
    """Sets `KERAS_BACKEND` (before Keras is imported) and the backend's intra-op threads; returns them.

    One thread by default: on a shared machine a parallel region waits for a descheduled sibling thread
    (measured on 2 busy cores: a torch batch norm of a (4, 4, 4, 8) input took 0.08 ms with 1 thread and
    200 ms with 2), which swamps the differences being measured. Pass the core count on a dedicated machine.
    """
    global BACKEND
    if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != backend:
        raise RuntimeError(f"keras is already imported with another backend; cannot switch to {backend}")
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    BACKEND = backend
    threads = threads or usable_cores()
    if backend == "jax" and "jax" in sys.modules:  # already running in this process (a test): its setting
        threads = None
    elif backend == "jax":
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + (
            f" --xla_cpu_multi_thread_eigen={str(threads > 1).lower()} intra_op_parallelism_threads={threads}"
        )
    elif backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already running in this process (a test): keep its setting
            threads = tf.config.threading.get_intra_op_parallelism_threads() or usable_cores()
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)
    return threads


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_average():
    """The 1, 5 and 15-minute load averages (NaN where the platform has none)."""
    return tuple(round(v, 2) for v in os.getloadavg()) if hasattr(os, "getloadavg") else (float("nan"),) * 3


def cpu_model():
    """The CPU's model name (`/proc/cpuinfo` on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def code_version():
    """The commit the figures are measured at (`git describe`-like: hash, date, `+dirty` for local changes)."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=10", "HEAD")
        date = git("log", "-1", "--format=%cs", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "keras_norms", "benchmarks"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "commit_date": None, "dirty": None}
    return {"commit": commit, "commit_date": date, "dirty": dirty}


def machine_line(meta):
    """One line naming the machine and the software a result comes from; printed by the scripts, shown on the page."""
    v = meta["versions"]
    code = meta.get("code") or {}
    commit = code.get("commit") or "unknown commit"
    if code.get("dirty"):
        commit += "+local changes"
    return (f"{meta['cpu_model']} ({meta['cores']} cores visible, {meta['threads']} thread(s) used); "
            + ", ".join(f"{k} {val}" for k, val in v.items() if val)
            + f"; keras_norms at {commit} ({code.get('commit_date') or 'date unknown'}); measured {meta['date']}")


def environment(**extra):
    """Metadata recorded with every result: machine, versions, code version, cores, load, and `extra`."""
    import datetime

    import keras

    versions = {"keras": keras.__version__, "python": platform.python_version()}
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[BACKEND]
    versions[module] = sys.modules[module].__version__ if module in sys.modules else None
    return {
        "backend": BACKEND,
        "compile": COMPILE_MODE[BACKEND],
        "cores": usable_cores(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "code": code_version(),
        "date": datetime.date.today().isoformat(),
        "load_at_start": load_average(),
        "versions": versions,
        **extra,
    }


def _call_kwargs(layer, training):
    """`training=` only for layers whose `call` takes it (Keras convolutions do not)."""
    return {"training": training} if "training" in inspect.signature(layer.call).parameters else {}


def _forward(layers, x, training):
    for layer in layers:
        x = layer(x, **_call_kwargs(layer, training))
    return x


def _trainable(layers):
    return [v for layer in layers for v in layer.trainable_variables]


# ------------------------------------------------------------------------------------------ layer steps
def make_inputs(x_np, w_np, dtype="float32"):
    """Backend tensors `(x, w)`: the input `x_np` (float32 NumPy) cast to `dtype`, the layers' compute dtype,
    as the previous layer of a mixed-precision model would hand it over, and the float32 loss weights.

    Share them between the rows of a comparison: on the shared test machine TensorFlow steps whose inputs
    were allocated later ran 1.5x slower (the same XLA program, the same data; likely the memory's page
    backing), and the ratios should not depend on allocation order.
    """
    if BACKEND == "torch":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"  # where Keras puts the layers' weights
        x = torch.tensor(x_np, device=device).to(getattr(torch, dtype)).requires_grad_(True)
        return x, torch.tensor(w_np, device=device)
    if BACKEND == "jax":
        import jax.numpy as jnp

        return jnp.asarray(x_np, dtype=dtype), jnp.asarray(w_np)
    import tensorflow as tf

    return tf.cast(tf.constant(x_np), dtype), tf.constant(w_np)


def layer_steps(layers, x, w):
    """`(train, infer, memory)` for a chain of built Keras layers on the backend tensors of `make_inputs`.

    On torch, `w=None` makes the loss $\\sum y$ (see `_torch_loss`).

    `memory` maps "train"/"infer" to a function returning the peak bytes one step allocates.
    """
    return {"tensorflow": _tf_layer_steps, "jax": _jax_layer_steps, "torch": _torch_layer_steps}[BACKEND](
        layers, x, w
    )


def _tf_layer_steps(layers, x, w):
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one tf.function per row is intended: no retracing warnings

    # `w` is an argument, not a capture: captured tensors made some XLA executables 1.5x slower (CPU).
    @tf.function(jit_compile=True)
    def train(x, w):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(_forward(layers, x, True), tf.float32) * w)
        return tape.gradient(loss, [x] + _trainable(layers))

    infer = tf.function(lambda x: _forward(layers, x, False), jit_compile=True)
    return _tf_pair(lambda: train(x, w), lambda: infer(x))


def _tf_pair(train, infer):
    import tensorflow as tf

    sync = tf.test.experimental.sync_devices

    def timed(fn):
        def step():
            fn()
            sync()

        return step

    return timed(train), timed(infer), {"train": _tf_peak(train), "infer": _tf_peak(infer)}


def _tf_peak(fn):
    """TensorFlow's allocator statistics cover XLA's temporary buffers and the outputs (checked on CPU)."""
    import tensorflow as tf

    def measure():
        device = "CPU:0" if not tf.config.list_logical_devices("GPU") else "GPU:0"
        gc.collect()
        tf.config.experimental.reset_memory_stats(device)
        before = tf.config.experimental.get_memory_info(device)["current"]
        result = fn()
        tf.test.experimental.sync_devices()
        peak = tf.config.experimental.get_memory_info(device)["peak"] - before
        del result
        return peak

    return measure


def _jax_layer_steps(layers, x, w):
    import jax
    import jax.numpy as jnp
    import keras

    # A Sequential model: each layer's __call__ autocasts its weights under a mixed policy and drops
    # `training` for layers that take none, as in a real model's stateless_call.
    model = keras.Sequential([keras.Input(x.shape[1:], batch_size=x.shape[0], dtype=str(x.dtype)), *layers])
    tv = [v.value for v in model.trainable_variables]
    state = {"ntv": [v.value for v in model.non_trainable_variables]}

    def loss_fn(tv, ntv, x):
        y, new_ntv = model.stateless_call(tv, ntv, x, training=True)
        return jnp.sum(y.astype(jnp.float32) * w), new_ntv

    def train_fn(tv, ntv, x):
        (_, new_ntv), grads = jax.value_and_grad(loss_fn, argnums=(0, 2), has_aux=True)(tv, ntv, x)
        return grads, new_ntv

    def infer_fn(tv, ntv, x):
        return model.stateless_call(tv, ntv, x, training=False)[0]

    # Ahead-of-time compiled: the same executable is timed and its memory analysis read.
    train = jax.jit(train_fn).lower(tv, state["ntv"], x).compile()
    infer = jax.jit(infer_fn).lower(tv, state["ntv"], x).compile()

    def train_step():  # the new moving statistics feed the next step, as in a training loop
        _, state["ntv"] = jax.block_until_ready(train(tv, state["ntv"], x))

    def infer_step():
        jax.block_until_ready(infer(tv, state["ntv"], x))

    return train_step, infer_step, {"train": _jax_peak(train), "infer": _jax_peak(infer)}


def _jax_peak(compiled):
    """XLA's buffer assignment: temporaries plus outputs (arguments already exist before the step)."""

    def measure():
        analysis = compiled.memory_analysis()
        if analysis is None:
            return None
        return analysis.temp_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes

    return measure


def _torch_loss(y, w):
    """$\\sum y\\cdot w$, or $\\sum y$ when `w` is None: its gradient reaches the layer expanded, with zero strides
    (as after a pooling), which some torch backward kernels read far more slowly than a dense one."""
    y = y.float()
    return y.sum() if w is None else (y * w).sum()


def _torch_layer_steps(layers, x, w):
    import torch

    params = [v.value for v in _trainable(layers)]

    def train():
        _torch_loss(_forward(layers, x, True), w).backward()
        for t in [x] + params:
            t.grad = None
        _torch_sync(x)

    def infer():
        with torch.no_grad():
            _forward(layers, x, False)
        _torch_sync(x)

    return train, infer, {"train": _torch_peak(train, x), "infer": _torch_peak(infer, x)}


def _torch_sync(x):
    """Waits for a CUDA step to finish (eager CUDA calls return before the device is done)."""
    if x.is_cuda:
        import torch

        torch.cuda.synchronize(x.device)


def _torch_peak(fn, x):
    """Peak of the bytes allocated minus freed during one step, from the profiler's memory events (CUDA: its
    allocator's peak)."""

    def measure():
        if x.is_cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(x.device)
            before = torch.cuda.memory_allocated(x.device)
            fn()
            return torch.cuda.max_memory_allocated(x.device) - before
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile

        gc.collect()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        events = sorted(
            (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
        )
        live = peak = 0
        for _, nbytes in events:
            live += nbytes
            peak = max(peak, live)
        return peak

    return measure


# ----------------------------------------------------------------------------------------- native steps
def native_steps(build, x, w):
    """`(train, infer, memory)` for a backend-native function, on the tensors of `make_inputs`.

    `build(x)` receives the backend input tensor and returns `(forward, params)`: `forward(x, training)`
    gives the output in `x`'s layout (the loss multiplies it with `w`; TF reshapes `w` to it), `params` are
    the float32 tensors to differentiate besides `x`. Compiled like the layer steps (TF: XLA; torch: eager).
    """
    if BACKEND == "torch":
        import torch

        forward, params = build(x)

        def train():
            _torch_loss(forward(x, True), w).backward()
            for t in [x] + params:
                t.grad = None
            _torch_sync(x)

        def infer():
            with torch.no_grad():
                forward(x, False)
            _torch_sync(x)

        return train, infer, {"train": _torch_peak(train, x), "infer": _torch_peak(infer, x)}
    if BACKEND == "tensorflow":
        import tensorflow as tf

        forward, params = build(x)

        @tf.function(jit_compile=True)
        def train(x, w):
            with tf.GradientTape() as tape:
                tape.watch([x] + params)
                y = forward(x, True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.reshape(w, tf.shape(y)))
            return tape.gradient(loss, [x] + params)

        @tf.function(jit_compile=True)
        def infer(x):
            return forward(x, False)

        return _tf_pair(lambda: train(x, w), lambda: infer(x))
    raise ValueError(f"no native kernels are benchmarked on {BACKEND}")


# ------------------------------------------------------------------------------------------------ timing
def run_interleaved(variants, repeats, warmup, budget_s=None):
    """Times `variants` ({key: (step, context factory)}) in shuffled rounds.

    Every step is warmed up first (tracing, compilation), then each round calls every step once, in a new
    order each round, with the garbage collector off, so that background load hits every row alike.
    `budget_s` stops after the round that exceeds it (at least 3 rounds), for slow rows on a busy machine.

    Returns:
        `{key: {"wall": (median ms, min ms), "cpu": (median ms, min ms), "rounds": n}}`: wall-clock time
        and the process's CPU time (`time.process_time`, all its threads). On a shared machine with one
        intra-op thread the CPU time leaves out the time the step spent descheduled: under a load of 10 on
        2 cores a step's wall-clock median was 2-4x its CPU-time median, which stayed within 10-20% of its
        minimum.
    """
    for step, ctx in variants.values():
        with ctx():
            for _ in range(warmup):
                step()
    wall = {key: [] for key in variants}
    cpu = {key: [] for key in variants}
    keys, shuffle = list(variants), random.Random(0).shuffle
    start = time.perf_counter()
    gc.collect()
    gc.disable()
    try:
        for round_ in range(repeats):
            shuffle(keys)
            for key in keys:
                step, ctx = variants[key]
                with ctx():
                    t0, c0 = time.perf_counter(), time.process_time()
                    step()
                    c1, t1 = time.process_time(), time.perf_counter()
                wall[key].append((t1 - t0) * 1e3)
                cpu[key].append((c1 - c0) * 1e3)
            if budget_s is not None and round_ >= 2 and time.perf_counter() - start > budget_s:
                break
    finally:
        gc.enable()
    return {
        key: {"wall": (statistics.median(wall[key]), min(wall[key])),
              "cpu": (statistics.median(cpu[key]), min(cpu[key])), "rounds": len(wall[key])}
        for key in variants
    }


def plain():
    """The context of a row timed as is."""
    return contextlib.nullcontext()


def fast_paths_off():
    """The context of a row traced and run with the fast paths off (the `keras.ops` references)."""
    import keras_norms

    return keras_norms.config.fast_paths(False)

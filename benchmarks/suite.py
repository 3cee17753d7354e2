"""The benchmark suite: every keras_norms layer against its Keras built-in and native-kernel baselines.

    python benchmarks/suite.py --backend torch [--profile default] [--output-dir benchmarks/results]
    python benchmarks/report.py   # the Markdown table and the PNG chart from the three backends' JSON

One backend per process. For each (shape, dtype policy) cell of the profile's grid, every layer of
`catalog.LAYERS` that applies to the shape and the baselines of its family (`catalog.py`) are built,
compiled as a `fit` step would be (TF: XLA; JAX: jit; torch: eager), warmed up and timed round-robin
(`harness.run_interleaved`): a training step (forward with `training=True`, moving statistics updated,
gradients to the input and every trainable weight) and an inference forward. Each row reports the median
and the minimum in ms, the peak memory of one step, and ratios of medians to its baselines measured in the
same cell: the best one, and the one its target names. Targets (`catalog.time_target`, `MEMORY_LIMIT`) are
marked PASS or MISS; the exit status is 0 either way: this is a measurement, not a test.

Profiles (`catalog.PROFILES`): `smoke` (one layer, one tiny shape: seconds; kept alive by
`tests/test_benchmarks_smoke.py`), `quick` (every layer, two shapes, float32), `default` (the published
figures: four shapes in float32 and one in mixed_bfloat16, the convolutions on two of them; 3 to 12 minutes per
backend on 2 busy cores, TensorFlow's XLA compilations the longest), `full` (six shapes x two policies, every layer, 25 repeats).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import catalog  # noqa: E402
import harness  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", required=True, choices=["tensorflow", "jax", "torch"])
    p.add_argument("--profile", default="default", choices=sorted(catalog.PROFILES))
    p.add_argument("--shapes", help="comma-separated shape names (catalog.SHAPES) or dims such as 32x32x32x64 "
                                    "(channels last); overrides the profile's grid")
    p.add_argument("--policies", help="comma-separated dtype policies, with --shapes (default float32)")
    p.add_argument("--layers", help="comma-separated layer names (catalog.LAYERS); default: the profile's")
    p.add_argument("--repeats", type=int, help="timed rounds per cell (default: the profile's)")
    p.add_argument("--warmup", type=int, help="untimed calls per step first (default: the profile's)")
    p.add_argument("--budget", type=float, help="seconds of timed rounds per cell, at least 3 rounds")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads (default 1, steady on a shared machine; 0: the usable cores)")
    p.add_argument("--clock", default="cpu", choices=["cpu", "wall"],
                   help="what the ratios and targets use: process CPU time (default; steady on a shared "
                        "machine with one thread) or wall-clock time (a dedicated machine, several threads)")
    p.add_argument("--reference-rows", action="store_true",
                   help="also time each layer that took a fast path with the fast paths off (the references)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument("--output-dir", help="write suite_<backend>.json there")
    p.add_argument("--skip-missing-layers", action="store_true",
                   help="print a note for --layers names not in the catalog instead of failing")
    return p.parse_args(argv)


def resolve(args):
    grid, layer_names, repeats, warmup, budget = catalog.PROFILES[args.profile]
    if args.shapes:
        policies = (args.policies or "float32").split(",")
        grid = [(s, p, catalog.ALL) for p in policies for s in args.shapes.split(",")]
    for shape, policy, _ in grid:
        if catalog.shape(shape) is None or policy not in catalog.POLICY_DTYPES:
            raise SystemExit(f"unknown shape or policy: {shape}, {policy} (see benchmarks/catalog.py)")
    names = args.layers.split(",") if args.layers else layer_names
    rows = [r for r in catalog.LAYERS if names is None or r.name in names]
    if names and len(rows) != len(names):
        missing = sorted(set(names) - {r.name for r in rows})
        if not args.skip_missing_layers:
            raise SystemExit(f"unknown layers: {missing}")
        print(f"skipped (not in benchmarks/catalog.py): {', '.join(missing)}", flush=True)
    return grid, rows, args.repeats or repeats, args.warmup if args.warmup is not None else warmup, (
        args.budget if args.budget is not None else budget)


def build_chain(layers, dims):
    for layer in layers:
        layer.build(dims)
        dims = tuple(layer.compute_output_shape(dims))
    return dims


def arrays(dims, out_dims):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 2.0, dims).astype("float32")
    w = rng.normal(0.0, 1.0, out_dims).astype("float32")  # loss = sum(y * w)
    return x, w


def run_cell(shape, policy, rows, repeats, warmup, budget, args):
    """Builds, times and measures the rows of one (shape, policy) cell; returns (results, skipped, meta)."""
    import keras

    from keras_norms import config

    dtype = catalog.POLICY_DTYPES[policy]
    entries = {}  # name -> dict(kind, family, steps, context)
    skipped = {}

    def add(name, kind, family, make_steps, context=harness.plain, **extra):
        try:
            with context(), config.record_dispatch() as calls:
                train, infer, memory = make_steps()
                train(), infer()  # trace and compile now; a row that cannot run fails here
        except Exception as e:  # noqa: BLE001  (reported, and the suite goes on)
            skipped[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            print(f"  skipped {name}: {skipped[name]}", file=sys.stderr)
            return
        fast = sorted({record.op for record in calls if record.path == "fast"})
        entries[name] = dict(kind=kind, family=family, train=train, infer=infer, memory=memory,
                             context=context, fast_paths=fast, **extra)

    tensors = {}

    def inputs(dims, out_dims):  # one input per (shape, output shape) in the cell, shared by its rows
        if (dims, out_dims) not in tensors:
            tensors[(dims, out_dims)] = harness.make_inputs(*arrays(dims, out_dims), dtype)
        return tensors[(dims, out_dims)]

    def layer_maker(layers, dims, sum_loss=False):
        def make():
            out = build_chain(layers, dims)
            x, w = inputs(tuple(dims), tuple(out))
            return harness.layer_steps(layers, x, None if sum_loss else w)

        return make

    def sum_gradient_rows(row):
        """torch: the row and its family's native kernels again, with a loss of sum(y) (stride-0 gradients)."""
        if harness.BACKEND != "torch" or row.name not in catalog.SUM_GRADIENT_ROWS or row.name not in entries:
            return
        add(row.name + catalog.SUM_GRADIENT, "variant", row.family, layer_maker(*row.make(shape), sum_loss=True),
            of=row.name)
        for name, build in catalog.native_baselines(harness.BACKEND, row.family, shape):
            if name + catalog.SUM_GRADIENT not in entries:
                add(name + catalog.SUM_GRADIENT, "native variant", row.family,
                    lambda b=build: harness.native_steps(b, inputs(shape.dims, shape.dims)[0], None))

    keras.config.set_dtype_policy(policy)
    try:
        families, twins = set(), set()
        for row in rows:
            made = row.make(shape)
            if made is None:
                continue
            layers, dims = made
            add(row.name, "layer", row.family, layer_maker(layers, dims), keras_twin=row.keras_twin)
            sum_gradient_rows(row)
            if row.name in entries:
                families.add(row.family)
                if row.keras_twin:
                    twins.add(row.keras_twin)
            if args.reference_rows and row.name in entries and entries[row.name]["fast_paths"]:
                ref_layers, ref_dims = row.make(shape)
                add(f"{row.name} (fast paths off)", "reference", row.family, layer_maker(ref_layers, ref_dims),
                    context=harness.fast_paths_off, of=row.name)
        if families & {"gn", "gn_act", "in"} and catalog.OUR_BN not in entries and harness.BACKEND != "torch":
            bn_row = next(r for r in catalog.LAYERS if r.name == catalog.OUR_BN)  # the XLA group target's base
            layers, dims = bn_row.make(shape)
            add(catalog.OUR_BN, "layer", "bn", layer_maker(layers, dims))
        for family in sorted(families - {"conv"}):
            for name, make in catalog.keras_baselines(family, shape):
                if name not in entries:
                    add(name, "keras", family, layer_maker(make(), shape.dims))
            for name, build in catalog.native_baselines(harness.BACKEND, family, shape):
                if name not in entries:
                    add(name, "native", family,
                        lambda b=build: harness.native_steps(b, *inputs(shape.dims, shape.dims)))
        for twin in sorted(twins):
            name, make, dims = catalog.keras_conv_baseline(twin, shape)
            add(name, "keras", "conv", layer_maker(make(), dims), keras_twin=twin)
    finally:
        keras.config.set_dtype_policy("float32")

    load_before = harness.load_average()
    t0 = time.perf_counter()
    variants = {}
    for name, e in entries.items():
        variants[(name, "train")] = (e["train"], e["context"])
        variants[(name, "infer")] = (e["infer"], e["context"])
    stats = harness.run_interleaved(variants, repeats, warmup, budget)
    timed_s = time.perf_counter() - t0
    peaks = {}
    if not args.no_memory:
        for name, e in entries.items():
            for mode in ("train", "infer"):
                with e["context"]():
                    try:
                        peaks[(name, mode)] = e["memory"][mode]()
                    except Exception as err:  # noqa: BLE001
                        print(f"  memory of {name} ({mode}) not measured: {err}", file=sys.stderr)
    results = []
    for name, e in entries.items():
        for mode in ("train", "infer"):
            st = stats[(name, mode)]
            ms, best = st[args.clock]
            results.append({"name": name, "kind": e["kind"], "family": e["family"], "mode": mode,
                            "ms": ms, "min_ms": best, "wall_ms": st["wall"][0], "cpu_ms": st["cpu"][0],
                            "rounds": st["rounds"], "peak_bytes": peaks.get((name, mode)),
                            "keras_twin": e.get("keras_twin"), "of": e.get("of"), "fast_paths": e["fast_paths"]})
    meta = {"shape": shape.name, "dims": list(shape.dims), "policy": policy, "repeats": repeats,
            "clock": args.clock,
            "warmup": warmup, "timed_s": round(timed_s, 1), "load_before": load_before,
            "load_after": harness.load_average()}
    return results, skipped, meta


def compare(results, backend):
    """Adds the baseline ratios and the targets to the layer rows of one cell."""
    by_key = {(r["name"], r["mode"]): r for r in results}
    rows_by_name = {row.name: row for row in catalog.LAYERS}
    for r in results:
        if r["kind"] not in ("layer", "reference"):
            continue
        row = rows_by_name[r["of"] or r["name"]]
        bases = [b for b in results if b["mode"] == r["mode"] and b["kind"] in ("keras", "native")
                 and (b["keras_twin"] == row.keras_twin if row.family == "conv" else
                      (b["family"] == row.family and b["keras_twin"] is None))]
        r["baselines"] = {b["name"]: r["ms"] / b["ms"] for b in bases}
        best = min(bases, key=lambda b: b["ms"], default=None)
        r["best_baseline"] = best["name"] if best else None
        r["vs_best"] = r["ms"] / best["ms"] if best else None
        keras_base = next((b for b in bases if b["kind"] == "keras"), None)
        if keras_base and r["peak_bytes"] and keras_base["peak_bytes"]:
            r["memory_vs_keras"] = r["peak_bytes"] / keras_base["peak_bytes"]
            r["memory_target"] = "PASS" if r["memory_vs_keras"] <= catalog.MEMORY_LIMIT else "MISS"
        else:
            r["memory_vs_keras"] = r["memory_target"] = None
        target = catalog.time_target(backend, row) if r["kind"] == "layer" else None
        r["target"] = r["target_ratio"] = r["target_result"] = None
        if target is None:
            continue
        kind, limit, text = target
        if kind == "our_bn":
            base = by_key.get((catalog.OUR_BN, r["mode"]))
        else:
            base = next((b for b in bases if b["kind"] == kind), None)
        if base is None:
            continue
        r["target"], r["target_ratio"], r["target_limit"] = text, r["ms"] / base["ms"], limit
        r["target_base"] = base["name"]
        r["target_result"] = "PASS" if r["target_ratio"] <= limit else "MISS"
    for r in results:  # the sum(y)-gradient rows against their native kernels timed the same way
        if r["kind"] == "variant":
            bases = [b for b in results if b["kind"] == "native variant" and b["mode"] == r["mode"]
                     and b["family"] == r["family"]]
            best = min(bases, key=lambda b: b["ms"], default=None)
            r["best_baseline"] = best["name"] if best else None
            r["vs_best"] = r["ms"] / best["ms"] if best else None
    for r in results:  # a kernel must never lose to its own reference where it runs
        ref = by_key.get((f"{r['name']} (fast paths off)", r["mode"])) if r["kind"] == "layer" else None
        if ref is not None:
            r["vs_reference"] = r["ms"] / ref["ms"]
            r["vs_reference_min"] = r["min_ms"] / ref["min_ms"]
            r["fast_loses"] = fast_loses(r["vs_reference"], r["vs_reference_min"])


def fast_loses(median_ratio, min_ratio):
    """A fast path loses when both its median and its minimum are above the reference's (not noise alone)."""
    return median_ratio > 1.0 and min_ratio > 1.0


def fmt_ratio(v):
    return "-" if v is None else f"{v:.2f}x"


def fmt_mb(v):
    return "-" if v is None else f"{v / 2**20:.1f}"


def print_cell(results, meta):
    print(f"\n== {meta['shape']} {tuple(meta['dims'])} {meta['policy']}: {meta['repeats']} rounds max, "
          f"{meta['clock']} time, "
          f"timed {meta['timed_s']} s, load {meta['load_before'][0]} -> {meta['load_after'][0]}")
    head = (f"{'row':<44} {'mode':<5} {'median ms':>9} {'min ms':>8} {'peak MB':>8} {'vs best':>8} "
            f"{'best baseline':<34} {'target':>6} {'ratio':>6} {'mem':>6}")
    print(head + "\n" + "-" * len(head))
    for r in results:
        print(f"{r['name'][:44]:<44} {r['mode']:<5} {r['ms']:>9.2f} {r['min_ms']:>8.2f} "
              f"{fmt_mb(r['peak_bytes']):>8} {fmt_ratio(r.get('vs_best')):>8} "
              f"{(r.get('best_baseline') or ('(' + r['kind'] + ')'))[:34]:<34} "
              f"{r.get('target_result') or '':>6} {fmt_ratio(r.get('target_ratio')) if r.get('target') else '':>6} "
              f"{fmt_ratio(r.get('memory_vs_keras')) if r.get('memory_vs_keras') else '':>6}")


def main(argv=None):
    args = parse_args(argv)
    threads = harness.select_backend(args.backend, args.threads)
    grid, rows, repeats, warmup, budget = resolve(args)
    import keras

    assert keras.backend.backend() == args.backend, keras.backend.backend()
    meta = harness.environment(profile=args.profile, threads=threads, clock=args.clock,
                               command=" ".join(["python benchmarks/suite.py"] + (argv or sys.argv[1:])))
    print(f"machine: {harness.machine_line(meta)}", flush=True)
    start = time.perf_counter()
    cells = []
    for shape_name, policy, families in grid:
        shape = catalog.shape(shape_name)
        print(f"-- building {shape.label} {policy} ...", file=sys.stderr, flush=True)
        cell_rows = [r for r in rows if families is None or r.family in families]
        results, skipped, cell_meta = run_cell(shape, policy, cell_rows, repeats, warmup, budget, args)
        compare(results, args.backend)
        print_cell(results, cell_meta)
        cells.append({"meta": cell_meta, "results": results, "skipped": skipped})
    meta["wall_s"] = round(time.perf_counter() - start, 1)
    meta["load_at_end"] = harness.load_average()
    misses = [(c["meta"]["shape"], c["meta"]["policy"], r["name"], r["mode"], r["target"], r["target_ratio"])
              for c in cells for r in c["results"] if r.get("target_result") == "MISS"]
    print(f"\n{args.backend}: {meta['wall_s']} s, load {meta['load_at_start'][0]} -> {meta['load_at_end'][0]}; "
          f"{len(misses)} time-target misses")
    for shape_name, policy, name, mode, text, ratio in misses:
        print(f"  [MISS] {shape_name} {policy} {name} {mode}: {ratio:.2f}x ({text})")
    against = [(c["meta"]["shape"], c["meta"]["policy"], r) for c in cells for r in c["results"]
               if r.get("vs_reference") is not None]
    if against:
        print(f"\nfast path vs reference ({sum(r['fast_loses'] for _, _, r in against)} cells where it loses):")
        for shape_name, policy, r in against:
            flag = "LOSES" if r["fast_loses"] else "ok"
            print(f"  [{flag:>5}] {shape_name} {policy} {r['name']} {r['mode']}: {r['vs_reference']:.2f}x "
                  f"(minima {r['vs_reference_min']:.2f}x)")
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        path = os.path.join(args.output_dir, f"suite_{args.backend}.json")
        with open(path, "w") as f:
            json.dump({"meta": meta, "cells": cells}, f, indent=1)
        print(f"wrote {path}")
    return 0  # a measurement, not a test


def run_one_shape(description, families, argv=None, reference_rows=False):
    """Entry point of the thin one-shape scripts (`bench_layers.py`, `bench_ws.py`).

    Runs `main` on `--shape` with `--layers` set to the catalog rows whose family is in `families`; any other
    option is passed on to `main`.
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--backend", required=True, choices=["tensorflow", "jax", "torch"])
    p.add_argument("--shape", default="32,32,32,64", help="NHWC input shape (default 32,32,32,64)")
    p.add_argument("--quick", action="store_true", help="5 rounds")
    args, rest = p.parse_known_args(argv)
    layers = ",".join(row.name for row in catalog.LAYERS if families(row.family))
    return main(["--backend", args.backend, "--shapes", args.shape.replace(",", "x"), "--layers", layers]
                + (["--reference-rows"] if reference_rows else [])
                + (["--repeats", "5"] if args.quick else []) + rest)


if __name__ == "__main__":
    sys.exit(main())

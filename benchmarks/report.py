"""Tables and charts for docs/performance.md from the suite's and model_fit's JSON results.

    python benchmarks/report.py [--results benchmarks/results] [--docs docs/performance.md]
                                [--assets docs/assets/performance]

Reads `suite_<backend>.json` and `model_fit_<backend>.json` (any subset of the three backends), writes
`suite.png` (train-step ratios, every layer and cell) and `model_fit.png` into the assets folder, the Markdown
tables into `tables.md` next to the results, and the same tables into the page between its
`<!-- generated: NAME -->` and `<!-- end generated: NAME -->` markers (the rest of the page is left alone).
"""

import argparse
import json
import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import catalog  # noqa: E402
import harness  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("torch", "tensorflow", "jax")
TITLES = {"torch": "PyTorch (eager)", "tensorflow": "TensorFlow (XLA)", "jax": "JAX (jit)"}
SHORT = {"torch": "torch", "tensorflow": "TF", "jax": "JAX"}
POLICY_SHORT = {"float32": "f32", "mixed_bfloat16": "bf16", "mixed_float16": "f16"}


GPU_MISSING = "GPU figures are missing (no CUDA GPU was available when the page was generated)."


def gpu_block(results_dir):
    """The GPU figures of `benchmarks/gpu_check.sh` (`<results>/gpu/suite_<backend>.json`), or a line saying there are none."""
    suites, _ = load(os.path.join(results_dir, "gpu"))
    if not suites:
        return GPU_MISSING
    lines = [f"* {TITLES[b]}: `{m['command']}`; {_machine(m)}; {m['clock']} time."
             for b, m in ((b, suites[b]["meta"]) for b in BACKENDS if b in suites)]
    return "\n\n".join(["\n".join(lines), ratio_table(suites, "train", "target_ratio"),
                        ratio_table(suites, "infer", "target_ratio"), reference_table(suites)])


def load(results_dir):
    suites, fits = {}, {}
    for b in BACKENDS:
        for prefix, into in (("suite", suites), ("model_fit", fits)):
            path = os.path.join(results_dir, f"{prefix}_{b}.json")
            if os.path.exists(path):
                with open(path) as f:
                    into[b] = json.load(f)
    return suites, fits


def cell_key(cell):
    return cell["meta"]["shape"], cell["meta"]["policy"]


def column_label(key):
    shape, policy = key
    return f"{shape} {POLICY_SHORT.get(policy, policy)}"


def layer_rows(cell, mode):
    """{name: row} of the layer rows of a cell, each with `min_ratio`: the target's ratio of the minima."""
    by_key = {(r["name"], r["mode"]): r for r in cell["results"]}
    rows = {}
    for r in cell["results"]:
        if r["kind"] == "layer" and r["mode"] == mode:
            base = by_key.get((r.get("target_base"), mode))
            rows[r["name"]] = {**r, "min_ratio": r["min_ms"] / base["min_ms"] if base else None}
    return rows


def fmt(r, field="target_ratio"):
    """A ratio, bold when its target is missed; '-' where the row did not run.

    A time ratio whose ratio of the minima falls on the other side of the limit gets that ratio too, with a
    dagger: the median there is likely disturbed by the machine's load.
    """
    if r is None:
        return "n/a"
    if field == "target_ratio" and r.get("target_ratio") is None:
        v = r.get("vs_best")
        return "-" if v is None else f"({v:.2f})"
    v = r.get(field)
    if v is None:
        return "-"
    missed = (r.get("target_result") == "MISS") if field == "target_ratio" else (r.get("memory_target") == "MISS")
    text = f"**{v:.2f}**" if missed else f"{v:.2f}"
    if field == "target_ratio" and r.get("min_ratio") is not None:
        limit = _limit(r)
        if (r["min_ratio"] <= limit) == missed:
            text += f" ({r['min_ratio']:.2f}†)"
    return text


def _limit(r):
    return r.get("target_limit") or float(re.search(r"([0-9.]+)x", r["target"]).group(1))


def target_text(row):
    texts = []
    for backend in ("torch", "jax"):
        t = catalog.time_target(backend, row)
        texts.append(t[2].replace("<= ", "≤ ") if t else "-")
    if texts[0] == texts[1]:
        return texts[0]
    return f"torch {texts[0]}; TF, JAX {texts[1]}"


def ratio_table(suites, mode, field, policy="float32"):
    """Rows: layers; columns: each backend's cells of `policy`."""
    columns = []
    for b in BACKENDS:
        if b in suites:
            for cell in suites[b]["cells"]:
                if cell["meta"]["policy"] == policy:
                    columns.append((b, cell))
    if not columns:
        return ""
    head = ["layer"] + ([] if field != "target_ratio" else ["target"])
    head += [f"{SHORT[b]} {cell['meta']['shape']}" for b, cell in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows_by_cell = [layer_rows(cell, mode) for _, cell in columns]
    for row in catalog.LAYERS:
        if not any(row.name in rc for rc in rows_by_cell):
            continue
        cells = [f"`{row.name}`"] + ([] if field != "target_ratio" else [target_text(row)])
        cells += [fmt(rc.get(row.name), field) if row.name in rc else "n/a" for rc in rows_by_cell]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference_table(suites):
    """Every fast path against its own reference (`suite.py --reference-rows`): train and inference, each cell."""
    lines = ["| backend | cell | layer | train: fast / reference | inference: fast / reference |",
             "|---|---|---|---|---|"]
    losses = 0
    for b in BACKENDS:
        for cell in suites.get(b, {}).get("cells", []):
            rows = {(r["name"], r["mode"]): r for r in cell["results"] if r.get("vs_reference") is not None}
            for name in dict.fromkeys(n for n, _ in rows):
                cells = []
                for mode in ("train", "infer"):
                    r = rows.get((name, mode))
                    if r is None:
                        cells.append("-")
                        continue
                    ref = r["ms"] / r["vs_reference"]
                    text = f"{r['ms']:.2f} / {ref:.2f} ms ({r['vs_reference']:.2f}x)"
                    losses += r["fast_loses"]
                    cells.append(f"**{text} loses**" if r["fast_loses"] else text)
                lines.append(f"| {SHORT[b]} | {column_label(cell_key(cell))} | `{name}` | " + " | ".join(cells) + " |")
    if len(lines) == 2:
        return ""
    return (f"{losses} cell(s) where a fast path is slower than its reference (median and minimum both above 1.0x).\n\n"
            + "\n".join(lines))


def targets_summary(suites):
    lines = ["| backend | time targets met | memory targets met | load average (1 min) during the run |",
             "|---|---|---|---|"]
    for b in BACKENDS:
        if b not in suites:
            continue
        rows = [r for c in suites[b]["cells"] for r in c["results"] if r["kind"] == "layer"]
        timed = [r for r in rows if r.get("target_result")]
        mem = [r for r in rows if r.get("memory_target") and r["mode"] == "train"]
        loads = [c["meta"]["load_before"][0] for c in suites[b]["cells"]] + [
            c["meta"]["load_after"][0] for c in suites[b]["cells"]]
        lines.append(f"| {TITLES[b]} | {sum(r['target_result'] == 'PASS' for r in timed)} / {len(timed)} | "
                     f"{sum(r['memory_target'] == 'PASS' for r in mem)} / {len(mem)} | "
                     f"{min(loads):.1f} to {max(loads):.1f} |")
    return "\n".join(lines)


def detail_tables(suites):
    out = []
    for b in BACKENDS:
        if b not in suites:
            continue
        meta = suites[b]["meta"]
        out.append(f'??? note "{TITLES[b]}: every row, both modes"\n')
        out.append(f"    `{meta['command']}`: {meta['threads']} thread(s), {meta['clock']} time, "
                   f"{_versions(meta)}, {meta['wall_s']:.0f} s.\n")
        for cell in suites[b]["cells"]:
            m = cell["meta"]
            out.append(f"    **{m['shape']} {tuple(m['dims'])}, {m['policy']}** ({m['repeats']} rounds, "
                       f"load {m['load_before'][0]} → {m['load_after'][0]})\n")
            out.append("    | row | mode | median ms | wall ms | peak MB | vs best baseline | target | memory vs Keras |")
            out.append("    |---|---|---|---|---|---|---|---|")
            for r in cell["results"]:
                best = f"{r['vs_best']:.2f} ({r['best_baseline']})" if r.get("vs_best") else f"({r['kind']})"
                target = (f"{r['target_result']} {r['target_ratio']:.2f}" if r.get("target_result") else "")
                mem = f"{r['memory_vs_keras']:.2f}" if r.get("memory_vs_keras") else ""
                peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.1f}"
                out.append(f"    | {r['name']} | {r['mode']} | {r['ms']:.2f} | {r['wall_ms']:.2f} | {peak} | "
                           f"{best} | {target} | {mem} |")
            if cell["skipped"]:
                out.append("\n    Skipped: " + "; ".join(f"{k}: {v}" for k, v in cell["skipped"].items()))
            out.append("")
    return "\n".join(out)


def model_fit_table(fits):
    if not fits:
        return ""
    names = []
    for b in BACKENDS:
        for r in fits.get(b, {}).get("rows", []):
            if r["name"] not in names:
                names.append(r["name"])
    head = ["normalization"] + [f"{SHORT[b]} ms / vs Keras BN" for b in BACKENDS if b in fits]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = [name]
        for b in BACKENDS:
            if b in fits:
                r = next((r for r in fits[b]["rows"] if r["name"] == name), None)
                cells.append("-" if r is None else f"{r['ms']:.0f} / {r['vs_keras_bn']:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    meta = next(iter(fits.values()))["meta"]
    lines.append("")
    lines.append(f"Batch {meta['batch_size']}, {meta['steps']} steps per timed `fit`, {meta['repeats']} repeats, "
                 f"{meta['threads']} thread(s), medians of {meta['clock']} time per step; load averages "
                 + ", ".join(f"{SHORT[b]} {fits[b]['meta']['load_at_start'][0]}" for b in BACKENDS if b in fits)
                 + ".")
    return "\n".join(lines)


def _versions(meta):
    return ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)


def environment(suites, fits):
    lines = []
    for b in BACKENDS:
        for what, results in (("suite", suites), ("ResNet-20 fit", fits)):
            if b in results:
                m = results[b]["meta"]
                lines.append(f"* {TITLES[b]}, {what}: `{m['command']}`; {_machine(m)}; {m['clock']} time; "
                             + (f"{m['wall_s']:.0f} s; " if "wall_s" in m else "")
                             + f"load {m['load_at_start'][0]} at the start, "
                             f"{m['load_at_end'][0]} at the end.")
    return "\n".join(lines)


def _machine(meta):
    """The machine line of a result; results written before the suite recorded the CPU model say so."""
    if "cpu_model" in meta:
        return harness.machine_line(meta)
    return f"{meta.get('cpu', 'unknown CPU')}, {meta['cores']} cores visible, {_versions(meta)} (commit not recorded)"


def provenance(suites, fits):
    """The page's first statement: which code, machine and day every figure on the page comes from."""
    metas = [r["meta"] for r in list(suites.values()) + list(fits.values())]
    commits = {((m.get("code") or {}).get("commit"), (m.get("code") or {}).get("dirty")) for m in metas}
    machines = {m.get("cpu_model", m.get("cpu")) for m in metas}
    dates = sorted({m.get("date") for m in metas if m.get("date")})
    (commit, dirty), = commits if len(commits) == 1 else ((None, None),)
    code = (f"commit `{commit}`" + (" with local changes" if dirty else "")
            + f" ({(metas[0].get('code') or {}).get('commit_date')})") if commit else "several commits (see below)"
    when = dates[0] if len(dates) == 1 else (f"{dates[0]} to {dates[-1]}" if dates else "an unrecorded date")
    return (f"!!! info \"One run, {when}\"\n"
            f"    Every table and chart generated on this page comes from one run of `bash benchmarks/run_all.sh` "
            f"on {when}, measuring keras_norms at {code}, on {' / '.join(sorted(map(str, machines)))}. "
            f"Code changed after that commit is not measured here: compare the commit with "
            f"`git log {commit or 'HEAD'}..HEAD -- keras_norms` to see what is newer than the figures. "
            f"The full machine line of each backend is under [Environment](#environment).")


# ---------------------------------------------------------------------------------------------- charts
def _png_metadata(results):
    """The run a chart comes from, in the PNG's text chunks (tests/test_performance_page.py reads it back)."""
    commits = sorted({str((r["meta"].get("code") or {}).get("commit")) for r in results.values()})
    return {"Source": "keras_norms benchmarks/report.py", "Description": "keras_norms at " + ",".join(commits)}


def suite_chart(suites, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    columns = [(b, cell) for b in BACKENDS if b in suites for cell in suites[b]["cells"]]
    names = [row.name for row in catalog.LAYERS
             if any(row.name in layer_rows(cell, "train") for _, cell in columns)]
    grid = [[math.nan] * len(columns) for _ in names]
    for j, (_, cell) in enumerate(columns):
        rows = layer_rows(cell, "train")
        for i, name in enumerate(names):
            r = rows.get(name)
            if r is not None and r.get("vs_best"):
                grid[i][j] = r["vs_best"]
    fig, ax = plt.subplots(figsize=(max(6.0, 2.8 + 0.8 * len(columns)), 1.6 + 0.32 * len(names)))
    image = ax.imshow(grid, cmap="RdYlGn_r", norm=LogNorm(vmin=0.5, vmax=8.0), aspect="auto")
    for i in range(len(names)):
        for j in range(len(columns)):
            v = grid[i][j]
            if not math.isnan(v):
                ax.text(j, i, f"{v:.1f}" if v < 9.95 else f"{v:.0f}", ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xticks(range(len(columns)), [f"{SHORT[b]}\n{column_label(cell_key(c))}" for b, c in columns],
                  fontsize=7)
    ax.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False)
    for j in range(1, len(columns)):
        if columns[j][0] != columns[j - 1][0]:
            ax.axvline(j - 0.5, color="black", linewidth=1.5)
    fig.colorbar(image, ax=ax, shrink=0.5, label="train step / best baseline (same run)")
    ax.set_title("keras_norms train step vs the best Keras built-in or native kernel (lower is better)",
                 fontsize=9, pad=28)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_png_metadata(suites))
    plt.close(fig)


def model_fit_chart(fits, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = [b for b in BACKENDS if b in fits]
    names = [r["name"] for r in fits[backends[0]]["rows"]]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.42 * len(names)))
    height = 0.8 / len(backends)
    for k, b in enumerate(backends):
        ratios = {r["name"]: r["vs_keras_bn"] for r in fits[b]["rows"]}
        ys = [i + (k - (len(backends) - 1) / 2) * height for i in range(len(names))]
        ax.barh(ys, [ratios.get(n, math.nan) for n in names], height=height, label=TITLES[b])
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ResNet-20 fit step time / the same model with keras.layers.BatchNormalization")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_png_metadata(fits))
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ page
def replace_block(text, name, content):
    pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end generated: {name} -->)", re.S)
    if not pattern.search(text):
        print(f"warning: no '<!-- generated: {name} -->' block in the page", file=sys.stderr)
        return text
    return pattern.sub(lambda m: m.group(1) + (content + "\n" if content else "") + m.group(2), text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"))
    p.add_argument("--docs", default=os.path.join(ROOT, "docs", "performance.md"))
    p.add_argument("--assets", default=os.path.join(ROOT, "docs", "assets", "performance"))
    args = p.parse_args(argv)
    suites, fits = load(args.results)
    if not suites and not fits:
        raise SystemExit(f"no suite_*.json or model_fit_*.json in {args.results}")
    os.makedirs(args.assets, exist_ok=True)
    blocks = {
        "provenance": provenance(suites, fits),
        "targets": targets_summary(suites) if suites else "",
        "train": ratio_table(suites, "train", "target_ratio"),
        "infer": ratio_table(suites, "infer", "target_ratio"),
        "memory": ratio_table(suites, "train", "memory_vs_keras"),
        "bf16": ratio_table(suites, "train", "target_ratio", policy="mixed_bfloat16"),
        "reference": reference_table(suites),
        "details": detail_tables(suites),
        "model-fit": model_fit_table(fits),
        "environment": environment(suites, fits),
        "gpu": gpu_block(args.results),
    }
    if suites:
        suite_chart(suites, os.path.join(args.assets, "suite.png"))
    if fits:
        model_fit_chart(fits, os.path.join(args.assets, "model_fit.png"))
    with open(os.path.join(args.results, "tables.md"), "w") as f:
        f.write("\n\n".join(f"## {k}\n\n{v}" for k, v in blocks.items()) + "\n")
    if os.path.exists(args.docs):
        with open(args.docs) as f:
            text = f.read()
        for name, content in blocks.items():
            text = replace_block(text, name, content)
        with open(args.docs, "w") as f:
            f.write(text)
    print(f"wrote {args.assets}/suite.png, model_fit.png, {args.results}/tables.md and the blocks of {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

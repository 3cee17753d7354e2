"""The benchmark suite stays runnable: a `--profile smoke` run on this backend, and its report.

Not a performance test (speed claims live in `benchmarks/`): the smoke run times one layer on a tiny input
for two rounds and only its structure is checked. The catalog must name every public layer, so that a new
layer cannot silently drop out of the published figures.
"""

import inspect
import json
import pathlib
import sys

import keras

import keras_norms.layers

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import catalog  # noqa: E402


def test_catalog_covers_every_public_layer():
    public = {name for name, obj in vars(keras_norms.layers).items()
              if not name.startswith("_") and inspect.isclass(obj) and issubclass(obj, keras.layers.Layer)}
    missing = sorted(public - {row.name for row in catalog.LAYERS})
    assert "BatchNormalization" in public and not missing, f"add {missing} to benchmarks/catalog.py"


def test_smoke_run_writes_a_result_and_the_report_renders_it(tmp_path):
    """In this process (no second interpreter to start): the suite keeps the backend's thread setting."""
    import report
    import suite

    backend = keras.backend.backend()
    threads = _torch_threads()
    try:
        assert suite.main(["--backend", backend, "--profile", "smoke", "--threads", "0", "--reference-rows",
                           "--output-dir", str(tmp_path)]) == 0
    finally:
        _torch_threads(threads)
    result = json.loads((tmp_path / f"suite_{backend}.json").read_text())
    (cell,) = result["cells"]
    assert cell["meta"]["shape"] == "tiny" and not cell["skipped"], cell["skipped"]
    rows = {(r["name"], r["mode"]): r for r in cell["results"]}
    layer = rows[("BatchNormalization", "train")]
    assert layer["ms"] > 0 and layer["best_baseline"] is not None and layer["target_result"] in ("PASS", "MISS")
    assert ("keras BatchNormalization", "infer") in rows
    if backend == "torch":
        assert ("F.batch_norm", "train") in rows
        # The fast path is timed against its own reference in the same cell, and a loss is flagged.
        reference = rows[("BatchNormalization (fast paths off)", "train")]
        assert layer["vs_reference"] == layer["ms"] / reference["ms"]
        assert layer["fast_loses"] == (layer["vs_reference"] > 1 and layer["vs_reference_min"] > 1)
    # Measured on every backend; TensorFlow's allocator statistics show nothing for a tiny input.
    assert layer["peak_bytes"] is not None and (layer["peak_bytes"] > 0 or backend == "tensorflow")

    # The machine the figures come from is recorded and shown (issue 17: the page must say what it measured).
    meta = result["meta"]
    assert meta["cpu_model"] and meta["date"] and "commit" in meta["code"], meta
    assert meta["cpu_model"] in harness_line(meta) and meta["versions"]["keras"] in harness_line(meta)

    page = tmp_path / "performance.md"
    page.write_text("<!-- generated: provenance -->\nold\n<!-- end generated: provenance -->\n"
                    "<!-- generated: train -->\nold\n<!-- end generated: train -->\n")
    assert report.main(["--results", str(tmp_path), "--docs", str(page), "--assets", str(tmp_path / "assets")]) == 0
    text = page.read_text()
    assert "`BatchNormalization`" in text and "old" not in text
    assert f"One run, {meta['date']}" in text and meta["cpu_model"] in text
    assert (tmp_path / "assets" / "suite.png").stat().st_size > 1000


def harness_line(meta):
    import harness

    return harness.machine_line(meta)


def _torch_threads(value=None):
    """Gets (or restores) torch's intra-op threads on the torch run; None elsewhere."""
    if keras.backend.backend() != "torch":
        return None
    import torch

    if value is not None:
        torch.set_num_threads(value)
    return torch.get_num_threads()


def test_one_command_runs_suite_and_model_fit(tmp_path):
    """`benchmarks/run_all.sh` (the README's one command) on this backend, smoke profile, without the report."""
    import os
    import subprocess

    backend = keras.backend.backend()
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "run_all.sh"), "--profile", "smoke", "--backends", backend,
         "--output-dir", str(tmp_path), "--no-report"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    suite_result = json.loads((tmp_path / f"suite_{backend}.json").read_text())
    assert suite_result["cells"][0]["meta"]["shape"] == "tiny"
    fit = json.loads((tmp_path / f"model_fit_{backend}.json").read_text())
    assert len(fit["rows"]) == 2, fit["rows"]  # the Keras BN baseline and keras_norms BatchNormalization
    bad = subprocess.run(["bash", str(ROOT / "benchmarks" / "run_all.sh"), "--profil", "x"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown argument '--profil'" in bad.stderr

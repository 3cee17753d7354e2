"""`benchmarks/gpu_check.sh` stays runnable: its CPU dry run on this backend, one layer, and its refusal without CUDA.

The real run needs a CUDA GPU; the dry run takes the same steps (device probe, test collection, benchmark rows on
the smoke shape) and must write the suite's JSON.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "benchmarks" / "gpu_check.sh")


def _run(*args, timeout=120):
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", SCRIPT, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_dry_run_writes_the_suite_json(tmp_path):
    backend = keras.backend.backend()
    done = _run("--dry-run", "--backends", backend, "--layers", "BatchNormalization,NoSuchNormalization",
                "--output-dir", str(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"=== {backend}: parity tests on the device" in done.stdout
    assert "skipped (not in benchmarks/catalog.py): NoSuchNormalization" in done.stdout
    result = json.loads((tmp_path / f"suite_{backend}.json").read_text())
    (cell,) = result["cells"]
    assert cell["meta"]["shape"] == "tiny"
    assert ("BatchNormalization", "train") in {(r["name"], r["mode"]) for r in cell["results"]}


def test_without_cuda_it_fails_and_says_why():
    backend = keras.backend.backend()
    done = _run("--backends", backend, "--output-dir", "/nonexistent/never-written", timeout=60)
    if f"{backend}: " in done.stdout and "CUDA device:" in done.stdout:
        pytest.skip("a CUDA device is visible here")
    assert done.returncode != 0
    assert "sees no CUDA device" in done.stderr and "--dry-run" in done.stderr


def test_the_report_says_when_gpu_figures_are_missing(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import report

    assert report.gpu_block(str(tmp_path)) == report.GPU_MISSING
    assert "GPU figures are missing (no CUDA GPU was available" in report.GPU_MISSING

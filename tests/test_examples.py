"""The examples run end to end: each one's `--smoke` mode, in a subprocess."""

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# What a smoke run must not print (stdout and stderr, case-insensitive): Keras's "Your input ran out of data" (the
# step count exceeded the data that arrived), and the tfds mock's "has no dataset_info.json" and deprecation notices.
NOISE = ("ran out of data", "dataset_info.json", "DeprecationWarning", "deprecated")


def assert_quiet(result):
    """Regression (issue 17): `batch_independent.py --smoke` printed "Your input ran out of data" (the tfds mock
    ignores split slices: 48 examples arrived where the code counted steps for 32), and every tfds smoke run printed
    "Variant folder ... has no dataset_info.json" and deprecation notices that a user reads as errors."""
    output = (result.stdout + result.stderr).lower()
    found = [noise for noise in NOISE if noise.lower() in output]
    assert not found, f"the smoke run printed {found}:\n{result.stdout[-2000:]}{result.stderr[-4000:]}"


def test_quickstart_smoke(tmp_path):
    output = tmp_path / "quickstart.keras"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), "--smoke", "--output", str(output)],
        cwd=EXAMPLES.parent,
        env=os.environ.copy(),  # the same KERAS_BACKEND as this run
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    match = re.search(r"^test accuracy: (\d+\.\d+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout[-2000:]
    assert 0.0 <= float(match.group(1)) <= 1.0
    assert output.is_file()


def test_cifar100_four_things_smoke(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "cifar100_four_things.py"),
            "--smoke",
            "--output-dir",
            str(tmp_path),
        ],
        cwd=EXAMPLES.parent,
        env=os.environ.copy(),  # the same KERAS_BACKEND as this run
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert_quiet(result)
    # The table: `| (k) variant | test accuracy | alpha | train time |`, k = 1..4.
    rows = re.findall(r"^\| \((\d)\) [^|]+\| ([^|]+) \|", result.stdout, re.MULTILINE)
    assert [k for k, _ in rows] == ["1", "2", "3", "4"], result.stdout[-2000:]
    for _, accuracy in rows:
        assert 0.0 <= float(accuracy) <= 1.0
    assert_png(tmp_path / "cifar100_alpha_search.png")


def test_microbatch_ws_bcn_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "microbatch_ws_bcn.py"), "--smoke", "--plot", str(tmp_path / "curves.png")],
        cwd=EXAMPLES.parent,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert_quiet(result)
    for variant in ("BN", "GN+WS", "BCN+WS"):
        match = re.search(rf"^{re.escape(variant)}\s+\|\s+(\d+\.\d+) \|", result.stdout, re.MULTILINE)
        assert match, f"no row for {variant}:\n{result.stdout[-2000:]}"
        assert 0.0 <= float(match.group(1)) <= 1.0
    assert_png(tmp_path / "curves.png")


def test_batch_independent_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "batch_independent.py"), "--smoke", "--plot", str(tmp_path / "bars.png")],
        cwd=EXAMPLES.parent,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert_quiet(result)
    rows = re.findall(r"^\| (BN\+ReLU|FRN\+TLU|EvoNorm-S0)\s+\|\s+(\d+) \|\s+(\d+\.\d+) \|", result.stdout, re.MULTILINE)
    assert sorted((norm, int(batch)) for norm, batch, _ in rows) == sorted(
        (norm, batch) for norm in ("BN+ReLU", "FRN+TLU", "EvoNorm-S0") for batch in (2, 32)
    ), result.stdout[-2000:]
    for _, _, accuracy in rows:
        assert 0.0 <= float(accuracy) <= 1.0
    assert_png(tmp_path / "bars.png")


def assert_png(path):
    """The example saved a non-empty PNG there (matplotlib is in the test requirements)."""
    assert path.is_file(), f"no plot at {path}"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

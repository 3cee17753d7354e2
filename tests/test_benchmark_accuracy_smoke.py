"""The accuracy-vs-batch-size benchmark runs end to end: its `--smoke` profile, in a subprocess.

The smoke trains every method for a few steps at batch size 4, and at 16 the two whose code depends on the
batch size (Ghost BN, BCN's batch mode), on this backend, and writes the table, the plot and the JSON; its
accuracies mean nothing, so only the structure is checked.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy_vs_batch.py"
# Written out here, not imported from the script: a method that silently drops out must fail the test.
TRAINED = ("BN", "BGN", "Batch Renorm", "GN+WS", "BCN+WS", "FRN+TLU", "EvoNorm-S0", "EvoNorm-B0", "GN+PN", "MBN",
           "MBN+DF")
TUNED = ("BN + α", "BGN + α")  # the trained BN and BGN models with alpha chosen on held-out data
# The trained BN and MBN models with their statistics recomputed on the training split (recompute_batch_statistics)
PRECISE = ("BN + Precise BN", "MBN + Precise BN", "MBN+DF + Precise BN")
GHOST = ("Ghost BN", "Ghost BN + α")  # virtual_batch_size 8: trained only above batch size 8


def test_accuracy_vs_batch_smoke(tmp_path):
    backend = keras.backend.backend()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--backend", backend, "--output-dir", str(tmp_path)],
        cwd=SCRIPT.parents[1],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert re.search(rf"^backend: {backend} ", result.stdout, re.MULTILINE), result.stdout[:500]

    report = json.loads((tmp_path / "accuracy_vs_batch.json").read_text())
    assert report["meta"]["backend"] == backend and report["meta"]["profile"] == "smoke"
    cells = sorted((run["budget"], run["method"], run["batch_size"]) for run in report["runs"])
    expected = ([("examples", m, 4) for m in TRAINED + TUNED + PRECISE]
                + [("examples", m, 16) for m in GHOST + ("BCN+WS",)]
                + [("steps", m, 4) for m in ("BN", "BN + α", "BN + Precise BN")])  # the fixed-step view trains BN
    assert cells == sorted(expected)
    for run in report["runs"]:
        assert 0.0 <= run["test_accuracy"] <= 1.0, run
        assert run["setting"] == "easy", run
        # 1 epoch of 16 images: 16 / B steps, or in the fixed-step view the 2 steps of batch size 8
        assert run["steps"] == (2 if run["budget"] == "steps" else 16 // run["batch_size"]), run
        # The smoke's search has the one candidate 0.5; the other rows keep the default 0.
        assert run["alpha"] == (0.5 if run["method"].endswith("+ α") else 0.0), run

    accuracy_table = (tmp_path / "accuracy_vs_batch.md").read_text().split("\n\n")[1]  # after the caption
    rows = dict(re.findall(r"^\| ([^|]+?) \| (.+) \|$", accuracy_table, re.MULTILINE))
    assert rows["method"] == "B=4 | B=16"
    for method in TRAINED + TUNED + PRECISE:
        cell_16 = r"\d+\.\d" if method == "BCN+WS" else "n/a"
        assert re.fullmatch(rf"\d+\.\d \| {cell_16}", rows[method]), (method, rows[method])
    for method in GHOST:  # one ghost batch at batch size 4: BN itself, marked so
        assert re.fullmatch(r"= BN \| \d+\.\d", rows[method]), (method, rows[method])
    step_table = (tmp_path / "accuracy_vs_batch.md").read_text().split("Fixed step count: 2 steps at every batch size")
    assert len(step_table) == 2, "the fixed-step view's table is missing"
    assert re.search(r"^\| BN \| \d+\.\d \| n/a \|$", step_table[1], re.MULTILINE), step_table[1]
    assert (tmp_path / "accuracy_vs_batch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

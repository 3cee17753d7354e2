"""`examples/memorized_bn.py --smoke` runs end to end on this backend, in a subprocess."""

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.test_examples import assert_quiet

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_memorized_bn_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "memorized_bn.py"), "--smoke", "--plot", str(tmp_path / "bars.png")],
        cwd=EXAMPLES.parent,
        env=os.environ.copy(),  # the same KERAS_BACKEND as this run
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert_quiet(result)  # no "ran out of data", tfds mock or deprecation noise (issue 17)
    # The table: `variant | test accuracy | step time | vs BN`, one row per variant.
    for variant in ("BN", "MBN", "MBN + DF"):
        row = rf"^{re.escape(variant)}\s+\|\s+(\d+\.\d+) \|\s+(\d+\.\d+) ms \|"
        match = re.search(row, result.stdout, re.MULTILINE)
        assert match, f"no row for {variant}:\n{result.stdout[-2000:]}"
        assert 0.0 <= float(match.group(1)) <= 1.0
        assert float(match.group(2)) > 0.0
    plot = tmp_path / "bars.png"
    assert plot.is_file() and plot.read_bytes()[:4] == b"\x89PNG", "no bar chart saved"

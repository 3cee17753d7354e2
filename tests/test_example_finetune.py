"""examples/finetune_resnet50.py runs end to end in `--smoke` mode (mock data, random weights), in a subprocess."""

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_finetune_resnet50_smoke():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "finetune_resnet50.py"), "--smoke"],
        cwd=EXAMPLES.parent,
        env=os.environ.copy(),  # the same KERAS_BACKEND as this run
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    for variant in ("BN frozen", "GN+WS", "BCN+WS"):
        match = re.search(rf"^{re.escape(variant)}\s+\|\s+(\d+\.\d+) \|", result.stdout, re.MULTILINE)
        assert match, f"no row for {variant}:\n{result.stdout[-2000:]}"
        assert 0.0 <= float(match.group(1)) <= 1.0

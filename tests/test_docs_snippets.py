"""Every Python block in the docs runs, on this backend.

Each page's ```python blocks are concatenated and executed in a fresh
namespace, all pages in one subprocess (one interpreter start per backend).
"""

import os
import pathlib
import re
import subprocess
import sys

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)

RUNNER = r"""
import json, sys, traceback
import keras
failures = {}
for page, code in json.loads(sys.stdin.read()).items():
    try:
        exec(compile(code, page, "exec"), {"__name__": "__snippet__"})
    except Exception:
        failures[page] = traceback.format_exc(limit=3)
    finally:
        keras.config.set_dtype_policy("float32")
print("SNIPPET-FAILURES " + json.dumps(failures))
"""


def pages_with_code():
    pages = {}
    for path in sorted(DOCS.rglob("*.md")):
        blocks = BLOCK.findall(path.read_text())
        if blocks:
            pages[str(path.relative_to(DOCS))] = "\n".join(blocks)
    return pages


def test_docs_python_blocks_run(tmp_path):
    import json

    pages = pages_with_code()
    assert "layers/batch_normalization.md" in pages
    result = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(pages),
        cwd=tmp_path,  # snippets that write files write them here
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("SNIPPET-FAILURES ")][-1]
    failures = json.loads(line.split(" ", 1)[1])
    assert not failures, "\n\n".join(f"{page}:\n{tb}" for page, tb in failures.items())

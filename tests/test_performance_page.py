"""The Performance page shows one run of the code, and says which (issue 17).

Its Summary, chart and main tables once predated four kernels, while the prose quoted newer figures. Every
generated block of `docs/performance.md` is written by `benchmarks/report.py` from one `run_all.sh` run; these
checks fail when a block is hand-edited, when the blocks mix runs, or when the page does not name the commit it
measured (which must be in this repository's history).
"""

import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "performance.md").read_text()
BLOCK = re.compile(r"<!-- generated: ([a-z0-9-]+) -->\n(.*?)<!-- end generated: \1 -->", re.S)


def _blocks():
    return dict(BLOCK.findall(PAGE))


def test_every_generated_block_is_present_and_filled():
    blocks = _blocks()
    for name in ("provenance", "targets", "train", "infer", "bf16", "memory", "model-fit", "reference", "details",
                 "environment"):
        assert blocks.get(name, "").strip(), f"block {name!r} missing or empty: run benchmarks/report.py"


def test_the_page_names_one_commit_and_one_machine():
    blocks = _blocks()
    commits = set(re.findall(r"keras_norms at ([0-9a-f]{7,40})", blocks["environment"]))
    assert len(commits) == 1, f"the environment block mixes runs of several commits: {commits}"
    (commit,) = commits
    assert f"commit `{commit}`" in blocks["provenance"], "the provenance line names another commit"
    machines = set(re.findall(r": `python benchmarks/[a-z_]+\.py[^`]*`; ([^;(]+) \(", blocks["environment"]))
    assert len(machines) == 1, f"the figures come from several machines: {machines}"
    for backend in ("PyTorch", "TensorFlow", "JAX"):
        assert f"{backend}" in blocks["environment"], f"no {backend} run on the page"


def test_the_measured_commit_is_in_this_history():
    (commit,) = set(re.findall(r"keras_norms at ([0-9a-f]{7,40})", _blocks()["environment"]))
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (e.g. an installed sdist): the commit cannot be looked up")
    done = subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor", commit, "HEAD"],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"commit {commit} named on the Performance page is not an ancestor of HEAD"


@pytest.mark.parametrize("name", ["suite.png", "model_fit.png"])
def test_charts_are_from_the_same_run(name):
    """`report.py` writes the commit into each chart's PNG text chunks: it must be the tables' commit."""
    (commit,) = set(re.findall(r"keras_norms at ([0-9a-f]{7,40})", _blocks()["environment"]))
    chart = ROOT / "docs" / "assets" / "performance" / name
    assert f"assets/performance/{name}" in PAGE
    assert f"keras_norms at {commit}".encode() in chart.read_bytes(), f"{name} is not from the run of {commit}"

"""The wheel: what `scripts/check_wheel.sh` builds holds the whole package, no
tests, and the metadata pyproject.toml declares.

The cheap half of the packaging check: it builds the wheel with the script's
own `--build-only` mode and reads the archive. The script's full run (the wheel
installed outside the source tree, a model fitted on each backend) is a step
of `scripts/test.sh`.
"""

import email
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import pytest
from packaging.requirements import Requirement

import keras_norms

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND") != "tensorflow",
    reason="backend-independent: runs once, in the TensorFlow process",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "check_wheel.sh"), "--build-only", str(out)],
        check=True, timeout=300, env={**os.environ, "PY": sys.executable},  # this run's interpreter builds
    )
    (path,) = out.glob("keras_norms-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def metadata(wheel):
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.message_from_bytes(wheel.read(name))


def unmarked(requirement):
    """`name[extras]specifier`, without the `; extra == ...` marker."""
    requirement = Requirement(str(requirement))
    requirement.marker = None
    return str(requirement)


def test_wheel_holds_every_file_of_the_package(wheel):
    names = set(wheel.namelist())
    source = {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "keras_norms").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    }
    assert "keras_norms/__init__.py" in names
    assert sum(name.endswith(".py") for name in source) > 30  # the glob found the package
    # A data file missing here needs [tool.setuptools.package-data] in pyproject.toml.
    assert sorted(source - names) == []


def test_wheel_ships_no_tests_and_one_top_level_package(wheel):
    names = wheel.namelist()
    assert [n for n in names if n.startswith("tests/")] == []
    top = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert top == {"keras_norms"}


def test_wheel_metadata_matches_pyproject(wheel, project):
    meta = metadata(wheel)
    assert meta["Name"] == project["name"]
    assert meta["Version"] == keras_norms.__version__
    assert meta["License-Expression"] == project["license"]
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    core = {str(r) for r in requires if r.marker is None}
    assert core == {unmarked(Requirement(r)) for r in project["dependencies"]}
    assert set(meta.get_all("Provides-Extra")) == set(project["optional-dependencies"])
    for extra, deps in project["optional-dependencies"].items():
        declared = {
            unmarked(r) for r in requires
            if r.marker is not None and r.marker.evaluate({"extra": extra})
        }
        assert declared == {unmarked(Requirement(d)) for d in deps}, extra


def test_docs_label_the_registry_install_as_not_yet_published():
    """Regression (issue 17): the README's first command was `pip install "keras-norms[tensorflow]"`, and
    no package of that name is published. Drop the label check once keras-norms is on PyPI."""
    registry = re.compile(r"""pip install ["']?keras-norms\b""")
    unlabelled = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if registry.search(line) and "not yet published" not in " ".join(lines[max(i - 2, 0):i + 1]).lower():
                unlabelled.append(f"{page.relative_to(ROOT)}:{i + 1}: {line.strip()}")
    assert unlabelled == [], "label these 'not yet published' (or install from a clone/wheel):\n" + "\n".join(unlabelled)
    readme = (ROOT / "README.md").read_text()
    install = readme[readme.index("## Install"):readme.index("\n## ", readme.index("## Install") + 1)]
    assert 'pip install -e ".[' in install and "python -m build" in install


def test_the_test_command_runs_the_full_wheel_check():
    steps = [
        line for line in (ROOT / "scripts" / "test.sh").read_text().splitlines()
        if line.startswith("run ") and "bash scripts/check_wheel.sh" in line
    ]
    assert len(steps) == 1, "scripts/test.sh must run scripts/check_wheel.sh once"

"""The strict docs build fails on any warning, through the script the test command runs.

Regression test for a muted build: `scripts/test.sh` used to run
`mkdocs build --strict -q`, and with `-q` MkDocs drops the warnings before
strict mode counts them, so the step passed with 16 griffe warnings.

Each build test copies `mkdocs.yml`, `docs/` (with the bundled KaTeX) and
`keras_norms/` into a temporary folder, optionally breaks the copy, and runs
`scripts/build_docs.sh COPY/mkdocs.yml COPY/site` (about 5-10 s per build;
three builds in all). The repository itself is never modified.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD_DOCS = REPO / "scripts" / "build_docs.sh"

# A parameter that no signature has: griffe warns "Parameter '...' does not
# appear in the function signature", which strict mode must count.
INJECTED_PARAMETER = "no_such_argument_injected_by_test"
BROKEN_PAGE = "no_such_page_injected_by_test.md"


@pytest.fixture
def docs_copy(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy2(REPO / "mkdocs.yml", copy / "mkdocs.yml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "docs", copy / "docs", ignore=ignore)
    shutil.copytree(REPO / "keras_norms", copy / "keras_norms", ignore=ignore)
    return copy


def build(copy):
    """Runs the repository's build script on the copy; returns (exit status, output)."""
    result = subprocess.run(
        ["bash", str(BUILD_DOCS), str(copy / "mkdocs.yml"), str(copy / "site")],
        env={**os.environ, "PY": sys.executable},
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result.returncode, result.stdout + result.stderr


def test_unmodified_docs_build_passes_without_warnings(docs_copy):
    status, output = build(docs_copy)
    assert status == 0, f"the strict docs build failed on the unmodified docs:\n{output}"
    assert "WARNING" not in output, output
    assert (docs_copy / "site" / "index.html").is_file()
    assert (docs_copy / "site" / "assets" / "vendor" / "katex" / "katex.min.js").is_file()


def test_docstring_that_griffe_cannot_parse_fails_the_build(docs_copy):
    # An Args entry naming a parameter that `add_gamma_beta_decay` (rendered on
    # the API page) does not have.
    module = docs_copy / "keras_norms" / "regularizers.py"
    source = module.read_text()
    match = re.search(r"def add_gamma_beta_decay\(.*?\n    Args:\n", source, re.S)
    assert match, "regularizers.add_gamma_beta_decay has no Args: section to inject into; pick another target"
    injected = f"        {INJECTED_PARAMETER}: not a parameter of this function.\n"
    module.write_text(source[: match.end()] + injected + source[match.end() :])

    status, output = build(docs_copy)
    assert status != 0, f"the strict build passed with a broken docstring:\n{output}"
    assert re.search(rf"WARNING.*{INJECTED_PARAMETER}", output), (
        f"the build failed but did not name the griffe warning:\n{output}"
    )


def test_broken_internal_link_fails_the_build(docs_copy):
    page = docs_copy / "docs" / "index.md"
    page.write_text(page.read_text() + f"\nSee [a page that does not exist]({BROKEN_PAGE}).\n")

    status, output = build(docs_copy)
    assert status != 0, f"the strict build passed with a broken link:\n{output}"
    assert re.search(rf"WARNING.*{re.escape(BROKEN_PAGE)}", output), (
        f"the build failed but did not name the broken link:\n{output}"
    )


# ----------------------------------------------------------- static check
MKDOCS_RUN = re.compile(r"\bmkdocs\s+(build|serve|gh-deploy)\b")
QUIET = re.compile(r"(?<![\w-])(-q|--quiet)(?![\w-])")


def quiet_mkdocs_commands(text):
    """The mkdocs runs in shell `text` that pass -q/--quiet (comments ignored)."""
    found = []
    logical = re.sub(r"\\\n", " ", text)  # join continued lines
    for line in logical.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)
        for run in MKDOCS_RUN.finditer(line):
            command = re.split(r"&&|\|\||[;|]", line[run.start() :])[0]
            if QUIET.search(command):
                found.append(command.strip())
    return found


def test_the_quiet_check_catches_the_old_command():
    old = (
        'run "docs: mkdocs build --strict" bash -c \\\n'
        "  \"rm -rf site && '$PY' -m mkdocs build --strict -q && test -f site/index.html\"\n"
    )
    assert quiet_mkdocs_commands(old)
    assert quiet_mkdocs_commands("mkdocs build --quiet --strict\n")
    assert quiet_mkdocs_commands("python -m mkdocs serve -q\n")
    assert not quiet_mkdocs_commands("# never pass -q to mkdocs build\nmkdocs build --strict\n")
    assert not quiet_mkdocs_commands("pip install -q mkdocs && mkdocs build --strict && grep -q x y\n")


def test_no_mkdocs_invocation_is_quiet():
    scripts = sorted((REPO / "scripts").glob("*.sh")) + [REPO / ".ci" / "run"]
    offenders = [
        f"{path.relative_to(REPO)}: {command}"
        for path in scripts
        if path.is_file()
        for command in quiet_mkdocs_commands(path.read_text())
    ]
    assert not offenders, (
        "mkdocs runs with -q/--quiet, which drops the warnings before --strict counts them "
        "(the build then passes with warnings); remove it and filter noise by line instead:\n"
        + "\n".join(offenders)
    )

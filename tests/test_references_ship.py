"""What ships cites only what ships: no internal spec, no bare provenance tags.

The package, its docs, the README, the examples and the benchmarks once cited
"spec §…" and "ALGORITHMS.md", a developer file that is not distributed, and
carried bare "[unverified]" tags that a user cannot act on. Where a docstring or
page needs the provenance of a choice, it says in plain words what the paper
states and what this package decided, and points to the Design notes page
(docs/design_notes.md). Files under tests/ are internal and exempt.
"""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# (what is found, pattern); case-insensitive.
FORBIDDEN = [
    ("a citation of the internal ALGORITHMS.md", re.compile(r"ALGORITHMS\.md", re.I)),
    ('a "spec §" citation', re.compile(r"\bspec\s*§", re.I)),
    ('"the spec" cited as a source', re.compile(r"\bthe spec\b(?![-\w])", re.I)),
    ('a bare "[unverified]" tag', re.compile(r"\[unverified\]", re.I)),
]

FIX = (
    "say in plain words what the paper states and what this package decided, and point to the "
    "Design notes page (docs/design_notes.md, a section anchor such as #normprop; in docstrings: "
    '"See the Design notes page of the documentation, section ..."), adding a section there if needed'
)


def shipped_files():
    files = [REPO / "README.md"]
    files += sorted(p for p in (REPO / "keras_norms").rglob("*") if p.suffix in {".py", ".md", ".pyi"})
    files += sorted((REPO / "docs").rglob("*.md"))
    for folder in ("examples", "benchmarks"):
        files += sorted(p for p in (REPO / folder).rglob("*") if p.suffix in {".py", ".md", ".sh"})
    skip = {"__pycache__", "vendor", "output", "results"}  # caches, bundled KaTeX, generated output
    return [p for p in files if p.is_file() and not skip & set(p.relative_to(REPO).parts)]


def violations(text):
    """(line number, what, line) for every forbidden reference in `text`."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in FORBIDDEN:
            if pattern.search(line):
                found.append((number, what, line.strip()))
    return found


@pytest.mark.parametrize(
    "text",
    [
        "NormProp (spec ALGORITHMS.md §11) standardizes",
        "# The paper's gamma initialization (spec §11.3): compensates",
        "    Defaults to 256 [unverified].",
        "| `num_points` | `256` *[Unverified]* |",
        "The spec (§13, §17) marks as not checked",
        "NumPy oracles written from the spec.",
    ],
)
def test_the_check_catches_each_kind_of_reference(text):
    assert violations(text), text


@pytest.mark.parametrize(
    "text",
    [
        "random images with CIFAR-10's feature spec, nothing downloaded",
        "self.input_spec = keras.InputSpec(ndim=ndim)",
        "the spectral norm of the kernel",
        "- [Summers & Dinneen, 2020](https://arxiv.org/abs/1906.03548), §3",
        "not confirmed against the paper (see [Design notes](../design_notes.md#normprop))",
    ],
)
def test_the_check_leaves_ordinary_text_alone(text):
    assert not violations(text), text


def test_the_files_checked_include_every_shipped_kind():
    names = {p.relative_to(REPO).as_posix() for p in shipped_files()}
    for expected in (
        "README.md",
        "keras_norms/layers/normalization_propagation.py",
        "docs/design_notes.md",
        "docs/layers/normalization_propagation.md",
    ):
        assert expected in names, expected
    assert any(n.startswith("examples/") for n in names)
    assert any(n.startswith("benchmarks/") for n in names)
    assert not any(n.startswith("tests/") for n in names)


def test_no_shipped_file_cites_the_internal_spec_or_carries_unverified_tags():
    found = [
        f"{path.relative_to(REPO)}:{number}: {what}: {line}"
        for path in shipped_files()
        for number, what, line in violations(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not found, (
        f"{len(found)} reference(s) a user cannot follow (the internal spec is not shipped):\n"
        + "\n".join(found)
        + f"\nFix: {FIX}."
    )

"""The docs describe the package as it ships: no page calls a public name planned, coming or not implemented.

Regression (issue 17): `docs/layers/weight_standardization.md` said "Batch-Channel Normalization, the paper's other
half, is planned for keras_norms" while `keras_norms.BatchChannelNormalization` shipped.
"""

import inspect
import pathlib
import re

import keras_norms

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
NOT_SHIPPED = re.compile(r"\b(?:planned|coming soon|not yet implemented)\b", re.I)
_CODE_BLOCK = re.compile(r"^```.*?^```", re.M | re.S)
# Paragraph and list-item breaks, then sentence ends ("e.g. " splits too: a shorter sentence misses less).
_BLOCK_BREAK = re.compile(r"\n\s*\n|\n\s*(?:[*-]|\d+\.)\s+|\n\s*\|")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def public_names():
    """The public classes and functions: `keras_norms.__all__` and `dir(keras_norms)`, modules left out."""
    names = set(getattr(keras_norms, "__all__", ())) | set(dir(keras_norms))
    return sorted(
        name
        for name in names
        if not name.startswith("_") and (inspect.isclass(getattr(keras_norms, name, None))
                                         or inspect.isfunction(getattr(keras_norms, name, None)))
    )


def name_pattern(name):
    """`name` as prose may write it: `BatchChannelNormalization` also as "Batch-Channel Normalization"."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name).replace("_", " ").split()
    return re.compile(r"(?<![\w])" + r"[\s_-]*".join(re.escape(w) for w in words) + r"(?![a-z])", re.I)


PATTERNS = {name: name_pattern(name) for name in public_names()}


def sentences(text):
    text = _CODE_BLOCK.sub(" ", text)
    for block in _BLOCK_BREAK.split(text):
        yield from (s.strip() for s in _SENTENCE_END.split(" ".join(block.split())) if s.strip())


def unshipped_claims(text):
    """`(public name, sentence)` for each sentence that names a public name and calls something unshipped."""
    return [
        (name, sentence)
        for sentence in sentences(text)
        if NOT_SHIPPED.search(sentence)
        for name, pattern in PATTERNS.items()
        if pattern.search(sentence)
    ]


def test_the_check_catches_the_old_sentence():
    """The check itself: it flags the sentence that shipped in issue 17, and not a sentence about another name."""
    old = ("Neither uses batch statistics, so training with batch size 1 per device is exact. (Batch-Channel\n"
           "  Normalization, the paper's other half, is planned for keras_norms.)")
    sentence = "(Batch-Channel Normalization, the paper's other half, is planned for keras_norms.)"
    assert unshipped_claims(old) == [("BatchChannelNormalization", sentence)]
    assert unshipped_claims("The `WSConv2D` layer ships. A sync option is planned.") == []
    assert unshipped_claims("`convert_normalization` to LayerNorm is coming soon.")
    assert len(PATTERNS) > 30, "public_names() found too few names"


def test_no_page_calls_a_public_name_unshipped():
    found = [
        f"{page.relative_to(ROOT)}: {name}: {sentence}"
        for page in PAGES
        for name, sentence in unshipped_claims(page.read_text())
    ]
    assert not found, "the docs call shipped names planned or not implemented:\n" + "\n".join(found)

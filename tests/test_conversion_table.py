"""The targets table of the fine-tuning guide is the one `keras_norms.models.convert.conversion_table()` reads from the layers.

Run as a script (`python -m tests.test_conversion_table`, from the repository root) to rewrite the table.
"""

import pathlib
import re

import keras_norms
from keras_norms.models.convert import TARGETS
from keras_norms.models.convert import conversion_table
from keras_norms.layers import conversion_targets

GUIDE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "guides" / "finetune_applications.md"
BLOCK = re.compile(r"(<!-- generated: targets -->\n)(.*?)(<!-- end generated: targets -->)", re.S)
REGENERATE = "python -m tests.test_conversion_table"


def test_the_guide_shows_the_table_read_from_the_layers():
    block = BLOCK.search(GUIDE.read_text())
    assert block, f"{GUIDE.name}: no <!-- generated: targets --> ... <!-- end generated: targets --> block"
    assert block.group(2) == conversion_table(), (
        f"the targets table of {GUIDE.name} differs from the layer classes': run `{REGENERATE}` to rewrite it"
    )


def test_every_target_has_a_row_naming_its_class():
    rows = conversion_table().splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [f'| `"{name}"`' for name in TARGETS]
    for name, cls in conversion_targets().items():
        assert f'| `"{name}"` | `keras_norms.{cls.__name__}` |' in conversion_table()
        assert getattr(keras_norms, cls.__name__) is cls, f"{cls.__name__} converts but is not exported"
    assert '| `"group_norm"` | `keras_norms.GroupNormalization` | γ, β | none |' in conversion_table()


def test_a_subclass_does_not_inherit_its_parent_target():
    # FilterResponseNormalizationTLU subclasses FilterResponseNormalization, which sets "filter_response_norm".
    assert conversion_targets()["filter_response_norm"] is keras_norms.FilterResponseNormalization
    assert keras_norms.FilterResponseNormalizationTLU not in conversion_targets().values()
    assert conversion_targets()["ghost_batch_norm"] is keras_norms.GhostBatchNormalization
    assert conversion_targets()["group_norm"] is keras_norms.GroupNormalization  # not Keras's


if __name__ == "__main__":
    text = GUIDE.read_text()
    GUIDE.write_text(BLOCK.sub(lambda m: m.group(1) + conversion_table() + m.group(3), text))
    print(f"rewrote the targets table of {GUIDE}")

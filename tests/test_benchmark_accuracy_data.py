"""The evidence script's settings: the data each one builds and the batches each one feeds.

The accuracy numbers of docs/evidence.md rest on these: a correlated batch must hold same-class groups and still
show every training example once per pass, the fixed-step view must take the same number of steps at every batch
size, and the harder setting's images must be what its description says.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy_vs_batch.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("accuracy_vs_batch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: parses no arguments, trains nothing
    return module


def labels(counts):
    return np.repeat(np.arange(len(counts)), counts).astype("int32")


@pytest.mark.parametrize("group", [2, 4])
def test_class_group_order_is_a_permutation_of_same_class_groups(script, group):
    y = labels([10, 9, 12, 9])  # 40 examples; the classes of 9 leave remainders for every group size
    order = script.class_group_order(y, group, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(len(y)))  # every example once
    groups = order.reshape(-1, group)
    pure = sum(len(set(y[g])) == 1 for g in groups)
    remainder = sum(n % group for n in (10, 9, 12, 9))
    # Only the pooled remainders may mix classes: at most ceil(remainder / group) groups.
    assert pure >= len(groups) - -(-remainder // group), (pure, len(groups))
    assert not np.array_equal(order, script.class_group_order(y, group, np.random.default_rng(1)))
    with pytest.raises(ValueError, match="41 examples do not split into groups"):
        script.class_group_order(labels([10, 9, 12, 10]), group, np.random.default_rng(0))


def test_correlated_batches_of_the_setting_hold_one_class_per_group(script):
    group = script.SETTINGS["correlated"]["group"]
    y = labels([40] * 10)  # divisible: every group is pure
    x = np.arange(len(y), dtype="float32")[:, None]
    stream = script.Batches(x, y, batch_size=8, steps_per_epoch=50, epochs=2, order="class_groups", group=group,
                            seed=0)
    seen = []
    for epoch in range(2):
        for i in range(len(stream)):
            xb, yb = stream[i]
            assert xb.shape == (8, 1) and np.array_equal(y[xb[:, 0].astype(int)], yb)
            for g in yb.reshape(-1, group):
                assert len(set(g.tolist())) == 1, yb
            seen += xb[:, 0].astype(int).tolist()
        stream.on_epoch_end()
    assert sorted(seen) == sorted(list(range(len(y))) * 2)  # two passes, each example once per pass


def test_iid_stream_wraps_over_passes_for_a_fixed_step_count(script):
    y = labels([8, 8])
    x = np.arange(16, dtype="float32")[:, None]
    # 3 "epochs" of 4 steps at batch size 4: 48 examples drawn from three permutations of 16
    stream = script.Batches(x, y, batch_size=4, steps_per_epoch=4, epochs=3, order="iid", group=1, seed=0)
    drawn = []
    for _ in range(3):
        drawn += [int(v) for i in range(len(stream)) for v in stream[i][0][:, 0]]
        stream.on_epoch_end()
    for k in range(3):
        assert sorted(drawn[16 * k:16 * (k + 1)]) == list(range(16))


def test_hard_setting_images(script):
    rng = np.random.default_rng(0)
    digits = rng.uniform(0.5, 1.0, (6, 8, 8)).astype("float32")
    spec = script.SETTINGS["hard"]
    clean = script.place_on_canvas(digits, spec["canvas"])
    hard = script.place_on_canvas(digits, spec["canvas"], distractors=spec["distractors"], noise=spec["noise"])
    again = script.place_on_canvas(digits, spec["canvas"], distractors=spec["distractors"], noise=spec["noise"])
    assert hard.shape == (6, spec["canvas"], spec["canvas"], 1) and np.array_equal(hard, again)  # fixed data seed
    assert hard.min() >= 0.0 and hard.max() <= 1.0
    # Outside the digit the clean canvas is blank; the hard one has fragments and noise there.
    background = clean == 0
    assert hard[background].mean() > 0.1
    # Without noise, the distractors only add ink: the digit is still there, untouched.
    ink = script.place_on_canvas(digits, spec["canvas"], distractors=spec["distractors"])
    assert np.all(ink >= clean) and np.any(ink > clean)



def test_the_evidence_page_pastes_every_setting_table_unchanged():
    """The tables on docs/evidence.md are the files the script wrote, pasted whole: regenerate, don't annotate."""
    evidence = Path(__file__).resolve().parents[1] / "docs" / "assets" / "evidence"
    page = (evidence.parents[1] / "evidence.md").read_text()
    written = sorted(evidence.glob("accuracy_vs_batch*.md"))
    assert {p.stem for p in written} >= {"accuracy_vs_batch", "accuracy_vs_batch_correlated", "accuracy_vs_batch_hard"}
    for path in written:
        assert path.read_text() in page, f"docs/evidence.md does not paste {path.name} unchanged: paste it again"
        assert f"assets/evidence/{path.stem}.png" in page, f"docs/evidence.md does not show {path.stem}.png"

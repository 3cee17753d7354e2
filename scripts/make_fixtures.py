"""Writes the serialization fixtures: one `.keras` file per registered layer, with its input and outputs.

    KERAS_BACKEND=tensorflow python scripts/make_fixtures.py [--force | --add-missing]

For each layer class of the conformance registry (`tests/cases.py`), the registry case with the most weights
(renorm, learned epsilon, ... so that every kind of variable is saved), built with random weights and state,
in a one-layer `keras.Sequential` saved to `tests/fixtures/<keras_norms version>/<case>.keras`, and in
`<case>.npz`:

* `x`: the input;
* `y_inference`, `y_training`: the outputs of `model(x, training=False)` and then `model(x, training=True)`;
* `state/<weight name>`: each non-trainable weight after the training call.

Every stored output and state is first checked against the float64 NumPy oracle of the registry (the script
refuses to write a fixture that disagrees), so the files hold correct values, not merely the values of this
version. `MANIFEST.json` records the keras_norms, Keras and backend versions the files come from.
`tests/test_fixtures_load.py` loads every fixture of every version on each backend and compares.

Generate once per release whose saved format should stay loadable; an existing version folder is kept unless
`--force` is given. `--add-missing` writes only the fixtures of layer classes the folder lacks (a layer added
before the version is released), leaving every existing file as it is. The `.keras` archives are re-packed with deflate compression (Keras stores them
uncompressed), which `keras.saving.load_model` reads as it is.
"""

import argparse
import json
import os
import pathlib
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_norms  # noqa: E402
from tests.backend_utils import to_numpy  # noqa: E402
from tests.cases import CASES  # noqa: E402
from tests.test_conformance import f64  # noqa: E402
from tests.test_conformance import make_input  # noqa: E402
from tests.test_conformance import random_weights  # noqa: E402
from tests.tolerances import assert_close  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"


def fixture_cases():
    """Per layer class, the registry case whose built layer has the most weights (the first on a tie)."""
    chosen = {}
    for case in CASES:
        layer = case.build()
        layer.build(case.input_shape)
        best = chosen.get(case.layer)
        if best is None or len(layer.weights) > best[1]:
            chosen[case.layer] = (case, len(layer.weights))
    return [case for case, _ in chosen.values()]


def repack(path):
    """Rewrites the `.keras` zip archive at `path` with deflate compression."""
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info.filename)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in members:
            archive.writestr(name, data)


def write_fixture(case, folder):
    layer = case.build(name=case.name)
    layer.build(case.input_shape)
    weights = random_weights(layer)
    model = keras.Sequential([keras.Input(case.input_shape[1:]), layer], name=f"fixture_{case.name}")
    path = folder / f"{case.name}.keras"
    model.save(path)  # before the training call: the file holds the random state
    repack(path)

    x = make_input(case.input_shape)
    arrays = {"x": x}
    for training in (False, True):
        y = to_numpy(model(x, training=training))
        expected, new_state = case.oracle(x.astype("float64"), f64(weights), training, **case.kwargs)
        assert_close(y, expected, err_msg=f"{case.name} training={training}: output differs from the oracle")
        arrays["y_training" if training else "y_inference"] = y
    for w in layer.non_trainable_weights:
        value = to_numpy(w)
        assert_close(value, new_state.get(w.name, weights[w.name]), err_msg=f"{case.name}: {w.name} differs")
        arrays[f"state/{w.name}"] = value
    np.savez_compressed(folder / f"{case.name}.npz", **arrays)
    return {"layer": case.layer.__name__, "input_shape": str(case.input_shape), "kwargs": repr(case.kwargs)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="overwrite this version's existing fixtures")
    parser.add_argument("--add-missing", action="store_true",
                        help="write only the fixtures of layer classes this version's folder lacks; keep the others")
    args = parser.parse_args()
    folder = FIXTURES / keras_norms.__version__
    manifest_path = folder / "MANIFEST.json"
    if args.add_missing and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        saved = {entry["layer"] for entry in manifest["fixtures"].values()}
        added = {case.name: write_fixture(case, folder) for case in fixture_cases()
                 if case.layer.__name__ not in saved}
        manifest["fixtures"].update(added)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"added {len(added)} fixtures to {folder}: {sorted(added)}")
        return
    if folder.exists() and not args.force:
        sys.exit(f"{folder} exists; pass --force to overwrite the fixtures of version {keras_norms.__version__}, "
                 "or --add-missing to add those of new layers")
    folder.mkdir(parents=True, exist_ok=True)
    fixtures = {case.name: write_fixture(case, folder) for case in fixture_cases()}
    manifest = {
        "keras_norms": keras_norms.__version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "numpy": np.__version__,
        "generated_by": "scripts/make_fixtures.py",
        "fixtures": fixtures,
    }
    (folder / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(f"wrote {len(fixtures)} fixtures to {folder} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

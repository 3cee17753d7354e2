"""Every place a new layer or op must reach beyond its own files, each enforced with a message saying what to add.

`docs/contributing.md` lists the files a new normalization layer needs (op, kernel, layer, NumPy oracle, registry
case, docs page, changelog and nav line). Everything else is derived, or checked here and by the tests named in the
guide: a forgotten export, README row or docs page fails with the fix in its message.
"""

import ast
import importlib
import inspect
import pathlib
import re

import keras

import keras_norms
import keras_norms.layers
import keras_norms.ops

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_norms"


def _public_layer_classes():
    """`{name: class}` of the public Keras layers defined in `keras_norms/layers/<family>.py`."""
    found = {}
    for path in sorted((PACKAGE / "layers").glob("[!_]*.py")):
        module = importlib.import_module(f"keras_norms.layers.{path.stem}")
        for name, obj in vars(module).items():
            if (not name.startswith("_") and inspect.isclass(obj) and obj.__module__ == module.__name__
                    and issubclass(obj, keras.layers.Layer) and not name.endswith("Mixin")
                    and keras.saving.get_registered_name(obj).startswith("keras_norms>")):
                found[name] = obj
    return found


def _public_op_functions():
    """Names of the public ops of `keras_norms/ops/<family>.py`: the functions that dispatch to a fast path."""
    names = set()
    for path in sorted((PACKAGE / "ops").glob("[!_]*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                calls = {getattr(c.func, "attr", getattr(c.func, "id", None)) for c in ast.walk(node)
                         if isinstance(c, ast.Call)}
                if calls & {"dispatch", "run_reference"}:
                    names.add(node.name)
    return names


def test_every_layer_class_is_exported():
    layers = _public_layer_classes()
    assert "BatchNormalization" in layers and "WSConv2D" in layers  # the scan finds the layers
    missing = [name for name in layers if getattr(keras_norms, name, None) is not layers[name]]
    assert not missing, (f"export {missing} from keras_norms/layers/__init__.py and keras_norms/__init__.py "
                         "(import line and __all__)")
    missing = [name for name in layers if getattr(keras_norms.layers, name, None) is not layers[name]]
    assert not missing, f"export {missing} from keras_norms/layers/__init__.py"
    assert set(layers) <= set(keras_norms.__all__), f"add {sorted(set(layers) - set(keras_norms.__all__))} to __all__"


def test_every_public_op_is_exported_from_ops():
    ops = _public_op_functions()
    assert {"batch_norm", "group_norm", "tlu"} <= ops  # the scan finds the ops
    missing = sorted(name for name in ops if name not in keras_norms.ops.__all__)
    assert not missing, f"export {missing} from keras_norms/ops/__init__.py (import line and __all__)"


def test_every_layer_has_a_readme_row_and_a_docs_page_in_the_nav():
    readme = (ROOT / "README.md").read_text()
    nav_pages = set(re.findall(r":\s*(layers/[\w./-]+\.md)", (ROOT / "mkdocs.yml").read_text()))
    pages = {page: (ROOT / "docs" / page).read_text() for page in nav_pages}
    for name in _public_layer_classes():
        assert f"`{name}`" in readme, f"add `{name}` to the README feature table (its method's row)"
        # "NormPropConv1D/2D/3D" names the three: match the family stem of a 1D/2D/3D layer.
        stem = re.sub(r"[123]D$", "", name)
        assert any(re.search(rf"\b{stem}", text) for text in pages.values()), (
            f"describe {name} on a docs/layers/*.md page listed in mkdocs.yml's nav (see docs/contributing.md)")


def test_the_checks_above_can_fail(monkeypatch):
    """A layer defined but not exported is reported (the scan is not vacuous)."""
    module = importlib.import_module("keras_norms.layers.filter_response_normalization")

    @keras.saving.register_keras_serializable(package="keras_norms")
    class UnexportedProbeLayer(keras.layers.Layer):
        pass

    monkeypatch.setattr(module, "UnexportedProbeLayer", UnexportedProbeLayer, raising=False)
    UnexportedProbeLayer.__module__ = module.__name__
    assert "UnexportedProbeLayer" in _public_layer_classes()
    try:
        test_every_layer_class_is_exported()
    except AssertionError as error:
        assert "UnexportedProbeLayer" in str(error)
    else:
        raise AssertionError("an unexported layer class passed the export check")

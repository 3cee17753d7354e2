"""The public surface: every exported layer is in the conformance registry."""

import inspect

import keras

import keras_norms
from tests.cases import CASES


def exported_layers():
    return {
        name: obj
        for name, obj in vars(keras_norms).items()
        if inspect.isclass(obj) and issubclass(obj, keras.layers.Layer)
    }


def test_every_exported_layer_has_a_conformance_case():
    covered = {case.layer for case in CASES}
    missing = [name for name, cls in exported_layers().items() if cls not in covered]
    assert not missing, f"add a Case to tests/cases.py for: {missing}"


def test_all_lists_the_public_api():
    assert set(exported_layers()) <= set(keras_norms.__all__)
    for name in keras_norms.__all__:
        assert hasattr(keras_norms, name)
    assert isinstance(keras_norms.__version__, str)


def test_layers_are_registered_under_the_package_name():
    for name, cls in exported_layers().items():
        assert keras.saving.get_registered_name(cls) == f"keras_norms>{name}"


def test_every_layer_documents_its_equation_args_and_reference():
    for name, cls in exported_layers().items():
        doc = inspect.getdoc(cls)
        for section in ("$$", "Args:", "Call arguments:", "Returns:", "Reference:"):
            assert section in doc, f"{name} docstring lacks {section!r}"

"""The public surface: every exported layer is in the conformance registry,
every public symbol is on the API page, and every docstring has its sections."""

import ast
import inspect
import pathlib
import re
import textwrap

import keras

import keras_norms
from tests.cases import CASES


def exported_layers():
    return {
        name: obj
        for name, obj in vars(keras_norms).items()
        if inspect.isclass(obj) and issubclass(obj, keras.layers.Layer) and not issubclass(obj, keras.Model)
    }


def test_every_exported_layer_has_a_conformance_case():
    covered = {case.layer for case in CASES}
    missing = [name for name, cls in exported_layers().items() if cls not in covered]
    assert not missing, f"add a Case for {missing} to tests/cases_<family>.py (see docs/contributing.md)"


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


# ------------------------------------------------------------ API page, docstrings
API_PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api.md"
ENTRY = re.compile(r"^:::\s+keras_norms\.([A-Za-z_][\w.]*)\s*$", re.M)


def public_symbols():
    """The classes and functions of `keras_norms.__all__` (not modules, not `__version__`)."""
    return {
        name: getattr(keras_norms, name)
        for name in keras_norms.__all__
        if inspect.isclass(getattr(keras_norms, name)) or inspect.isfunction(getattr(keras_norms, name))
    }


def public_functions():
    """Every public function: top-level ones, `keras_norms.ops.__all__`, `keras_norms.config`'s."""
    functions = {name: obj for name, obj in public_symbols().items() if inspect.isfunction(obj)}
    functions.update({f"ops.{name}": getattr(keras_norms.ops, name) for name in keras_norms.ops.__all__})
    functions.update(
        {
            f"config.{name}": obj
            for name, obj in vars(keras_norms.config).items()
            if not name.startswith("_") and inspect.isfunction(obj) and obj.__module__ == keras_norms.config.__name__
        }
    )
    return functions


def _own_nodes(function):
    """The AST nodes of `function`'s body, nested functions, lambdas and classes left out."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(function))))
    stack = list(tree.body[0].body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _returns_a_value(function):
    return any(
        isinstance(node, ast.Return)
        and node.value is not None
        and not (isinstance(node.value, ast.Constant) and node.value.value is None)
        for node in _own_nodes(function)
    )


def _raises(function):
    """Whether the body raises an exception itself (a bare re-`raise` does not count)."""
    return any(isinstance(node, ast.Raise) and node.exc is not None for node in _own_nodes(function))


def _summary_problem(doc):
    lines = doc.splitlines() if doc else []
    if not lines or not lines[0].strip():
        return "no docstring"
    if not lines[0].rstrip().endswith("."):
        return f"the first line {lines[0]!r} is not a one-sentence summary ending with '.'"
    if len(lines) > 1 and lines[1].strip():
        return "the one-line summary is not followed by a blank line"
    return None


def test_every_public_class_and_function_is_on_the_api_page():
    documented = set(ENTRY.findall(API_PAGE.read_text()))
    missing = sorted(set(public_symbols()) - documented)
    assert not missing, f"add `::: keras_norms.<name>` entries to docs/api.md for: {missing}"


def test_every_public_symbol_has_a_one_line_summary():
    symbols = {**public_symbols(), **public_functions()}
    problems = {name: _summary_problem(inspect.getdoc(obj)) for name, obj in symbols.items()}
    problems = {name: problem for name, problem in problems.items() if problem}
    assert not problems, "\n".join(f"{name}: {problem}" for name, problem in sorted(problems.items()))


def test_every_public_function_documents_args_returns_raises():
    """Google style: `Args:` when it takes arguments, `Returns:` when it returns a
    value (unless the summary starts with "Returns", as the style guide allows),
    `Raises:` when its body raises; top-level functions also cite a `Reference:`."""
    problems = {}
    for name, function in public_functions().items():
        doc = inspect.getdoc(function) or ""
        lacks = []
        if inspect.signature(function).parameters and "\nArgs:" not in doc:
            lacks.append("Args:")
        if _returns_a_value(function) and "\nReturns:" not in doc and not doc.startswith("Returns"):
            lacks.append("Returns:")
        if _raises(function) and "\nRaises:" not in doc:
            lacks.append("Raises:")
        if "." not in name and not re.search(r"^References?:", doc, re.M):
            lacks.append("Reference:")
        if lacks:
            problems[name] = lacks
    assert not problems, "\n".join(f"{name} docstring lacks {lacks}" for name, lacks in sorted(problems.items()))


# ------------------------------------------------------------ classes handed to users
_RETURNS_SECTION = re.compile(r"^Returns:\n(.*?)(?=^\S|\Z)", re.M | re.S)


def returned_classes(function):
    """The keras_norms classes `function` hands to its caller.

    Those it returns an instance of directly (`return Cls(...)`), and those its docstring's `Returns:` section
    names in backticks (`Cls`, `keras_norms.Cls`), resolved in the function's module.
    """
    scope = inspect.unwrap(function).__globals__
    names = {
        node.value.func.id
        for node in _own_nodes(function)
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
    }
    returns = _RETURNS_SECTION.search(inspect.getdoc(function) or "")
    if returns:
        names |= set(re.findall(r"`(?:keras_norms\.)?([A-Z]\w*)`", returns.group(1)))
    return {
        name: scope[name]
        for name in names
        if inspect.isclass(scope.get(name)) and scope[name].__module__.startswith("keras_norms")
    }


def test_every_class_a_public_function_returns_is_exported():
    """Regression (issue 17): `with_double_forward` returned a `DoubleForwardModel` that was neither exported nor
    documented, so users could not name the type of what they held (isinstance checks, `custom_objects`, docs).
    Every keras_norms class a public function returns is in `keras_norms.__all__`, hence on the API page."""
    returned = {
        (name, cls_name): cls
        for name, function in public_functions().items()
        for cls_name, cls in returned_classes(function).items()
    }
    assert ("with_double_forward", "DoubleForwardModel") in returned, "returned_classes() misses the known case"
    missing = sorted(
        f"{name} returns {cls_name}"
        for (name, cls_name), cls in returned.items()
        if cls_name not in keras_norms.__all__ or getattr(keras_norms, cls_name) is not cls
    )
    assert not missing, f"export these from keras_norms (and list them in __all__ and docs/api.md): {missing}"


def test_double_forward_model_is_public_and_documented():
    """Regression (issue 17): `DoubleForwardModel` is exported and its docstring says what it does, with Args and
    an Example."""
    assert keras_norms.with_double_forward.__module__ == keras_norms.DoubleForwardModel.__module__
    doc = inspect.getdoc(keras_norms.DoubleForwardModel)
    for section in ("Args:", "Example:", "with_double_forward", "MemorizedBatchNormalization"):
        assert section in doc, f"DoubleForwardModel docstring lacks {section!r}"

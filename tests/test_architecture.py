"""The package's layout rules, checked on the source (no import): imports run one way, kernels stay in their place.

* no module-level import cycle inside `keras_norms`;
* `keras_norms/ops` never imports a backend package at module level (kernels are loaded on first dispatch);
* a module under `keras_norms/_backends/` imports from the package only `ops._common`, `ops._dispatch`, `config`
  and its own backend package (TensorFlow's and JAX's also `_backends.xla`);
* no private name (`_x`) crosses modules, by `from ... import _x` or `module._x`; a private *module* such as
  `ops._common` is the package's internal API and may be imported;
* no module under `_backends/` but a package's `__init__` is only imports (a shim or re-export list).

Each rule is a function of `{module name: source}`, run on the package and, in a self-test, on a small synthetic
package that breaks it.
"""

import ast
import pathlib

import keras_norms

PACKAGE = "keras_norms"
ROOT = pathlib.Path(keras_norms.__file__).parent


def package_sources():
    """`{module name: source}` of every module of `keras_norms` (a package's module is its `__init__`)."""
    sources = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        sources[".".join(parts)] = path.read_text()
    return sources


def _is_package(name, sources):
    return any(other.startswith(name + ".") for other in sources)


def _imports(name, source, sources, module_level):
    """`[(line, imported module, imported name or None)]` of the `keras_norms` imports of one module.

    `module_level`: only statements outside functions and classes. `from a import b` names the module `a.b`
    when that is a module, else `a` and the name `b`.
    """
    tree = ast.parse(source)
    nodes = []
    if module_level:
        stack = list(tree.body)
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            nodes.append(node)
            stack.extend(ast.iter_child_nodes(node))
    else:
        nodes = list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                package = name.split(".") if _is_package(name, sources) else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((node.lineno, full, None) if full in sources else (node.lineno, base, alias.name))
    return [entry for entry in found if entry[1] == PACKAGE or entry[1].startswith(PACKAGE + ".")]


def import_cycle(sources):
    """A module-level import cycle among `sources` as `[a, b, ..., a]`, or `None`.

    An edge runs from a module to each module it imports at module level; the implicit import of the parent
    packages (importing `a.b.c` runs `a/__init__` and `a/b/__init__` first) is not an edge.
    """
    graph = {
        name: sorted({target for _, target, _ in _imports(name, source, sources, True) if target in sources} - {name})
        for name, source in sources.items()
    }
    state, stack = {}, []

    def visit(name):
        state[name] = "open"
        stack.append(name)
        for target in graph[name]:
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name)
            if cycle:
                return cycle
    return None


def ops_importing_backends(sources):
    """`["module:line imports target"]`: modules of `keras_norms.ops` importing a backend package at module level."""
    problems = []
    for name, source in sources.items():
        if name == f"{PACKAGE}.ops" or name.startswith(f"{PACKAGE}.ops."):
            for line, target, _ in _imports(name, source, sources, True):
                if target == f"{PACKAGE}._backends" or target.startswith(f"{PACKAGE}._backends."):
                    problems.append(f"{name}:{line} imports {target}")
    return problems


def backend_imports_outside_their_place(sources):
    """`["module:line imports target"]`: imports from `keras_norms` by `_backends` modules that are not allowed."""
    backends = f"{PACKAGE}._backends"
    shared = {f"{PACKAGE}.ops._common", f"{PACKAGE}.ops._dispatch", f"{PACKAGE}.config"}
    problems = []
    for name, source in sources.items():
        if not name.startswith(backends + "."):
            continue
        own = name.split(".")[2]
        packages = [f"{backends}.{own}"] + ([f"{backends}.xla"] if own in ("tensorflow", "jax") else [])
        for line, target, _ in _imports(name, source, sources, False):
            inside = any(target == p or target.startswith(p + ".") for p in packages)
            if target not in shared and not inside:
                problems.append(f"{name}:{line} imports {target}")
    return problems


def private_names_across_modules(sources):
    """`["module:line name"]`: private names of other `keras_norms` modules, imported or read as `module._x`."""
    problems = []
    for name, source in sources.items():
        aliases = {}  # local name -> keras_norms module bound by an import
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in sources:
                        aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    for line, target, imported in _imports(name, ast.unparse(node), sources, False):
                        if imported is None and target.endswith("." + alias.name):
                            aliases[alias.asname or alias.name] = target
        for line, target, imported in _imports(name, source, sources, False):
            if imported is not None and imported.startswith("_") and target != name:
                problems.append(f"{name}:{line} from {target} import {imported}")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                private = node.attr.startswith("_") and not node.attr.startswith("__")
                if private and f"{aliases[node.value.id]}.{node.attr}" not in sources:
                    problems.append(f"{name}:{node.lineno} {node.value.id}.{node.attr}")
    return sorted(set(problems))


def import_only_modules(sources):
    """Modules under `_backends/`, packages' `__init__` aside, whose code is nothing but imports."""
    problems = []
    for name, source in sources.items():
        if not name.startswith(f"{PACKAGE}._backends.") or _is_package(name, sources):
            continue
        body = ast.parse(source).body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring
        code = [n for n in body if not (isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__all__")]
        if code and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in code):
            problems.append(name)
    return problems


# ------------------------------------------------------------------ the rules on the package
def test_no_module_level_import_cycle():
    cycle = import_cycle(package_sources())
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle or [])


def test_ops_never_import_a_backend_at_module_level():
    problems = ops_importing_backends(package_sources())
    assert not problems, (
        "keras_norms.ops must not import keras_norms._backends at module level (kernels register themselves and "
        "load on first dispatch): " + "; ".join(problems)
    )


def test_backend_modules_import_only_the_shared_helpers_and_their_own_package():
    problems = backend_imports_outside_their_place(package_sources())
    assert not problems, (
        "a module under keras_norms/_backends/ may import from keras_norms only ops._common, ops._dispatch, config "
        "and its own backend package (tensorflow and jax: also _backends.xla); move what it needs to "
        "ops/_common.py: " + "; ".join(problems)
    )


def test_no_private_name_crosses_modules():
    problems = private_names_across_modules(package_sources())
    assert not problems, (
        "private names used across modules; give the helper a public name (in a private module such as "
        "ops/_common.py if it is internal): " + "; ".join(problems)
    )


def test_no_backend_module_is_only_imports():
    problems = import_only_modules(package_sources())
    assert not problems, "shim or re-export modules under keras_norms/_backends/: " + ", ".join(problems)


# ------------------------------------------------------------------ each rule fails on a package that breaks it
SYNTHETIC = {
    "keras_norms": "from keras_norms import ops\n",
    "keras_norms.config": "",
    "keras_norms.ops": "from keras_norms.ops.a import f\n",
    "keras_norms.ops._common": "def helper():\n    pass\n\ndef _private():\n    pass\n",
    "keras_norms.ops._dispatch": "from keras_norms import config\n",
    "keras_norms.ops.a": (
        "from keras_norms.ops import _common\nfrom keras_norms.ops.b import g\n"
        "from keras_norms._backends.torch import kernels\n\ndef f():\n    from keras_norms.ops import b\n"
        "    return _common._private(), _common.helper()\n"
    ),
    "keras_norms.ops.b": (
        "from keras_norms.ops._common import _private\n\ndef g():\n    from keras_norms.ops import a\n"
    ),
    "keras_norms._backends": '"""Backends."""\n',
    "keras_norms._backends.torch": '"""Torch."""\nfrom keras_norms._backends.torch.kernels import k\n',
    "keras_norms._backends.torch.kernels": (
        "from keras_norms.ops import _common\nfrom keras_norms._backends.xla import shared\n\n"
        "def k():\n    from keras_norms.ops import a\n"
    ),
    "keras_norms._backends.jax": '"""JAX."""\n',
    "keras_norms._backends.jax.shim": (
        '"""A shim."""\n__all__ = ["k"]\nfrom keras_norms._backends.xla.shared import k\n'
    ),
    "keras_norms._backends.xla": "",
    "keras_norms._backends.xla.shared": "from . import _helpers\n\ndef k():\n    pass\n",
    "keras_norms._backends.xla._helpers": "",  # empty: not a shim
}


def test_the_rules_find_what_breaks_them():
    assert import_cycle(SYNTHETIC) is None  # the imports inside functions do not count
    cyclic = dict(SYNTHETIC, **{"keras_norms.ops.b": "from keras_norms.ops import a\n"})
    assert import_cycle(cyclic) == ["keras_norms.ops.a", "keras_norms.ops.b", "keras_norms.ops.a"]
    assert ops_importing_backends(SYNTHETIC) == ["keras_norms.ops.a:3 imports keras_norms._backends.torch.kernels"]
    assert backend_imports_outside_their_place(SYNTHETIC) == [
        "keras_norms._backends.torch.kernels:2 imports keras_norms._backends.xla.shared",
        "keras_norms._backends.torch.kernels:5 imports keras_norms.ops.a",
    ]
    assert private_names_across_modules(SYNTHETIC) == [
        "keras_norms.ops.a:7 _common._private",
        "keras_norms.ops.b:1 from keras_norms.ops._common import _private",
    ]
    assert import_only_modules(SYNTHETIC) == ["keras_norms._backends.jax.shim"]

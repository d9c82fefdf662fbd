"""Structure of the package, read from the source with ``ast`` (nothing is imported or run):
no function other than a click command takes more than 10 parameters, and no two modules of
``mlsl_gluon`` import each other."""
import ast
from pathlib import Path

PACKAGE = "mlsl_gluon"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
MAX_PARAMETERS = 10


def module_name(path):
    """``mlsl_gluon/a/b.py`` -> ``mlsl_gluon.a.b``; ``mlsl_gluon/a/__init__.py`` -> ``mlsl_gluon.a``."""
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules():
    """``{module name: (path, parsed tree)}`` of every module of the package."""
    return {module_name(p): (p, ast.parse(p.read_text(), filename=str(p)))
            for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def dotted(node):
    """``a.b.c`` of a Name/Attribute chain (the callee of a decorator call), else ''."""
    if isinstance(node, ast.Call):
        node = node.func
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        names.append(node.id)
    return ".".join(reversed(names))


def is_click_command(function):
    """Decorated with click's ``command``/``group`` (also ``a_group.command``) or ``option``/``argument``."""
    for decorator in function.decorator_list:
        name = dotted(decorator)
        if name in ("click.option", "click.argument") or name.endswith((".command", ".group")):
            return True
    return False


def parameter_count(function, in_class):
    """Positional-only, ordinary and keyword-only parameters, *args and **kwargs one each;
    the first parameter of a method is not counted when it is ``self`` or ``cls``."""
    args = function.args
    names = [a.arg for a in args.posonlyargs + args.args]
    if in_class and names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names) + len(args.kwonlyargs) + (args.vararg is not None) + (args.kwarg is not None)


def functions(tree):
    """``(qualified name, node, defined directly in a class)`` of every function of a module."""
    found = []

    def visit(node, prefix, in_class):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((prefix + child.name, child, in_class))
                visit(child, f"{prefix}{child.name}.", False)
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", True)
            else:
                visit(child, prefix, in_class)

    visit(tree, "", False)
    return found


def imported_modules(name, path, tree, modules):
    """Modules of the package that module ``name`` imports anywhere in its source (also inside
    functions). ``from X import y`` imports the module ``X.y`` when it exists, else ``X`` itself
    (a package's ``__init__``); relative imports are resolved against ``name``'s package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in modules else source)
    return {m for m in found if m in modules and m != name}


def test_module_names_and_import_resolution():
    """The helpers above on the package's own layout: they must see what the tests rely on."""
    modules = package_modules()
    training, engine = f"{PACKAGE}.training", f"{PACKAGE}.training.engine"
    assert {PACKAGE, training, engine, f"{PACKAGE}.cli"} <= modules.keys()
    path, tree = modules[training]
    # training/__init__.py re-exports the engine: an import of the module training.engine.
    assert engine in imported_modules(training, path, tree, modules)
    tree = ast.parse("from . import engine\nfrom ..losses import mlsl_loss\n"
                     "from mlsl_gluon.training import x\ndef f():\n    import mlsl_gluon.data.transforms\n")
    found = imported_modules(f"{training}.stage", PACKAGE_DIR / "training" / "stage.py", tree, modules)
    assert found == {engine, f"{PACKAGE}.losses", training, f"{PACKAGE}.data.transforms"}
    sample = ast.parse("class A:\n    def m(self, a, *b, c, **d): pass\n"
                       "@click.command()\n@click.option('--x')\ndef cmd(x): pass\n"
                       "@prepare.command('check')\ndef check(a): pass\ndef plain(cls, a, /, b): pass\n")
    found = {qualified: (parameter_count(node, in_class), is_click_command(node))
             for qualified, node, in_class in functions(sample)}
    assert found == {"A.m": (4, False), "cmd": (1, True), "check": (1, True), "plain": (3, False)}


def test_no_function_takes_more_than_ten_parameters():
    offenders = []
    for path, tree in package_modules().values():
        for qualified, node, in_class in functions(tree):
            count = parameter_count(node, in_class)
            if count > MAX_PARAMETERS and not is_click_command(node):
                where = f"{path.relative_to(PACKAGE_DIR.parent)}:{node.lineno}"
                offenders.append(f"{where} {qualified} ({count})")
    assert not offenders, "functions with more than 10 parameters:\n" + "\n".join(offenders)


def test_no_two_modules_import_each_other():
    modules = package_modules()
    graph = {name: imported_modules(name, path, tree, modules) for name, (path, tree) in modules.items()}
    cycles = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets
                     if a in graph[b]})
    assert not cycles, "modules importing each other:\n" + "\n".join(f"{a} <-> {b}" for a, b in cycles)

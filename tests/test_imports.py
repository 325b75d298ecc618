"""The house's layering, read from the code's own imports: data imports nothing from trainer or cluster, trainer
nothing from cluster, no import circle between product modules, and `fightwatch --help` starts without torch."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data", "trainer", "cluster")
LAYER = {"data": 0, "trainer": 1, "cluster": 2}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The product modules `path` imports, at any depth of its code (lazy imports in functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def test_lower_layers_never_import_higher_ones():
    modules = _modules()
    wrong = [f"{name} imports {imported}" for name, path in modules.items() for imported in _imports(path, modules)
             if LAYER[imported.split(".")[0]] > LAYER[name.split(".")[0]]]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle_between_product_modules():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    # a package's __init__ is not an edge: importing trainer.serve.alerting.store does not run anything circular
    graph = {name: {m for m in deps if modules[m].name != "__init__.py"} for name, deps in graph.items()}
    circles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                circles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, "\n".join(circles)


def test_the_command_line_starts_without_the_heavy_libraries():
    code = ("import sys; from cluster.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'av') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_every_package_index_names_each_of_its_modules():
    """A package whose __init__ has a docstring indexes its rooms: every module and subpackage is named there."""
    missing = []
    for init in sorted(p for package in PACKAGES for p in (ROOT / package).rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if not doc:
            continue
        rooms = [p.name for p in init.parent.iterdir()
                 if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()]
        missing += [f"{init.relative_to(ROOT)}: {room}" for room in rooms
                    if (room if room.endswith(".py") else f"{room}/") not in doc]
    assert not missing, "\n".join(missing)

"""Who may import what among the tests and the scripts: a test module (tests/test_*.py) is imported by no one, not
by another test, not by conftest.py or tests/support/, not by a script; what two of them share lives in
tests/support/, the only part of tests/ that scripts import. Imports are read with ast, inside functions too, and so
are the import lines of code in strings (the `python -c` children some tests start)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS, SCRIPTS = ROOT / "tests", ROOT / "scripts"
IMPORT_LINE = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import\s+([\w, ]+)|import\s+([\w., ]+))", re.M)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    return imports_in(path.read_text(), ".".join(path.relative_to(ROOT).parent.parts), str(path))


def imports_in(source: str, package: str, filename="<string>") -> list[tuple[int, str]]:
    """(line, dotted module) of every import in `source`, a module of `package`, relative ones resolved; `from a
    import b` gives a.b too, as b may be a module. Code in string constants counts at the string's line."""
    tree = ast.parse(source, filename)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found += [(node.lineno, base), *((node.lineno, f"{base}.{alias.name}") for alias in node.names)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in IMPORT_LINE.finditer(node.value):
                if match[1]:
                    found += [(node.lineno, match[1]),
                              *((node.lineno, f"{match[1]}.{name.split(' as ')[0].strip()}")
                                for name in match[2].split(",") if name.strip())]
                else:
                    found += [(node.lineno, name.split(" as ")[0].strip()) for name in match[3].split(",")]
    return found


def is_test_module(module: str) -> bool:
    parts = module.split(".")
    return len(parts) >= 2 and parts[0] == "tests" and parts[1].startswith("test_")


def offences(paths, allowed) -> str:
    """One line per import that `allowed` refuses: file:line and the module (the shortest name refused there)."""
    found = {}
    for path in paths:
        for line, module in imported_modules(path):
            if not allowed(module):
                where = f"{path.relative_to(ROOT)}:{line}"
                found[where] = min(found.get(where, module), module, key=len)
    return "\n".join(f"{where}: imports {module}" for where, module in found.items())


def test_no_module_imports_a_test_module():
    paths = sorted({*TESTS.rglob("*.py"), *SCRIPTS.rglob("*.py")} - {Path(__file__).resolve()})  # not its samples
    assert len(paths) > 50
    bad = offences(paths, lambda module: not is_test_module(module))
    assert not bad, f"test modules imported (move what they share to tests/support/):\n{bad}"


def outside_tests_or_in_support(module: str) -> bool:
    """`tests` itself passes too: `from tests import support` names the package on its way to support."""
    return module == "tests" or module.split(".")[0] != "tests" or module.split(".")[:2] == ["tests", "support"]


def test_scripts_import_only_tests_support():
    paths = sorted(SCRIPTS.rglob("*.py"))
    bad = offences(paths, outside_tests_or_in_support)
    assert not bad, f"scripts importing from tests/ outside tests/support/:\n{bad}"


def test_the_check_sees_imports_inside_functions_in_strings_and_relative_ones():
    source = ("import os\nfrom tests.support.commands import ROOT\n"
              "def f():\n    from tests.test_watch import watch\n    import tests.test_score as s\n"
              'CHILD = """\nimport sys\nfrom tests import test_scoring\n"""\n'
              "from .test_train import run\nfrom . import test_topology\n")
    bad = sorted(module for _, module in imports_in(source, "tests") if is_test_module(module))
    assert bad == ["tests.test_score", "tests.test_scoring", "tests.test_topology", "tests.test_train",
                   "tests.test_train.run", "tests.test_watch", "tests.test_watch.watch"]
    allowed = {module for _, module in imports_in(source, "tests") if outside_tests_or_in_support(module)}
    assert allowed == {"os", "sys", "tests", "tests.support.commands", "tests.support.commands.ROOT"}

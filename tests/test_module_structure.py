"""The code's shape: modules of one idea (at most 350 lines, unless the docstring says why), and layers that import
only from below (training never from doc2query, whose stages use training's loop)."""

import ast

from tests.conftest import ROOT

LINE_LIMIT = 350
EXCEPTION_NOTE = "over the 350 lines"


def modules() -> list:
    return sorted((ROOT / "pipeline").rglob("*.py"))


def test_no_module_is_over_the_line_limit_without_saying_why():
    long = [path.relative_to(ROOT).as_posix() for path in modules()
            if len(path.read_text().splitlines()) > LINE_LIMIT
            and EXCEPTION_NOTE not in (ast.get_docstring(ast.parse(path.read_text())) or "")]
    assert long == []


def imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {f"{node.module}.{alias.name}" for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module for alias in node.names}
    return names


def test_training_does_not_import_from_doc2query():
    upward = {path.name: sorted(name for name in imported_modules(path) if name.startswith("pipeline.doc2query"))
              for path in sorted((ROOT / "pipeline" / "train").glob("*.py"))}
    assert {name: found for name, found in upward.items() if found} == {}

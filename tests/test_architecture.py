"""The package's layering, read from the code's own imports (``ast``, no import is run).

Every import counts, also one inside a function or under ``TYPE_CHECKING``: the core at the
bottom, the experiments above it (never importing each other), then the report and the
pipeline, then the command line. No import cycle, no import that runs back up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fashionlab"
EXPERIMENTS = ("heinit", "classifier", "landscape", "autoencoder")


def _module_name(path: Path) -> str:
    parts = ["fashionlab", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """The project modules that ``name`` imports (resolved, every import statement)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import mod` imports the module; `from pkg import name`, pkg itself
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `from pkg import name`: the module pkg
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(name: str) -> int:
    """0 core (and the lazy package face, which imports nothing of its own), 1 experiments,
    2 report and pipeline, 3 the command line."""
    parts = name.split(".")
    if len(parts) < 2:
        return 0
    if parts[1] == "experiments":
        return 1
    if parts[1] in ("report", "pipeline"):
        return 2
    if parts[1] in ("commands", "cli", "__main__"):
        return 3
    return 0


def test_every_module_is_read() -> None:
    assert "fashionlab.experiments.classifier.tuning.tune" in MODULES
    assert "fashionlab.pipeline.engine" in GRAPH["fashionlab.pipeline.study"]


def test_no_import_runs_back_up() -> None:
    upward = sorted(
        (name, target)
        for name, targets in GRAPH.items()
        for target in targets
        if _layer(target) > _layer(name)
    )
    assert upward == []


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_never_import_each_other(experiment: str) -> None:
    prefix = f"fashionlab.experiments.{experiment}"
    others = sorted(
        (name, target)
        for name, targets in GRAPH.items()
        if name.startswith(prefix)
        for target in targets
        if target.startswith("fashionlab.experiments.")
        and not target.startswith(prefix)
        and target != "fashionlab.experiments"
    )
    assert others == []


def test_the_pipeline_engine_knows_no_experiment() -> None:
    assert not any(".experiments" in target for target in GRAPH["fashionlab.pipeline.engine"])


def test_no_import_cycle() -> None:
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_no_string_names_a_module_above() -> None:
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.split(":")[0]
                if text in MODULES and _layer(text) > _layer(name):
                    found.append((name, node.value))
    assert found == []


# --- short functions ------------------------------------------------------------------------------

MAX_FUNCTION_LINES = 80  # a function's whole span, decorators excluded, its docstring included

# Declarative tables: long because they list data row by row, not because they do many things.
LONG_TABLES = {
    "fashionlab.experiments.heinit.identities:_specs": (
        "the table of identity checks: one row (name, case, assumptions, draw, statistic) each"
    ),
}


def _function_lengths(module: str, source: str) -> dict[str, int]:
    """``module:Qual.name`` -> lines (``end_lineno - lineno + 1``) of every function in
    ``source``, nested ones and methods included."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    assert child.end_lineno is not None
                    lengths[f"{module}:{name}"] = child.end_lineno - child.lineno + 1
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return lengths


LONG = {
    name: lines
    for module, path in MODULES.items()
    for name, lines in _function_lengths(module, path.read_text()).items()
    if lines > MAX_FUNCTION_LINES
}


def test_the_length_count_sees_functions_methods_and_nested_ones() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(79))
    source = (
        f"def short():\n{body}\n"  # 80 lines
        f"def long():\n{body}    y = 0\n\n"  # 81 lines
        f"class C:\n    def method(self):\n    {body.replace(chr(10), chr(10) + '    ')}"
        f"    y = 0\n\n"
        f"def outer():\n    def inner():\n    {body.replace(chr(10), chr(10) + '    ')}"
        f"    y = 0\n    return inner\n"
    )
    lengths = _function_lengths("m", source)
    assert lengths["m:short"] == 80 and lengths["m:long"] == 81
    assert lengths["m:C.method"] == 81 and lengths["m:outer.inner"] == 81
    assert sorted(k for k, v in lengths.items() if v > MAX_FUNCTION_LINES) == [
        "m:C.method",
        "m:long",
        "m:outer",
        "m:outer.inner",
    ]


def test_no_function_is_longer_than_80_lines_outside_declarative_tables() -> None:
    # split it into named parts (compute, summarise, write), or, for a table, list it above
    assert {name: lines for name, lines in LONG.items() if name not in LONG_TABLES} == {}


def test_every_allowed_long_function_is_still_long() -> None:
    assert sorted(name for name in LONG_TABLES if name not in LONG) == []  # remove it from the list

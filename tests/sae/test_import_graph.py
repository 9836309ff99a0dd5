"""visae's module import graph, read with ast from every import statement (function-level ones included; those
under `if TYPE_CHECKING:` exist for the type checker only and never run): no module takes part in an import
cycle, and each layer imports only the layers below it (docs/architecture.md)."""

import ast
from pathlib import Path

import pytest

import visae

ROOT = Path(visae.__file__).parent
LAYERS = ("core", "activation_store", "sae", "training", "eval", "service")
# The layers each layer may import besides itself (visae/__init__.py: core -> activation_store / sae ->
# training / eval -> service).
ALLOWED = {
    "core": set(),
    "activation_store": {"core"},
    "sae": {"core"},
    "training": {"core", "activation_store", "sae"},
    "eval": {"core", "activation_store", "sae"},
    "service": {"core", "activation_store", "sae", "training", "eval"},
}


def module_files() -> dict[str, Path]:
    files = {}
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            parts = ("visae", *path.relative_to(ROOT).with_suffix("").parts)
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported_names(module: str, path: Path) -> list[str]:
    """Absolute names of everything `module` imports (`from a.b import c` gives a.b.c: the module a.b.c if there
    is one, else a name in a.b)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in run_time_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def run_time_nodes(tree: ast.AST):
    """Every node of `tree` except the bodies of `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *run_time_nodes(child)])
            continue
        yield node
        yield from run_time_nodes(node)


def import_graph() -> dict[str, set[str]]:
    """Each module of the layers -> the modules of the layers it imports."""
    files = module_files()
    graph = {}
    for module, path in files.items():
        targets = set()
        for name in imported_names(module, path):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state = {}  # module -> "open" while on the current path, "done" once fully explored

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def layer(module: str) -> str:
    return module.split(".")[1]


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("import os\nfrom . import sibling\n\ndef f():\n    from ..other import name\n")
    assert imported_names("visae.sae.mod", source) == ["os", "visae.sae.sibling", "visae.other.name"]
    assert "visae.sae.converters.saev" in import_graph()["visae.sae.converters"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_takes_part_in_an_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("name", LAYERS)
def test_layers_import_only_lower_layers(name):
    graph = import_graph()
    wrong = sorted(f"{module} -> {target}" for module, targets in graph.items() if layer(module) == name
                   for target in targets if layer(target) not in ALLOWED[name] | {name})
    assert not wrong, f"{name} may import only {sorted(ALLOWED[name])}: " + "; ".join(wrong)

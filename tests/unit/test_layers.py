"""The layer rule over the real import graph (docs/design.md, ARCHITECTURE "Layers").

cli -> app -> api (+ auth) -> manager (+ policy, quotas, audit) -> provisioners ->
store, launcher; the leaves (identity, errors, kernel_env, resources, launch_plan, ...)
import nothing above them. A module may import its own layer and those below, never
one above. Every import counts: at module level, inside functions, under
TYPE_CHECKING. Run as a script (``python tests/unit/test_layers.py [repo]``) it
prints the upward imports and the cycles of a checkout.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# From the top. The longest matching prefix decides a module's layer.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cli", ("kernelyard.cli",)),
    ("app", ("kernelyard.app", "kernelyard.startup_checks")),
    ("api", ("kernelyard.api", "kernelyard.auth")),
    ("manager", ("kernelyard.manager", "kernelyard.kernel", "kernelyard.policy",
                 "kernelyard.quotas", "kernelyard.audit", "kernelyard.kernelspecs",
                 "kernelyard.start_options")),
    ("provisioners", ("kernelyard.provisioners", "kernelyard.callbacks", "kernelyard.usermap",
                      "kernelyard.runas", "kernelyard.kernel_log", "kernelyard.testing")),
    # The store sits beside the manager in the picture, but provisioners checkpoint
    # into it and it imports neither: it ranks below them.
    ("store", ("kernelyard.store",)),
    ("launcher", ("kernelyard.launcher", "kernelyard.launcher_spark")),
    # auth.spnego is the Kerberos HTTP helper the YARN RM client shares with the
    # Kerberos authenticator; it imports errors only.
    ("leaves", ("kernelyard.identity", "kernelyard.errors", "kernelyard.kernel_env",
                "kernelyard.resources", "kernelyard.launch_plan", "kernelyard._version",
                "kernelyard.wire", "kernelyard.logredact", "kernelyard.auth.spnego",
                "kernelyard.registry")),
)
ROOT_PACKAGE = "kernelyard"  # its __init__ imports only the version


def modules(repo: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the ``kernelyard`` package."""
    out = {}
    for path in (repo / "kernelyard").rglob("*.py"):
        parts = path.relative_to(repo).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            for alias in node.names:  # `from pkg import module` imports the module
                sub = f"{target}.{alias.name}"
                yield sub if sub in known else target
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def import_graph(repo: Path = REPO) -> dict[str, set[str]]:
    """Each kernelyard module -> the kernelyard modules it imports."""
    known = modules(repo)
    return {name: {t for t in _imported(name, path, known) if t in known and t != name}
            for name, path in known.items()}


def layer_of(module: str) -> int:
    """The rank of ``module``'s layer (0 is the top)."""
    best, rank = "", len(LAYERS) - 1 if module == ROOT_PACKAGE else -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, index
    if rank < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return rank


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every ``a -> b`` where ``b``'s layer is above ``a``'s."""
    return sorted(f"{a} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0]})"
                  for a, targets in graph.items() for b in targets
                  if layer_of(b) < layer_of(a))


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found




def test_every_module_has_a_layer() -> None:
    for name in import_graph():
        layer_of(name)


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward_imports(import_graph()) == []


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_leaves_import_only_leaves() -> None:
    leaves = len(LAYERS) - 1
    graph = import_graph()
    for name in ("kernelyard.identity", "kernelyard.errors", "kernelyard.kernel_env",
                 "kernelyard.launch_plan"):
        assert layer_of(name) == leaves
        assert all(layer_of(t) == leaves for t in graph[name]), (name, graph[name])


def test_the_checker_sees_an_upward_import() -> None:
    graph = {"kernelyard.policy.access": {"kernelyard.auth.base"},
             "kernelyard.auth.base": set()}
    assert upward_imports(graph) == [
        "kernelyard.policy.access (manager) -> kernelyard.auth.base (api)"]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]


if __name__ == "__main__":
    repo = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO
    graph = import_graph(repo)
    up = upward_imports(graph)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports")
    print(f"upward imports: {len(up)}", *up, sep="\n  ")
    found = cycles(graph)
    print(f"cycles: {len(found)}", *map(sorted, found), sep="\n  ")

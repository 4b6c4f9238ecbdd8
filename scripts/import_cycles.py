"""List the import cycles among medrlvr's modules and its largest modules, read from the source with `ast`.

    python scripts/import_cycles.py [--top 10]

An edge a -> b is any `import b` / `from b import ...` / `from . import b` in a's file, at any depth
(imports inside functions count: they still couple the modules). A cycle is a strongly connected
component of more than one module, printed with its members; cycles are listed among modules and among
the top-level units (`medrlvr.sweeping.*` counted as one unit `medrlvr.sweeping`).
"""

import argparse
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "medrlvr"


def module_name(path: Path) -> str:
    """`src/medrlvr/algo/core.py` -> `medrlvr.algo.core`; a package's `__init__.py` -> the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The medrlvr modules `path` imports (the deepest known module of each imported dotted name)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for dotted in names:
            while dotted and dotted not in known:
                dotted = dotted.rpartition(".")[0]
            if dotted and dotted != name:
                targets.add(dotted)
    return targets


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def unit(name: str) -> str:
    """The top-level unit of a module: `medrlvr.sweeping.tags` -> `medrlvr.sweeping`; `medrlvr.train` itself."""
    return ".".join(name.split(".")[:2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10, help="how many of the largest modules to list")
    args = parser.parse_args()
    files = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    graph = {name: imports(path, name, set(files)) for name, path in files.items()}
    print("| module | lines |\n|---|---|")
    sizes = sorted(((len(path.read_text().splitlines()), name) for name, path in files.items()), reverse=True)
    for lines, name in sizes[: args.top]:
        print(f"| {name} | {lines} |")
    units: dict[str, set[str]] = {unit(name): set() for name in graph}
    for name, targets in graph.items():
        units[unit(name)] |= {unit(target) for target in targets} - {unit(name)}
    for label, found in (("modules", cycles(graph)), ("top-level units", cycles(units))):
        print(f"\nimport cycles among {label}: {len(found)}")
        for component in found:
            print("  " + " <-> ".join(component))


if __name__ == "__main__":
    main()

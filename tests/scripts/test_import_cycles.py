"""``scripts/import_cycles.py``: the cycles it finds in a hand-made graph, and the package's own graph."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "scripts" / "import_cycles.py")
import_cycles = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_cycles)


def test_cycles_are_the_strongly_connected_components():
    # a -> b -> c -> a is one cycle; d -> e -> d another; f only points into the first, so it is in none.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert import_cycles.cycles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert import_cycles.cycles({"a": {"b"}, "b": set()}) == []


def test_imports_resolve_from_imports_to_known_modules():
    known = {"medrlvr.algo", "medrlvr.algo.core", "medrlvr.config", "medrlvr.algo.advantages"}
    path = import_cycles.PACKAGE / "algo" / "advantages.py"
    found = import_cycles.imports(path, "medrlvr.algo.advantages", known)
    assert "medrlvr.algo.core" in found and "medrlvr.algo.advantages" not in found
    assert import_cycles.unit("medrlvr.sweeping.tags") == "medrlvr.sweeping"

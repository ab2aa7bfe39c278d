"""Our own reading of the import graph (beside import-linter's contract in pyproject.toml): every
import of one of featrank's modules, function-local ones included, and no cycle among them."""
import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "featrank")
MODULES = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(PACKAGE, "*.py"))} - {"__init__"}


def imports_in(source: str, package: str = "featrank") -> set:
    """The modules of `package` that `source` imports anywhere, in functions too: `import
    package.m`, `from package import m`, `from package.m import x` (and their relative forms)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names
                      if a.name.startswith(package + ".")}
        elif isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".") if node.level == 0 else [package, *filter(None, (node.module or "").split("."))]
            if parts[0] != package:
                continue
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
    return found


def a_cycle(graph: dict) -> list:
    """One cycle of `graph` (module -> modules it imports) as a path, or [] (depth-first search)."""
    state, stack = {}, []

    def visit(m):
        state[m], _ = "open", stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m], _ = "done", stack.pop()
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return []


def test_the_reading_counts_function_local_imports_and_finds_a_cycle():
    source = ("import featrank.a\nfrom featrank.b import d\nimport numpy\ndef f():\n"
              "    from featrank import e, g\n    from . import i\n    from .j import k\n")
    assert imports_in(source) == {"a", "b", "e", "g", "i", "j"}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert a_cycle(graph) == ["a", "b", "c", "a"]
    assert a_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_module_imports_in_a_circle():
    graph = {m: (imports_in(open(os.path.join(PACKAGE, m + ".py")).read()) & MODULES) - {m}
             for m in MODULES}
    assert {"pipeline", "run_plan"} <= graph["cli"] and "config" not in set().union(*graph.values())
    assert a_cycle(graph) == []


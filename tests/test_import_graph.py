"""Our own reading of the import graph (beside import-linter's contract in .ci/importlinter.ini):
every import of a top-level module, function-local ones included, and no cycle among them."""
import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "*.py"))}


def imports_in(source: str) -> set:
    """The top-level names of every absolute import anywhere in `source`, in functions too."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
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
    source = "import a\nfrom b.c import d\ndef f():\n    import e\n    from g import h\n    from . import i\n"
    assert imports_in(source) == {"a", "b", "e", "g"}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert a_cycle(graph) == ["a", "b", "c", "a"]
    assert a_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_module_imports_in_a_circle():
    graph = {m: (imports_in(open(os.path.join(ROOT, m + ".py")).read()) & MODULES) - {m}
             for m in MODULES}
    assert {"pipeline", "run_plan"} <= graph["main"] and "config" in graph["run_plan"]
    assert a_cycle(graph) == []


"""Run import-linter's layers contract (.ci/importlinter.ini) on this flat project.

import-linter (grimp) only analyses packages; the pipeline is a flat set of top-level modules.
This copies every top-level module into a throwaway package `iqm`, rewriting each import of a
project module (`import X`, `import X as Y`, `from X import …`, at any indentation, inside
functions too) to its `iqm.X` form and changing nothing else, then runs `lint-imports` there.
Exit code: lint-imports'.
"""
import ast
import glob
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "iqm"


def rewrite(source: str, modules: set) -> str:
    lines = source.splitlines(keepends=True)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a for a in node.names if a.name.split(".")[0] in modules]
            if not names:
                continue
            if len(names) != len(node.names) or node.lineno != node.end_lineno:
                raise SystemExit(f"line {node.lineno}: put project imports on their own line")
            indent = lines[node.lineno - 1][:node.col_offset]
            parts = [f"import {PACKAGE}.{a.name} as {a.asname or a.name}" for a in names]
            lines[node.lineno - 1] = indent + "; ".join(parts) + "\n"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in modules:
            line = lines[node.lineno - 1]
            head = f"from {node.module} import"
            if head not in line:
                raise SystemExit(f"line {node.lineno}: unexpected import form {line.strip()!r}")
            lines[node.lineno - 1] = line.replace(head, f"from {PACKAGE}.{node.module} import", 1)
    return "".join(lines)


def main() -> int:
    files = sorted(glob.glob(os.path.join(ROOT, "*.py")))
    modules = {os.path.basename(f)[:-3] for f in files}
    with tempfile.TemporaryDirectory(prefix="lint_imports_") as tmp:
        pkg = os.path.join(tmp, PACKAGE)
        os.mkdir(pkg)
        open(os.path.join(pkg, "__init__.py"), "w").close()
        for f in files:
            with open(f) as src, open(os.path.join(pkg, os.path.basename(f)), "w") as dst:
                try:
                    dst.write(rewrite(src.read(), modules))
                except SystemExit as exc:
                    raise SystemExit(f"{os.path.basename(f)}: {exc}") from None
        shutil.copy(os.path.join(ROOT, ".ci", "importlinter.ini"), tmp)
        lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
        return subprocess.run([lint, "--no-cache", "--config", "importlinter.ini"], cwd=tmp,
                              env={**os.environ, "PYTHONPATH": tmp}).returncode


if __name__ == "__main__":
    sys.exit(main())

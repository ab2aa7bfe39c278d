"""The suite's own order (issue #36): tests/conftest.py puts the test files longest first by
tests/durations.json, a file the table does not list first of all, and `--store-durations`
writes the seconds of the files a run measured into the table, keeping the others. Shown on an
inner suite of three files with a table of its own."""
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BODY = '''
import time

def test_one():
    time.sleep({sleep})

def test_two():
    pass
'''


def _pytest(project, *args):
    env = dict(os.environ)
    env.pop("PYTEST_XDIST_WORKER", None)         # the inner run is a session of its own
    env.pop("PYTEST_ADDOPTS", None)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                         cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def test_files_run_longest_first_and_store_durations_keeps_the_files_it_did_not_run(tmp_path):
    tests = tmp_path / "tests"
    tests.mkdir()
    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), tests / "conftest.py")
    shutil.copy(os.path.join(ROOT, "tests", "helpers.py"), tests / "helpers.py")
    for name, sleep in (("a", 0.3), ("b", 0), ("c", 0)):
        (tests / f"test_{name}.py").write_text(BODY.format(sleep=sleep))
    table = tests / "durations.json"
    table.write_text(json.dumps({"tests/test_a.py": 1.0, "tests/test_b.py": 5.0}))

    listed = _pytest(tmp_path, "--collect-only", "tests")
    files = [line.split("::")[0] for line in listed.splitlines() if "::" in line]
    # c is not in the table: first; then b (5 s), then a (1 s); each file's tests in their order
    assert files == ["tests/test_c.py"] * 2 + ["tests/test_b.py"] * 2 + ["tests/test_a.py"] * 2
    assert [line.split("::")[1] for line in listed.splitlines() if "::" in line][:2] == \
        ["test_one", "test_two"]

    _pytest(tmp_path, "--store-durations", "tests/test_a.py")
    stored = json.loads(table.read_text())
    assert set(stored) == {"tests/test_a.py", "tests/test_b.py"}
    assert stored["tests/test_b.py"] == 5.0                     # not run: kept
    # run: its measured seconds, setup included (the first test's fixtures import torch)
    assert stored["tests/test_a.py"] >= 0.3 and stored["tests/test_a.py"] != 1.0

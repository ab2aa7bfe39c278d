"""The suite itself under signals (issue #36): an outer `timeout -s TERM` stops it even when the
SIGTERM arrives while a test is inside main()'s handler (which turns it into exit 143 and would
let the suite go on), and no test leaves a signal handler behind (tests/conftest.py checks
that after every test; here a test that breaks the rule is caught)."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUITE = '''
import os, signal, time
from featrank import errors

def test_first_gets_sigterm_inside_the_handler():
    with errors.sigterm_raises_terminated():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except errors.Terminated:
            pass            # as main() does: it returns 143 and the test would go on

def test_second_never_runs():
    open(os.path.join(os.path.dirname(__file__), "second_ran"), "w").close()
'''

LEAK = '''
import signal

def test_leaves_a_handler():
    signal.signal(signal.SIGTERM, lambda *a: None)

def test_after():
    pass
'''


def _run(tmp_path, body):
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), suite / "conftest.py")
    shutil.copy(os.path.join(ROOT, "tests", "helpers.py"), suite / "helpers.py")
    (suite / "test_inner.py").write_text(body)
    env = dict(os.environ)
    return suite, subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                  str(suite)], cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=300)


def test_a_sigterm_inside_mains_handler_stops_the_suite(tmp_path):
    suite, out = _run(tmp_path, SUITE)
    assert out.returncode == 143, out.stdout[-2000:]
    assert not (suite / "second_ran").exists()


def test_a_test_that_leaves_a_signal_handler_fails(tmp_path):
    suite, out = _run(tmp_path, LEAK)
    assert out.returncode == 1 and "left a signal handler installed" in out.stdout, out.stdout[-2000:]
    assert "2 passed, 1 error" in out.stdout   # an error at its teardown; the next test runs, restored

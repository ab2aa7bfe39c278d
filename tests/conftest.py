import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# Tests never touch the network: Hugging Face libraries read only their cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# pytest.ini runs the suite in two pytest-xdist workers: each then computes on one thread (torch,
# BLAS, OpenMP, and the processes a test starts), so that two workers do not run four threads
# on two cores. Run alone (-n 0), a test has two.
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
if THREADS == 1:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def pytest_configure(config):
    """Before the xdist workers start, in the process that starts them: import dcor, which
    compiles its numba functions and writes numba's cache beside them. On a clean clone the two
    workers would otherwise compile and write that cache at once, and one read the other's
    half-written file: a worker aborted inside LLVM that way (CI, 2026-12-03)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    try:
        import dcor  # noqa: F401
    except ImportError:
        pass


@pytest.fixture(autouse=True)
def _threads():
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(THREADS)
    with threadpool_limits(THREADS):
        yield


@pytest.fixture(autouse=True)
def _signals():
    """No test leaves a signal handler behind, and a SIGTERM that main()'s handler turned into
    exit 143 inside a test stops the whole suite (an outer `timeout` must be able to)."""
    import signal
    import errors
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    after = {s: signal.getsignal(s) for s in before}
    for s, handler in before.items():
        signal.signal(s, handler)
    if errors.RECEIVED["SIGTERM"]:
        pytest.exit("terminated (SIGTERM)", returncode=143)
    assert after == before, f"the test left a signal handler installed: {after}"


@pytest.fixture
def built(tmp_path, monkeypatch, caplog):
    """A tiny resnet50 layer-8 cache built from 10 random images under tmp_path."""
    from helpers import build_cache, write_images
    write_images(tmp_path / "imgs")
    assert build_cache(tmp_path) == 0
    caplog.clear()
    return tmp_path

import json
import os
import sys
from collections import defaultdict

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each test file's seconds in the last measured run (pytest --store-durations writes it): the
# suite runs the longest files first, so that no worker is left idle while the other finishes one.
DURATIONS = os.path.join(ROOT, "tests", "durations.json")
# Tests never touch the network: Hugging Face libraries read only their cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def _worker_cores() -> set:
    """The cores of this pytest-xdist worker: its share of the machine's (worker i of n takes
    every n-th core from the i-th), all of them outside xdist. pytest.ini runs two workers."""
    if not hasattr(os, "sched_getaffinity"):          # macOS: no affinity to share out
        return set(range(os.cpu_count() or 1))
    cores = sorted(os.sched_getaffinity(0))
    shares = min(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), len(cores))
    if not WORKER.startswith("gw") or shares < 2:
        return set(cores)
    return set(cores[int(WORKER[2:]) % shares::shares])


# Each worker runs on its own cores, pinned before torch starts its threads: the tool's "auto"
# settings (extraction_threads, jobs, DataLoader workers) follow a process's CPU affinity, so
# that a test and the processes it starts compute on the worker's cores only. Two workers that
# each ran an "auto" extraction on both cores of a 2-core machine took 2.5 times as long as
# pinned ones (the FID-paper run of pool3, twice at once: 43 s against 17 s, 2026-12-06).
CORES = _worker_cores()
if hasattr(os, "sched_setaffinity") and CORES != os.sched_getaffinity(0):
    os.sched_setaffinity(0, CORES)
# torch and BLAS threads: the worker's cores, or fewer where the caller says so (tests/mutation.sh
# sets OMP_NUM_THREADS to the share of each of the test processes it runs at once)
THREADS = max(1, min(len(CORES), int(os.environ.get("OMP_NUM_THREADS") or len(CORES))))
if WORKER:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(THREADS)


def pytest_addoption(parser):
    parser.addoption("--store-durations", action="store_true",
                     help="write each test file's seconds (setup, call, teardown) in this run to "
                          "tests/durations.json, the order in which later runs take the files")


def _file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config, items):
    """Test files longest first by tests/durations.json (a file it does not list first of all: it
    may be long), each file's tests in their own order. pytest.ini gives the xdist workers one
    file at a time in this order (--dist loadfile --no-loadscope-reorder): the longest-first
    order keeps the two busy to the end. The order of tests changes nothing else."""
    try:
        with open(DURATIONS) as f:
            seconds = json.load(f)
    except (OSError, ValueError):
        return
    first = {}
    for item in items:
        first.setdefault(_file(item.nodeid), len(first))
    items.sort(key=lambda item: (-seconds.get(_file(item.nodeid), float("inf")),
                                 first[_file(item.nodeid)]))


_MEASURED = defaultdict(float)


def pytest_runtest_logreport(report):
    _MEASURED[_file(report.nodeid)] += report.duration


def pytest_sessionfinish(session):
    """--store-durations: the process that saw every test (xdist's controller, or the only one)
    writes the seconds of the files it ran into the table; files it did not run keep theirs."""
    if not session.config.getoption("--store-durations") or WORKER:
        return
    try:
        with open(DURATIONS) as f:
            table = json.load(f)
    except (OSError, ValueError):
        table = {}
    table.update({k: round(v, 1) for k, v in _MEASURED.items()})
    with open(DURATIONS, "w") as f:
        json.dump(dict(sorted(table.items())), f, indent=0)
        f.write("\n")


def pytest_configure(config):
    """Before the xdist workers start, in the process that starts them: import dcor, which
    compiles its numba functions and writes numba's cache beside them. On a clean clone the two
    workers would otherwise compile and write that cache at once, and one read the other's
    half-written file: a worker aborted inside LLVM that way (CI, 2026-12-03). A session without
    workers (-n 0, or an inner suite of a test) has no race and skips it."""
    if WORKER or not getattr(config.option, "numprocesses", None):
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
    from featrank import errors
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

"""Where the work runs: shares of an extraction, torchrun ranks, and parallel sweeps.

Nothing here schedules work of its own; it hands work to the engines researchers already use.

* **Extraction** is split by cache file. `Shard(index, count)` owns the files at positions
  index, index + count, ... of the run's reference chunks, and the same positions of its
  evaluation files (cache_fill.shard_units), whatever is already cached, so processes started at different times agree on who does what
  and N shards together write exactly the files one process writes, each once. A batch never
  crosses a file (feature_extraction.unit_batches), so a file's bytes do not depend on which
  process computed it. The shard comes from `--shard I/N` (SLURM arrays, background processes)
  or from torchrun's RANK / WORLD_SIZE (`Ranks`).
* **Sweeps** map a function over independent tasks with joblib (`sweep_map`): in this process
  for one job, in loky worker processes for several, or on a Dask cluster through joblib's
  dask backend. Results come back in task order, so the output does not depend on the number
  of workers or on which finished first.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
from dataclasses import dataclass

from featrank.errors import UserError

log = logging.getLogger(__name__)

SHARD_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
# torchrun's ranks meet once, at the end of extraction: a rank that finished its share
# waits this long for the slowest one.
BARRIER_TIMEOUT = datetime.timedelta(days=7)
# ... but they must all have started: a rank that finds no peer within this time stops, naming it
RENDEZVOUS_TIMEOUT = datetime.timedelta(minutes=10)
TORCHRUN_VARIABLES = "RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT"
DASK_CONNECT_TIMEOUT = "20s"


class ParallelError(UserError):
    """A shard, job count or cluster setting is invalid; the message names it and the fix."""


@dataclass(frozen=True)
class Shard:
    """This process's share of an extraction: cache files index, index + count, ..."""
    index: int
    count: int

    def __post_init__(self):
        if not (isinstance(self.index, int) and isinstance(self.count, int)
                and self.count >= 1 and 0 <= self.index < self.count):
            raise ParallelError(f"shard {self.index}/{self.count} is not valid: it must be I/N with "
                                "N >= 1 and 0 <= I < N (e.g. 0/4 ... 3/4)")

    @classmethod
    def parse(cls, text: str, flag: str = "--shard") -> "Shard":
        m = SHARD_PATTERN.match(str(text))
        if not m:
            raise ParallelError(f"{flag} {text} is not valid: write I/N, e.g. {flag} 0/4 for the "
                                "first of four shares (SLURM: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
        index, count = int(m.group(1)), int(m.group(2))
        try:
            return cls(index, count)
        except ParallelError:
            raise ParallelError(f"{flag} {text} is not valid: in I/N, N must be >= 1 and I in "
                                f"0 .. N-1 (e.g. {flag} {min(index, max(count - 1, 0))}/{max(count, 1)})"
                                ) from None

    def owns(self, position: int) -> bool:
        return position % self.count == self.index

    def share(self, items: list) -> list:
        """The items at this shard's positions (round-robin)."""
        return [x for k, x in enumerate(items) if self.owns(k)]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# ---------------------------------------------------------------- torchrun

@dataclass(frozen=True)
class Ranks:
    """torchrun's environment: this process's rank, the world size and its local GPU."""
    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_env(cls, environ=None) -> "Ranks | None":
        """The torchrun ranks when launched by torchrun (WORLD_SIZE > 1), else None."""
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env or "RANK" not in env:
            return None
        try:
            rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
            local = int(env.get("LOCAL_RANK", rank))
        except ValueError:
            raise ParallelError(f"RANK={env.get('RANK')!r} WORLD_SIZE={env.get('WORLD_SIZE')!r} "
                                "LOCAL_RANK are not integers; launch with torchrun, or unset them") from None
        if world < 1:
            raise ParallelError(f"WORLD_SIZE={world} is not a number of processes; launch with "
                                f"torchrun (it sets {TORCHRUN_VARIABLES}), or unset them")
        if world == 1:
            return None
        if not 0 <= rank < world:
            raise ParallelError(f"RANK={rank} is outside 0 .. WORLD_SIZE-1 = {world - 1}")
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not env.get(v)]
        if missing:
            raise ParallelError(f"RANK={rank} WORLD_SIZE={world} without {' and '.join(missing)}: the "
                                f"ranks cannot meet; launch with torchrun (it sets {TORCHRUN_VARIABLES}), "
                                "or unset RANK and WORLD_SIZE to run one process")
        return cls(rank, world, local)

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world_size)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def start(self, device: str) -> str:
        """Join the group (gloo: it works for CPU and GPU processes alike and only carries the
        final barrier) and pin this rank to its GPU. Returns the device to extract on."""
        import torch
        import torch.distributed as dist
        if not dist.is_initialized():
            try:
                dist.init_process_group("gloo", timeout=RENDEZVOUS_TIMEOUT)
            except (RuntimeError, TimeoutError, ValueError) as exc:   # DistError derives from RuntimeError
                where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
                others = "rank 0" if self.rank else f"ranks 1 .. {self.world_size - 1}"
                raise ParallelError(
                    f"rank {self.rank} of {self.world_size} found no {others} at {where} within "
                    f"{RENDEZVOUS_TIMEOUT.total_seconds():.0f} s ({type(exc).__name__}); start every "
                    f"rank with torchrun --nproc-per-node/--nnodes (it sets {TORCHRUN_VARIABLES})") from None
        if device in ("auto", "cuda") and torch.cuda.is_available():
            n = torch.cuda.device_count()
            if self.local_rank >= n:
                raise ParallelError(f"LOCAL_RANK {self.local_rank} but this node has {n} GPU(s); "
                                    f"use torchrun --nproc-per-node {n} (or fewer)")
            torch.cuda.set_device(self.local_rank)
            return f"cuda:{self.local_rank}"
        return device

    def barrier(self) -> None:
        """Return when every rank has reached this point (every share written)."""
        import torch.distributed as dist
        dist.monitored_barrier(timeout=BARRIER_TIMEOUT)    # the group's timeout is the rendezvous's

    def stop(self) -> None:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------- sweeps

_PRESTART: dict = {}


_WATCHER = {}


def watch_parent(interval: float = 0.25) -> None:
    """In a worker process: exit as soon as the process that started it is gone. A main
    process killed with SIGKILL cannot stop its loky workers; without this they would be
    reparented to PID 1 and live on. Installed once per process, by every task it runs."""
    if _WATCHER.get("pid") == os.getpid():
        return
    import threading
    import time
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)
    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
    _WATCHER["pid"] = os.getpid()


def _in_worker(fn, task):
    watch_parent()
    _hold_memory()
    return fn(task)


def _hold_memory() -> None:
    """In a loky worker: no restart for memory held between tasks. loky shuts down a worker
    whose memory grew by 300 MB since its first task, taking that for a leak; a sweep's worker
    holds its spaces between tasks on purpose (sweep._shared_assembler keeps one sweep's), and
    a restart drops them and imports everything again (seconds, in a run of tens)."""
    from joblib.externals.loky import process_executor
    if hasattr(process_executor, "_MAX_MEMORY_LEAK_SIZE"):
        process_executor._MAX_MEMORY_LEAK_SIZE = 1 << 62


def _import(modules) -> None:
    import importlib
    watch_parent()
    for m in modules:
        importlib.import_module(m)


def prestart(jobs: int, modules=()) -> None:
    """Start the `jobs` worker processes now, in the background, and import `modules` in them,
    so that the sweep does not wait for them (spawning a worker and importing scipy and
    scikit-learn takes ~1.5 s). `sweep_map` waits for this to finish before it dispatches."""
    if jobs <= 1 or "thread" in _PRESTART:
        return
    import threading

    import joblib

    def run():
        try:
            joblib.Parallel(n_jobs=jobs, backend="loky")(
                joblib.delayed(_import)(tuple(modules)) for _ in range(jobs))
        except Exception as exc:       # the sweep itself will report a real problem
            log.debug("pre-starting workers failed: %s", exc)
    thread = threading.Thread(target=run, name="prestart-workers", daemon=True)
    _PRESTART["thread"] = thread
    thread.start()


def _wait_prestart() -> None:
    thread = _PRESTART.pop("thread", None)
    if thread is not None:
        import time
        t0 = time.perf_counter()
        thread.join()
        log.debug("waited %.2fs for the worker processes to start", time.perf_counter() - t0)


def sweep_map(fn, tasks: list, jobs: int, dask_scheduler: str | None = None) -> list:
    """[fn(t) for t in tasks], run by joblib: in this process when jobs == 1 (nothing is
    pickled), in `jobs` loky worker processes otherwise, or on the Dask cluster at
    `dask_scheduler` (joblib's dask backend; every worker must see the cache folder and import
    this project). Results keep the order of `tasks`."""
    _wait_prestart()
    if not tasks:
        return []
    import joblib
    if dask_scheduler:                   # inside dask_session(dask_scheduler)
        with joblib.parallel_config(backend="dask", wait_for_workers_timeout=60):
            return joblib.Parallel(n_jobs=-1, batch_size=1)(joblib.delayed(fn)(t) for t in tasks)
    if jobs == 1 or len(tasks) == 1:     # (pipeline.score_backbone relies on this)
        return [fn(t) for t in tasks]
    n = min(jobs, len(tasks))
    return joblib.Parallel(n_jobs=n, backend="loky", batch_size=1)(
        joblib.delayed(_in_worker)(fn, t) for t in tasks)


@contextlib.contextmanager
def dask_session(address: str | None, modules=()):
    """Connected to the Dask scheduler at `address` for the block (joblib's dask backend uses
    this client); nothing when `address` is None."""
    if not address:
        yield None
        return
    try:
        from distributed import Client
    except ImportError:
        raise ParallelError("--dask-scheduler needs dask's distributed package: "
                            "pip install 'dask[distributed]'") from None
    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:   # ValueError: a bad address
        raise ParallelError(f"--dask-scheduler {address}: no Dask scheduler answers there "
                            f"({type(exc).__name__}); start one (`dask scheduler`, or a dask-jobqueue "
                            "cluster) and pass its address, e.g. tcp://host:8786") from None
    try:
        check_cluster(client, address, modules)
        yield client
    finally:
        client.close()


def _importable(modules) -> None:
    import importlib
    for m in modules:
        importlib.import_module(m)


def check_cluster(client, address: str, modules=(), wait: float = 10.0) -> None:
    """Before anything is submitted: the cluster has workers, and its scheduler and workers
    can import `modules` (the modules a task unpickles; one they cannot import would wait
    forever)."""
    import time
    t0 = time.monotonic()
    while not client.scheduler_info().get("workers") and time.monotonic() - t0 < wait:
        time.sleep(0.2)
    if not client.scheduler_info().get("workers"):
        raise ParallelError(f"--dask-scheduler {address}: the scheduler has no workers after "
                            f"{wait:.0f} s; start some (`dask worker {address}` in an environment where "
                            "featrank is installed), or run without --dask-scheduler")
    for where, run in (("scheduler", client.run_on_scheduler), ("workers", client.run)):
        try:
            run(_importable, tuple(modules))
        except Exception as exc:          # ModuleNotFoundError raised remotely, or its pickle
            raise ParallelError(f"--dask-scheduler {address}: the {where} cannot import featrank "
                                f"({type(exc).__name__}: {exc}); `pip install` this project in "
                                "their environment, and give a folder they can all read as "
                                "--cache-dir") from None

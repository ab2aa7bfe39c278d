"""Facts about this machine and its files, each computed in one place: the cores this process
may use (and the worker count a setting asks for), the device a setting names, the memory a
device has free, and the sha256 of a file."""
from __future__ import annotations

import hashlib
import os

from featrank.errors import UsageError


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; all cores where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:           # macOS
        return max(1, os.cpu_count() or 1)


def resolve_jobs(setting) -> int:
    """config['jobs'] / --jobs: 'auto' = every core this process may use; else an integer >= 1."""
    if setting == "auto":
        return available_cores()
    if not isinstance(setting, int) or isinstance(setting, bool) or setting < 1:
        raise UsageError(f"jobs = {setting!r} is not valid: it must be 'auto' or an integer >= 1")
    return setting


def _mps_available(torch) -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(device: str):
    """config['device'] / --device as a torch.device: 'auto' = cuda, else mps, else cpu. A
    device that is not there is a UsageError naming the flag and the fix."""
    import torch                     # heavy; only the stages that run torch call this
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available(torch) else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible; use --device cpu or auto")
    if device == "mps" and not _mps_available(torch):
        raise UsageError("--device mps: MPS is not available; use --device cpu or auto")
    return torch.device(device)


def available_memory(device) -> int | None:
    """Bytes a new allocation on `device` (a torch.device) can take now: a CUDA device's free
    memory; on the CPU, MemAvailable of /proc/meminfo, or less where a cgroup (v2 or v1) limits
    this process. None where it is not known (MPS, or a system without /proc)."""
    if device.type == "cuda":
        import torch
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                         "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as f1, open(used) as f2:
                text = f1.read().strip()
                if text != "max":
                    avail = min(avail, max(0, int(text) - int(f2.read().strip())))
            break
        except (OSError, ValueError):
            continue
    return avail


def file_sha256(path: str, block: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read now (files may change between two calls)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def die_with_parent(worker_id=None, parent: int | None = None) -> None:
    """In a child process (a DataLoader worker: its worker_init_fn, bound with
    `functools.partial(die_with_parent, parent=os.getpid())`): ask Linux to kill it when the
    process that started it dies, even by SIGKILL (prctl PR_SET_PDEATHSIG), so no worker
    outlives a killed run; and exit at once if `parent` is already gone. Elsewhere a no-op
    (PyTorch's own watchdog then ends the workers within seconds)."""
    import signal
    import sys
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)       # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:     # it died before prctl
        os._exit(1)

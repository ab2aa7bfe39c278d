"""Files of the cache, written so that a half-written one never looks complete: a temporary
name that says who writes it, then `os.replace`; the sha256 taken while writing and recorded;
locks held with filelock; temporary files of a killed writer removed by the next run on the
same host."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import shutil
import tempfile

import filelock
import numpy as np

from featrank.errors import RuntimeFailure
from featrank.host import file_sha256

log = logging.getLogger(__name__)


class CacheError(RuntimeFailure):
    """The cache cannot be used as it is; the message gives the command that fixes it."""


RECORD_SUFFIX = ".record.json"       # per-file record beside each cached array
HOST = socket.gethostname().replace("_", "-")


_UNLOCKED_WARNED = set()


@contextlib.contextmanager
def lock(path: str):
    """An exclusive lock on `path` (created), held by filelock (an `fcntl` lock on POSIX). Where
    the filesystem refuses locks (Lustre without `-o flock`, NFS without a lock manager) the
    block runs unlocked, with one warning: the per-file records keep the cache correct without
    it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    held = filelock.FileLock(path)
    try:
        held.acquire()
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        folder = os.path.dirname(path)
        if folder not in _UNLOCKED_WARNED:
            _UNLOCKED_WARNED.add(folder)
            log.warning("the filesystem of %s refuses file locks (%s); going on without them "
                        "(per-file records keep the cache correct)", folder, exc.strerror)
        yield
        return
    try:
        yield
    finally:
        held.release()


def tmp_prefix() -> str:
    """Temporary files name their writer, so a rerun can remove those of a killed one."""
    return f".tmp_{HOST}_{os.getpid()}_"


def remove_orphans(entry: str) -> None:
    """Delete temporary files left in `entry` by writers on this host that no longer run."""
    head = f".tmp_{HOST}_"
    for folder, _, names in os.walk(entry):
        for name in names:
            if not name.startswith(head):
                continue
            pid = name[len(head):].split("_", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid() or alive(int(pid)):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
                log.info("removed %s, left by a writer that was stopped (pid %s)", name, pid)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

def valid_file_info(info) -> bool:
    """A file's entry in a manifest or its record: bytes, shape, dtype and sha256, each of its
    type (anything else, e.g. a hand-edited "shape": 5, is not trusted)."""
    return (isinstance(info, dict) and isinstance(info.get("bytes"), int)
            and isinstance(info.get("shape"), list) and all(isinstance(d, int) for d in info["shape"])
            and isinstance(info.get("dtype"), str) and isinstance(info.get("sha256"), str))


def verify_file(path: str, info: dict, full: bool) -> str | None:
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return "file missing"
    if size != info.get("bytes"):
        return f"size {size} bytes, expected {info.get('bytes')}"
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        return f"unreadable ({type(exc).__name__})"
    if list(arr.shape) != info.get("shape") or str(arr.dtype) != info.get("dtype"):
        return f"shape {arr.shape} {arr.dtype}, expected {tuple(info.get('shape'))} {info.get('dtype')}"
    if full and file_sha256(path) != info.get("sha256"):
        return "checksum mismatch"
    return None


def file_mode() -> int:
    """rw for whoever the umask allows (mkstemp's files are 0600: a cache could not be shared)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str, write, suffix: str = "", size_hint: int = 0) -> None:
    """Write through `write(fileobj)` to a temporary file beside `path`, fsync, then rename
    it into place: readers see the old file or the complete new one, never a partial one.
    A full disk raises CacheError naming the folder and the space needed; files already
    complete stay as they are."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=tmp_prefix(), suffix=suffix)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(folder).free
            raise CacheError(f"no space left on the device of {folder} while writing "
                             f"{os.path.basename(path)} ({size_hint / 2**20:.1f} MiB needed, "
                             f"{free / 2**20:.1f} MiB free); free some space or pass another "
                             "--cache-dir, then rerun: completed cache files are kept") from None
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


class Hashing:
    """A write-only file that hashes what goes through it (no second read for the checksum)."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.f.write(data)


def atomic_save_npy(path: str, array: np.ndarray) -> str:
    """np.save `array` to `path` atomically; returns the file's sha256."""
    box = {}

    def write(f):
        h = Hashing(f)
        np.save(h, np.ascontiguousarray(array), allow_pickle=False)
        box["sha256"] = h.sha.hexdigest()
    atomic_write(path, write, ".npy", array.nbytes)
    return box["sha256"]


def save_array(path: str, array: np.ndarray, key: str | None = None) -> str:
    """np.save `array` to `path` atomically (folders made as needed), then its record
    `<path>.record.json` (key, shape, dtype, bytes, sha256) as for activations; returns its
    sha256."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    digest = atomic_save_npy(path, array)
    info = {"key": key, "shape": list(np.shape(array)), "dtype": str(np.asarray(array).dtype),
            "bytes": os.path.getsize(path), "sha256": digest}
    atomic_write_bytes(path + RECORD_SUFFIX, json.dumps(info, sort_keys=True).encode())
    return digest


def load_array(path: str, shape: tuple, key: str | None = None) -> np.ndarray | None:
    """A float64 array of `shape`, all finite, saved by save_array under `key` and matching its
    record (size, shape, dtype, sha256); None when it is absent or anything else: a file
    without its record, changed after it was written, truncated or foreign is recomputed,
    never trusted (a warning names a file that is there but does not match)."""
    if not os.path.exists(path):
        return None
    try:
        with open(path + RECORD_SUFFIX, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        info = None
    problem = ("it has no record" if not valid_file_info(info) else
               f"its record is for key {info.get('key')!r}" if info.get("key") != key else
               verify_file(path, info, full=True))
    if problem is None:
        try:
            a = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            a = None
        if a is None or a.dtype != np.float64 or a.shape != tuple(shape) or not np.isfinite(a).all():
            problem = "not a finite float64 array of the expected shape"
    if problem is not None:
        log.warning("cached values %s cannot be used (%s); they are computed again", path, problem)
        return None
    return a
